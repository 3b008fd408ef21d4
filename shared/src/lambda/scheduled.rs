//! `sync-scheduled`: EventBridge Scheduler's payload, a manual run, or a hand-off (which
//! `sync-upload` also takes, through [`handle`]).

use std::time::Instant;

use crate::engine::{sync, RunRequest};
use crate::report::RunStatus;

use super::events::ScheduledEvent;
use super::{metrics, Deps, HandlerError};

/// How long a run waits for the lease before handing its work to the holder.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn handle(
    deps: &Deps,
    payload: serde_json::Value,
    deadline_ms: u64,
) -> Result<serde_json::Value, HandlerError> {
    let event: ScheduledEvent = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!(
            "{e}; expected {{\"destination\": \"<name>\", \"scheduled_time\"?, \"dry_run\"?, \"full_resync\"?, \"files\"?, \"allow_mass_removal\"?}}"
        ))
    })?;
    if event.destination.trim().is_empty() {
        return Err(HandlerError::InvalidEvent(
            "\"destination\" is empty".into(),
        ));
    }
    let scope = event.scope().map_err(HandlerError::InvalidEvent)?;
    let started = Instant::now();
    let dest = deps.catalog.get(&event.destination).await?;
    let ctx = deps.run_context(&dest).await?;
    let req = RunRequest {
        trigger: event.trigger().to_string(),
        scope,
        dry_run: event.dry_run,
        full_resync: event.full_resync,
        continue_run: event.continue_run.clone(),
        deadline: Some(deps.settings.run_deadline(deadline_ms)),
        lease_wait: LEASE_WAIT,
        report_unchanged: false,
        allow_mass_removal: event.allow_mass_removal,
    };
    tracing::info!(destination = %dest.name, trigger = %req.trigger, dry_run = req.dry_run, "run starting");
    let summary = sync(&ctx, &dest, req).await.map_err(|e| {
        let e = HandlerError::from(e);
        tracing::error!(destination = %dest.name, error_type = e.error_type(), error = %e, "run failed");
        e
    })?;
    if summary.status != RunStatus::Deferred {
        metrics::emit(
            &deps.settings.metrics_namespace,
            &summary,
            started.elapsed().as_millis() as u64,
        );
    }
    tracing::info!(destination = %dest.name, run_id = %summary.run_id, status = ?summary.status, counts = ?summary.counts, "run finished");
    serde_json::to_value(&summary).map_err(|e| HandlerError::Setup(e.to_string()))
}
