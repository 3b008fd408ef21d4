//! `notify`: receives the sync functions' asynchronous invocation records and posts to a
//! Slack incoming webhook when a run fails, when it lost its lease, when it skipped its removal
//! pass (`REMOVAL_GUARD`, a file it could not read), when its failed rows exceed the
//! destination's threshold, and when a destination recovers. Without a webhook it only logs.
//!
//! Whether a destination is currently failing is kept in `state/<destination>/notify.json`,
//! so "recovered" is said once, on the first good run after a bad one.

use serde::{Deserialize, Serialize};

use crate::report::{RunStatus, RunSummary};
use crate::store::WriteCondition;

use super::events::InvocationRecord;
use super::{storage_error, Deps, HandlerError};

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

pub async fn handle(
    deps: &Deps,
    payload: serde_json::Value,
) -> Result<serde_json::Value, HandlerError> {
    let record: InvocationRecord = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!("not a Lambda asynchronous invocation record: {e}"))
    })?;
    let (destination, summary, failure) = classify(&record);
    let state_key = format!("{}{destination}/notify.json", deps.settings.state_prefix);
    let previous: NotifyState = match deps.system_store.get_bytes(&state_key).await {
        Ok((_, bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => NotifyState::default(),
    };
    let threshold = match deps.catalog.get(&destination).await {
        Ok(d) => d.sync.failed_rows_alert_threshold,
        Err(_) => 0,
    };
    let (event, message, failing) = match (&failure, &summary) {
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
        (None, _) if previous.failing => (
            "recovered",
            Some(format!(":large_green_circle: pipefy-sync: destination `{destination}` recovered")),
            false,
        ),
        (None, _) => ("ok", None, false),
    };
    if failing != previous.failing {
        let body =
            bytes::Bytes::from(serde_json::to_vec(&NotifyState { failing }).unwrap_or_default());
        deps.system_store
            .put_bytes(&state_key, body, WriteCondition::None)
            .await
            .map_err(|e| storage_error("saving notify state", e))?;
    }
    let mut posted = false;
    if let Some(text) = &message {
        tracing::warn!(destination = %destination, event, message = %text, "notification");
        if let Some(secret_id) = &deps.settings.slack_webhook_secret {
            post_to_slack(deps, secret_id, text).await?;
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

async fn post_to_slack(deps: &Deps, secret_id: &str, text: &str) -> Result<(), HandlerError> {
    let out = deps
        .secrets
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            HandlerError::Secret(format!(
                "webhook secret '{secret_id}': {}",
                e.as_service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "Secrets Manager could not be reached".into())
            ))
        })?;
    // The webhook URL is a credential: it is never logged or put in an error.
    let url = out
        .secret_string()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| HandlerError::Secret(format!("webhook secret '{secret_id}' is empty")))?;
    let response = reqwest::Client::new()
        .post(url)
        .timeout(std::time::Duration::from_secs(10))
        .json(&serde_json::json!({ "text": text }))
        .send()
        .await
        .map_err(|e| {
            HandlerError::Pipefy(format!(
                "posting to the Slack webhook failed: {}",
                e.without_url()
            ))
        })?;
    if !response.status().is_success() {
        return Err(HandlerError::Pipefy(format!(
            "the Slack webhook answered HTTP {}",
            response.status().as_u16()
        )));
    }
    Ok(())
}
