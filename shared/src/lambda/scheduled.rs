//! `sync-scheduled`: EventBridge Scheduler's payload, a manual run, a drift report
//! (`"drift": true`), or a hand-off (which `sync-upload` also takes, through [`handle`]).

use std::time::Instant;

use crate::engine::{DriftRequest, RunRequest};
use crate::report::RunStatus;

use super::deps::SyncDeps;
use super::error::HandlerError;
use super::events::ScheduledEvent;
use super::metrics;

/// How long a run waits for the lease before handing its work to the holder.
pub(super) const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One scheduled, manual or continued run of the destination the payload names.
pub async fn handle(
    deps: SyncDeps<'_>,
    payload: serde_json::Value,
    deadline_ms: u64,
) -> Result<serde_json::Value, HandlerError> {
    let SyncDeps {
        catalog,
        runner,
        settings,
    } = deps;
    let event: ScheduledEvent = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!(
            "{e}; expected {{\"destination\": \"<name>\", \"scheduled_time\"?, \"dry_run\"?, \"full_resync\"?, \"files\"?, \"keys\"?, \"allow_mass_removal\"?, \"drift\"?}}"
        ))
    })?;
    if event.destination.trim().is_empty() {
        return Err(HandlerError::InvalidEvent(
            "\"destination\" is empty".into(),
        ));
    }
    let scope = event.scope().map_err(HandlerError::InvalidEvent)?;
    let keys = event.keys().map_err(HandlerError::InvalidEvent)?;
    event.check_drift().map_err(HandlerError::InvalidEvent)?;
    let started = Instant::now();
    let dest = catalog.get(&event.destination).await?;
    if event.drift {
        tracing::info!(destination = %dest.name, "drift report starting");
        let summary = runner
            .drift(
                &dest,
                DriftRequest {
                    trigger: event.trigger().to_string(),
                },
            )
            .await
            .map_err(|e| {
                tracing::error!(destination = %dest.name, error_type = e.error_type(), error = %e, "drift report failed");
                e
            })?;
        tracing::info!(destination = %dest.name, run_id = %summary.run_id, counts = ?summary.counts, "drift report written");
        return serde_json::to_value(&summary).map_err(|e| HandlerError::Setup(e.to_string()));
    }
    let req = RunRequest {
        trigger: event.trigger().to_string(),
        scope,
        dry_run: event.dry_run,
        full_resync: event.full_resync,
        continue_run: event.continue_run.clone(),
        deadline: Some(settings.run_deadline(deadline_ms)),
        lease_wait: LEASE_WAIT,
        report_unchanged: false,
        allow_mass_removal: event.allow_mass_removal,
        keys,
    };
    tracing::info!(destination = %dest.name, trigger = %req.trigger, dry_run = req.dry_run, "run starting");
    let summary = runner.run(&dest, req).await.map_err(|e| {
        tracing::error!(destination = %dest.name, error_type = e.error_type(), error = %e, "run failed");
        e
    })?;
    if summary.status != RunStatus::Deferred {
        metrics::emit(
            &settings.metrics_namespace,
            &summary,
            started.elapsed().as_millis() as u64,
        );
    }
    tracing::info!(destination = %dest.name, run_id = %summary.run_id, status = ?summary.status, counts = ?summary.counts, "run finished");
    serde_json::to_value(&summary).map_err(|e| HandlerError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lambda::fakes::{destination, files, FakeCatalog, FakeRunner};
    use crate::lambda::settings::tests::settings;

    async fn run(
        catalog: &FakeCatalog,
        runner: &FakeRunner,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, HandlerError> {
        handle(runner.deps(catalog, &settings()), payload, 0).await
    }

    #[tokio::test]
    async fn a_scheduled_payload_runs_its_destination() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner::default();
        let out = run(
            &catalog,
            &runner,
            json!({"destination": "customers", "scheduled_time": "2026-01-01T06:00:00Z", "dry_run": true, "files": ["refined/customers/a.csv"]}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], "completed");
        assert_eq!(out["trigger"], "schedule");
        let runs = runner.runs();
        assert_eq!(runs.len(), 1);
        let (name, req) = &runs[0];
        assert_eq!(name, "customers");
        assert!(req.dry_run && !req.full_resync && req.continue_run.is_none());
        assert_eq!(
            files(req),
            Some(vec!["refined/customers/a.csv".to_string()])
        );
        assert_eq!(req.lease_wait, LEASE_WAIT);
        assert!(req.deadline.is_some());
    }

    #[tokio::test]
    async fn a_payload_with_keys_runs_only_those_rows() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner::default();
        run(
            &catalog,
            &runner,
            json!({"destination": "customers", "keys": ["C0001", "C0002"]}),
        )
        .await
        .unwrap();
        let (_, req) = &runner.runs()[0];
        assert_eq!(req.keys, ["C0001", "C0002"]);
        assert!(req.scope.is_whole_table());
    }

    #[tokio::test]
    async fn a_continuation_continues_its_run() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner::default();
        let payload = crate::lambda::hand_off::continuation_payload("customers", "run-9")
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
            .unwrap();
        run(&catalog, &runner, payload).await.unwrap();
        let (_, req) = &runner.runs()[0];
        assert_eq!(req.trigger, "hand-off");
        assert_eq!(req.continue_run.as_deref(), Some("run-9"));
        assert_eq!(files(req), None, "a continuation keeps the run's own scope");
    }

    #[tokio::test]
    async fn malformed_payloads_are_invalid_events_and_run_nothing() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner::default();
        for bad in [
            json!({"destination": "customers", "dryrun": true}),
            json!({"destination": "  "}),
            json!({"destination": "customers", "files": []}),
            json!({"destination": "customers", "files": [""]}),
            json!({"destination": "customers", "keys": []}),
            json!({"destination": "customers", "keys": ["C1", " "]}),
            json!({"destination": "customers", "keys": "C1"}),
            json!({"destination": "customers", "keys": (0..101).map(|i| format!("C{i}")).collect::<Vec<_>>()}),
            json!("customers"),
        ] {
            match run(&catalog, &runner, bad.clone()).await {
                Err(e @ HandlerError::InvalidEvent(_)) => {
                    assert_eq!(e.error_type(), "InvalidEvent")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            run(&catalog, &runner, json!({"destination": "nobody"})).await,
            Err(HandlerError::UnknownDestination { .. })
        ));
        assert!(runner.runs().is_empty());
    }

    #[tokio::test]
    async fn a_drift_payload_reports_drift_and_runs_no_sync() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner::default();
        let out = run(
            &catalog,
            &runner,
            json!({"destination": "customers", "drift": true}),
        )
        .await
        .unwrap();
        assert_eq!(out["kind"], "drift");
        assert_eq!(out["trigger"], "manual");
        assert_eq!(runner.drifts(), vec!["customers".to_string()]);
        assert!(runner.runs().is_empty(), "drift is not a sync");

        for bad in [
            json!({"destination": "customers", "drift": true, "dry_run": true}),
            json!({"destination": "customers", "drift": true, "files": ["a.csv"]}),
            json!({"destination": "customers", "drift": true, "full_resync": true}),
            json!({"destination": "customers", "drift": "yes"}),
            json!({"destination": "customers", "drift": true, "keys": ["C1"]}),
        ] {
            assert!(
                matches!(
                    run(&catalog, &runner, bad.clone()).await,
                    Err(HandlerError::InvalidEvent(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(runner.drifts().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_run_is_the_invocation_s_error() {
        let catalog = FakeCatalog::of([destination("customers", "customers", "")]);
        let runner = FakeRunner {
            failing: vec!["customers".into()],
            ..FakeRunner::default()
        };
        let err = run(&catalog, &runner, json!({"destination": "customers"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "PipefyError");
    }
}
