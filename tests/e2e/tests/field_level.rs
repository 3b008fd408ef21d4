//! Field-level sync against the Pipefy emulator over HTTP: only the targets that changed are
//! sent, write policies (`always`, `if_empty`, `on_create`), list modes (`replace`, `add`),
//! update-only and create-only upserts, mapping changes, and a ledger written before targets
//! were fingerprinted, upgraded in place.
//!
//! People's edits are made through the emulator's GraphQL API, as a person's would be.

use std::path::Path;

use pipefy_sync::config::Destination;
use pipefy_sync::pipefy::{FieldOperation, Mutation, NodeFieldValue, UpdateCardInput};
use pipefy_sync::report::{RowAction, RunSummary};
use pipefy_sync::state::StateStore;
use pipefy_sync_tests::sync::{assert_counts_add_up, field_text, Harness};
use serde_json::json;

const FILE: &str = "refined/customers/part-0001.csv";

fn dest(h: &Harness, name: &str, extra: &str, mapping: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{mapping}"
    ))
}

fn card(h: &Harness, key: &str) -> pipefy_emulator::Card {
    let cards = h.cards_with("301", "external_id", key);
    assert_eq!(cards.len(), 1, "one card for {key}: {cards:#?}");
    cards.into_iter().next().expect("one card")
}

/// A person's edit: one request, as the Pipefy UI's would be.
async fn edit(h: &Harness, op: Mutation) {
    let results = h.client().mutate(vec![op]).await.expect("edit sent");
    assert!(
        results.iter().all(|r| r.is_ok()),
        "edit applied: {results:?}"
    );
}

async fn first_run(h: &Harness, d: &Destination, csv: &str) -> RunSummary {
    h.write_file(FILE, csv);
    let s = h.run(d).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.failed_rows(), 0, "{s:#?}");
    h.emulator.reset_stats();
    s
}

const MAPPING: &str = "  title: name\n  customer_name: name\n  plan: plan\n  seats: seats\n";

#[tokio::test]
async fn one_changed_field_is_one_update_with_one_value() {
    let h = Harness::new().await;
    let d = dest(&h, "fl-one-field", "", MAPPING);
    let s = first_run(
        &h,
        &d,
        "cid,name,plan,seats\nF1,One,Pro,3\nF2,Two,Free,1\nF3,Three,Pro,7\n",
    )
    .await;
    assert_eq!(s.counts.created, 3);

    h.write_file(
        FILE,
        "cid,name,plan,seats\nF1,One,Pro,4\nF2,Two,Free,1\nF3,Three,Pro,7\n",
    );
    let s = h.run(&d).await;
    assert_eq!((s.counts.updated, s.counts.unchanged), (1, 2), "{s:#?}");
    assert_eq!(h.mutations("updateFieldsValues"), 1);
    assert_eq!(h.emulator.stats().field_values_updated, 1);
    assert_eq!(h.all_mutations(), 1, "{:?}", h.emulator.stats().mutations);
    assert_eq!(field_text(card(&h, "F1").fields.get("seats")), "4");
}

#[tokio::test]
async fn an_attribute_change_alone_is_one_update_card() {
    let h = Harness::new().await;
    let d = dest(&h, "fl-attribute", "", MAPPING);
    first_run(&h, &d, "cid,name,plan,seats\nA1,Old title,Pro,3\n").await;

    // `name` feeds the title and customer_name; a template on the title alone changes
    // only the title.
    let d = dest(
        &h,
        "fl-attribute",
        "",
        "  title: { template: \"{name}!\" }\n  customer_name: name\n  plan: plan\n  seats: seats\n",
    );
    let s = h.run(&d).await;
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    assert_eq!(h.mutations("updateCard"), 1);
    assert_eq!(h.all_mutations(), 1, "{:?}", h.emulator.stats().mutations);
    assert_eq!(card(&h, "A1").title, "Old title!");
}

#[tokio::test]
async fn a_new_target_is_sent_once_to_every_row_and_a_removed_one_sends_nothing() {
    let h = Harness::new().await;
    let d = dest(&h, "fl-mapping", "", MAPPING);
    first_run(
        &h,
        &d,
        "cid,name,plan,seats,email\nM1,One,Pro,3,a@x.io\nM2,Two,Free,1,b@x.io\n",
    )
    .await;

    let d = dest(&h, "fl-mapping", "", &format!("{MAPPING}  email: email\n"));
    let s = h.run(&d).await;
    assert_eq!(s.counts.updated, 2, "{s:#?}");
    assert_eq!(h.mutations("updateFieldsValues"), 2);
    assert_eq!(h.emulator.stats().field_values_updated, 2);
    assert_eq!(h.all_mutations(), 2);
    h.emulator.reset_stats();

    // The same mapping again: nothing. Without `seats`: nothing sent either.
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 2, "{s:#?}");
    let d = dest(
        &h,
        "fl-mapping",
        "",
        "  title: name\n  customer_name: name\n  plan: plan\n  email: email\n",
    );
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 2, "{s:#?}");
    assert_eq!(h.all_mutations(), 0);
}

#[tokio::test]
async fn if_empty_fills_an_empty_field_and_leaves_a_filled_one() {
    let h = Harness::new().await;
    let mapping = "  title: name\n  customer_name: name\n  email: { column: email, write: if_empty }\n  seats: seats\n";
    let d = dest(&h, "fl-if-empty", "", mapping);
    first_run(&h, &d, "cid,name,email,seats\nE1,One,,1\nE2,Two,,1\n").await;

    // A person fills E2's email in Pipefy.
    let e2 = card(&h, "E2").id;
    edit(
        &h,
        Mutation::UpdateFieldsValues {
            node_id: e2.clone(),
            values: vec![NodeFieldValue {
                field_id: "email".into(),
                value: json!("person@example.com"),
                operation: FieldOperation::Replace,
            }],
        },
    )
    .await;
    h.emulator.reset_stats();

    h.write_file(
        FILE,
        "cid,name,email,seats\nE1,One,one@example.com,1\nE2,Two,two@example.com,1\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.current_value_reads, 2, "{s:#?}");
    assert_eq!(
        field_text(card(&h, "E1").fields.get("email")),
        "one@example.com"
    );
    assert_eq!(
        field_text(card(&h, "E2").fields.get("email")),
        "person@example.com"
    );
    // One value sent (E1's email); E2 needed nothing.
    assert_eq!(h.emulator.stats().field_values_updated, 1);
    // E2 is recorded as seen: unchanged, with nothing sent.
    assert_eq!((s.counts.updated, s.counts.unchanged), (1, 1), "{s:#?}");
    h.emulator.reset_stats();
    let s = h.run(&d).await;
    assert_eq!(
        (s.counts.unchanged, s.counts.current_value_reads),
        (2, 0),
        "{s:#?}"
    );
    assert_eq!(h.all_mutations(), 0);
}

#[tokio::test]
async fn on_create_fields_are_written_once_and_never_updated() {
    let h = Harness::new().await;
    let mapping =
        "  title: name\n  customer_name: name\n  plan: { column: plan, write: on_create }\n";
    let d = dest(&h, "fl-on-create", "", mapping);
    first_run(&h, &d, "cid,name,plan\nC1,One,Pro\n").await;
    assert_eq!(field_text(card(&h, "C1").fields.get("plan")), "Pro");

    h.write_file(FILE, "cid,name,plan\nC1,One,Free\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 1, "{s:#?}");
    assert_eq!(h.all_mutations(), 0);
    // With the name changed too, only customer_name and the title go.
    h.write_file(FILE, "cid,name,plan\nC1,Uno,Enterprise\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    let c = card(&h, "C1");
    assert_eq!(field_text(c.fields.get("plan")), "Pro");
    assert_eq!(field_text(c.fields.get("customer_name")), "Uno");
    assert_eq!(c.title, "Uno");
}

#[tokio::test]
async fn add_mode_keeps_a_label_a_person_added() {
    let h = Harness::new().await;
    let mapping = "  title: name\n  customer_name: name\n  label_ids: { column: tags, transforms: [{ split: { separator: \",\" } }], mode: add }\n  tags: { column: tags, transforms: [{ split: { separator: \",\" } }], mode: add }\n";
    let d = dest(&h, "fl-add", "", mapping);
    first_run(&h, &d, "cid,name,tags\nL1,One,VIP\n").await;
    let c = card(&h, "L1");
    assert_eq!(c.labels, ["310001"]);

    // A person adds the label "Churn risk" (310002) to the card and to the tags field.
    edit(
        &h,
        Mutation::UpdateCard(UpdateCardInput {
            id: c.id.clone(),
            label_ids: Some(vec!["310001".into(), "310002".into()]),
            ..UpdateCardInput::default()
        }),
    )
    .await;
    edit(
        &h,
        Mutation::UpdateFieldsValues {
            node_id: c.id.clone(),
            values: vec![NodeFieldValue {
                field_id: "tags".into(),
                value: json!(["310002"]),
                operation: FieldOperation::Add,
            }],
        },
    )
    .await;
    h.emulator.reset_stats();

    // The table adds a third label; the person's label stays on both.
    h.write_file(FILE, "cid,name,tags\nL1,One,\"VIP, New\"\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    assert_eq!(s.counts.current_value_reads, 1);
    let c = card(&h, "L1");
    let mut labels = c.labels.clone();
    labels.sort();
    assert_eq!(labels, ["310001", "310002", "310003"]);
    let tags = field_text(c.fields.get("tags"));
    for id in ["310001", "310002", "310003"] {
        assert!(tags.contains(id), "tags field keeps {id}: {tags}");
    }
}

#[tokio::test]
async fn replace_mode_drops_a_label_the_row_does_not_carry() {
    let h = Harness::new().await;
    let mapping = "  title: name\n  customer_name: name\n  label_ids: { column: tags, transforms: [{ split: { separator: \",\" } }] }\n";
    let d = dest(&h, "fl-replace", "", mapping);
    first_run(&h, &d, "cid,name,tags\nR1,One,\"VIP, Churn risk\"\n").await;
    h.write_file(FILE, "cid,name,tags\nR1,One,VIP\n");
    h.run(&d).await;
    assert_eq!(card(&h, "R1").labels, ["310001"]);
}

#[tokio::test]
async fn update_only_never_creates_and_create_only_never_updates() {
    let h = Harness::new().await;
    let d = dest(&h, "fl-modes", "", MAPPING);
    first_run(&h, &d, "cid,name,plan,seats\nU1,One,Pro,3\n").await;

    let update_only = dest(&h, "fl-update-only", "upsert: { create: false }", MAPPING);
    h.write_file(
        FILE,
        "cid,name,plan,seats\nU1,One,Pro,5\nU2,Nobody,Free,1\n",
    );
    let s = h.run(&update_only).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.updated, s.counts.failed), (1, 1), "{s:#?}");
    assert_eq!(h.mutations("createCard"), 0);
    assert!(h.cards_with("301", "external_id", "U2").is_empty());
    let failed = h.failed_rows(&s);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["_error_code"], "NOT_FOUND", "{failed:#?}");
    assert_eq!(failed[0]["_source_line"], 3);
    assert_eq!(field_text(card(&h, "U1").fields.get("seats")), "5");
    h.emulator.reset_stats();

    let create_only = dest(&h, "fl-create-only", "upsert: { update: false }", MAPPING);
    h.write_file(FILE, "cid,name,plan,seats\nU1,One,Pro,9\nU3,Three,Free,1\n");
    let s = h.run(&create_only).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.exists), (1, 1), "{s:#?}");
    assert_eq!(
        h.mutations("updateFieldsValues") + h.mutations("updateCard"),
        0
    );
    assert_eq!(field_text(card(&h, "U1").fields.get("seats")), "5");
    let results = h.results(&s);
    assert_eq!(
        results
            .iter()
            .find(|r| r.key.as_deref() == Some("U1"))
            .map(|r| r.action),
        Some(RowAction::Exists)
    );
    // Known to the ledger now, U3 changed: still left alone.
    h.write_file(FILE, "cid,name,plan,seats\nU3,Three,Pro,2\n");
    let s = h.run(&create_only).await;
    assert_eq!(s.counts.exists, 1, "{s:#?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// `tests/fixtures/ledger-v1`: the state a run of the previous release left after creating
/// three cards from this table with this mapping (a `PSL1` ledger segment, no targets).
#[tokio::test]
async fn a_ledger_of_the_previous_format_is_upgraded_without_sending_anything() {
    let h = Harness::new().await;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger-v1");
    std::fs::create_dir_all(h.state_root()).expect("mkdir state");
    copy_dir(&fixture, &h.state_root());
    h.write_file(
        FILE,
        "cid,name,plan,seats,tags,due\nL1,Ledger One,Pro,3,VIP,2026-03-01T10:00:00Z\nL2,Ledger Two,Free,1,,\nL3,Ledger Three,Pro,7,\"VIP, Churn risk\",2026-04-01T09:30:00Z\n",
    );
    let d = dest(
        &h,
        "upgrade",
        "",
        "  title: name\n  customer_name: name\n  plan: plan\n  seats: seats\n  label_ids: { column: tags, transforms: [{ split: { separator: \",\" } }] }\n  due_date: due\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.unchanged, 3, "{s:#?}");
    assert_eq!(h.all_mutations(), 0, "{:?}", h.emulator.stats().mutations);
    assert!(
        h.emulator.stats().queries.keys().all(|q| q == "pipe"),
        "{:?}",
        h.emulator.stats().queries
    );

    // The ledger now holds a fingerprint per target for every key.
    let store = h.local_store(&h.state_root());
    let state = StateStore::new(store, "", "upgrade");
    let loaded = state.load_manifest().await.expect("manifest");
    let ledger = state.load_ledger(&loaded.manifest).await.expect("ledger");
    assert_eq!(ledger.len(), 3);
    // L2 has no tags and no due date: those targets are left alone, not fingerprinted.
    let mut per_key: Vec<usize> = ledger.iter().map(|(_, e)| e.targets.len()).collect();
    per_key.sort_unstable();
    assert_eq!(per_key, [4, 6, 6]);
    // And a rerun is unchanged, with nothing more to record.
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 3, "{s:#?}");
    assert_eq!(h.all_mutations(), 0);
}

#[tokio::test]
async fn records_send_only_their_changed_field_and_fill_if_empty_from_the_record() {
    let h = Harness::new().await;
    let records = |mapping: &str| {
        h.destination(&format!(
            "name: fl-records\ntable_id: tbl_accounts\noperation: upsert_record\nkey: {{ columns: [code], field: code }}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: accounts\nmapping:\n{mapping}"
        ))
    };
    let d = records("  code: code\n  name: name\n  region: { column: region, write: if_empty }\n");
    let accounts = "refined/accounts/part-0001.csv";
    h.write_file(accounts, "code,name,region\nQ1,Q one,APAC\nQ2,Q two,\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.created, 2, "{s:#?}");
    h.emulator.reset_stats();

    h.write_file(
        accounts,
        "code,name,region\nQ1,Q uno,LATAM\nQ2,Q two,Europe\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(
        s.counts.current_value_reads,
        2,
        "{s:#?} {:?}",
        h.failed_rows(&s)
    );
    // Q1: its name (region is filled); Q2: its empty region. One value each.
    assert_eq!(h.mutations("updateFieldsValues"), 2);
    assert_eq!(h.emulator.stats().field_values_updated, 2);
    assert_eq!(h.mutations("updateTableRecord"), 0);
    let snap = h.snapshot();
    let region_of = |code: &str| {
        snap.records
            .iter()
            .find(|r| field_text(r.fields.get("code")) == code)
            .map(|r| field_text(r.fields.get("region")))
    };
    assert_eq!(region_of("Q1").as_deref(), Some("APAC"));
    assert_eq!(region_of("Q2").as_deref(), Some("Europe"));
}
