//! graphql-ruby's static validation of variables (declared types against the positions
//! they are used in, undeclared and unused variables, non-input types), through the HTTP
//! server: HTTP 200, `errors` only, no `data`, nothing executed.

mod common;

use common::*;
use serde_json::{json, Value};

/// Runs `query` and asserts it failed validation: HTTP 200 (checked by `gql`), no `data`.
async fn rejected(e: &Emu, query: &str, vars: Value) -> Value {
    let body = e.gql(query, vars).await;
    assert!(
        body.get("data").is_none(),
        "no data on validation errors: {body}"
    );
    let errors = body["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{body}");
    for err in errors {
        assert!(err["extensions"]["code"].is_string(), "{err}");
        assert!(err["extensions"]["correlation_id"].is_string(), "{err}");
    }
    body
}

/// All `(code, message)` pairs of a body.
fn all(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["extensions"]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_variable_of_another_named_type_is_a_type_mismatch() {
    let e = emu().await;
    let body = rejected(
        &e,
        "query($x: String!) { card(id: $x) { id } }",
        json!({"x": "900004"}),
    )
    .await;
    assert_eq!(code(&body), "variableMismatch");
    assert_eq!(
        message(&body),
        "Type mismatch on variable $x and argument id (String! / ID!)"
    );
    let err = &body["errors"][0];
    assert_eq!(err["extensions"]["variableName"], "x");
    assert_eq!(err["extensions"]["typeName"], "String!");
    assert_eq!(err["extensions"]["argumentName"], "id");
    assert_eq!(err["extensions"]["errorMessage"], "Type mismatch");
    assert_eq!(err["path"], json!(["query", "card", "id"]));
    assert_eq!(err["locations"][0]["line"], 1);
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");

    let body = rejected(
        &e,
        "query($x: Int!) { card(id: $x) { id } }",
        json!({"x": 900004}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $x and argument id (Int! / ID!)"
    );

    // A whole input object of the wrong input type: nothing is applied.
    let body = rejected(
        &e,
        "mutation Rename($x: CreateCardInput!) { updateCard(input: $x) { card { id } } }",
        json!({"x": {"pipe_id": "301", "id": "900004", "title": "Renamed"}}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $x and argument input (CreateCardInput! / UpdateCardInput!)"
    );
    assert_eq!(
        body["errors"][0]["path"],
        json!(["mutation Rename", "updateCard", "input"])
    );
    assert_ne!(e.h.snapshot().card("900004").unwrap().title, "Renamed");
    assert!(e.h.stats().mutations.is_empty(), "nothing executed");

    // A bare string variable in a `[UndefinedInput]` slot: graphql-ruby compares the named
    // types, whatever list coercion would do with the value.
    let body = rejected(
        &e,
        "mutation($v: String!) { updateCardField(input: {card_id: 900004, field_id: \"seats\", new_value: $v}) { success } }",
        json!({"v": "3"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $v and argument new_value (String! / [UndefinedInput])"
    );
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(120)
    );
}

#[tokio::test]
async fn list_dimensions_must_match() {
    let e = emu().await;
    let body = rejected(
        &e,
        "query($ids: [ID]!) { card(id: $ids) { id } }",
        json!({"ids": ["900004"]}),
    )
    .await;
    assert_eq!(code(&body), "variableMismatch");
    assert_eq!(
        message(&body),
        "List dimension mismatch on variable $ids and argument id ([ID]! / ID!)"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["errorMessage"],
        "List dimension mismatch"
    );

    // A single id where the argument is a list (list coercion applies to values only).
    let body = rejected(
        &e,
        "query($id: ID!) { pipes(ids: $id) { id } }",
        json!({"id": "301"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "List dimension mismatch on variable $id and argument ids (ID! / [ID]!)"
    );
    // Nested one level too deep.
    let body = rejected(
        &e,
        "query($ids: [[ID]]!) { pipes(ids: $ids) { id } }",
        json!({"ids": [["301"]]}),
    )
    .await;
    assert_eq!(
        message(&body),
        "List dimension mismatch on variable $ids and argument ids ([[ID]]! / [ID]!)"
    );

    // The same id inside a list literal fits, and so does a list variable.
    let d = e
        .data(
            "query($id: ID!) { pipes(ids: [$id]) { id } }",
            json!({"id": "301"}),
        )
        .await;
    assert_eq!(d["pipes"][0]["id"], "301");
    let d = e
        .data(
            "query($ids: [ID]!) { pipes(ids: $ids) { id } }",
            json!({"ids": ["301"]}),
        )
        .await;
    assert_eq!(d["pipes"][0]["id"], "301");
}

#[tokio::test]
async fn a_nullable_variable_at_a_non_null_position_is_a_nullability_mismatch() {
    let e = emu().await;
    let body = rejected(
        &e,
        "query GetCard($x: ID) { card(id: $x) { id } }",
        json!({"x": "900004"}),
    )
    .await;
    assert_eq!(code(&body), "variableMismatch");
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $x and argument id (ID / ID!)"
    );
    assert_eq!(
        body["errors"][0]["path"],
        json!(["query GetCard", "card", "id"])
    );

    // Inside the list: `tables(ids: [ID!]!)` needs non-null items.
    let body = rejected(
        &e,
        "query($ids: [ID]!) { tables(ids: $ids) { id } }",
        json!({"ids": ["tbl_accounts"]}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $ids and argument ids ([ID]! / [ID!]!)"
    );
    // The outer list too.
    let body = rejected(
        &e,
        "query($ids: [ID!]) { tables(ids: $ids) { id } }",
        json!({"ids": ["tbl_accounts"]}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $ids and argument ids ([ID!] / [ID!]!)"
    );
    // A nullable item variable in a list literal at a non-null item position.
    let body = rejected(
        &e,
        "query($id: ID) { tables(ids: [$id]) { id } }",
        json!({"id": "tbl_accounts"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $id and argument ids ([ID]! / [ID!]!)"
    );
}

#[tokio::test]
async fn a_nullable_variable_with_a_non_null_default_may_stand_at_a_non_null_position() {
    let e = emu().await;
    let d = e
        .data(
            "query($x: ID = \"900004\") { card(id: $x) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["card"]["id"], "900004");
    let d = e
        .data(
            "query($x: ID = \"900004\") { card(id: $x) { id } }",
            json!({"x": "900001"}),
        )
        .await;
    assert_eq!(d["card"]["id"], "900001");
    let d = e
        .data(
            "query($ids: [ID!] = [\"tbl_accounts\"]) { tables(ids: $ids) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["tables"][0]["id"], "tbl_accounts");
    // A `null` default is no default.
    let body = rejected(
        &e,
        "query($x: ID = null) { card(id: $x) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $x and argument id (ID / ID!)"
    );
    // The allowance covers nullability only.
    let body = rejected(
        &e,
        "query($x: String = \"900004\") { card(id: $x) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $x and argument id (String! / ID!)"
    );
}

#[tokio::test]
async fn a_non_null_variable_at_a_nullable_position_is_fine() {
    let e = emu().await;
    let q = "query($pipe: ID!, $first: Int!, $after: String!, $s: CardSearch!) { cards(pipe_id: $pipe, first: $first, after: $after, search: $s) { edges { node { id } } } }";
    let body = e
        .gql(
            q,
            json!({"pipe": "302", "first": 2, "after": "bogus", "s": {"include_done": true}}),
        )
        .await;
    // Validation passed: the bad cursor is an execution error of the field.
    assert!(body.get("data").is_some(), "{body}");
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    let d = e
        .data(
            "query($pipe: ID!, $first: Int!, $done: Boolean!, $title: String!) { cards(pipe_id: $pipe, first: $first, search: {include_done: $done, title: $title}) { edges { node { id title } } } }",
            json!({"pipe": "302", "first": 5, "done": true, "title": "Website relaunch"}),
        )
        .await;
    assert_eq!(d["cards"]["edges"][0]["node"]["id"], "900001", "{d}");
    // Non-null items where the list's items are nullable.
    let d = e
        .data(
            "query($ids: [ID!]!) { pipes(ids: $ids) { id } }",
            json!({"ids": ["301"]}),
        )
        .await;
    assert_eq!(d["pipes"][0]["id"], "301");
}

#[tokio::test]
async fn variables_inside_input_object_and_list_literals_are_checked_against_their_field() {
    let e = emu().await;
    let body = rejected(
        &e,
        "query($f: Int!, $v: String!) { findCards(pipeId: 302, search: {fieldId: $f, fieldValue: $v}) { edges { node { id } } } }",
        json!({"f": 1, "v": "P-100"}),
    )
    .await;
    assert_eq!(code(&body), "variableMismatch");
    assert_eq!(
        message(&body),
        "Type mismatch on variable $f and argument fieldId (Int! / String!)"
    );
    assert_eq!(
        body["errors"][0]["path"],
        json!(["query", "findCards", "search", "fieldId"])
    );
    // Nullable into `fieldValue: String!`.
    let body = rejected(
        &e,
        "query($f: String!, $v: String) { findCards(pipeId: 302, search: {fieldId: $f, fieldValue: $v}) { edges { node { id } } } }",
        json!({"f": "project_code", "v": "P-100"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $v and argument fieldValue (String / String!)"
    );
    // An input object inside a list inside an input object.
    let body = rejected(
        &e,
        "mutation($f: Boolean!) { updateFieldsValues(input: {nodeId: \"900004\", values: [{fieldId: $f, value: 3}]}) { success } }",
        json!({"f": true}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $f and argument fieldId (Boolean! / ID!)"
    );
    // A variable in a list literal of an input field: wrapped by the literal's depth.
    let body = rejected(
        &e,
        "mutation($id: ID!) { updateCardField(input: {card_id: 900004, field_id: \"account\", new_value: [$id]}) { success } }",
        json!({"id": "Xa7KpQ2m"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Type mismatch on variable $id and argument new_value ([ID!]! / [UndefinedInput])"
    );
    assert!(e.h.stats().mutations.is_empty(), "nothing executed");
    // The matching declarations pass and run.
    let d = e
        .data(
            "query($f: String!, $v: String!) { findCards(pipeId: 302, search: {fieldId: $f, fieldValue: $v}) { edges { node { id } } } }",
            json!({"f": "project_code", "v": "P-200"}),
        )
        .await;
    assert_eq!(d["findCards"]["edges"][0]["node"]["id"], "900002", "{d}");
    let d = e
        .data(
            "mutation($n: ID!, $f: ID!, $v: [UndefinedInput]) { updateFieldsValues(input: {nodeId: $n, values: [{fieldId: $f, value: $v}]}) { success } }",
            json!({"n": "900004", "f": "seats", "v": [7]}),
        )
        .await;
    assert_eq!(d["updateFieldsValues"]["success"], true);
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(7)
    );
}

#[tokio::test]
async fn an_undeclared_variable_is_reported_with_its_user() {
    let e = emu().await;
    let body = rejected(&e, "query { card(id: $x) { id } }", json!({"x": "900004"})).await;
    assert_eq!(code(&body), "variableNotDefined");
    assert_eq!(
        message(&body),
        "Variable $x is used by anonymous query but not declared"
    );
    assert_eq!(body["errors"][0]["extensions"]["variableName"], "x");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");

    let body = rejected(
        &e,
        "mutation Del { deleteCard(input: {id: $id}) { success } }",
        json!({"id": "900004"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Variable $id is used by Del but not declared"
    );
    assert!(e.h.snapshot().card("900004").is_some());

    // Inside a fragment: named after the fragment.
    let body = rejected(
        &e,
        "query Q { ...Lookup } fragment Lookup on Query { card(id: $x) { id } }",
        json!({"x": "900004"}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Variable $x is used by Lookup but not declared"
    );
    assert_eq!(
        body["errors"][0]["path"],
        json!(["fragment Lookup", "card", "id"])
    );
}

#[tokio::test]
async fn a_declared_variable_must_be_used() {
    let e = emu().await;
    let body = rejected(&e, "query($x: ID!) { me { id } }", json!({"x": "1"})).await;
    assert_eq!(code(&body), "variableNotUsed");
    assert_eq!(
        message(&body),
        "Variable $x is declared by anonymous query but not used"
    );
    assert_eq!(body["errors"][0]["path"], json!(["query"]));
    let body = rejected(
        &e,
        "mutation Batch($v0: DeleteCardInput!, $v1: DeleteCardInput!) { op0: deleteCard(input: $v0) { success } }",
        json!({"v0": {"id": "900004"}, "v1": {"id": "900001"}}),
    )
    .await;
    assert_eq!(
        all(&body),
        vec![(
            "variableNotUsed".to_string(),
            "Variable $v1 is declared by Batch but not used".to_string()
        )]
    );
    assert!(e.h.snapshot().card("900004").is_some(), "nothing executed");
    // Used through a fragment (also in a directive) counts.
    let d = e
        .data(
            "query($x: ID!, $full: Boolean!) { ...Lookup } fragment Lookup on Query { card(id: $x) { id title @include(if: $full) } }",
            json!({"x": "900004", "full": false}),
        )
        .await;
    assert_eq!(d["card"], json!({"id": "900004"}));
    // Directive arguments are positions too.
    let body = rejected(
        &e,
        "query($full: Boolean) { me { id name @include(if: $full) } }",
        json!({"full": true}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Nullability mismatch on variable $full and argument if (Boolean / Boolean!)"
    );
}

#[tokio::test]
async fn variables_must_have_input_types() {
    let e = emu().await;
    let body = rejected(&e, "query($c: Card) { card(id: $c) { id } }", json!({})).await;
    assert_eq!(code(&body), "variableRequiresValidType");
    assert_eq!(message(&body), "Card isn't a valid input type (on $c)");
    // graphql-ruby also compares it with the argument.
    assert!(
        all(&body).contains(&(
            "variableMismatch".into(),
            "Type mismatch on variable $c and argument id (Card / ID!)".into()
        )),
        "{body}"
    );
    let body = rejected(&e, "query($c: Nope!) { card(id: $c) { id } }", json!({})).await;
    assert_eq!(
        all(&body),
        vec![(
            "variableRequiresValidType".to_string(),
            "Nope isn't a defined input type (on $c)".to_string()
        )]
    );
}

#[tokio::test]
async fn all_static_errors_come_together_and_nothing_runs() {
    let e = emu().await;
    let body = rejected(
        &e,
        "mutation($a: String!, $b: ID!) { a: deleteCard(input: {id: $a}) { success } b: deleteCard(input: {id: \"900001\"}) { nope } }",
        json!({"a": "900004", "b": "x"}),
    )
    .await;
    let errors = all(&body);
    assert!(
        errors.contains(&(
            "variableMismatch".into(),
            "Type mismatch on variable $a and argument id (String! / ID!)".into()
        )),
        "{body}"
    );
    assert!(
        errors.contains(&(
            "variableNotUsed".into(),
            "Variable $b is declared by anonymous mutation but not used".into()
        )),
        "{body}"
    );
    assert!(
        errors.contains(&(
            "undefinedField".into(),
            "Field 'nope' doesn't exist on type 'DeleteCardPayload'".into()
        )),
        "{body}"
    );
    assert_eq!(errors.len(), 3, "{body}");
    assert!(e.h.snapshot().card("900004").is_some());
    assert!(e.h.snapshot().card("900001").is_some());
    assert!(e.h.stats().mutations.is_empty());
}

#[tokio::test]
async fn variable_values_are_checked_once_the_document_is_valid() {
    let e = emu().await;
    let q = "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id } } }";
    let body = rejected(
        &e,
        q,
        json!({"i": {"pipe_id": true, "labels_ids": ["1"], "fields_attributes": [{"field_value": "x"}]}}),
    )
    .await;
    assert_eq!(
        message(&body),
        "Variable $i of type CreateCardInput! was provided invalid value"
    );
    assert_eq!(code(&body), "argumentLiteralsIncompatible");
    assert_eq!(
        body["errors"][0]["extensions"]["problems"],
        json!([
            {"path": ["labels_ids"], "explanation": "Field is not defined on CreateCardInput"},
            {"path": ["fields_attributes", 0, "field_id"], "explanation": "Expected value to not be null"},
            {"path": ["pipe_id"], "explanation": "Could not coerce value true to ID"},
        ])
    );
    assert_eq!(body["errors"][0]["extensions"]["value"]["pipe_id"], true);
    // Missing, null, and the wrong shape.
    let q = "query($id: ID!, $s: CardSearch) { cards(pipe_id: $id, search: $s) { totalCount } }";
    let body = rejected(&e, q, json!({"s": "x"})).await;
    let problems: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["extensions"]["problems"][0]["explanation"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            "Expected value to not be null",
            "Expected \"x\" to be a key-value object."
        ]
    );
    // Static errors come first: with one, values are not looked at.
    let body = rejected(
        &e,
        "query($id: ID!, $unused: Int) { card(id: $id) { id } }",
        json!({"id": true}),
    )
    .await;
    assert_eq!(all(&body).len(), 1, "{body}");
    assert_eq!(code(&body), "variableNotUsed");
    assert!(e.h.stats().mutations.is_empty());
}

/// The documents `shared/src/pipefy` builds (ops.rs, reads.rs, batch.rs), rendered the
/// way the client renders them: every one must pass validation.
#[tokio::test]
async fn the_clients_documents_pass_validation() {
    let e = emu().await;
    let field_sel = "id internal_id uuid label type required options";
    let card_sel = "id title done due_date current_phase { id name } labels { id name } assignees { id name email } fields { name value field { id } }";
    let reads = format!(
        "query Batch($v0: ID!, $v1: ID!, $v2: ID!, $v3: FilterSet!, $v4: ID!, $v5: FindCards!, $v7: String!, $v8: String!, $v9: String!, $v10: ID!, $v11: Int, $v12: String, $v13: ID!, $v14: Int!) {{\n\
  op0: pipe(id: $v0) {{ id name startFormPhaseId organizationId start_form_fields {{ {field_sel} }} phases {{ id name done fields {{ {field_sel} }} cards_can_be_moved_to_phases {{ id }} }} labels {{ id name }} members {{ user {{ id name email }} }} }}\n\
  op1: table(id: $v1) {{ id name table_fields {{ id internal_id label type required options }} }}\n\
  op2: records(repoId: $v2, where: $v3, first: 2) {{ edges {{ node {{ id }} }} }}\n\
  op3: findCards(pipeId: $v4, search: $v5, first: 2) {{ edges {{ node {{ id }} }} }}\n\
  op4: findRecords(tableId: $v7, search: {{fieldId: $v8, fieldValue: $v9}}, first: 2) {{ edges {{ node {{ id }} }} }}\n\
  op5: cards(pipe_id: $v10, first: $v11, after: $v12, search: {{include_done: true}}) {{ pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {card_sel} }} }} }}\n\
  op6: card(id: $v13) {{ {card_sel} }}\n\
  op7: organizations {{ id tables(first: $v14) {{ nodes {{ id }} }} }}\n}}"
    );
    let vars = json!({
        "v0": "301", "v1": "tbl_accounts", "v2": "301",
        "v3": {"field": uuid_of("301", "external_id"), "eq": "CUST-0001"},
        "v4": "302", "v5": {"fieldId": "project_code", "fieldValue": "P-100"},
        "v7": "tbl_accounts", "v8": "code", "v9": "ACME",
        "v10": "302", "v11": 50, "v12": null, "v13": "900004", "v14": 200,
    });
    let d = e.data(&reads, vars).await;
    assert_eq!(d["op0"]["id"], "301");
    assert_eq!(d["op0"]["organizationId"], "1", "{d}");
    assert_eq!(
        d["op7"][0]["tables"]["nodes"][0]["id"], "tbl_accounts",
        "{d}"
    );
    assert_eq!(d["op2"]["edges"][0]["node"]["id"], "900004", "{d}");
    assert_eq!(d["op3"]["edges"][0]["node"]["id"], "900001", "{d}");
    assert_eq!(d["op6"]["id"], "900004");

    let writes = "mutation Batch($v0: CreateCardInput!, $v1: UpdateCardInput!, $v2: UpdateCardFieldInput!, $v3: UpdateFieldsValuesInput!, $v4: MoveCardToPhaseInput!, $v5: CreateTableRecordInput!, $v6: UpdateTableRecordInput!, $v7: SetTableRecordFieldValueInput!, $v8: DeleteTableRecordInput!, $v9: DeleteCardInput!, $v10: ID!, $v11: String!, $v12: String, $v13: Int) {\n\
  op0: createCard(input: $v0) { card { id } }\n\
  op1: updateCard(input: $v1) { card { id } }\n\
  op2: updateCardField(input: $v2) { success card { id } }\n\
  op3: updateFieldsValues(input: $v3) { success userErrors { field message } updatedNode { ... on Card { id } } }\n\
  op4: moveCardToPhase(input: $v4) { card { id current_phase { id } } }\n\
  op5: createTableRecord(input: $v5) { table_record { id } }\n\
  op6: updateTableRecord(input: $v6) { table_record { id } }\n\
  op7: setTableRecordFieldValue(input: $v7) { table_record { id } }\n\
  op8: deleteTableRecord(input: $v8) { success }\n\
  op9: deleteCard(input: $v9) { success }\n\
  op10: createPresignedUrl(input: {organizationId: $v10, fileName: $v11, contentType: $v12, contentLength: $v13}) { url downloadUrl clientMutationId }\n}";
    let vars = json!({
        "v0": {"pipe_id": "301", "title": "T", "fields_attributes": [
            {"field_id": "external_id", "field_value": "CUST-9"},
            {"field_id": "customer_name", "field_value": "Nine"}]},
        "v1": {"id": "900004", "title": "Renamed"},
        "v2": {"card_id": "900004", "field_id": "seats", "new_value": ["9"]},
        "v3": {"nodeId": "900004", "values": [{"fieldId": "plan", "value": "Pro", "operation": "REPLACE"}]},
        "v4": {"card_id": "900004", "destination_phase_id": "3014"},
        "v5": {"table_id": "tbl_accounts", "title": "Umbrella", "fields_attributes": [
            {"field_id": "code", "field_value": "UMB"}, {"field_id": "name", "field_value": "Umbrella"}]},
        "v6": {"id": "Xa7KpQ2m", "title": "Acme Corp"},
        "v7": {"table_record_id": "Xa7KpQ2m", "field_id": "region", "value": ["EU"]},
        "v8": {"id": "424242"},
        "v9": {"id": "900002"},
        "v10": "1", "v11": "invoice.pdf", "v12": "application/pdf", "v13": 42,
    });
    let body = e.gql(writes, vars).await;
    let data = body.get("data").expect("the document passed validation");
    assert!(data["op0"]["card"]["id"].is_string(), "{body}");
    assert_eq!(data["op3"]["success"], true, "{body}");
    assert_eq!(data["op9"]["success"], true, "{body}");
    assert!(data["op10"]["url"].is_string(), "{body}");
    for (code, msg) in all(&body) {
        assert!(
            !code.starts_with("variable") && code != "GRAPHQL_VALIDATION_FAILED",
            "{code}: {msg}"
        );
    }
}
