//! Run safety against the emulator over HTTP and the real engine: removals act only on
//! knowledge, the guards hold, removals go through windows across hand-offs and are previewed
//! by dry runs, and a run that loses its lease stops sending while another takes over.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use pipefy_emulator::Faults;
use pipefy_sync::config::Destination;
use pipefy_sync::engine::{sync, RunContext, RunRequest};
use pipefy_sync::report::{RowAction, RunStatus};
use pipefy_sync::source::formats::flate2;
use pipefy_sync::store::{LocalStore, RefusingRenewals};
use pipefy_sync_tests::sync::{assert_counts_add_up, continue_late, run_across_hand_offs, Harness};

const TABLE: &str = "refined/customers";

fn dest(h: &Harness, name: &str, removed: &str, extra: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\nsync: {{ removed_rows: {removed} }}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n  seats: seats\n"
    ))
}

fn csv(keys: impl IntoIterator<Item = usize>) -> String {
    let mut out = String::from("cid,name,seats\n");
    for k in keys {
        out.push_str(&format!("K{k},Customer {k},{k}\n"));
    }
    out
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn cards(h: &Harness) -> Vec<String> {
    h.card_keys("K")
}

#[tokio::test]
async fn a_bad_cell_and_a_broken_file_never_delete_a_card() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "safety-bad-cell",
        "{ action: delete, max_fraction: 1.0 }",
        "",
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=4));
    h.write_file(&format!("{TABLE}/b.csv.gz"), gzip(&csv(5..=6)));
    let first = h.run(&d).await;
    assert_eq!(first.counts.created, 6, "{first:#?}");

    // K2's seats is no number now, and b.csv.gz is cut off in the middle.
    h.write_file(
        &format!("{TABLE}/a.csv"),
        "cid,name,seats\nK1,Customer 1,1\nK2,Customer 2,many\nK3,Customer 3,3\nK4,Customer 4,4\n",
    );
    let whole = gzip(&csv(5..=6));
    h.write_file(&format!("{TABLE}/b.csv.gz"), &whole[..whole.len() / 2]);
    let second = h.run(&d).await;
    assert_eq!(h.mutations("deleteCard"), 0, "{second:#?}");
    assert_eq!(second.counts.removed, 0);
    let why = second
        .removal_skipped
        .as_deref()
        .expect("the summary says why");
    assert!(why.contains("b.csv.gz"), "{why}");
    assert_eq!(cards(&h), ["K1", "K2", "K3", "K4", "K5", "K6"]);
    // The bad cell is reported with its file, line and field; nothing is lost.
    let failed = h.failed_rows(&second);
    let k2 = failed
        .iter()
        .find(|f| f["cid"] == "K2")
        .unwrap_or_else(|| panic!("K2 in the failed rows: {failed:#?}"));
    assert_eq!(k2["_source_file"], format!("{TABLE}/a.csv"));
    assert_eq!(k2["_source_line"], 3);
    assert!(
        k2["_error_message"].as_str().unwrap().contains("seats"),
        "{k2}"
    );
    assert_counts_add_up(&second);

    // A bad cell alone (every file readable) still keeps its card: its key was read.
    h.write_file(&format!("{TABLE}/b.csv.gz"), gzip(&csv(5..=6)));
    let third = h.run(&d).await;
    assert_eq!(third.removal_skipped, None, "{third:#?}");
    assert_eq!(h.mutations("deleteCard"), 0);
    assert_eq!(cards(&h), ["K1", "K2", "K3", "K4", "K5", "K6"]);
}

#[tokio::test]
async fn a_row_whose_key_cannot_be_read_stops_the_removal_pass() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "safety-no-key",
        "{ action: delete, max_fraction: 1.0 }",
        "",
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=3));
    assert_eq!(h.run(&d).await.counts.created, 3);
    // K3 lost its key cell: it may be K3 still, so nothing is removed.
    h.write_file(
        &format!("{TABLE}/a.csv"),
        "cid,name,seats\nK1,Customer 1,1\nK2,Customer 2,2\n,Customer 3,3\n",
    );
    let s = h.run(&d).await;
    assert_eq!(h.mutations("deleteCard"), 0, "{s:#?}");
    assert!(
        s.removal_skipped
            .as_deref()
            .unwrap_or("")
            .contains("a.csv:4"),
        "{s:#?}"
    );
    assert_eq!(cards(&h), ["K1", "K2", "K3"]);
}

#[tokio::test]
async fn a_header_only_table_removes_nothing() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "safety-empty",
        "{ action: delete, max_fraction: 1.0 }",
        "",
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=3));
    assert_eq!(h.run(&d).await.counts.created, 3);
    h.write_file(&format!("{TABLE}/a.csv"), "cid,name,seats\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.read, 0);
    assert_eq!(h.mutations("deleteCard"), 0, "{s:#?}");
    assert!(
        s.removal_skipped
            .as_deref()
            .unwrap_or("")
            .contains("0 rows"),
        "{s:#?}"
    );
    assert_eq!(cards(&h), ["K1", "K2", "K3"]);
}

#[tokio::test]
async fn losing_half_the_rows_trips_the_guard_and_the_override_passes() {
    let h = Harness::new().await;
    let d = dest(&h, "safety-guard", "{ action: delete }", "");
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=10));
    assert_eq!(h.run(&d).await.counts.created, 10);
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=5));

    // A dry run previews nothing past the guard either.
    let preview = h
        .run_with(
            &d,
            RunRequest {
                dry_run: true,
                ..RunRequest::default()
            },
        )
        .await;
    assert!(preview
        .removal_skipped
        .as_deref()
        .unwrap_or("")
        .starts_with("REMOVAL_GUARD: 5 of the destination's 10 keys (50.0 %)"));

    let guarded = h.run(&d).await;
    assert_eq!(h.mutations("deleteCard"), 0, "{guarded:#?}");
    let why = guarded.removal_skipped.as_deref().unwrap_or("");
    assert!(
        why.starts_with("REMOVAL_GUARD: 5 of the destination's 10 keys"),
        "{why}"
    );
    assert!(why.contains("allow_mass_removal"), "{why}");
    assert_eq!(
        h.summary_file(&guarded).removal_skipped.as_deref(),
        Some(why)
    );
    assert_eq!(cards(&h).len(), 10);

    // The dry run with the override shows exactly what the real run will remove.
    let preview = h
        .run_with(
            &d,
            RunRequest {
                dry_run: true,
                allow_mass_removal: true,
                ..RunRequest::default()
            },
        )
        .await;
    let would: Vec<_> = h
        .results(&preview)
        .into_iter()
        .filter(|r| r.action == RowAction::WouldRemove)
        .collect();
    assert_eq!(would.len(), 5, "{would:#?}");
    assert_eq!(preview.counts.removed, 5);
    assert_eq!(h.mutations("deleteCard"), 0, "a dry run writes nothing");

    let allowed = h
        .run_with(
            &d,
            RunRequest {
                allow_mass_removal: true,
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(allowed.removal_skipped, None, "{allowed:#?}");
    assert_eq!(allowed.counts.removed, 5);
    assert_eq!(h.mutations("deleteCard"), 5);
    assert_eq!(cards(&h), ["K1", "K2", "K3", "K4", "K5"]);
    let mut removed_ids: Vec<String> = h
        .results(&allowed)
        .into_iter()
        .filter(|r| r.action == RowAction::Deleted)
        .filter_map(|r| r.id)
        .collect();
    removed_ids.sort();
    assert_eq!(removed_ids, {
        let mut w: Vec<String> = would.into_iter().filter_map(|r| r.id).collect();
        w.sort();
        w
    });
}

#[tokio::test]
async fn removals_continue_across_hand_offs_and_see_every_file_read_before() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "safety-hand-off",
        "{ action: delete, max_fraction: 1.0 }",
        "limits: { mutations_per_request: 2, concurrency: 1 }",
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=4));
    h.write_file(&format!("{TABLE}/b.csv"), csv(5..=8));
    h.write_file(&format!("{TABLE}/c.csv"), csv(9..=12));
    assert_eq!(h.run(&d).await.counts.created, 12);

    // Each file keeps two rows; six keys left the table.
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=2));
    h.write_file(&format!("{TABLE}/b.csv"), csv(5..=6));
    h.write_file(&format!("{TABLE}/c.csv"), csv(9..=10));
    let (s, invocations) = run_across_hand_offs(h.context(), &d, RunRequest::default()).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    // Three files, then three windows of two removals: each ends an invocation.
    assert!(invocations >= 5, "{invocations} invocations");
    assert_eq!(s.invocations as usize, invocations);
    assert_eq!(
        (s.counts.read, s.counts.unchanged, s.counts.removed),
        (6, 6, 6),
        "{s:#?}"
    );
    assert_eq!(h.mutations("deleteCard"), 6);
    assert_eq!(cards(&h), ["K1", "K10", "K2", "K5", "K6", "K9"]);
    // One report for the whole run, every removal in it.
    let results = h.results(&s);
    assert_eq!(
        results
            .iter()
            .filter(|r| r.action == RowAction::Deleted)
            .count(),
        6
    );
    assert_eq!(h.summary_file(&s).counts, s.counts);
    // The next run finds nothing to remove.
    let again = h.run(&d).await;
    assert_eq!((again.counts.removed, again.removal_skipped), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_renew_its_lease_stops_sending_while_another_takes_over() {
    let h = Harness::new().await;
    // Slow requests, so that the first run is still sending when its lease runs out.
    h.emulator.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    const ROWS: usize = 400;
    let d = dest(
        &h,
        "safety-lease",
        "{ action: ignore }",
        "limits: { mutations_per_request: 4, concurrency: 1 }",
    );
    let mut d = d;
    d.sync.lease_seconds = 2;
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=ROWS));
    let state = Arc::new(RefusingRenewals::new(
        Arc::new(LocalStore::new(h.state_root())),
        usize::MAX,
    ));
    let base = h.context();
    let fenced_ctx = RunContext {
        state_store: state.clone(),
        ..base.clone()
    };
    let first = {
        let d = d.clone();
        tokio::spawn(async move {
            sync(
                &fenced_ctx,
                &d,
                RunRequest {
                    trigger: "first".into(),
                    ..RunRequest::default()
                },
            )
            .await
        })
    };
    // The second run starts while the first holds the lease, and waits for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = sync(
        &base,
        &d,
        RunRequest {
            trigger: "second".into(),
            lease_wait: Duration::from_secs(30),
            ..RunRequest::default()
        },
    )
    .await
    .expect("the second run");
    let first = first
        .await
        .unwrap()
        .expect("the first run ends with a status, not an error");
    assert_eq!(first.status, RunStatus::LeaseLost, "{first:#?}");
    assert!(first.error.is_some());
    assert!(state.refused() > 0, "renewals were refused");
    assert!(
        first.counts.created < ROWS as u64,
        "the first run stopped before the end: {first:#?}"
    );
    assert!(
        first.counts.not_attempted > 0 || first.counts.read < ROWS as u64,
        "{first:#?}"
    );
    assert_eq!(second.status, RunStatus::Completed, "{second:#?}");
    // Every key exactly once.
    let keys = cards(&h);
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(keys.len(), ROWS, "one card per row");
    assert_eq!(unique.len(), ROWS, "no duplicates");
}

#[tokio::test]
async fn a_late_continuation_of_an_upload_stays_scoped_to_its_files() {
    let h = Harness::new().await;
    // A short lease: the handed-off run's lapses before its continuation comes.
    let d = dest(
        &h,
        "safety-late-continuation",
        "{ action: delete, max_fraction: 1.0 }, lease_seconds: 1",
        "",
    );
    let (a, b, c) = (
        format!("{TABLE}/a.csv"),
        format!("{TABLE}/b.csv"),
        format!("{TABLE}/c.csv"),
    );
    h.write_file(&a, csv(1..=1));
    h.write_file(&b, csv(2..=2));
    h.write_file(&c, csv(3..=3));
    // An upload of a.csv and b.csv hands off after the first file; its continuation is
    // late: the lease lapsed and another run holds the destination.
    let s = continue_late(
        &h,
        &d,
        RunRequest {
            trigger: "upload".into(),
            scope: pipefy_sync::engine::RunScope::Files(vec![a.clone(), b.clone()]),
            ..RunRequest::default()
        },
    )
    .await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(
        s.source_files,
        vec![a, b],
        "the upload's files, not the whole table"
    );
    assert_eq!(cards(&h), ["K1", "K2"], "c.csv was not read");
    assert_eq!(h.mutations("deleteCard"), 0);
}

#[tokio::test]
async fn a_deferred_upload_stays_scoped_to_its_files() {
    let h = Harness::new().await;
    let d = dest(
        &h,
        "safety-defer",
        "{ action: delete, max_fraction: 1.0 }",
        "",
    );
    let a = format!("{TABLE}/a.csv");
    let b = format!("{TABLE}/b.csv");
    h.write_file(&a, csv(1..=2));
    h.write_file(&b, csv(3..=3));
    assert_eq!(h.run(&d).await.counts.created, 3);
    // b.csv now holds K4 instead of K3; only a.csv is uploaded.
    h.write_file(&b, csv(4..=4));
    // Another run holds the destination for half a second: the upload hands its work over,
    // then finds the lease free and does it itself.
    let state = h.hold_lease(&d.name, Duration::from_millis(500)).await;
    let s = h
        .run_with(
            &d,
            RunRequest {
                trigger: "upload".into(),
                scope: pipefy_sync::engine::RunScope::Files(vec![a.clone()]),
                lease_wait: Duration::ZERO,
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(s.source_files, vec![a]);
    assert_eq!(
        (s.counts.read, s.counts.unchanged, s.counts.removed),
        (2, 2, 0),
        "{s:#?}"
    );
    assert_eq!(h.mutations("deleteCard"), 0);
    assert_eq!(
        cards(&h),
        ["K1", "K2", "K3"],
        "b.csv was not read, K3 not removed"
    );
    assert!(
        state.list_pending().await.unwrap().is_empty(),
        "the handed-over work is done"
    );
}

#[tokio::test]
async fn intents_of_a_run_carry_its_id_from_the_first_window() {
    let h = Harness::new().await;
    // No key: a create Pipefy does not confirm cannot be looked up, so its intent stays.
    let d = h.destination(
        "name: safety-intents\npipe_id: \"301\"\noperation: create_card\nsync: { ambiguous_settle_seconds: 0 }\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n  external_id: cid\n"
    );
    h.write_file(&format!("{TABLE}/a.csv"), csv(1..=2));
    // Pipefy applies every create but answers with an error: the outcome is unknown.
    h.emulator.set_faults(Faults {
        applied_but_failed_rate: 1.0,
        ..Faults::default()
    });
    let s = sync(&h.context(), &d, RunRequest::default()).await.unwrap();
    h.emulator.set_faults(Faults::default());
    assert_eq!(s.counts.failed, 2, "{s:#?}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(h.state_root().join(&d.name).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let intents = manifest["intents"].as_array().unwrap();
    assert_eq!(intents.len(), 2, "{manifest:#}");
    for i in intents {
        assert_eq!(i["run_id"], s.run_id.as_str(), "{i:#}");
    }
}
