//! Card mutations and reads: createCard (all field types, validation), updateCard,
//! updateCardField, deleteCard, moveCardToPhase, relations, ids and permissions.

mod common;

use common::*;
use pipefy_emulator::{EmulatorConfig, MissingIdCode, MoveRequiredCheck, ValueFormat};
use serde_json::{json, Value};

const CREATE: &str = "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id title due_date current_phase { id name } } clientMutationId } }";

const READ: &str = "query($id: ID!) { card(id: $id) { id title due_date createdAt updatedAt done
  current_phase { id name } labels { id name } assignees { id name email }
  fields { name value array_value float_value date_value field { id label type uuid } }
  parent_relations { name pipe { id } cards { id title } }
  child_relations { name pipe { id } cards { id title } } } }";

fn field<'a>(card: &'a Value, slug: &str) -> &'a Value {
    card["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"]["id"] == slug)
        .unwrap_or_else(|| panic!("field {slug} not in {card}"))
}

fn all_types_input() -> Value {
    json!({"pipe_id": "301", "title": "Foo onboarding", "clientMutationId": "m-1",
    "due_date": "2024-08-08T16:46:27-03:00",
    "assignee_ids": ["1002", 1003], "label_ids": ["310003"], "parent_ids": ["900001"],
    "fields_attributes": [
        {"field_id": "external_id", "field_value": "CUST-1"},
        {"field_id": "customer_name", "field_value": "Foo Ltd"},
        {"field_id": "email", "field_value": "ops@foo.example"},
        {"field_id": "phone", "field_value": "+55 11 99999-0000"},
        {"field_id": "plan", "field_value": "Pro"},
        {"field_id": "seats", "field_value": "12"},
        {"field_id": "mrr", "field_value": 350.21},
        {"field_id": "signup_date", "field_value": "2024-08-01"},
        {"field_id": "renewal_at", "field_value": "2024-08-08T16:46:00-03:00"},
        {"field_id": "onboarding_call", "field_value": "22:40"},
        {"field_id": "contract_due", "field_value": "2025-01-31T12:00:00Z"},
        {"field_id": "tasks", "field_value": "[Kickoff, Training]"},
        {"field_id": "account", "field_value": ["Xa7KpQ2m"]},
        {"field_id": "owner", "field_value": ["1002"]},
        {"field_id": "tags", "field_value": ["310001", "310003"]}
    ]})
}

#[tokio::test]
async fn create_card_with_every_field_type_reads_back_in_pipefy_formats() {
    let e = emu().await;
    let d = e.data(CREATE, json!({"i": all_types_input()})).await;
    let created = &d["createCard"];
    assert_eq!(created["clientMutationId"], "m-1");
    assert_eq!(created["card"]["title"], "Foo onboarding");
    assert_eq!(created["card"]["due_date"], "2024-08-08T19:46:27Z");
    assert_eq!(created["card"]["current_phase"]["name"], "Inbox");
    let id = created["card"]["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok(), "numeric card id: {id}");

    let card = e.data(READ, json!({"id": id})).await["card"].clone();
    let v = |slug: &str| field(&card, slug)["value"].as_str().unwrap().to_string();
    assert_eq!(v("external_id"), "CUST-1");
    assert_eq!(v("email"), "ops@foo.example");
    assert_eq!(v("plan"), "Pro");
    assert_eq!(v("seats"), "12");
    assert_eq!(v("mrr"), "350,21");
    assert_eq!(v("signup_date"), "01/08/2024");
    assert_eq!(v("renewal_at"), "08/08/2024 16:46");
    assert_eq!(v("onboarding_call"), "22:40");
    assert_eq!(v("contract_due"), "31/01/2025 12:00");
    assert_eq!(v("tasks"), "[\"Kickoff\", \"Training\"]");
    assert_eq!(v("account"), "[\"Acme Corp\"]");
    assert_eq!(v("owner"), "[\"Bruno Lima\"]");
    assert_eq!(v("tags"), "[\"VIP\", \"New\"]");
    assert_eq!(field(&card, "account")["array_value"], json!(["Xa7KpQ2m"]));
    assert_eq!(field(&card, "mrr")["float_value"], json!(350.21));
    assert_eq!(field(&card, "signup_date")["date_value"], "2024-08-01");
    assert_eq!(field(&card, "seats")["field"]["type"], "number");
    assert_eq!(
        field(&card, "seats")["field"]["uuid"],
        uuid_of("301", "seats")
    );
    assert_eq!(field(&card, "seats")["name"], "Seats");
    assert_eq!(card["labels"], json!([{"id": "310003", "name": "New"}]));
    assert_eq!(
        card["assignees"],
        json!([{"id": "1002", "name": "Bruno Lima", "email": "bruno.lima@example.com"},
               {"id": "1003", "name": "Carla Dias", "email": "carla.dias@example.com"}])
    );
    assert_eq!(card["parent_relations"][0]["pipe"]["id"], "302");
    assert_eq!(card["parent_relations"][0]["cards"][0]["id"], "900001");
    assert_eq!(card["done"], false);

    // The parent sees the child.
    let parent = e.data(READ, json!({"id": "900001"})).await["card"].clone();
    let kids = parent["child_relations"][0]["cards"].as_array().unwrap();
    assert!(kids.iter().any(|c| c["id"] == id.as_str()));

    // Canonical values in the inspection snapshot.
    let snap = e.h.snapshot();
    let c = snap.card(&id).unwrap();
    assert_eq!(c.fields["seats"], json!(12));
    assert_eq!(c.fields["mrr"], json!(350.21));
    assert_eq!(c.fields["tasks"], json!(["Kickoff", "Training"]));
    assert_eq!(c.fields["renewal_at"], json!("2024-08-08T16:46:00-03:00"));
    assert_eq!(c.parent_ids, vec!["900001".to_string()]);
    assert_eq!(c.assignees, vec!["1002".to_string(), "1003".to_string()]);
    assert_eq!(c.phase_id, "3011");
    assert_eq!(snap.count_cards_where("301", "external_id", "CUST-1"), 1);
}

#[tokio::test]
async fn iso_value_format_is_configurable() {
    let e = emu_with(EmulatorConfig {
        value_format: ValueFormat::Iso,
        ..EmulatorConfig::default()
    })
    .await;
    let d = e.data(CREATE, json!({"i": all_types_input()})).await;
    let id = d["createCard"]["card"]["id"].as_str().unwrap().to_string();
    let card = e.data(READ, json!({"id": id})).await["card"].clone();
    assert_eq!(field(&card, "mrr")["value"], "350.21");
    assert_eq!(field(&card, "signup_date")["value"], "2024-08-01");
    assert_eq!(
        field(&card, "renewal_at")["value"],
        "2024-08-08T16:46:00-03:00"
    );
}

#[tokio::test]
async fn title_defaults_to_the_first_field_and_reads_omit_empty_fields() {
    let e = emu().await;
    let id = e.create_customer("CUST-9", json!({})).await;
    let card = e.data(READ, json!({"id": id})).await["card"].clone();
    assert_eq!(card["title"], "CUST-9");
    let names: Vec<&str> = card["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["external_id", "customer_name"]);
}

#[tokio::test]
async fn required_start_form_fields_are_enforced_on_create() {
    let e = emu().await;
    let body = e
        .gql(CREATE, json!({"i": {"pipe_id": "301", "fields_attributes": [{"field_id": "external_id", "field_value": "X"}]}}))
        .await;
    assert_eq!(message(&body), "Field \"Customer name\" is required");
    assert_eq!(code(&body), "RECORD_INVALID");
    assert_eq!(body["errors"][0]["path"], json!(["createCard"]));
    assert_eq!(body["data"], json!({"createCard": null}));
    assert!(
        body["errors"][0]["extensions"]["correlation_id"]
            .as_str()
            .unwrap()
            .len()
            >= 16
    );
    assert!(body["errors"][0]["locations"][0]["line"].is_number());
    assert_eq!(
        e.h.snapshot().cards_in_pipe("301").count(),
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn field_values_are_validated_per_type() {
    let e = emu().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("signup_date", json!("2024-02-30"), "not a valid date"),
        ("signup_date", json!("yesterday"), "not a valid date"),
        ("renewal_at", json!("2024-08-08"), "not a valid date time"),
        ("contract_due", json!("31/01/2025"), "not a valid date time"),
        ("onboarding_call", json!("24:61"), "not a valid time"),
        ("seats", json!("twelve"), "not a valid number"),
        ("mrr", json!("12,50"), "not a valid currency"),
        ("email", json!("not-an-email"), "not a valid e-mail"),
        ("phone", json!("call me maybe"), "not a valid phone"),
        ("plan", json!("Gold"), "invalid option"),
        ("tasks", json!(["Kickoff", "Party"]), "invalid option"),
        ("tags", json!(["999999"]), "label not found"),
        ("tags", json!(["320001"]), "label not found"),
        ("owner", json!(["Ana Souza"]), "user not found"),
        (
            "account",
            json!(["900001"]),
            "connected card or record not found",
        ),
        ("seats", json!(["1", "2"]), "takes a single value"),
    ];
    for (slug, value, want) in cases {
        let body = e
            .gql(
                CREATE,
                json!({"i": {"pipe_id": "301", "fields_attributes": [
                    {"field_id": "external_id", "field_value": "X"},
                    {"field_id": "customer_name", "field_value": "Y"},
                    {"field_id": slug, "field_value": value}]}}),
            )
            .await;
        assert_eq!(code(&body), "INVALID_INPUT", "{slug}={value}: {body}");
        assert!(
            message(&body).contains(want),
            "{slug}={value}: {}",
            message(&body)
        );
    }
    // Accepted spellings.
    let ok: Vec<(&str, Value)> = vec![
        ("signup_date", json!("01/08/2024")),
        ("signup_date", json!("2024-08-01T10:00:00-03:00")),
        ("seats", json!(7)),
        ("mrr", json!("99.9")),
        ("tasks", json!("[\"Kickoff\",\"Go-live\"]")),
        ("tasks", json!("Training")),
        ("owner", json!("[1002, 1003]")),
        ("tags", json!(310001)),
    ];
    for (slug, value) in ok {
        let body = e
            .gql(
                CREATE,
                json!({"i": {"pipe_id": "301", "fields_attributes": [
                    {"field_id": "external_id", "field_value": "X"},
                    {"field_id": "customer_name", "field_value": "Y"},
                    {"field_id": slug, "field_value": value}]}}),
            )
            .await;
        assert!(body.get("errors").is_none(), "{slug}={value}: {body}");
    }
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "due_date": "tomorrow", "fields_attributes": [{"field_id": "project_code", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "INVALID_INPUT");
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "fields_attributes": [{"field_id": "nope", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    assert_eq!(message(&body), "Field not found with id: nope");
}

#[tokio::test]
async fn create_in_a_given_phase_and_foreign_ids() {
    let e = emu().await;
    let d = e
        .data(CREATE, json!({"i": {"pipe_id": "302", "phase_id": "3022", "title": "T", "fields_attributes": [{"field_id": "project_code", "field_value": "P-9"}]}}))
        .await;
    assert_eq!(d["createCard"]["card"]["current_phase"]["id"], "3022");
    // A phase of another pipe, a label of another pipe, a user who is not a member.
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "phase_id": "3011", "fields_attributes": [{"field_id": "project_code", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "label_ids": ["310001"], "fields_attributes": [{"field_id": "project_code", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    assert_eq!(message(&body), "Label not found with id: 310001");
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "assignee_ids": ["424242"], "fields_attributes": [{"field_id": "project_code", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    // Nonexistent pipe, parent card: PERMISSION_DENIED by default.
    let body = e
        .gql(
            CREATE,
            json!({"i": {"pipe_id": "999", "fields_attributes": []}}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    assert_eq!(message(&body), "Permission denied");
    let body = e.gql(CREATE, json!({"i": {"pipe_id": "302", "parent_ids": ["123456789"], "fields_attributes": [{"field_id": "project_code", "field_value": "P"}]}})).await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
}

#[tokio::test]
async fn nonexistent_ids_code_is_configurable() {
    let e = emu().await;
    let q = "query { card(id: \"999999\") { id } }";
    let body = e.gql(q, json!({})).await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    assert_eq!(body["data"], json!({"card": null}));
    let body = e
        .gql(
            "mutation { deleteCard(input: {id: \"999999\"}) { success } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");

    let e = emu_with(EmulatorConfig {
        nonexistent_id_code: MissingIdCode::ResourceNotFound,
        ..EmulatorConfig::default()
    })
    .await;
    let body = e.gql(q, json!({})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    assert_eq!(message(&body), "Card not found with id: 999999");
    let body = e
        .gql(
            "mutation { deleteCard(input: {id: \"00000000\"}) { success } }",
            json!({}),
        )
        .await;
    assert_eq!(message(&body), "Card not found with id: 00000000");
    assert_eq!(body["errors"][0]["path"], json!(["deleteCard"]));
    let body = e.gql("query { pipe(id: \"777\") { id } }", json!({})).await;
    assert_eq!(message(&body), "Pipe not found with id: 777");
}

#[tokio::test]
async fn permissions_follow_membership_and_role() {
    let e = emu_with(EmulatorConfig::with_fixture(fixture_with_more_tokens())).await;
    // An outsider can neither read nor write.
    let body = e
        .gql_as(
            "outsider-token",
            "query { pipe(id: \"301\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    let body = e
        .gql_as(
            "outsider-token",
            "query { card(id: \"900004\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    // A plain member reads but cannot write (API writes need an admin, docs/pipefy-api.md §2).
    let body = e
        .gql_as(
            "bruno-token",
            "query { card(id: \"900004\") { id title } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["card"]["title"], "Acme Corp");
    let body = e
        .gql_as(
            "bruno-token",
            "mutation { deleteCard(input: {id: \"900004\"}) { success } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    assert!(e.h.snapshot().card("900004").is_some());
    // Write roles are configurable.
    let e = emu_with(EmulatorConfig {
        write_roles: vec!["admin".into(), "member".into()],
        ..EmulatorConfig::with_fixture(fixture_with_more_tokens())
    })
    .await;
    let body = e
        .gql_as(
            "bruno-token",
            "mutation { deleteCard(input: {id: \"900004\"}) { success } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["deleteCard"]["success"], true);
}

#[tokio::test]
async fn update_card_replaces_attributes() {
    let e = emu().await;
    let q = "mutation($i: UpdateCardInput!) { updateCard(input: $i) { card { id title due_date labels { id } assignees { id } } clientMutationId } }";
    let d = e
        .data(q, json!({"i": {"id": "900004", "title": "Acme (renamed)", "due_date": "2024-08-08T16:46:27-03:00", "label_ids": ["310002"], "assignee_ids": ["1003"], "clientMutationId": "u1"}}))
        .await;
    let c = &d["updateCard"]["card"];
    assert_eq!(c["title"], "Acme (renamed)");
    assert_eq!(c["due_date"], "2024-08-08T19:46:27Z");
    assert_eq!(c["labels"], json!([{"id": "310002"}]));
    assert_eq!(c["assignees"], json!([{"id": "1003"}]));
    assert_eq!(d["updateCard"]["clientMutationId"], "u1");
    let snap = e.h.snapshot();
    let card = snap.card("900004").unwrap();
    assert_eq!(card.labels, vec!["310002".to_string()]);
    // Custom fields are untouched by updateCard.
    assert_eq!(card.fields["plan"], json!("Enterprise"));
    let body = e
        .gql(q, json!({"i": {"id": "900004", "due_date": "not a date"}}))
        .await;
    assert_eq!(code(&body), "INVALID_INPUT");
}

#[tokio::test]
async fn update_card_field_replaces_wholesale_and_accepts_scalars() {
    let e = emu().await;
    let q = "mutation($i: UpdateCardFieldInput!) { updateCardField(input: $i) { success card { id } clientMutationId } }";
    // Bare string into a [UndefinedInput] slot (list coercion).
    let d = e
        .data(
            q,
            json!({"i": {"card_id": "900004", "field_id": "plan", "new_value": "Pro"}}),
        )
        .await;
    assert_eq!(d["updateCardField"]["success"], true);
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["plan"],
        json!("Pro")
    );
    // Literal scalar in the document.
    e.data("mutation { updateCardField(input: {card_id: 900004, field_id: \"seats\", new_value: 5}) { success } }", json!({})).await;
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(5)
    );
    // A connector list is replaced, not appended.
    e.data(
        q,
        json!({"i": {"card_id": "900004", "field_id": "account", "new_value": ["bR4nT8wZ"]}}),
    )
    .await;
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["account"],
        json!(["bR4nT8wZ"])
    );
    // null clears.
    e.data(
        q,
        json!({"i": {"card_id": "900004", "field_id": "tags", "new_value": null}}),
    )
    .await;
    assert!(!e
        .h
        .snapshot()
        .card("900004")
        .unwrap()
        .fields
        .contains_key("tags"));
    let body = e
        .gql(
            q,
            json!({"i": {"card_id": "900004", "field_id": "seats", "new_value": "many"}}),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT");
    assert_eq!(body["data"]["updateCardField"], Value::Null);
}

#[tokio::test]
async fn delete_card_removes_it_and_its_links() {
    let e = emu().await;
    let child = e.create_customer("C-1", json!({})).await;
    e.data(
        "mutation($i: UpdateCardFieldInput!) { updateCardField(input: $i) { success } }",
        json!({"i": {"card_id": child, "field_id": "account", "new_value": ["Xa7KpQ2m"]}}),
    )
    .await;
    let d = e.data("mutation { deleteCard(input: {id: \"900001\", clientMutationId: \"d\"}) { success clientMutationId } }", json!({})).await;
    assert_eq!(
        d["deleteCard"],
        json!({"success": true, "clientMutationId": "d"})
    );
    let snap = e.h.snapshot();
    assert!(snap.card("900001").is_none());
    assert!(snap.card("900004").unwrap().parent_ids.is_empty());
    let body = e
        .gql("query { card(id: \"900001\") { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
}

#[tokio::test]
async fn moves_follow_allowed_phases_and_required_fields() {
    let e = emu().await;
    let id = e.create_customer("M-1", json!({})).await;
    let mv = "mutation($c: ID!, $p: ID!) { moveCardToPhase(input: {card_id: $c, destination_phase_id: $p}) { card { id current_phase { id name } done } } }";
    // Inbox -> Done is not a configured move.
    let body = e.gql(mv, json!({"c": id, "p": "3013"})).await;
    assert_eq!(code(&body), "INVALID_INPUT");
    assert!(
        message(&body).starts_with("Card could not be moved to phase"),
        "{}",
        message(&body)
    );
    let d = e.data(mv, json!({"c": id, "p": "3012"})).await;
    assert_eq!(
        d["moveCardToPhase"]["card"]["current_phase"],
        json!({"id": "3012", "name": "Doing"})
    );
    // Done requires "Go-live date".
    let body = e.gql(mv, json!({"c": id, "p": "3013"})).await;
    assert_eq!(message(&body), "Field \"Go-live date\" is required");
    assert_eq!(body["data"]["moveCardToPhase"], Value::Null);
    assert_eq!(e.h.snapshot().card(&id).unwrap().phase_id, "3012");
    e.data(
        "mutation { updateCardField(input: {card_id: \"ID\", field_id: \"go_live_date\", new_value: \"2024-09-01\"}) { success } }".replace("ID", &id).as_str(),
        json!({}),
    )
    .await;
    let d = e.data(mv, json!({"c": id, "p": "3013"})).await;
    assert_eq!(d["moveCardToPhase"]["card"]["done"], true);
    assert!(e.h.snapshot().card(&id).unwrap().finished_at.is_some());
    // Any phase -> Archived.
    let other = e.create_customer("M-2", json!({})).await;
    e.data(mv, json!({"c": other, "p": "3014"})).await;
    e.data(mv, json!({"c": id, "p": "3014"})).await;
    assert_eq!(e.h.snapshot().card(&id).unwrap().phase_id, "3014");
    // A phase of another pipe.
    let body = e.gql(mv, json!({"c": other, "p": "3022"})).await;
    assert_eq!(code(&body), "INVALID_INPUT");
}

#[tokio::test]
async fn required_check_on_move_can_use_the_phase_being_left() {
    let e = emu_with(EmulatorConfig {
        move_required_check: MoveRequiredCheck::Source,
        ..EmulatorConfig::default()
    })
    .await;
    let id = e.create_customer("S-1", json!({})).await;
    let mv = "mutation($c: ID!, $p: ID!) { moveCardToPhase(input: {card_id: $c, destination_phase_id: $p}) { card { id } } }";
    e.data(mv, json!({"c": id, "p": "3012"})).await;
    e.data(mv, json!({"c": id, "p": "3013"})).await;
    let body = e.gql(mv, json!({"c": id, "p": "3014"})).await;
    assert_eq!(message(&body), "Field \"Go-live date\" is required");
}
