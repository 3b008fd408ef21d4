//! `sync-upload`: S3 ObjectCreated notifications. Each uploaded object is matched to the
//! destinations whose table it belongs to; the others are ignored with a log line.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::config::Destination;
use crate::engine::RunRequest;
use crate::report::{RunStatus, RunSummary};
use crate::source::is_marker;

use super::deps::SyncDeps;
use super::error::HandlerError;
use super::events::{is_continuation, parse_s3_event, UploadedObject};
use super::metrics;

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

/// The runs an S3 notification starts: one per destination its objects belong to, each
/// with the uploaded keys it takes. A hand-off continuation goes to [`super::scheduled`].
pub async fn handle(
    deps: SyncDeps<'_>,
    payload: serde_json::Value,
    deadline_ms: u64,
) -> Result<serde_json::Value, HandlerError> {
    if is_continuation(&payload) {
        // A long upload run handed itself over to this function (its own name is the one a
        // hand-off invokes): continue it like any other run.
        return super::scheduled::handle(deps, payload, deadline_ms).await;
    }
    let SyncDeps {
        catalog,
        runner,
        settings,
    } = deps;
    let objects = parse_s3_event(&payload).map_err(HandlerError::InvalidEvent)?;
    let mut destinations = catalog.all().await?;
    // Markers and empty objects are ignored whatever the catalog says: they must not make
    // every `_SUCCESS` file reload it.
    if objects
        .iter()
        .any(|o| ignore_reason(o).is_none() && !destinations.values().any(|d| matches(d, o)))
    {
        // An object no cached destination takes: maybe a destination deployed since.
        destinations = catalog.refreshed().await?;
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
        let req = RunRequest {
            trigger: "upload".into(),
            scope: crate::state::RunScope::Files(files),
            deadline: Some(settings.run_deadline(deadline_ms)),
            lease_wait: super::scheduled::LEASE_WAIT,
            ..RunRequest::default()
        };
        let result = runner.run(dest, req).await;
        match result {
            Ok(summary) => {
                if summary.status != RunStatus::Deferred {
                    metrics::emit(
                        &settings.metrics_namespace,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lambda::fakes::{destination, files, FakeCatalog, FakeRunner};
    use crate::lambda::settings::tests::settings;

    fn record(key: &str, size: u64) -> serde_json::Value {
        json!({"s3": {"bucket": {"name": "lake"}, "object": {"key": key, "size": size}}})
    }

    fn catalog() -> FakeCatalog {
        FakeCatalog::of([
            destination(
                "customers",
                "customers",
                "trigger: { on_upload: { suffixes: [.csv] } }",
            ),
            // The same table, synced on upload with any suffix.
            destination("customers-copy", "customers", "trigger: { on_upload: {} }"),
            destination("orders", "orders", "trigger: { on_upload: {} }"),
            // On a schedule only: uploads are not its business.
            destination("invoices", "invoices", ""),
        ])
    }

    #[tokio::test]
    async fn uploads_go_to_the_destinations_that_take_them() {
        let catalog = catalog();
        let runner = FakeRunner::default();
        let payload = json!({"Records": [
            record("refined/customers/b.csv", 10),
            record("refined/customers/a.csv", 10),
            record("refined/customers/a.csv", 10),
            record("refined/customers/c.json", 10),
            record("refined/orders/_SUCCESS", 1),
            record("refined/orders/o.csv", 0),
            record("refined/invoices/i.csv", 10),
        ]});
        let out = handle(runner.deps(&catalog, &settings()), payload, 0)
            .await
            .unwrap();
        let runs: Vec<(String, Option<Vec<String>>, String)> = runner
            .runs()
            .iter()
            .map(|(n, r)| (n.clone(), files(r), r.trigger.clone()))
            .collect();
        let keys = |k: &[&str]| Some(k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            runs,
            vec![
                (
                    "customers".into(),
                    keys(&["refined/customers/a.csv", "refined/customers/b.csv"]),
                    "upload".into()
                ),
                (
                    "customers-copy".into(),
                    keys(&[
                        "refined/customers/a.csv",
                        "refined/customers/b.csv",
                        "refined/customers/c.json"
                    ]),
                    "upload".into()
                ),
            ]
        );
        let ignored: Vec<(&str, &str)> = out["ignored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["key"].as_str().unwrap(), i["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ignored,
            vec![
                ("refined/orders/_SUCCESS", "marker or temporary file"),
                ("refined/orders/o.csv", "zero-byte object"),
                (
                    "refined/invoices/i.csv",
                    "no destination syncs this prefix and suffix on upload"
                ),
            ]
        );
        assert_eq!(out["runs"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            catalog.refreshes(),
            1,
            "an unmatched object reloads the catalog"
        );
    }

    #[tokio::test]
    async fn markers_do_not_reload_the_catalog() {
        let catalog = catalog();
        let runner = FakeRunner::default();
        let payload = json!({"Records": [record("refined/orders/_SUCCESS", 0), record("refined/orders/o.csv", 5)]});
        handle(runner.deps(&catalog, &settings()), payload, 0)
            .await
            .unwrap();
        assert_eq!(catalog.refreshes(), 0);
        assert_eq!(runner.runs().len(), 1);
    }

    #[tokio::test]
    async fn a_continuation_takes_the_scheduled_path() {
        let catalog = catalog();
        let runner = FakeRunner::default();
        let payload = json!({"destination": "orders", "continue_run": "run-3"});
        let out = handle(runner.deps(&catalog, &settings()), payload, 0)
            .await
            .unwrap();
        assert_eq!(
            out["trigger"], "hand-off",
            "a run summary, not an upload result"
        );
        let (name, req) = &runner.runs()[0];
        assert_eq!(name, "orders");
        assert_eq!(req.continue_run.as_deref(), Some("run-3"));
    }

    #[tokio::test]
    async fn one_failed_run_fails_the_invocation_after_the_others_ran() {
        let catalog = catalog();
        let runner = FakeRunner {
            failing: vec!["customers".into()],
            ..FakeRunner::default()
        };
        let payload = json!({"Records": [record("refined/customers/a.csv", 1), record("refined/orders/o.csv", 1)]});
        let err = handle(runner.deps(&catalog, &settings()), payload, 0)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "PipefyError");
        assert_eq!(
            runner.runs().len(),
            3,
            "customers, customers-copy and orders all ran"
        );
    }

    #[tokio::test]
    async fn a_payload_that_is_no_s3_event_is_invalid() {
        let runner = FakeRunner::default();
        for bad in [json!({"Records": []}), json!({"destination": "orders"})] {
            assert!(matches!(
                handle(runner.deps(&catalog(), &settings()), bad, 0).await,
                Err(HandlerError::InvalidEvent(_))
            ));
        }
        assert!(runner.runs().is_empty());
    }
}
