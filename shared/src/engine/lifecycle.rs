//! A run's lifecycle events, for users to chain their own jobs on (the functions put them on
//! an EventBridge bus, `lambda/lifecycle.rs`):
//!
//! ```text
//!   run started     a new run holds its lease (or a dry run begins); not on a continuation
//!   run completed   the run ended: completed, every row in Pipefy, unchanged or failed
//!   run failed      the run ended without finishing: failed, stopped (partial success
//!                   off), or its lease lost
//! ```
//! An invocation that hands off sends no end event: its continuation does. An invocation
//! that hands its work to the run holding the destination (deferred) sends none at all: the
//! holder's run covers it. Publishing never fails a run: a refused event is logged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::report::{Counts, RunStatus, RunSummary};

/// Which point of a run an event marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEventKind {
    Started,
    Completed,
    Failed,
}

impl RunEventKind {
    /// EventBridge's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            RunEventKind::Started => "run started",
            RunEventKind::Completed => "run completed",
            RunEventKind::Failed => "run failed",
        }
    }

    /// The event that ends a run with this status; `None` for an invocation that hands off
    /// or defers (the run goes on elsewhere).
    pub fn ending(status: RunStatus) -> Option<RunEventKind> {
        match status {
            RunStatus::Completed => Some(RunEventKind::Completed),
            RunStatus::Failed | RunStatus::Stopped | RunStatus::LeaseLost => {
                Some(RunEventKind::Failed)
            }
            RunStatus::HandedOff | RunStatus::Deferred => None,
        }
    }
}

/// An event's detail. Its fields are stable: new ones may be added, none renamed.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    #[serde(skip)]
    pub kind: RunEventKind,
    pub destination: String,
    pub run_id: String,
    /// `schedule`, `upload`, `manual`, ...
    pub trigger: String,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    /// The end events: how the run ended.
    pub status: Option<RunStatus>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: Option<Counts>,
    /// Where the run's report is (`s3://bucket/reports/...`).
    pub report_location: Option<String>,
    pub report_page: Option<String>,
    /// Why the run failed, when it could not proceed.
    pub error: Option<String>,
}

impl RunEvent {
    /// `run started`, for a run that begins now.
    pub fn started(destination: &str, run_id: &str, trigger: &str, dry_run: bool) -> RunEvent {
        RunEvent {
            kind: RunEventKind::Started,
            destination: destination.to_string(),
            run_id: run_id.to_string(),
            trigger: trigger.to_string(),
            dry_run,
            started_at: Utc::now(),
            status: None,
            finished_at: None,
            counts: None,
            report_location: None,
            report_page: None,
            error: None,
        }
    }

    /// The event that ends the run `summary` describes, if it ended.
    pub fn ended(summary: &RunSummary) -> Option<RunEvent> {
        let kind = RunEventKind::ending(summary.status)?;
        Some(RunEvent {
            kind,
            destination: summary.destination.clone(),
            run_id: summary.run_id.clone(),
            trigger: summary.trigger.clone(),
            dry_run: summary.dry_run,
            started_at: summary.started_at,
            status: Some(summary.status),
            finished_at: summary.finished_at,
            counts: Some(summary.counts),
            report_location: summary.report_location.clone(),
            report_page: summary.report_page.clone(),
            error: summary.error.clone(),
        })
    }

    /// `run failed`, for a run that stopped with an error before it had a summary.
    pub fn failed(
        destination: &str,
        run_id: &str,
        trigger: &str,
        dry_run: bool,
        error: String,
    ) -> RunEvent {
        RunEvent {
            kind: RunEventKind::Failed,
            status: Some(RunStatus::Failed),
            finished_at: Some(Utc::now()),
            error: Some(error),
            ..RunEvent::started(destination, run_id, trigger, dry_run)
        }
    }
}

/// Where a run's lifecycle events go.
#[async_trait]
pub trait RunEvents: Send + Sync {
    /// Publishes `event`; a failure is the publisher's to log, never the run's.
    async fn publish(&self, event: &RunEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_that_ends_a_run_has_one_end_event() {
        use RunStatus::*;
        let ends: Vec<_> = [Completed, Stopped, HandedOff, Deferred, Failed, LeaseLost]
            .into_iter()
            .map(|s| RunEventKind::ending(s).map(RunEventKind::detail_type))
            .collect();
        assert_eq!(
            ends,
            vec![
                Some("run completed"),
                Some("run failed"),
                None,
                None,
                Some("run failed"),
                Some("run failed"),
            ]
        );
    }

    #[test]
    fn a_started_event_carries_no_end_fields() {
        let e = RunEvent::started("customers", "r1", "schedule", false);
        let detail = serde_json::to_value(&e).unwrap();
        assert_eq!(detail["destination"], "customers");
        assert_eq!(detail["run_id"], "r1");
        assert_eq!(detail["trigger"], "schedule");
        for absent in ["status", "counts", "finished_at", "error", "kind"] {
            assert!(detail.get(absent).is_none(), "{absent}: {detail}");
        }
        let f = RunEvent::failed("customers", "r1", "schedule", false, "no token".into());
        let detail = serde_json::to_value(&f).unwrap();
        assert_eq!(detail["status"], "failed");
        assert_eq!(detail["error"], "no token");
    }
}
