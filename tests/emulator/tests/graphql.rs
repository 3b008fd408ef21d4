//! The GraphQL protocol: parsing, validation errors, variables, aliases (non-atomic
//! batches), the legacy endpoint, operation selection, complexity/depth/alias limits.

mod common;

use common::*;
use pipefy_emulator::EmulatorConfig;
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_documents_are_parse_errors_at_http_200() {
    let e = emu().await;
    for q in ["query { card(id: 1) { id }", "mutation {", "}{", ""] {
        let body = e.gql(q, json!({})).await;
        assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED", "{q:?}: {body}");
        assert!(
            body.get("data").is_none(),
            "no data on request errors: {body}"
        );
        assert!(body["errors"][0]["extensions"]["correlation_id"].is_string());
    }
    let body = e.gql("query { card(id: 1) { id }", json!({})).await;
    assert!(
        body["errors"][0]["locations"][0]["line"].is_number(),
        "{body}"
    );
    // No query at all.
    let r = e.post_as(Some(TOKEN), json!({"variables": {}})).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED");
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_a_plain_text_500() {
    let e = emu().await;
    let r = e
        .http
        .post(e.h.graphql_url())
        .header("Authorization", "Bearer demo-token")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn unknown_fields_and_arguments_fail_validation_with_graphql_ruby_codes() {
    let e = emu().await;
    let body = e
        .gql("query { card(id: \"900004\") { id nope } }", json!({}))
        .await;
    assert_eq!(code(&body), "undefinedField");
    assert_eq!(message(&body), "Field 'nope' doesn't exist on type 'Card'");
    assert!(body.get("data").is_none());

    let body = e
        .gql("query { card(id: \"900004\", bogus: 1) { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "argumentNotAccepted");

    let body = e.gql("query { card { id } }", json!({})).await;
    assert_eq!(code(&body), "missingRequiredArguments");

    let body = e
        .gql(
            "mutation { createCard(input: {title: \"x\"}) { card { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "missingRequiredInputObjectAttribute", "{body}");

    let body = e
        .gql(
            "mutation { createCard(input: {pipe_id: 301, labels_ids: [1]}) { card { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "argumentNotAccepted", "{body}");
    assert!(message(&body).contains("labels_ids"));

    // Selections directly on the UpdatedNode union fail the whole document.
    let body = e
        .gql(
            "mutation { updateFieldsValues(input: {nodeId: \"900004\", values: [{fieldId: \"seats\", value: 3}]}) { success updatedNode { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        message(&body),
        "Selections can't be made directly on unions (see selections on UpdatedNode)"
    );
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(120),
        "not executed"
    );

    // Validation runs before execution: nothing is applied when any part is invalid.
    let body = e
        .gql(
            "mutation { a: deleteCard(input: {id: \"900004\"}) { success } b: deleteCard(input: {id: \"900001\"}) { nope } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "undefinedField");
    assert!(e.h.snapshot().card("900004").is_some());
}

#[tokio::test]
async fn wrongly_typed_or_missing_variables_are_errors_not_crashes() {
    let e = emu().await;
    let q = "query($id: ID!) { card(id: $id) { id } }";
    for vars in [
        json!({"id": true}),
        json!({"id": {"a": 1}}),
        json!({"id": [1, 2]}),
    ] {
        let body = e.gql(q, vars.clone()).await;
        assert!(body["errors"].is_array(), "{vars}: {body}");
        assert!(
            body.get("data").is_none() || body["data"]["card"].is_null(),
            "{body}"
        );
        assert!(!code(&body).is_empty());
    }
    let body = e.gql(q, json!({})).await;
    assert!(body["errors"].is_array(), "{body}");
    // Variable values are checked against the position they are used in.
    let body = e
        .gql("query($v: ID!) { card(id: $v) { id } }", json!({"v": true}))
        .await;
    assert_eq!(code(&body), "argumentLiteralsIncompatible", "{body}");
    assert_eq!(
        message(&body),
        "Variable $v of type ID! was provided invalid value"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["problems"],
        json!([{"path": [], "explanation": "Could not coerce value true to ID"}])
    );
    assert!(body.get("data").is_none());
    // A single value in a `[UndefinedInput]` slot is accepted through list coercion when
    // the variable is declared with the slot's type.
    let d = e
        .data(
            "mutation($v: [UndefinedInput]) { updateCardField(input: {card_id: 900004, field_id: \"seats\", new_value: $v}) { success } }",
            json!({"v": "3"}),
        )
        .await;
    assert_eq!(d["updateCardField"]["success"], true);
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(3)
    );
    // An input object variable with a wrongly typed member.
    let body = e
        .gql(
            "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id } } }",
            json!({"i": {"pipe_id": {"x": 1}}}),
        )
        .await;
    assert_eq!(code(&body), "argumentLiteralsIncompatible", "{body}");
    // Enum values are checked.
    let body = e
        .gql(
            "mutation { updateFieldsValues(input: {nodeId: \"900004\", values: [{fieldId: \"tasks\", value: [\"Training\"], operation: APPEND}]}) { success } }",
            json!({}),
        )
        .await;
    assert!(code(&body) == "argumentLiteralsIncompatible", "{body}");
    // Unknown operation name.
    let r = e
        .post_as(
            Some(TOKEN),
            json!({"query": "query A { me { id } }", "operationName": "B"}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert!(message(&body).contains("Unknown operation"), "{body}");
    // Variables sent as a JSON string are accepted, other shapes are an error.
    let r = e
        .post_as(
            Some(TOKEN),
            json!({"query": q, "variables": "{\"id\": \"900004\"}"}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["card"]["id"], "900004");
    let r = e
        .post_as(Some(TOKEN), json!({"query": q, "variables": [1]}))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test]
async fn operation_name_selects_one_operation_and_the_legacy_endpoint_works() {
    let e = emu().await;
    let doc = "query A { me { id } } query B { card(id: \"900001\") { title } }";
    let r = e
        .post_as(Some(TOKEN), json!({"query": doc, "operationName": "B"}))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"card": {"title": "Website relaunch"}}));
    let r = e.post_as(Some(TOKEN), json!({"query": doc})).await;
    let body: Value = r.json().await.unwrap();
    assert!(body["errors"].is_array());

    let r = e
        .http
        .post(format!("{}/queries", e.h.base_url()))
        .header("Authorization", "Bearer demo-token")
        .json(&json!({"query": "{ me { id name email } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"]["me"],
        json!({"id": "1001", "name": "Ana Souza", "email": "ana.souza@example.com"})
    );
}

#[tokio::test]
async fn introspection_is_available() {
    let e = emu().await;
    let d = e
        .data(
            "{ __type(name: \"CreateCardInput\") { inputFields { name } } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = d["__type"]["inputFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "pipe_id",
        "title",
        "phase_id",
        "due_date",
        "assignee_ids",
        "label_ids",
        "parent_ids",
        "fields_attributes",
        "clientMutationId",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let d = e
        .data(
            "{ __type(name: \"UpdateFieldsValuesPayload\") { fields { name } } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = d["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"userErrors")
            && names.contains(&"updatedNode")
            && names.contains(&"success")
    );
}

#[tokio::test]
async fn aliased_mutations_run_in_order_and_are_not_atomic() {
    let e = emu().await;
    let q = r#"mutation {
      c1: createCard(input: {pipe_id: 301, fields_attributes: [{field_id: "external_id", field_value: "B-1"}, {field_id: "customer_name", field_value: "One"}]}) { card { id } }
      c2: createCard(input: {pipe_id: 301, fields_attributes: [{field_id: "external_id", field_value: "B-2"}]}) { card { id } }
      c3: createCard(input: {pipe_id: 301, fields_attributes: [{field_id: "external_id", field_value: "B-3"}, {field_id: "customer_name", field_value: "Three"}]}) { card { id } }
      d1: deleteCard(input: {id: "424242"}) { success }
      u1: updateFieldsValues(input: {nodeId: "900004", values: [{fieldId: "seats", value: 7}]}) { success }
    }"#;
    let body = e.gql(q, json!({})).await;
    let data = body["data"].as_object().unwrap();
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(
        keys,
        vec!["c1", "c2", "c3", "d1", "u1"],
        "document order kept"
    );
    assert_eq!(data["c2"], Value::Null);
    assert_eq!(data["d1"], Value::Null);
    assert_eq!(data["u1"]["success"], true);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["path"], json!(["c2"]));
    assert_eq!(errors[0]["extensions"]["code"], "RECORD_INVALID");
    assert_eq!(errors[1]["path"], json!(["d1"]));
    assert_eq!(errors[1]["extensions"]["code"], "PERMISSION_DENIED");
    let id1: u64 = data["c1"]["card"]["id"].as_str().unwrap().parse().unwrap();
    let id3: u64 = data["c3"]["card"]["id"].as_str().unwrap().parse().unwrap();
    assert!(id1 < id3, "executed in alias order");
    let snap = e.h.snapshot();
    assert_eq!(snap.count_cards_where("301", "external_id", "B-1"), 1);
    assert_eq!(snap.count_cards_where("301", "external_id", "B-2"), 0);
    assert_eq!(snap.count_cards_where("301", "external_id", "B-3"), 1);
    assert_eq!(snap.card("900004").unwrap().fields["seats"], json!(7));
    let stats = e.h.stats();
    assert_eq!(stats.mutations["createCard"], 3);
    assert_eq!(stats.mutations["deleteCard"], 1);
}

#[tokio::test]
async fn alias_cap_is_configurable() {
    let doc = "{ a: me { id } b: me { id } c: me { id } }";
    let e = emu().await;
    assert!(
        e.gql(doc, json!({})).await.get("errors").is_none(),
        "no cap by default"
    );
    let e = emu_with(EmulatorConfig {
        max_aliases: Some(2),
        ..EmulatorConfig::default()
    })
    .await;
    let body = e.gql(doc, json!({})).await;
    assert_eq!(code(&body), "MAX_ALIASES_EXCEEDED");
    assert!(body.get("data").is_none());
    assert!(e
        .gql("{ a: me { id } b: me { id } }", json!({}))
        .await
        .get("errors")
        .is_none());
}

#[tokio::test]
async fn complexity_and_depth_limits() {
    let e = emu().await;
    // 1000 * (edges + node + 60 fields) > 50,000.
    let many: String = (0..60).map(|i| format!("f{i}: title ")).collect();
    let q = format!("{{ cards(pipe_id: 301, first: 1000) {{ edges {{ node {{ {many} }} }} }} }}");
    let body = e.gql(&q, json!({})).await;
    assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED", "{body}");
    assert!(
        message(&body).starts_with("Query has complexity of "),
        "{}",
        message(&body)
    );
    assert!(message(&body).ends_with("which exceeds max complexity of 50000"));
    // The same selection with first: 10 is fine.
    let q = format!("{{ cards(pipe_id: 301, first: 10) {{ edges {{ node {{ {many} }} }} }} }}");
    assert!(e.gql(&q, json!({})).await.get("errors").is_none());

    // 16 levels deep.
    let deep = "{ card(id: 900004) { pipe { phases { cards_can_be_moved_to_phases { pipe { phases { cards_can_be_moved_to_phases { pipe { phases { cards_can_be_moved_to_phases { pipe { phases { cards_can_be_moved_to_phases { pipe { phases { id } } } } } } } } } } } } } } } }";
    let body = e.gql(deep, json!({})).await;
    assert_eq!(code(&body), "MAX_DEPTH_EXCEEDED", "{body}");
    assert_eq!(
        message(&body),
        "Query has depth of 16, which exceeds max depth of 15"
    );

    let e = emu_with(EmulatorConfig {
        max_complexity: 5,
        ..EmulatorConfig::default()
    })
    .await;
    let body = e
        .gql(
            "{ card(id: 900004) { id title due_date createdAt updatedAt } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED");
    assert!(e
        .gql("{ card(id: 900004) { id title } }", json!({}))
        .await
        .get("errors")
        .is_none());
    let e = emu_with(EmulatorConfig {
        max_depth: 16,
        ..EmulatorConfig::default()
    })
    .await;
    assert!(e.gql(deep, json!({})).await.get("errors").is_none());
}
