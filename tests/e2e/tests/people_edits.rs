//! People's edits against the emulator over HTTP, made through its GraphQL API as a person's
//! would be: with `sync.on_conflict: keep_edits` a value a person changed in Pipefy survives a
//! rerun that changes it in the table (and the row's result says so); with `overwrite` the
//! table wins; a mapping entry's own `on_conflict` overrides the destination's.

use pipefy_sync::config::Destination;
use pipefy_sync::pipefy::{FieldOperation, Mutation, NodeFieldValue, UpdateCardInput};
use pipefy_sync::report::RowAction;
use pipefy_sync_tests::sync::{assert_counts_add_up, field_text, Harness};
use serde_json::json;

const FILE: &str = "refined/customers/part-0001.csv";

fn dest(h: &Harness, name: &str, on_conflict: &str, mapping: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\nsync: {{ on_conflict: {on_conflict} }}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{mapping}"
    ))
}

const MAPPING: &str = "  title: name\n  customer_name: name\n  seats: seats\n";

fn card(h: &Harness, key: &str) -> pipefy_emulator::Card {
    let cards = h.cards_with("301", "external_id", key);
    assert_eq!(cards.len(), 1, "one card for {key}");
    cards.into_iter().next().expect("one card")
}

/// A person sets `field` of the card of `key` to `value` in Pipefy.
async fn person_sets(h: &Harness, key: &str, field: &str, value: &str) {
    let id = card(h, key).id;
    let op = if field == "title" {
        Mutation::UpdateCard(UpdateCardInput {
            id,
            title: Some(value.to_string()),
            ..UpdateCardInput::default()
        })
    } else {
        Mutation::UpdateFieldsValues {
            node_id: id,
            values: vec![NodeFieldValue {
                field_id: field.to_string(),
                value: json!(value),
                operation: FieldOperation::Replace,
            }],
        }
    };
    let results = h.client().mutate(vec![op]).await.expect("edit sent");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

#[tokio::test]
async fn keep_edits_keeps_a_hand_edit_and_overwrite_does_not() {
    for (on_conflict, kept) in [("keep_edits", true), ("overwrite", false)] {
        let h = Harness::new().await;
        let d = dest(&h, "edits", on_conflict, MAPPING);
        h.write_file(FILE, "cid,name,seats\nK1,Acme,3\nK2,Globex,4\n");
        let s = h.run(&d).await;
        assert_eq!(s.counts.created, 2, "{s:#?}");

        person_sets(&h, "K1", "customer_name", "ACME Corporation").await;
        person_sets(&h, "K1", "title", "ACME Corp (key account)").await;
        h.emulator.reset_stats();

        // The table changes the name (title and customer_name) and the seats.
        h.write_file(FILE, "cid,name,seats\nK1,Acme Inc,5\nK2,Globex,4\n");
        let s = h.run(&d).await;
        assert_counts_add_up(&s);
        assert_eq!(s.counts.updated, 1, "{on_conflict}: {s:#?}");
        let c = card(&h, "K1");
        assert_eq!(field_text(c.fields.get("seats")), "5", "{on_conflict}");
        if kept {
            assert_eq!(
                field_text(c.fields.get("customer_name")),
                "ACME Corporation"
            );
            assert_eq!(c.title, "ACME Corp (key account)");
            assert_eq!(s.counts.kept_edits, 2, "{s:#?}");
            let results = h.results(&s);
            let k1 = results
                .iter()
                .find(|r| r.key.as_deref() == Some("K1"))
                .expect("K1's result");
            assert_eq!(k1.action, RowAction::Updated);
            let mut kept: Vec<(&str, &str, &str)> = k1
                .kept_edits
                .iter()
                .map(|k| (k.field.as_str(), k.in_pipefy.as_str(), k.in_table.as_str()))
                .collect();
            kept.sort();
            assert_eq!(
                kept,
                [
                    ("customer_name", "ACME Corporation", "Acme Inc"),
                    ("title", "ACME Corp (key account)", "Acme Inc"),
                ]
            );
            // Reads: one before the update, one after it (the new baseline of seats).
            assert!(s.counts.current_value_reads >= 2, "{s:#?}");

            // The edit stays kept when the table changes the name again.
            h.write_file(FILE, "cid,name,seats\nK1,Acme Global,5\nK2,Globex,4\n");
            let s = h.run(&d).await;
            assert_eq!(s.counts.kept_edits, 2, "{s:#?}");
            assert_eq!(
                field_text(card(&h, "K1").fields.get("customer_name")),
                "ACME Corporation"
            );
        } else {
            assert_eq!(field_text(c.fields.get("customer_name")), "Acme Inc");
            assert_eq!(c.title, "Acme Inc");
            assert_eq!(s.counts.kept_edits, 0);
            assert_eq!(s.counts.current_value_reads, 0, "overwrite reads nothing");
        }
    }
}

#[tokio::test]
async fn an_entry_s_own_on_conflict_wins_over_the_destination_s() {
    let h = Harness::new().await;
    let mapping =
        "  title: name\n  customer_name: name\n  seats: { column: seats, on_conflict: overwrite }\n";
    let d = dest(&h, "edits-override", "keep_edits", mapping);
    h.write_file(FILE, "cid,name,seats\nO1,Initech,3\n");
    h.run(&d).await;
    person_sets(&h, "O1", "seats", "30").await;
    person_sets(&h, "O1", "customer_name", "Initech LLC").await;

    h.write_file(FILE, "cid,name,seats\nO1,Initech Ltd,4\n");
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    let c = card(&h, "O1");
    // seats is the table's (source-owned); customer_name keeps the person's value.
    assert_eq!(field_text(c.fields.get("seats")), "4");
    assert_eq!(field_text(c.fields.get("customer_name")), "Initech LLC");
    assert_eq!(s.counts.kept_edits, 1, "{s:#?}");
}

#[tokio::test]
async fn an_edit_reverted_by_the_person_is_written_again() {
    let h = Harness::new().await;
    let d = dest(&h, "edits-reverted", "keep_edits", MAPPING);
    h.write_file(FILE, "cid,name,seats\nR1,Umbrella,3\n");
    h.run(&d).await;
    // A person edits, then puts the value back: Pipefy shows what pipefy-sync wrote.
    person_sets(&h, "R1", "customer_name", "Umbrella Corp").await;
    person_sets(&h, "R1", "customer_name", "Umbrella").await;

    h.write_file(FILE, "cid,name,seats\nR1,Umbrella Inc,3\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.kept_edits, 0, "{s:#?}");
    assert_eq!(
        field_text(card(&h, "R1").fields.get("customer_name")),
        "Umbrella Inc"
    );
}

#[tokio::test]
async fn a_dry_run_reads_pipefy_and_says_which_edits_would_be_kept() {
    let h = Harness::new().await;
    let d = dest(&h, "edits-dry-run", "keep_edits", MAPPING);
    h.write_file(FILE, "cid,name,seats\nP1,Pied Piper,3\n");
    h.run(&d).await;
    person_sets(&h, "P1", "customer_name", "Pied Piper Inc.").await;
    let before = h.all_mutations();

    h.write_file(FILE, "cid,name,seats\nP1,Pied Piper LLC,3\n");
    let s = h
        .run_with(
            &d,
            pipefy_sync::engine::RunRequest {
                trigger: "test".into(),
                dry_run: true,
                report_unchanged: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(h.all_mutations(), before, "a dry run writes nothing");
    assert_eq!(s.counts.kept_edits, 1, "{s:#?}");
    assert!(s.counts.current_value_reads >= 1, "{s:#?}");
    let results = h.results(&s);
    let p1 = results
        .iter()
        .find(|r| r.key.as_deref() == Some("P1"))
        .expect("P1's result");
    assert_eq!(p1.action, RowAction::WouldUpdate, "the title still changes");
    assert_eq!(p1.kept_edits.len(), 1);
    assert_eq!(p1.kept_edits[0].field, "customer_name");
    assert_eq!(
        field_text(card(&h, "P1").fields.get("customer_name")),
        "Pied Piper Inc."
    );
}
