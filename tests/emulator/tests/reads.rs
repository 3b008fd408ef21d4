//! The reads later features need: `Phase.cards`, `Table.table_records` (paged),
//! `organization(id)` / `organizations`, and a card's `createdBy`, `updated_at`,
//! `fields { filled_at updated_at }`.

mod common;

use common::*;
use pipefy_emulator::EmulatorConfig;
use serde_json::{json, Value};

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_string())
        .collect()
}

const PHASE_CARDS: &str = "query($p: ID!, $n: Int, $a: String) { phase(id: $p) { cards_count
  cards(first: $n, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id current_phase { id } } } } } }";

#[tokio::test]
async fn phase_cards_pages_through_the_phase_only() {
    let e = emu().await;
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(e.create_customer(&format!("PH-{i}"), json!({})).await);
    }
    let d = e.data(PHASE_CARDS, json!({"p": "3011", "n": 2})).await;
    let c = &d["phase"]["cards"];
    assert_eq!(c["totalCount"], 3);
    assert_eq!(d["phase"]["cards_count"], 3);
    assert_eq!(ids(c), made[..2].to_vec());
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    let after = c["pageInfo"]["endCursor"].as_str().expect("cursor");
    let d2 = e
        .data(PHASE_CARDS, json!({"p": "3011", "a": after, "n": 2}))
        .await;
    assert_eq!(ids(&d2["phase"]["cards"]), made[2..].to_vec());
    assert_eq!(d2["phase"]["cards"]["pageInfo"]["hasNextPage"], false);
    // Another phase holds the fixture's cards, not these.
    let d3 = e.data(PHASE_CARDS, json!({"p": "3012"})).await;
    let other = ids(&d3["phase"]["cards"]);
    assert!(!other.is_empty());
    assert!(other.iter().all(|i| !made.contains(i)));
    for edge in d3["phase"]["cards"]["edges"].as_array().expect("edges") {
        assert_eq!(edge["node"]["current_phase"]["id"], "3012");
    }
}

#[tokio::test]
async fn phase_cards_page_cap_is_the_cards_cap() {
    let e = emu_with(EmulatorConfig {
        cards_page_max: 1,
        ..EmulatorConfig::default()
    })
    .await;
    e.create_customer("CAP-1", json!({})).await;
    e.create_customer("CAP-2", json!({})).await;
    let d = e.data(PHASE_CARDS, json!({"p": "3011", "n": 50})).await;
    assert_eq!(ids(&d["phase"]["cards"]).len(), 1);
}

const TABLE_RECORDS: &str = "query($t: ID!, $n: Int, $a: String) { table(id: $t) { table_records_count
  table_records(first: $n, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { node { id title } } nodes { id } } } }";

#[tokio::test]
async fn table_table_records_is_paged() {
    let e = emu().await;
    let d = e.data(TABLE_RECORDS, json!({"t": "tbl_accounts"})).await;
    let all = ids(&d["table"]["table_records"]);
    let total = d["table"]["table_records_count"].as_i64().expect("count");
    assert_eq!(all.len() as i64, total);
    assert!(all.len() >= 2, "{d}");
    let d1 = e
        .data(TABLE_RECORDS, json!({"t": "tbl_accounts", "n": 1}))
        .await;
    let p1 = &d1["table"]["table_records"];
    assert_eq!(ids(p1), all[..1].to_vec());
    assert_eq!(p1["nodes"][0]["id"], json!(all[0]));
    assert_eq!(p1["pageInfo"]["hasNextPage"], true);
    let d2 = e
        .data(
            TABLE_RECORDS,
            json!({"t": "tbl_accounts", "n": 100, "a": p1["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(ids(&d2["table"]["table_records"]), all[1..].to_vec());
    assert_eq!(
        d2["table"]["table_records"]["pageInfo"]["hasNextPage"],
        false
    );
}

const ORG: &str = "query($id: ID!) { organization(id: $id) { id uuid name planName role membersCount pipesCount createdAt
  pipes { id name } tables(first: 10) { totalCount nodes { id } pageInfo { hasNextPage } } } }";

#[tokio::test]
async fn organizations_default_to_one_holding_everything() {
    let e = emu().await;
    let d = e.data(ORG, json!({"id": "1"})).await;
    let o = &d["organization"];
    assert_eq!(o["id"], "1");
    assert_eq!(o["pipesCount"], 2);
    assert_eq!(o["role"], "member");
    assert_eq!(o["uuid"].as_str().expect("uuid").len(), 36);
    let pipes: Vec<&str> = o["pipes"]
        .as_array()
        .expect("pipes")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(pipes, vec!["301", "302"]);
    assert_eq!(o["tables"]["nodes"][0]["id"], "tbl_accounts");
    let all = e
        .data(
            "{ organizations { id name pipes(name_search: \"proj\") { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(all["organizations"].as_array().expect("orgs").len(), 1);
    assert_eq!(all["organizations"][0]["pipes"], json!([{"id": "302"}]));
    let b = e.gql(ORG, json!({"id": "42"})).await;
    assert_eq!(code(&b), "PERMISSION_DENIED", "{b}");
}

#[tokio::test]
async fn organizations_follow_the_fixture_and_membership() {
    let mut f = fixture_with_more_tokens();
    f.organizations = vec![
        pipefy_emulator::OrganizationDef {
            id: "10".into(),
            name: "Ten".into(),
            uuid: "0b3c5e0e-1111-4222-8333-444455556666".into(),
            plan_name: "Business".into(),
            pipe_ids: vec!["301".into()],
            table_ids: vec![],
            created_at: "2023-05-01T00:00:00Z".into(),
        },
        pipefy_emulator::OrganizationDef {
            id: "20".into(),
            name: "Twenty".into(),
            uuid: String::new(),
            plan_name: "Starter".into(),
            pipe_ids: vec![],
            table_ids: vec!["tbl_accounts".into()],
            created_at: "2023-06-01T00:00:00Z".into(),
        },
    ];
    let e = emu_with(EmulatorConfig::with_fixture(f)).await;
    let d = e
        .data(
            "{ organizations { id uuid planName pipesCount } }",
            json!({}),
        )
        .await;
    let orgs = d["organizations"].as_array().expect("orgs");
    assert_eq!(orgs.len(), 2, "{d}");
    assert_eq!(orgs[0]["uuid"], "0b3c5e0e-1111-4222-8333-444455556666");
    assert_eq!(orgs[0]["planName"], "Business");
    assert_eq!(orgs[1]["pipesCount"], 0);
    let out = e
        .gql_as("outsider-token", "{ organizations { id } }", json!({}))
        .await;
    assert_eq!(out["data"]["organizations"], json!([]), "{out}");
    let b = e.gql_as("outsider-token", ORG, json!({"id": "10"})).await;
    assert_eq!(code(&b), "PERMISSION_DENIED", "{b}");
}

#[tokio::test]
async fn card_read_back_fields() {
    let e = emu().await;
    let id = e.create_customer("RB-1", json!({"seats": 3})).await;
    let q = "query($id: ID!) { card(id: $id) { createdBy { id name email } updated_at updatedAt created_at
      fields { name filled_at updated_at } } }";
    let d = e.data(q, json!({"id": id})).await;
    let c = &d["card"];
    assert_eq!(
        c["createdBy"],
        json!({"id": "1001", "name": "Ana Souza", "email": "ana.souza@example.com"})
    );
    let updated = c["updated_at"].as_str().expect("updated_at");
    assert_eq!(c["updatedAt"], json!(updated));
    assert!(
        chrono::DateTime::parse_from_rfc3339(updated).is_ok(),
        "{updated}"
    );
    for f in c["fields"].as_array().expect("fields") {
        assert!(f["filled_at"].is_string(), "{f}");
        assert!(f["updated_at"].is_string(), "{f}");
    }
    // Fixture cards name no creator.
    let d = e.data(q, json!({"id": "900004"})).await;
    assert!(d["card"]["createdBy"].is_null(), "{d}");
    let snap = e.h.snapshot();
    assert_eq!(
        snap.cards
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.created_by.clone()),
        Some("1001".to_string())
    );
}
