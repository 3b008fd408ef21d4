//! Lifecycle events from the real engine against the emulator over HTTP: one `run started`
//! and one end event per run, across hand-offs, and `run failed` for a run that cannot
//! proceed. (The EventBridge publisher itself is tested through the functions on moto, in
//! functions.rs.)

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pipefy_sync::engine::{sync, RunContext, RunEvent, RunEventKind, RunEvents, RunRequest};
use pipefy_sync::report::RunStatus;
use pipefy_sync_tests::sync::{run_across_hand_offs, Harness};

#[derive(Default)]
struct Recorded(Mutex<Vec<RunEvent>>);

#[async_trait]
impl RunEvents for Recorded {
    async fn publish(&self, event: &RunEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// A context whose runs' events are recorded.
fn recording(h: &Harness) -> (Arc<Recorded>, RunContext) {
    let events = Arc::new(Recorded::default());
    let ctx = RunContext {
        lifecycle: Some(events.clone()),
        ..h.context()
    };
    (events, ctx)
}

impl Recorded {
    fn kinds(&self) -> Vec<(RunEventKind, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.kind, e.run_id.clone()))
            .collect()
    }
}

fn table(keys: std::ops::RangeInclusive<usize>) -> String {
    let mut out = String::from("cid,name\n");
    for k in keys {
        out.push_str(&format!("L{k},Customer {k}\n"));
    }
    out
}

#[tokio::test]
async fn a_run_across_hand_offs_sends_one_start_and_one_end() {
    let h = Harness::new().await;
    let d = h.destination(
        "name: lifecycle-runs\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n",
    );
    for f in 1..=3 {
        h.write_file(
            &format!("refined/customers/part-{f}.csv"),
            table(f * 2 - 1..=f * 2),
        );
    }
    let (events, ctx) = recording(&h);
    let first = RunRequest {
        trigger: "schedule".into(),
        ..RunRequest::default()
    };
    let (summary, invocations) = run_across_hand_offs(ctx.clone(), &d, first).await;
    assert!(invocations > 1, "the run handed off at least once");
    assert_eq!(summary.status, RunStatus::Completed);
    let run = summary.run_id.clone();
    assert_eq!(
        events.kinds(),
        vec![
            (RunEventKind::Started, run.clone()),
            (RunEventKind::Completed, run)
        ],
        "one start, no event for the hand-offs, one end"
    );
    let recorded = events.0.lock().unwrap().clone();
    let (started, ended) = (&recorded[0], &recorded[1]);
    assert_eq!(started.trigger, "schedule");
    assert_eq!(
        ended.trigger, "schedule",
        "the run's trigger, not the hand-off's"
    );
    assert_eq!(ended.counts.map(|c| c.created), Some(6));
    assert_eq!(ended.started_at, started.started_at);
    assert!(
        ended
            .report_page
            .as_deref()
            .is_some_and(|p| p.ends_with("report.html")),
        "{ended:?}"
    );

    // A rerun finds nothing to do: still a run, with its own start and end.
    let again = sync(&ctx, &d, RunRequest::default()).await.unwrap();
    assert_eq!(again.counts.unchanged, 6);
    let kinds = events.kinds();
    assert_eq!(kinds.len(), 4);
    assert_eq!(kinds[2], (RunEventKind::Started, again.run_id.clone()));
    assert_eq!(kinds[3], (RunEventKind::Completed, again.run_id.clone()));
}

#[tokio::test]
async fn a_run_that_cannot_proceed_sends_run_failed_with_its_reason() {
    let h = Harness::new().await;
    let d = h.destination(
        "name: lifecycle-failed\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  no_such_field: name\n",
    );
    h.write_file("refined/customers/part-1.csv", table(1..=1));
    let (events, ctx) = recording(&h);
    let err = sync(
        &ctx,
        &d,
        RunRequest {
            trigger: "manual".into(),
            ..RunRequest::default()
        },
    )
    .await
    .expect_err("the mapping names a field the pipe does not have");
    let recorded = events.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let failed = &recorded[0];
    assert_eq!(failed.kind, RunEventKind::Failed);
    assert_eq!(failed.status, Some(RunStatus::Failed));
    assert_eq!(failed.trigger, "manual");
    assert!(!failed.run_id.is_empty());
    let reason = failed.error.as_deref().unwrap_or_default();
    assert_eq!(reason, err.to_string());
    assert!(reason.contains("no_such_field"), "{reason}");
}

#[tokio::test]
async fn a_request_refused_before_the_run_starts_sends_run_failed_too() {
    let h = Harness::new().await;
    let d = h.destination(
        "name: lifecycle-refused\npipe_id: \"301\"\noperation: create_card\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n",
    );
    let (events, ctx) = recording(&h);
    let err = sync(
        &ctx,
        &d,
        RunRequest {
            keys: vec!["L1".into()],
            ..RunRequest::default()
        },
    )
    .await
    .expect_err("no key to pick rows by");
    let recorded = events.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].kind, RunEventKind::Failed);
    assert_eq!(recorded[0].error.as_deref(), Some(err.to_string().as_str()));
}
