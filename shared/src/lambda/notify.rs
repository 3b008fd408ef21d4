//! `notify`: receives the sync functions' asynchronous invocation records and posts to a
//! Slack incoming webhook when a run fails, when it lost its lease, when it skipped its removal
//! pass (`REMOVAL_GUARD`, a file it could not read), when its failed rows exceed the
//! destination's threshold, and when a destination recovers. Without a webhook it only logs.
//!
//! Whether a destination is currently failing is kept in `state/<destination>/notify.json`,
//! so "recovered" is said once, on the first good run after a bad one.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aws::{secret_string, SecretReadError};
use crate::report::{RunStatus, RunSummary};
use crate::store::{ObjectStore, WriteCondition};

use super::catalog::Catalog;
use super::deps::Deps;
use super::error::{HandlerError, NotifyError};
use super::events::InvocationRecord;

/// Where notifications go.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Posts one message; an error means it was not delivered.
    async fn post(&self, text: &str) -> Result<(), HandlerError>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NotifyState {
    failing: bool,
}

#[derive(Debug, Serialize)]
pub struct NotifyResult {
    pub destination: String,
    /// `failed`, `lease_lost`, `removal_skipped` (the guard or an unreadable file kept a
    /// run from removing), `failed_rows`, `recovered`, or `ok` (nothing to say).
    pub event: String,
    pub message: Option<String>,
    /// Whether a webhook post was made.
    pub posted: bool,
}

/// What a record means for its destination.
fn classify(record: &InvocationRecord) -> (String, Option<RunSummary>, Option<String>) {
    let destination = record
        .request_payload
        .get("destination")
        .and_then(|d| d.as_str())
        .map(str::to_string);
    let succeeded = record.request_context.condition == "Success"
        && record
            .response_context
            .as_ref()
            .is_none_or(|r| r.function_error.is_none());
    if succeeded {
        // sync-scheduled answers a summary; sync-upload answers {"runs": [...]}.
        let summary: Option<RunSummary> = serde_json::from_value(record.response_payload.clone())
            .ok()
            .or_else(|| {
                record
                    .response_payload
                    .get("runs")
                    .and_then(|r| r.get(0))
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
            });
        let name = destination
            .or_else(|| summary.as_ref().map(|s| s.destination.clone()))
            .unwrap_or_else(|| "(unknown)".into());
        (name, summary, None)
    } else {
        let error_type = record
            .response_payload
            .get("errorType")
            .and_then(|v| v.as_str())
            .unwrap_or("Error");
        let error_message = record
            .response_payload
            .get("errorMessage")
            .and_then(|v| v.as_str())
            .unwrap_or("no message");
        let name = destination.unwrap_or_else(|| "(upload)".into());
        (
            name,
            None,
            Some(format!(
                "{error_type}: {error_message} (condition {}, {} attempt(s))",
                record.request_context.condition,
                record.request_context.approximate_invoke_count.unwrap_or(1)
            )),
        )
    }
}

/// What a run's outcome means for its destination: the event name, the message (none
/// for `ok`), and whether the destination is failing after it.
fn decide(
    destination: &str,
    failure: Option<&str>,
    summary: Option<&RunSummary>,
    threshold: u64,
    was_failing: bool,
) -> (&'static str, Option<String>, bool) {
    match (failure, summary) {
        (Some(f), _) => (
            "failed",
            Some(format!(":red_circle: pipefy-sync: destination `{destination}` failed: {f}")),
            true,
        ),
        (None, Some(s)) if s.status == RunStatus::LeaseLost => (
            "lease_lost",
            Some(format!(
                ":warning: pipefy-sync: destination `{destination}` run {} lost its lease and stopped sending; the next run syncs the rest. Report: {}",
                s.run_id,
                s.report_location.clone().unwrap_or_default()
            )),
            true,
        ),
        (None, Some(s)) if s.removal_skipped.is_some() => (
            "removal_skipped",
            Some(format!(
                ":warning: pipefy-sync: destination `{destination}` run {} removed no cards: {}. Report: {}",
                s.run_id,
                s.removal_skipped.as_deref().unwrap_or_default(),
                s.report_location.clone().unwrap_or_default()
            )),
            true,
        ),
        (None, Some(s)) if s.counts.failed_rows() > threshold => (
            "failed_rows",
            Some(format!(
                ":warning: pipefy-sync: destination `{destination}` run {}: {} of {} rows failed (threshold {threshold}); failed rows in {}failed/",
                s.run_id,
                s.counts.failed_rows(),
                s.counts.read,
                s.report_location.clone().unwrap_or_default()
            )),
            true,
        ),
        (None, _) if was_failing => (
            "recovered",
            Some(format!(":large_green_circle: pipefy-sync: destination `{destination}` recovered")),
            false,
        ),
        (None, _) => ("ok", None, false),
    }
}

/// One invocation record: the destination's failing state in `store` under
/// `<state_prefix><destination>/notify.json`, and a message to `notifier` (when there is one)
/// if the record says something worth saying.
pub async fn handle(
    catalog: &dyn Catalog,
    store: &dyn ObjectStore,
    notifier: Option<&dyn Notifier>,
    state_prefix: &str,
    payload: serde_json::Value,
) -> Result<serde_json::Value, HandlerError> {
    let record: InvocationRecord = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!("not a Lambda asynchronous invocation record: {e}"))
    })?;
    let (destination, summary, failure) = classify(&record);
    let state_key = format!("{state_prefix}{destination}/notify.json");
    // A missing or unreadable state is "not failing": at worst one "recovered" is not said.
    let previous: NotifyState = match store.get_bytes(&state_key).await {
        Ok((_, bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => NotifyState::default(),
    };
    // An unknown or invalid destination alerts on any failed row.
    let threshold = match catalog.get(&destination).await {
        Ok(d) => d.sync.failed_rows_alert_threshold,
        Err(_) => 0,
    };
    let (event, message, failing) = decide(
        &destination,
        failure.as_deref(),
        summary.as_ref(),
        threshold,
        previous.failing,
    );
    if failing != previous.failing {
        let body =
            bytes::Bytes::from(serde_json::to_vec(&NotifyState { failing }).unwrap_or_default());
        store
            .put_bytes(&state_key, body, WriteCondition::None)
            .await
            .map_err(|e| HandlerError::storage("saving notify state", e))?;
    }
    let mut posted = false;
    if let Some(text) = &message {
        tracing::warn!(destination = %destination, event, message = %text, "notification");
        if let Some(notifier) = notifier {
            notifier.post(text).await?;
            posted = true;
        }
    } else {
        tracing::info!(destination = %destination, "run ok; nothing to notify");
    }
    serde_json::to_value(NotifyResult {
        destination,
        event: event.into(),
        message,
        posted,
    })
    .map_err(|e| HandlerError::Setup(e.to_string()))
}

/// Posts to the Slack incoming webhook whose URL is the secret `secret_id`.
pub struct SlackNotifier {
    secrets: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl Deps {
    /// The Slack notifier, when `PIPEFY_SYNC_SLACK_WEBHOOK_SECRET` names a webhook.
    pub fn slack_notifier(&self) -> Option<SlackNotifier> {
        self.settings
            .slack_webhook_secret
            .as_ref()
            .map(|secret_id| SlackNotifier {
                secrets: self.secrets.clone(),
                secret_id: secret_id.clone(),
            })
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn post(&self, text: &str) -> Result<(), HandlerError> {
        let secret_id = &self.secret_id;
        let url = secret_string(&self.secrets, secret_id)
            .await
            .map_err(|e| match e {
                SecretReadError::Unavailable(detail) => {
                    HandlerError::Secret(format!("webhook secret '{secret_id}': {detail}"))
                }
                SecretReadError::NoString => {
                    HandlerError::Secret(format!("webhook secret '{secret_id}' is empty"))
                }
            })?;
        // The webhook URL is a credential: it is never logged or put in an error.
        let url = url.trim();
        if url.is_empty() {
            return Err(HandlerError::Secret(format!(
                "webhook secret '{secret_id}' is empty"
            )));
        }
        let response = reqwest::Client::new()
            .post(url)
            .timeout(std::time::Duration::from_secs(10))
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .map_err(|e| NotifyError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(NotifyError::Rejected(response.status().as_u16()).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lambda::fakes::{destination, summary, FakeCatalog, FakeNotifier};
    use crate::store::memory::MemoryStore;

    fn success(summary: &RunSummary) -> serde_json::Value {
        json!({
            "requestContext": {"condition": "Success", "approximateInvokeCount": 1},
            "requestPayload": {"destination": summary.destination},
            "responseContext": {"statusCode": 200},
            "responsePayload": summary,
        })
    }

    fn failure(destination: &str) -> serde_json::Value {
        json!({
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": {"destination": destination},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": "PipefyUnauthorized", "errorMessage": "token rejected"},
        })
    }

    struct World {
        catalog: FakeCatalog,
        store: MemoryStore,
        slack: FakeNotifier,
    }

    impl World {
        fn new() -> World {
            World {
                catalog: FakeCatalog::of([destination(
                    "customers",
                    "customers",
                    "sync: { failed_rows_alert_threshold: 2 }",
                )]),
                store: MemoryStore::new(),
                slack: FakeNotifier::default(),
            }
        }

        async fn notify(&self, record: serde_json::Value) -> Result<(String, bool), HandlerError> {
            let out = handle(
                &self.catalog,
                &self.store,
                Some(&self.slack),
                "state/",
                record,
            )
            .await?;
            Ok((
                out["event"].as_str().unwrap_or_default().to_string(),
                out["posted"].as_bool().unwrap_or_default(),
            ))
        }

        async fn failing(&self, destination: &str) -> Option<bool> {
            let (_, bytes) = self
                .store
                .get_bytes(&format!("state/{destination}/notify.json"))
                .await
                .ok()?;
            serde_json::from_slice::<NotifyState>(&bytes)
                .ok()
                .map(|s| s.failing)
        }
    }

    #[tokio::test]
    async fn failure_then_quiet_then_recovered_once() {
        let w = World::new();
        let ok = summary("customers", "schedule", RunStatus::Completed);
        assert_eq!(w.notify(success(&ok)).await.unwrap(), ("ok".into(), false));
        assert_eq!(
            w.failing("customers").await,
            None,
            "nothing to remember yet"
        );

        assert_eq!(
            w.notify(failure("customers")).await.unwrap(),
            ("failed".into(), true)
        );
        assert_eq!(w.failing("customers").await, Some(true));
        let posts = w.slack.posts();
        assert!(
            posts[0].contains("`customers` failed: PipefyUnauthorized: token rejected (condition RetriesExhausted, 3 attempt(s))"),
            "{posts:?}"
        );

        assert_eq!(
            w.notify(success(&ok)).await.unwrap(),
            ("recovered".into(), true)
        );
        assert_eq!(w.failing("customers").await, Some(false));
        assert_eq!(w.notify(success(&ok)).await.unwrap(), ("ok".into(), false));
        assert_eq!(w.slack.posts().len(), 2, "recovered is said once");
    }

    #[tokio::test]
    async fn warnings_for_lease_lost_removal_skipped_and_failed_rows() {
        let w = World::new();
        let lost = summary("customers", "schedule", RunStatus::LeaseLost);
        assert_eq!(w.notify(success(&lost)).await.unwrap().0, "lease_lost");

        let mut skipped = summary("customers", "schedule", RunStatus::Completed);
        skipped.removal_skipped = Some("REMOVAL_GUARD: 90% of the keys".into());
        assert_eq!(
            w.notify(success(&skipped)).await.unwrap().0,
            "removal_skipped"
        );

        let mut rows = summary("customers", "schedule", RunStatus::Completed);
        rows.counts.read = 10;
        rows.counts.failed = 2;
        assert_eq!(
            w.notify(success(&rows)).await.unwrap().0,
            "recovered",
            "at the threshold is not over it"
        );
        rows.counts.skipped_by_preflight = 1;
        assert_eq!(w.notify(success(&rows)).await.unwrap().0, "failed_rows");
        let posts = w.slack.posts();
        assert!(
            posts[3].contains("3 of 10 rows failed (threshold 2)"),
            "{posts:?}"
        );
        assert!(
            posts[1].contains("removed no cards: REMOVAL_GUARD"),
            "{posts:?}"
        );
    }

    #[tokio::test]
    async fn upload_results_and_unknown_destinations() {
        let w = World::new();
        // sync-upload answers {"runs": [...]}: the first run's summary is the one judged.
        let mut rows = summary("other", "upload", RunStatus::Completed);
        rows.counts.failed = 1;
        let record = json!({
            "requestContext": {"condition": "Success"},
            "requestPayload": {"Records": []},
            "responsePayload": {"runs": [rows], "ignored": []},
        });
        // `other` is not in the catalog: any failed row alerts.
        assert_eq!(w.notify(record).await.unwrap().0, "failed_rows");
        assert_eq!(w.failing("other").await, Some(true));
        let failed_upload = json!({
            "requestContext": {"condition": "EventAgeExceeded"},
            "requestPayload": {"Records": []},
            "responsePayload": {},
        });
        assert_eq!(w.notify(failed_upload).await.unwrap().0, "failed");
        assert_eq!(w.failing("(upload)").await, Some(true));
    }

    #[tokio::test]
    async fn without_a_webhook_nothing_is_posted_but_the_state_is_kept() {
        let w = World::new();
        let out = handle(&w.catalog, &w.store, None, "state/", failure("customers"))
            .await
            .unwrap();
        assert_eq!(out["event"], "failed");
        assert_eq!(out["posted"], false);
        assert!(out["message"].as_str().is_some());
        assert_eq!(w.failing("customers").await, Some(true));
    }

    #[tokio::test]
    async fn a_slack_outage_is_a_notify_error() {
        let w = World {
            slack: FakeNotifier {
                down: true,
                ..FakeNotifier::default()
            },
            ..World::new()
        };
        let err = w.notify(failure("customers")).await.unwrap_err();
        assert_eq!(err.error_type(), "NotifyFailed");
        // The failing state is saved before the post is tried.
        assert_eq!(w.failing("customers").await, Some(true));
    }

    #[tokio::test]
    async fn a_record_that_is_not_an_invocation_record_is_invalid() {
        let w = World::new();
        assert!(matches!(
            w.notify(json!({"destination": "customers"})).await,
            Err(HandlerError::InvalidEvent(_))
        ));
    }
}
