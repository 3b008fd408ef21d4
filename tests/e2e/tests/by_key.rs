//! Runs of a few keys (`pipefy-sync run --key`, the payload's `"keys"`) against the emulator
//! over HTTP and the real engine: only those rows are sent, even when unchanged; no other row
//! is recorded, nothing is removed, and the keys survive a hand-off and a hand-over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipefy_sync::config::Destination;
use pipefy_sync::engine::{sync, RunRequest, RunScope};
use pipefy_sync::pipefy::{Exchange, RequestObserver};
use pipefy_sync::report::{RowAction, RunStatus};
use pipefy_sync_tests::sync::{continue_late, run_across_hand_offs, Harness};

const TABLE: &str = "refined/customers";

fn dest(h: &Harness, name: &str, extra: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n"
    ))
}

fn csv(keys: impl IntoIterator<Item = usize>) -> String {
    let mut out = String::from("cid,name\n");
    for k in keys {
        out.push_str(&format!("B{k},Customer {k}\n"));
    }
    out
}

fn cards(h: &Harness) -> Vec<String> {
    h.card_keys("B")
}

fn by_keys(keys: &[&str]) -> RunRequest {
    RunRequest {
        trigger: "cli-key".into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..RunRequest::default()
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<(String, u16)>>);

impl RequestObserver for Seen {
    fn exchanged(&self, request: &serde_json::Value, exchange: Exchange<'_>) {
        let query = request["query"].as_str().unwrap_or_default().to_string();
        let status = match exchange {
            Exchange::Answered { status, .. } => status,
            Exchange::NoAnswer(_) => 0,
        };
        self.0.lock().unwrap().push((query, status));
    }
}

#[tokio::test]
async fn a_run_by_key_sends_that_row_only_and_records_no_other() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "by-key-one",
        "sync: { removed_rows: { action: delete, max_fraction: 1.0 } }",
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=5));

    let seen = Arc::new(Seen::default());
    let client = h.client();
    client.observe_requests(seen.clone());
    let ctx = h.context_with(client);
    let s = sync(&ctx, &d, by_keys(&["B2", "B9"])).await.unwrap();
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!((s.counts.read, s.counts.created), (1, 1), "{s:#?}");
    assert_eq!(h.mutations("createCard"), 1, "exactly one row sent");
    assert_eq!(cards(&h), ["B2"]);
    assert_eq!(s.keys, ["B2", "B9"]);
    assert_eq!(s.keys_not_found, ["B9"], "the key no row has is reported");
    let results = h.results(&s);
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0].key.as_deref(), Some("B2"));
    let exchanges = seen.0.lock().unwrap().clone();
    assert!(
        exchanges
            .iter()
            .any(|(q, status)| q.contains("createCard") && *status == 200),
        "the observer saw the create and its answer: {exchanges:#?}"
    );

    // Sent again by key although unchanged: an update, not a second card.
    let again = sync(&h.context(), &d, by_keys(&["B2"])).await.unwrap();
    assert_eq!(again.counts.updated, 1, "{again:#?}");
    assert_eq!(h.mutations("createCard"), 1);
    assert_eq!(cards(&h), ["B2"]);

    // The table run after it: the other four rows were never recorded, so they are
    // created now; B2 is known and unchanged. Nothing was removed on the way.
    let full = h.run(&d).await;
    assert_eq!(
        (
            full.counts.created,
            full.counts.unchanged,
            full.counts.removed
        ),
        (4, 1, 0),
        "{full:#?}"
    );
    assert_eq!(h.mutations("deleteCard"), 0);
    assert_eq!(cards(&h), ["B1", "B2", "B3", "B4", "B5"]);

    // A run by key removes nothing even when the table lost rows.
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=2));
    let keyed = sync(&h.context(), &d, by_keys(&["B1"])).await.unwrap();
    assert_eq!(keyed.counts.removed, 0, "{keyed:#?}");
    assert_eq!(h.mutations("deleteCard"), 0);
}

#[tokio::test]
async fn the_keys_survive_a_hand_off_and_a_hand_over() {
    let h = Harness::new().await;
    let d = dest(&h, "by-key-handoff", "");
    for f in 0..3 {
        h.write_file(&format!("{TABLE}/part-{f}.csv"), csv(f * 3 + 1..=f * 3 + 3));
    }
    // A deadline already past: the run hands off after every file; each continuation
    // reads the keys from the run's cursor.
    let (s, invocations) = run_across_hand_offs(h.context(), &d, by_keys(&["B2", "B8"])).await;
    assert!(invocations > 1, "the run handed off");
    assert_eq!(s.counts.created, 2, "{s:#?}");
    assert!(s.keys_not_found.is_empty(), "{s:#?}");
    assert_eq!(cards(&h), ["B2", "B8"]);

    // Another run holds the destination: the request by key is handed over, then done by
    // this invocation once the lease is free, still limited to its key.
    let state = h.hold_lease(&d.name, Duration::from_millis(500)).await;
    let handed = h
        .run_with(
            &d,
            RunRequest {
                lease_wait: Duration::ZERO,
                scope: RunScope::WholeTable,
                ..by_keys(&["B5"])
            },
        )
        .await;
    assert_eq!(handed.status, RunStatus::Completed, "{handed:#?}");
    assert_eq!(handed.keys, ["B5"], "{handed:#?}");
    assert_eq!(handed.counts.created, 1, "{handed:#?}");
    assert_eq!(cards(&h), ["B2", "B5", "B8"]);
    assert!(state.list_pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_by_key_over_a_big_file_still_hands_off_at_its_deadline() {
    let h = Harness::new().await;
    let d = dest(&h, "by-key-big-file", "");
    h.write_file(&format!("{TABLE}/big.csv"), csv(1..=10_000));
    // Every invocation's deadline is already past: the rows passed over move the cursor and
    // meet the deadline like sent ones, so the run hands off inside the file.
    let (s, invocations) = run_across_hand_offs(h.context(), &d, by_keys(&["B9999"])).await;
    assert!(
        invocations >= 3,
        "handed off inside the file: {invocations}"
    );
    assert_eq!((s.counts.read, s.counts.created), (1, 1), "{s:#?}");
    assert_eq!(cards(&h), ["B9999"]);
}

#[tokio::test]
async fn a_continuation_that_finds_the_destination_taken_hands_over_its_keys() {
    let h = Harness::new().await;
    // A short lease: the handed-off run's lapses before its continuation comes.
    let d = dest(&h, "by-key-late-continuation", "sync: { lease_seconds: 1 }");
    for f in 0..2 {
        h.write_file(&format!("{TABLE}/part-{f}.csv"), csv(f * 3 + 1..=f * 3 + 3));
    }
    // The continuation is late: its run's lease lapsed and another run holds the
    // destination.
    let s = continue_late(&h, &d, by_keys(&["B1", "B5"])).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(
        s.keys,
        ["B1", "B5"],
        "the handed-over work kept its keys: {s:#?}"
    );
    assert_eq!(cards(&h), ["B1", "B5"], "no other row was sent");
}

#[tokio::test]
async fn a_run_by_key_needs_a_key_and_a_first_run_where_the_table_is_backfilled() {
    let h = Harness::new().await;
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=2));
    let no_key = h.destination(
        "name: by-key-none\npipe_id: \"301\"\noperation: create_card\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n",
    );
    let err = sync(&h.context(), &no_key, by_keys(&["B1"]))
        .await
        .expect_err("no key to pick rows by");
    assert!(err.to_string().contains("has no key"), "{err}");

    let backfill = dest(
        &h,
        "by-key-backfill",
        "sync: { skip_initial_backfill: true }",
    );
    let err = sync(&h.context(), &backfill, by_keys(&["B1"]))
        .await
        .expect_err("the first run must record the table first");
    assert!(err.to_string().contains("skip_initial_backfill"), "{err}");
    assert_eq!(h.all_mutations(), 0, "nothing sent");
    // Once the first run has recorded the table, a row is sent by key.
    let first = h.run(&backfill).await;
    assert_eq!(first.counts.created, 0, "{first:#?}");
    let keyed = sync(&h.context(), &backfill, by_keys(&["B1"]))
        .await
        .unwrap();
    let results = h.results(&keyed);
    assert_eq!(results.len(), 1, "{results:#?}");
    assert!(
        matches!(results[0].action, RowAction::Updated | RowAction::Created),
        "{results:#?}"
    );
}
