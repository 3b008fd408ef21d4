//! Drift against the emulator over HTTP, with people's changes made through its GraphQL API:
//! a field edited by hand, a card deleted by hand and a card created by hand are each found
//! and reported with the key, the field and both values; nothing is written to Pipefy (the
//! emulator's mutation count stays) and the state is left as it was. The command line prints
//! the same, and a destination that records no baselines says its cards are untracked.

use std::process::Command;

use pipefy_sync::config::Destination;
use pipefy_sync::engine::{drift, DriftRequest, RunRequest};
use pipefy_sync::pipefy::{
    CreateCardInput, FieldOperation, FieldValueInput, Mutation, NodeFieldValue,
};
use pipefy_sync::report::{DriftLine, DriftState, DriftSummary};
use pipefy_sync_tests::sync::{read_jsonl, Harness, DEMO_TOKEN};
use pipefy_sync_tests::tools::{cli_binary, printed_count};
use serde_json::json;

const FILE: &str = "refined/customers/part-0001.csv";
const TABLE: &str = "cid,name,seats\nK1,Acme,3\nK2,Globex,4\nK3,Initech,5\n";

fn dest_yaml(name: &str, sync: &str) -> String {
    format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\nsync: {{ {sync} }}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n  seats: seats\n"
    )
}

async fn by_hand(h: &Harness, op: Mutation) -> Option<String> {
    let mut results = h.client().mutate(vec![op]).await.expect("sent");
    results.pop().expect("one result").expect("applied").id
}

fn card_id(h: &Harness, key: &str) -> String {
    let cards = h.cards_with("301", "external_id", key);
    assert_eq!(cards.len(), 1, "one card for {key}");
    cards[0].id.clone()
}

/// Syncs the table, then a person edits K1's name, deletes K2's card and makes a card of
/// their own (K9). Returns the id K2 had.
async fn people_change_pipefy(h: &Harness, d: &Destination) -> String {
    h.write_file(FILE, TABLE);
    let s = h.run(d).await;
    assert_eq!(s.counts.created, 3, "{s:#?}");
    let k1 = card_id(h, "K1");
    by_hand(
        h,
        Mutation::UpdateFieldsValues {
            node_id: k1,
            values: vec![NodeFieldValue {
                field_id: "customer_name".into(),
                value: json!("ACME Corporation"),
                operation: FieldOperation::Replace,
            }],
        },
    )
    .await;
    let k2 = card_id(h, "K2");
    by_hand(h, Mutation::DeleteCard { id: k2.clone() }).await;
    by_hand(
        h,
        Mutation::CreateCard(CreateCardInput {
            pipe_id: "301".into(),
            title: Some("Made by hand".into()),
            fields_attributes: vec![
                FieldValueInput {
                    field_id: "external_id".into(),
                    field_value: json!("K9"),
                },
                FieldValueInput {
                    field_id: "customer_name".into(),
                    field_value: json!("Hooli"),
                },
            ],
            ..CreateCardInput::default()
        }),
    )
    .await;
    k2
}

fn lines(h: &Harness, s: &DriftSummary) -> Vec<DriftLine> {
    let dir = h
        .reports_root()
        .join(&s.destination)
        .join(s.started_at.format("%Y-%m-%d").to_string())
        .join(&s.run_id)
        .join("drift");
    read_jsonl(&dir)
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("drift line"))
        .collect()
}

fn state_files(h: &Harness) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(&h.state_root())
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read state file");
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn drift_finds_an_edit_a_deletion_and_a_stranger_and_writes_nothing() {
    let h = Harness::new().await;
    let d = h.destination(&dest_yaml("drift", "track_edits: true"));
    let k2_id = people_change_pipefy(&h, &d).await;
    let mutations = h.all_mutations();
    let state_before = state_files(&h);
    let cards_before = h.snapshot().cards.len();

    let s = drift(
        &h.context(),
        &d,
        DriftRequest {
            trigger: "test".into(),
        },
    )
    .await
    .expect("drift succeeds");

    assert_eq!(
        h.all_mutations(),
        mutations,
        "drift writes nothing to Pipefy"
    );
    assert_eq!(h.snapshot().cards.len(), cards_before);
    assert_eq!(
        state_files(&h),
        state_before,
        "drift leaves the state alone"
    );
    let c = s.counts;
    assert_eq!(c.keys_in_ledger, 3, "{c:?}");
    assert_eq!(
        (c.in_sync, c.edited_in_pipefy, c.deleted_in_pipefy),
        (1, 1, 1),
        "{c:?}"
    );
    // K9, and whatever else the demo pipe holds that pipefy-sync did not write.
    let others = h
        .snapshot()
        .cards
        .iter()
        .filter(|card| card.pipe_id == "301")
        .count() as u64
        - 2;
    assert_eq!(c.unknown_to_ledger, others, "{c:?}");
    assert_eq!(c.read_in_pipefy, 2 + others);
    assert!(c.requests >= 2, "schema and at least one page: {c:?}");
    assert_eq!(s.tracked_targets, ["title", "customer_name", "seats"]);

    let lines = lines(&h, &s);
    let of = |state| -> Vec<&DriftLine> { lines.iter().filter(|l| l.state == state).collect() };
    let edited = of(DriftState::EditedInPipefy);
    assert_eq!(edited.len(), 1);
    assert_eq!(edited[0].key.as_deref(), Some("K1"));
    assert_eq!(edited[0].file.as_deref(), Some(FILE));
    assert_eq!(edited[0].line, Some(2));
    let edits: Vec<(&str, &str, &str)> = edited[0]
        .edits
        .iter()
        .map(|e| (e.field.as_str(), e.in_pipefy.as_str(), e.in_table.as_str()))
        .collect();
    assert_eq!(edits, [("customer_name", "ACME Corporation", "Acme")]);

    let deleted = of(DriftState::DeletedInPipefy);
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].key.as_deref(), Some("K2"));
    assert_eq!(deleted[0].id, k2_id);
    assert_eq!(deleted[0].line, Some(3));

    let unknown = of(DriftState::UnknownToLedger);
    assert!(
        unknown.iter().any(|l| l.key.as_deref() == Some("K9")),
        "{unknown:?}"
    );
    let in_sync = of(DriftState::InSync);
    assert_eq!(in_sync.len(), 1);
    assert_eq!(in_sync[0].key.as_deref(), Some("K3"));

    // The summary sits where run reports go.
    let summary_path = h
        .reports_root()
        .join("drift")
        .join(s.started_at.format("%Y-%m-%d").to_string())
        .join(&s.run_id)
        .join("summary.json");
    let written: DriftSummary =
        serde_json::from_str(&std::fs::read_to_string(summary_path).expect("summary written"))
            .expect("summary parses");
    assert_eq!(written.kind, "drift");
    assert_eq!(written.counts, s.counts);

    // The next sync works from the ledger as it was: an unchanged table sends nothing; a
    // full resync puts back the card deleted by hand.
    let rerun = h.run(&d).await;
    assert_eq!(rerun.counts.unchanged, 3, "{rerun:#?}");
    let resync = h
        .run_with(
            &d,
            RunRequest {
                trigger: "test".into(),
                full_resync: true,
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(
        resync.counts.recreated, 1,
        "K2 is created again: {resync:#?}"
    );
}

#[tokio::test]
async fn without_baselines_cards_are_untracked_and_deletions_still_found() {
    let h = Harness::new().await;
    let d = h.destination(&dest_yaml("drift-overwrite", "on_conflict: overwrite"));
    people_change_pipefy(&h, &d).await;
    let mutations = h.all_mutations();
    let s = drift(&h.context(), &d, DriftRequest::default())
        .await
        .expect("drift succeeds");
    assert_eq!(h.all_mutations(), mutations);
    let c = s.counts;
    assert_eq!(
        (c.untracked, c.in_sync, c.edited_in_pipefy),
        (2, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.deleted_in_pipefy, 1, "{c:?}");
    assert!(s.tracked_targets.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_prints_what_drift_found() {
    let h = Harness::new().await;
    let d = h.destination(&dest_yaml("drift-cli", "track_edits: true"));
    people_change_pipefy(&h, &d).await;
    let mutations = h.all_mutations();
    let dest_file = h.dir.path().join("drift-cli.yaml");
    std::fs::write(
        &dest_file,
        format!(
            "{}token: {{ env: DRIFT_TEST_PIPEFY_TOKEN }}\nendpoint: {}\n",
            dest_yaml("drift-cli", "track_edits: true")
                .replace("${DATA}", &h.data_root().display().to_string()),
            h.emulator.graphql_url()
        ),
    )
    .expect("write destination");
    let out = Command::new(cli_binary())
        .arg("drift")
        .arg(&dest_file)
        .arg("--state")
        .arg(h.state_root())
        .arg("--reports")
        .arg(h.reports_root())
        .env("DRIFT_TEST_PIPEFY_TOKEN", DEMO_TOKEN)
        .output()
        .expect("run pipefy-sync drift");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert_eq!(h.all_mutations(), mutations);
    for expected in [
        "edited_in_pipefy",
        "customer_name: Pipefy has \"ACME Corporation\", the table has \"Acme\"",
        "deleted_in_pipefy",
        "K2",
        "unknown_to_ledger",
        "K9",
    ] {
        assert!(stdout.contains(expected), "'{expected}' missing:\n{stdout}");
    }
    let count = |label: &str| printed_count(&stdout, label);
    assert_eq!(count("edited in Pipefy"), Some(1), "{stdout}");
    assert_eq!(count("deleted in Pipefy"), Some(1), "{stdout}");
    assert_eq!(count("in sync"), Some(1), "{stdout}");
}
