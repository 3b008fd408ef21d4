//! Cards deleted by a person in Pipefy, against the emulator over HTTP (which answers
//! `PERMISSION_DENIED` for an id that does not exist, as Pipefy usually does): an upsert
//! creates the card again, or follows the card that now holds the key; `update_card` and
//! update-only upserts report `DELETED_IN_PIPEFY`. Never a silent success, never a row stuck
//! failing on every run.

use pipefy_sync::config::Destination;
use pipefy_sync::pipefy::{CreateCardInput, FieldValueInput, Mutation};
use pipefy_sync::report::RowAction;
use pipefy_sync_tests::sync::{assert_counts_add_up, field_text, Harness};
use serde_json::json;

const FILE: &str = "refined/customers/part-0001.csv";
const MAPPING: &str = "  title: name\n  customer_name: name\n  seats: seats\n";

fn upsert(h: &Harness, name: &str, extra: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{MAPPING}"
    ))
}

fn cards(h: &Harness, key: &str) -> Vec<pipefy_emulator::Card> {
    h.cards_with("301", "external_id", key)
}

async fn by_hand(h: &Harness, op: Mutation) -> Option<String> {
    let mut results = h.client().mutate(vec![op]).await.expect("sent");
    let result = results.pop().expect("one result").expect("applied");
    result.id
}

async fn delete_by_hand(h: &Harness, key: &str) -> String {
    let id = cards(h, key).first().expect("the card exists").id.clone();
    by_hand(h, Mutation::DeleteCard { id: id.clone() }).await;
    assert!(cards(h, key).is_empty());
    id
}

async fn first_run(h: &Harness, d: &Destination) {
    h.write_file(FILE, "cid,name,seats\nD1,One,1\nD2,Two,2\n");
    let s = h.run(d).await;
    assert_eq!(s.counts.created, 2, "{s:#?}");
}

#[tokio::test]
async fn an_upsert_creates_a_card_deleted_by_hand_again_and_the_ledger_follows() {
    let h = Harness::new().await;
    let d = upsert(&h, "deleted-upsert", "");
    first_run(&h, &d).await;
    let old = delete_by_hand(&h, "D1").await;

    h.write_file(FILE, "cid,name,seats\nD1,One,5\nD2,Two,2\n");
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.recreated), (1, 1), "{s:#?}");
    assert_eq!(s.counts.failed_rows(), 0, "{:?}", h.failed_rows(&s));
    let now = cards(&h, "D1");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, old);
    // The whole row went to the new card, not only the changed seats.
    assert_eq!(field_text(now[0].fields.get("customer_name")), "One");
    assert_eq!(field_text(now[0].fields.get("seats")), "5");
    let results = h.results(&s);
    let d1 = results.iter().find(|r| r.key.as_deref() == Some("D1"));
    assert_eq!(
        d1.map(|r| r.action),
        Some(RowAction::Recreated),
        "{results:#?}"
    );

    // The ledger knows the new card: an unchanged rerun sends nothing, a change updates it.
    h.emulator.reset_stats();
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 2, "{s:#?}");
    assert_eq!(h.all_mutations(), 0);
    h.write_file(FILE, "cid,name,seats\nD1,One,6\nD2,Two,2\n");
    let s = h.run(&d).await;
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    assert_eq!(cards(&h, "D1").len(), 1);
}

#[tokio::test]
async fn an_upsert_follows_the_card_that_now_holds_the_key() {
    let h = Harness::new().await;
    let d = upsert(&h, "deleted-replaced", "");
    first_run(&h, &d).await;
    delete_by_hand(&h, "D2").await;
    // A person makes the card again, by hand, with the same key.
    let replacement = by_hand(
        &h,
        Mutation::CreateCard(CreateCardInput {
            pipe_id: "301".into(),
            title: Some("Two, by hand".into()),
            fields_attributes: vec![
                FieldValueInput {
                    field_id: "external_id".into(),
                    field_value: json!("D2"),
                },
                FieldValueInput {
                    field_id: "customer_name".into(),
                    field_value: json!("Two"),
                },
            ],
            ..CreateCardInput::default()
        }),
    )
    .await
    .expect("an id");

    h.write_file(FILE, "cid,name,seats\nD1,One,1\nD2,Two,9\n");
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.updated, s.counts.created), (1, 0), "{s:#?}");
    let now = cards(&h, "D2");
    assert_eq!(now.len(), 1, "no duplicate: {now:#?}");
    assert_eq!(now[0].id, replacement);
    assert_eq!(field_text(now[0].fields.get("seats")), "9");
    let s = h.run(&d).await;
    assert_eq!(s.counts.unchanged, 2, "{s:#?}");
}

#[tokio::test]
async fn update_only_upserts_and_update_card_report_the_card_deleted() {
    let h = Harness::new().await;
    let d = upsert(&h, "deleted-update-only", "");
    first_run(&h, &d).await;
    let gone = delete_by_hand(&h, "D1").await;

    let update_only = upsert(&h, "deleted-update-only", "upsert: { create: false }");
    h.write_file(FILE, "cid,name,seats\nD1,One,3\nD2,Two,2\n");
    let s = h.run(&update_only).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.failed, 1, "{s:#?}");
    assert!(cards(&h, "D1").is_empty(), "update-only never creates");
    let failed = h.failed_rows(&s);
    assert_eq!(failed[0]["_error_code"], "DELETED_IN_PIPEFY", "{failed:#?}");
    assert_eq!(failed[0]["_source_line"], 2);
    let message = failed[0]["_error_message"].as_str().unwrap_or_default();
    assert!(message.contains(&gone), "{message}");

    let by_id = h.destination(
        "name: deleted-by-id\npipe_id: \"301\"\noperation: update_card\nsource:\n  path: ${DATA}\n  layer: refined\n  table: ids\nmapping:\n  id: card\n  seats: seats\n",
    );
    let d2 = cards(&h, "D2").first().expect("D2's card").id.clone();
    h.write_file("refined/ids/part-0001.csv", format!("card,seats\n{d2},4\n"));
    let s = h.run(&by_id).await;
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    delete_by_hand(&h, "D2").await;
    h.write_file("refined/ids/part-0001.csv", format!("card,seats\n{d2},5\n"));
    let s = h.run(&by_id).await;
    assert_eq!(s.counts.failed, 1, "{s:#?}");
    let failed = h.failed_rows(&s);
    assert_eq!(failed[0]["_error_code"], "DELETED_IN_PIPEFY", "{failed:#?}");
    // An id this destination never wrote is Pipefy's refusal, as before.
    h.write_file("refined/ids/part-0001.csv", "card,seats\n999999,5\n");
    let s = h.run(&by_id).await;
    let failed = h.failed_rows(&s);
    assert_eq!(failed[0]["_error_code"], "PIPEFY_REJECTED", "{failed:#?}");
}
