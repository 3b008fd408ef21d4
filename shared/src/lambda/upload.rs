//! `sync-upload`: S3 ObjectCreated notifications. Each uploaded object is matched to the
//! destinations whose table it belongs to; the others are ignored with a log line.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::config::Destination;
use crate::engine::{sync, RunRequest};
use crate::report::{RunStatus, RunSummary};
use crate::source::is_marker;

use super::events::{is_continuation, parse_s3_event, UploadedObject};
use super::{metrics, Deps, HandlerError};

#[derive(Debug, Serialize)]
pub struct UploadResult {
    pub runs: Vec<RunSummary>,
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Serialize)]
pub struct Ignored {
    pub bucket: String,
    pub key: String,
    pub reason: String,
}

/// Whether an uploaded object belongs to a destination that syncs on upload.
pub fn matches(dest: &Destination, object: &UploadedObject) -> bool {
    let Some(on_upload) = &dest.trigger.on_upload else {
        return false;
    };
    dest.source.bucket.as_deref() == Some(object.bucket.as_str())
        && object.key.starts_with(&dest.source.prefix())
        && (on_upload.suffixes.is_empty()
            || on_upload
                .suffixes
                .iter()
                .any(|s| object.key.ends_with(s.as_str())))
}

/// Why an uploaded object is not synced at all, before any destination is asked.
fn ignore_reason(object: &UploadedObject) -> Option<&'static str> {
    if object.size == 0 {
        Some("zero-byte object")
    } else if is_marker(&object.key) {
        Some("marker or temporary file")
    } else {
        None
    }
}

pub async fn handle(
    deps: &Deps,
    payload: serde_json::Value,
    deadline_ms: u64,
) -> Result<serde_json::Value, HandlerError> {
    if is_continuation(&payload) {
        // A long upload run handed itself over to this function (its own name is the one a
        // hand-off invokes): continue it like any other run.
        return super::scheduled::handle(deps, payload, deadline_ms).await;
    }
    let objects = parse_s3_event(&payload).map_err(HandlerError::InvalidEvent)?;
    let mut destinations = deps.catalog.all().await?;
    // Markers and empty objects are ignored whatever the catalog says: they must not make
    // every `_SUCCESS` file reload it.
    if objects
        .iter()
        .any(|o| ignore_reason(o).is_none() && !destinations.values().any(|d| matches(d, o)))
    {
        // An object no cached destination takes: maybe a destination deployed since.
        destinations = deps.catalog.refreshed().await?;
    }
    let mut by_destination: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ignored = Vec::new();
    for object in objects {
        if let Some(reason) = ignore_reason(&object) {
            tracing::info!(bucket = %object.bucket, key = %object.key, reason, "ignored upload");
            ignored.push(Ignored {
                bucket: object.bucket,
                key: object.key,
                reason: reason.into(),
            });
            continue;
        }
        let matching: Vec<&Destination> = destinations
            .values()
            .filter(|d| matches(d, &object))
            .collect();
        if matching.is_empty() {
            tracing::info!(bucket = %object.bucket, key = %object.key, "ignored upload: no destination syncs this prefix and suffix on upload");
            ignored.push(Ignored {
                bucket: object.bucket,
                key: object.key,
                reason: "no destination syncs this prefix and suffix on upload".into(),
            });
            continue;
        }
        for dest in matching {
            by_destination
                .entry(dest.name.clone())
                .or_default()
                .push(object.key.clone());
        }
    }
    let mut runs = Vec::new();
    let mut first_error = None;
    for (name, mut files) in by_destination {
        files.sort();
        files.dedup();
        let started = Instant::now();
        let Some(dest) = destinations.get(&name) else {
            continue;
        };
        let result = async {
            let ctx = deps.run_context(dest).await?;
            let req = RunRequest {
                trigger: "upload".into(),
                scope: crate::state::RunScope::Files(files),
                deadline: Some(deps.settings.run_deadline(deadline_ms)),
                lease_wait: std::time::Duration::from_secs(2),
                ..RunRequest::default()
            };
            sync(&ctx, dest, req).await.map_err(HandlerError::from)
        }
        .await;
        match result {
            Ok(summary) => {
                if summary.status != RunStatus::Deferred {
                    metrics::emit(
                        &deps.settings.metrics_namespace,
                        &summary,
                        started.elapsed().as_millis() as u64,
                    );
                }
                runs.push(summary);
            }
            Err(e) => {
                tracing::error!(destination = %name, error_type = e.error_type(), error = %e, "upload run failed");
                first_error.get_or_insert(e);
            }
        }
    }
    // A failed run fails the invocation, so Lambda retries it; the runs that succeeded find
    // nothing left to do on the retry.
    if let Some(e) = first_error {
        return Err(e);
    }
    serde_json::to_value(UploadResult { runs, ignored })
        .map_err(|e| HandlerError::Setup(e.to_string()))
}
