//! The functions' settings, read once per container from the environment (see
//! docs/DESIGN.md, "Environment variables"), and the deadline a run works to.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pipefy::AllowedHosts;

use super::error::HandlerError;
use super::metrics;

/// Settings from the environment (see docs/DESIGN.md, "Environment variables").
#[derive(Debug, Clone)]
pub struct Settings {
    /// Holds `config/`, `state/` and `reports/`.
    pub bucket: String,
    pub config_prefix: String,
    pub state_prefix: String,
    pub reports_prefix: String,
    /// Hand off after this long, whatever the deadline says.
    pub time_budget: Option<Duration>,
    pub slack_webhook_secret: Option<String>,
    /// How long the run page links in notifications stay valid.
    pub report_link_expiry: Duration,
    pub metrics_namespace: String,
    /// This function's name, for hand-off invocations.
    pub function_name: Option<String>,
    /// Hosts besides Pipefy's own that may receive the token (single-tenant domains).
    pub allowed_hosts: AllowedHosts,
    /// The EventBridge bus (name or ARN) that runs' lifecycle events go to; `None`: none
    /// are sent.
    pub event_bus: Option<String>,
}

/// Without a usable deadline (cargo lambda watch sends a fake one), a run hands off after
/// this long: Lambda's 15-minute limit less a margin for the checkpoint and the hand-off.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(13 * 60);
/// Time kept back before the deadline for the last window, the checkpoint and the hand-off.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

impl Settings {
    pub fn from_env() -> Result<Settings, HandlerError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let bucket = var("PIPEFY_SYNC_BUCKET").ok_or_else(|| {
            HandlerError::Setup(
                "PIPEFY_SYNC_BUCKET is not set: the bucket holding config/, state/ and reports/"
                    .into(),
            )
        })?;
        let time_budget = var("PIPEFY_SYNC_TIME_BUDGET_SECONDS")
            .map(|v| parse_time_budget(&v))
            .transpose()?;
        Ok(Settings {
            bucket,
            config_prefix: var("PIPEFY_SYNC_CONFIG_PREFIX")
                .unwrap_or_else(|| "config/destinations/".into()),
            state_prefix: "state/".into(),
            reports_prefix: "reports/".into(),
            time_budget,
            slack_webhook_secret: var("PIPEFY_SYNC_SLACK_WEBHOOK_SECRET"),
            report_link_expiry: var("PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS")
                .map(|v| parse_link_expiry(&v))
                .transpose()?
                .unwrap_or(DEFAULT_LINK_EXPIRY),
            metrics_namespace: var("PIPEFY_SYNC_METRICS_NAMESPACE")
                .unwrap_or_else(|| metrics::DEFAULT_NAMESPACE.into()),
            function_name: var("AWS_LAMBDA_FUNCTION_NAME"),
            allowed_hosts: AllowedHosts::from_env(),
            event_bus: var("PIPEFY_SYNC_EVENT_BUS").map(|v| v.trim().to_string()),
        })
    }

    /// When this invocation must stop and hand off. `deadline_ms` is the invocation
    /// context's deadline (ms since the epoch); one in the past or further than Lambda's
    /// 15 minutes away is not a real deadline and is ignored.
    pub fn run_deadline(&self, deadline_ms: u64) -> Instant {
        let now = Instant::now();
        let budget = self.time_budget.unwrap_or(DEFAULT_TIME_BUDGET);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        let believable = deadline_ms > now_ms && remaining <= Duration::from_secs(15 * 60);
        let by_deadline = believable.then(|| remaining.saturating_sub(DEADLINE_MARGIN));
        now + by_deadline.map_or(budget, |d| d.min(budget))
    }
}

/// Run page links stay valid a week unless set otherwise: the longest S3 signs for.
pub const DEFAULT_LINK_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS`: whole hours, 1 to 168 (S3's longest signature).
fn parse_link_expiry(v: &str) -> Result<Duration, HandlerError> {
    match v.trim().parse::<u64>() {
        Ok(hours @ 1..=168) => Ok(Duration::from_secs(hours * 3600)),
        _ => Err(HandlerError::Setup(format!(
            "PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS is '{v}': give the hours a run page link in a notification stays valid, a whole number from 1 to 168 (S3 signs links for at most 7 days)"
        ))),
    }
}

/// `PIPEFY_SYNC_TIME_BUDGET_SECONDS`: seconds, more than 0 and at most Lambda's 900.
fn parse_time_budget(v: &str) -> Result<Duration, HandlerError> {
    let bad = |why: &str| {
        HandlerError::Setup(format!(
            "PIPEFY_SYNC_TIME_BUDGET_SECONDS is '{v}': {why}; give the seconds a run may take before it hands off, more than 0 and at most 900 (Lambda's limit)"
        ))
    };
    let secs: f64 = v.trim().parse().map_err(|_| bad("not a number"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 900.0 {
        return Err(bad("out of range"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings for the handlers' unit tests: no webhook, no hand-off function.
    pub(crate) fn settings() -> Settings {
        Settings {
            bucket: "b".into(),
            config_prefix: "config/destinations/".into(),
            state_prefix: "state/".into(),
            reports_prefix: "reports/".into(),
            time_budget: Some(Duration::from_secs(5)),
            slack_webhook_secret: None,
            report_link_expiry: DEFAULT_LINK_EXPIRY,
            metrics_namespace: "x".into(),
            function_name: None,
            allowed_hosts: AllowedHosts::default(),
            event_bus: None,
        }
    }

    #[test]
    fn time_budgets_out_of_range_are_setup_errors() {
        for bad in ["-1", "inf", "NaN", "1e20", "0", "901", "ten", ""] {
            match parse_time_budget(bad) {
                Err(HandlerError::Setup(m)) => {
                    assert!(m.contains("PIPEFY_SYNC_TIME_BUDGET_SECONDS"), "{m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            parse_time_budget(" 0.4 ").unwrap(),
            Duration::from_millis(400)
        );
        assert_eq!(parse_time_budget("900").unwrap(), Duration::from_secs(900));
    }

    #[test]
    fn link_expiries_are_whole_hours_up_to_a_week() {
        assert_eq!(
            parse_link_expiry("24").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(parse_link_expiry("168").unwrap(), DEFAULT_LINK_EXPIRY);
        for bad in ["0", "169", "1.5", "a week", "-1"] {
            assert!(
                matches!(parse_link_expiry(bad), Err(HandlerError::Setup(m)) if m.contains("PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS")),
                "{bad}"
            );
        }
    }

    #[test]
    fn fake_deadlines_fall_back_to_the_budget() {
        let settings = settings();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for fake in [0, now_ms - 1000, now_ms + 3_600_000] {
            let left = settings
                .run_deadline(fake)
                .saturating_duration_since(Instant::now());
            assert!(
                left <= Duration::from_secs(5) && left > Duration::from_secs(4),
                "{left:?}"
            );
        }
        // A real deadline 10 minutes away, with a budget bigger than that: the deadline wins.
        let generous = Settings {
            time_budget: Some(Duration::from_secs(3600)),
            ..settings
        };
        let left = generous
            .run_deadline(now_ms + 600_000)
            .saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(540) && left > Duration::from_secs(530),
            "{left:?}"
        );
    }
}
