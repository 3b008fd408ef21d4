//! Tables and records, updateFieldsValues, schema reads (pipe/table), lookups by key
//! (records/findCards/findRecords) and cursor pagination.

mod common;

use common::*;
use pipefy_emulator::EmulatorConfig;
use serde_json::{json, Value};

const CREATE_RECORD: &str = "mutation($i: CreateTableRecordInput!) { createTableRecord(input: $i) { table_record { id title record_fields { name value } } clientMutationId } }";

#[tokio::test]
async fn pipe_schema_read() {
    let e = emu().await;
    let d = e
        .data(
            "{ pipe(id: 301) { id name startFormPhaseId
                phases { id name done fields { id uuid internal_id label type required options } cards_can_be_moved_to_phases { id name } }
                start_form_fields { id uuid internal_id label type required options }
                labels { id name } members { user { id name email } role_name } } }",
            json!({}),
        )
        .await;
    let p = &d["pipe"];
    assert_eq!(p["name"], "Customer onboarding");
    assert_eq!(p["startFormPhaseId"], "3011");
    let phases = p["phases"].as_array().unwrap();
    assert_eq!(
        phases
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["Inbox", "Doing", "Done", "Archived"]
    );
    assert_eq!(
        phases[0]["cards_can_be_moved_to_phases"],
        json!([{"id": "3012", "name": "Doing"}, {"id": "3014", "name": "Archived"}])
    );
    assert_eq!(phases[2]["done"], true);
    assert_eq!(phases[2]["fields"][0]["label"], "Go-live date");
    assert_eq!(phases[2]["fields"][0]["required"], true);
    let sf = p["start_form_fields"].as_array().unwrap();
    let ext = &sf[0];
    assert_eq!(ext["id"], "external_id");
    assert_eq!(ext["type"], "short_text");
    assert_eq!(ext["required"], true);
    assert_eq!(ext["uuid"], uuid_of("301", "external_id"));
    assert!(ext["internal_id"].as_str().unwrap().parse::<u64>().is_ok());
    let plan = sf.iter().find(|f| f["id"] == "plan").unwrap();
    assert_eq!(plan["options"], json!(["Free", "Pro", "Enterprise"]));
    let types: Vec<&str> = sf.iter().map(|f| f["type"].as_str().unwrap()).collect();
    for t in [
        "email",
        "select",
        "number",
        "currency",
        "date",
        "datetime",
        "time",
        "checklist_vertical",
        "connector",
        "assignee_select",
        "label_select",
    ] {
        assert!(types.contains(&t), "{t}");
    }
    assert_eq!(p["labels"].as_array().unwrap().len(), 3);
    assert_eq!(
        p["members"][0],
        json!({"user": {"id": "1001", "name": "Ana Souza", "email": "ana.souza@example.com"}, "role_name": "admin"})
    );
}

#[tokio::test]
async fn table_schema_read_and_records_lifecycle() {
    let e = emu().await;
    let d = e.data("{ table(id: \"tbl_accounts\") { id name table_fields { id uuid internal_id label type required unique options } } }", json!({})).await;
    let t = &d["table"];
    assert_eq!(t["name"], "Accounts");
    assert_eq!(t["table_fields"][0]["id"], "code");
    assert_eq!(t["table_fields"][0]["unique"], true);
    assert_eq!(
        t["table_fields"][0]["uuid"],
        uuid_of("tbl_accounts", "code")
    );
    assert_eq!(
        t["table_fields"][2]["options"],
        json!(["North America", "Europe", "LATAM", "APAC"])
    );

    // Create: the title comes from the title field ("name").
    let d = e
        .data(
            CREATE_RECORD,
            json!({"i": {"table_id": "tbl_accounts", "title": "ignored", "clientMutationId": "r1", "fields_attributes": [
                {"field_id": "code", "field_value": "UMBRELLA"},
                {"field_id": "name", "field_value": "Umbrella Inc"},
                {"field_id": "region", "field_value": "APAC"}]}}),
        )
        .await;
    let rec = &d["createTableRecord"]["table_record"];
    assert_eq!(d["createTableRecord"]["clientMutationId"], "r1");
    assert_eq!(rec["title"], "Umbrella Inc");
    let id = rec["id"].as_str().unwrap().to_string();
    assert!(
        id.len() >= 8 && id.parse::<u64>().is_err(),
        "opaque id {id}"
    );
    assert_eq!(
        rec["record_fields"],
        json!([{"name": "Code", "value": "UMBRELLA"}, {"name": "Name", "value": "Umbrella Inc"}, {"name": "Region", "value": "APAC"}])
    );

    // Required, unique, select options.
    let body = e.gql(CREATE_RECORD, json!({"i": {"table_id": "tbl_accounts", "fields_attributes": [{"field_id": "name", "field_value": "No code"}]}})).await;
    assert_eq!(message(&body), "Field \"Code\" is required");
    let body = e.gql(CREATE_RECORD, json!({"i": {"table_id": "tbl_accounts", "fields_attributes": [{"field_id": "code", "field_value": "ACME"}]}})).await;
    assert_eq!(code(&body), "RECORD_INVALID");
    assert_eq!(message(&body), "Field \"Code\" has already been taken");
    let body = e.gql(CREATE_RECORD, json!({"i": {"table_id": "tbl_accounts", "fields_attributes": [{"field_id": "code", "field_value": "Z"}, {"field_id": "region", "field_value": "Mars"}]}})).await;
    assert_eq!(code(&body), "INVALID_INPUT");
    let body = e
        .gql(
            CREATE_RECORD,
            json!({"i": {"table_id": "tbl_nope", "fields_attributes": []}}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");

    // updateTableRecord sets attributes only.
    let d = e
        .data(
            "mutation($i: UpdateTableRecordInput!) { updateTableRecord(input: $i) { table_record { id title due_date } } }",
            json!({"i": {"id": id, "title": "Umbrella", "due_date": "2025-01-01T00:00:00Z", "statusId": "1"}}),
        )
        .await;
    assert_eq!(
        d["updateTableRecord"]["table_record"]["due_date"],
        "2025-01-01T00:00:00Z"
    );

    // setTableRecordFieldValue: single value wrapped in a list; returns the field.
    let d = e
        .data(
            "mutation($i: SetTableRecordFieldValueInput!) { setTableRecordFieldValue(input: $i) { table_record { id title } table_record_field { name value } } }",
            json!({"i": {"table_record_id": id, "field_id": "name", "value": ["Umbrella Corporation"]}}),
        )
        .await;
    assert_eq!(
        d["setTableRecordFieldValue"]["table_record_field"],
        json!({"name": "Name", "value": "Umbrella Corporation"})
    );
    assert_eq!(
        d["setTableRecordFieldValue"]["table_record"]["title"],
        "Umbrella Corporation"
    );
    let body = e
        .gql(
            "mutation($i: SetTableRecordFieldValueInput!) { setTableRecordFieldValue(input: $i) { table_record { id } } }",
            json!({"i": {"table_record_id": id, "field_id": "code", "value": "GLOBEX"}}),
        )
        .await;
    assert_eq!(message(&body), "Field \"Code\" has already been taken");

    let d = e.data("query($id: ID!) { table_record(id: $id) { id title table { id } record_fields { name value field { id uuid } } } }", json!({"id": id})).await;
    assert_eq!(d["table_record"]["table"]["id"], "tbl_accounts");
    let snap = e.h.snapshot();
    assert_eq!(
        snap.count_records_where("tbl_accounts", "code", "UMBRELLA"),
        1
    );
    assert_eq!(
        snap.record(&id).unwrap().fields["name"],
        json!("Umbrella Corporation")
    );

    // Delete; connector values pointing at it go too.
    e.data(
        // `new_value` is `[UndefinedInput]`: an `ID!` variable there is a type mismatch.
        "mutation($id: UndefinedInput!) { updateCardField(input: {card_id: 900004, field_id: \"account\", new_value: [$id]}) { success } }",
        json!({"id": id}),
    )
    .await;
    let d = e.data("mutation($id: ID!) { deleteTableRecord(input: {id: $id, clientMutationId: \"x\"}) { success clientMutationId } }", json!({"id": id})).await;
    assert_eq!(d["deleteTableRecord"]["success"], true);
    let snap = e.h.snapshot();
    assert!(snap.record(&id).is_none());
    assert!(!snap.card("900004").unwrap().fields.contains_key("account"));
}

const UFV: &str = "mutation($i: UpdateFieldsValuesInput!) { updateFieldsValues(input: $i) { success userErrors { field message } updatedNode { __typename ... on Card { id title } ... on TableRecord { id title } } } }";

#[tokio::test]
async fn update_fields_values_add_remove_replace() {
    let e = emu().await;
    let d = e
        .data(
            UFV,
            json!({"i": {"nodeId": "900004", "values": [
                {"fieldId": "tasks", "value": ["Training", "Go-live"], "operation": "ADD"},
                {"fieldId": "tags", "value": ["310001"], "operation": "REMOVE"},
                {"fieldId": "owner", "value": ["1003"], "operation": "ADD"},
                {"fieldId": "seats", "value": 150},
                {"fieldId": "plan", "value": ["Pro"], "operation": "REPLACE"},
                {"fieldId": "email", "value": null}]}}),
        )
        .await;
    let r = &d["updateFieldsValues"];
    assert_eq!(r["success"], true);
    assert_eq!(r["userErrors"], json!([]));
    assert_eq!(r["updatedNode"]["__typename"], "Card");
    assert_eq!(r["updatedNode"]["id"], "900004");
    let snap = e.h.snapshot();
    let c = snap.card("900004").unwrap();
    assert_eq!(c.fields["tasks"], json!(["Kickoff", "Training", "Go-live"]));
    assert!(!c.fields.contains_key("tags"));
    assert_eq!(c.fields["owner"], json!(["1002", "1003"]));
    assert_eq!(c.fields["seats"], json!(150));
    assert_eq!(c.fields["plan"], json!("Pro"));
    assert!(!c.fields.contains_key("email"));

    // Table records are nodes too.
    let d = e.data(UFV, json!({"i": {"nodeId": "Xa7KpQ2m", "values": [{"fieldId": "region", "value": "Europe"}]}})).await;
    assert_eq!(
        d["updateFieldsValues"]["updatedNode"],
        json!({"__typename": "TableRecord", "id": "Xa7KpQ2m", "title": "Acme Corp"})
    );
    assert_eq!(
        e.h.snapshot().record("Xa7KpQ2m").unwrap().fields["region"],
        json!("Europe")
    );
}

#[tokio::test]
async fn update_fields_values_reports_user_errors_without_top_level_errors() {
    let e = emu().await;
    // Unknown field and a bad value: success false, nothing written.
    let body = e
        .gql(
            UFV,
            json!({"i": {"nodeId": "900004", "values": [
            {"fieldId": "seats", "value": 1},
            {"fieldId": "nope", "value": "x"},
            {"fieldId": "signup_date", "value": "31/31/2024"}]}}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let r = &body["data"]["updateFieldsValues"];
    assert_eq!(r["success"], false);
    assert_eq!(r["updatedNode"], Value::Null);
    assert_eq!(
        r["userErrors"][0],
        json!({"field": ["nope"], "message": "Field not found"})
    );
    assert_eq!(r["userErrors"][1]["field"], json!(["signup_date"]));
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(120)
    );
    // ADD on a scalar field.
    let body = e.gql(UFV, json!({"i": {"nodeId": "900004", "values": [{"fieldId": "seats", "value": 1, "operation": "ADD"}]}})).await;
    assert_eq!(body["data"]["updateFieldsValues"]["success"], false);

    // 30 values pass, 31 fail with the pinned message and field: null.
    let thirty: Vec<Value> = (0..30)
        .map(|i| json!({"fieldId": "seats", "value": i}))
        .collect();
    let d = e
        .data(UFV, json!({"i": {"nodeId": "900004", "values": thirty}}))
        .await;
    assert_eq!(d["updateFieldsValues"]["success"], true);
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(29)
    );
    let thirty_one: Vec<Value> = (0..31)
        .map(|i| json!({"fieldId": "seats", "value": i}))
        .collect();
    let body = e
        .gql(
            UFV,
            json!({"i": {"nodeId": "900004", "values": thirty_one}}),
        )
        .await;
    assert!(body.get("errors").is_none());
    let r = &body["data"]["updateFieldsValues"];
    assert_eq!(r["success"], false);
    assert_eq!(
        r["userErrors"],
        json!([{"field": null, "message": "You exceeded the maximum number of fields"}])
    );
    assert_eq!(
        e.h.snapshot().card("900004").unwrap().fields["seats"],
        json!(29)
    );

    // A nonexistent node is a top-level error.
    let body = e
        .gql(
            UFV,
            json!({"i": {"nodeId": "31337", "values": [{"fieldId": "seats", "value": 1}]}}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    assert_eq!(body["errors"][0]["path"], json!(["updateFieldsValues"]));
}

#[tokio::test]
async fn records_lookup_by_field_uuid() {
    let e = emu().await;
    for i in 0..3 {
        e.create_customer(&format!("K-{i}"), json!({"signup_date": "2024-05-0{}".replace("{}", &(i + 1).to_string()), "seats": i * 10})).await;
    }
    // `eq` takes any scalar (docs/pipefy-api.md §5), so its variable is UndefinedInput.
    let q = "query($repo: ID!, $f: String!, $v: UndefinedInput!) { records(repoId: $repo, where: {field: $f, eq: $v}, first: 1) { totalCount pageInfo { hasNextPage } edges { node { id title currentPhase { id } fields { name value field { id uuid } } } } } }";
    let d = e
        .data(
            q,
            json!({"repo": "301", "f": uuid_of("301", "external_id"), "v": "K-1"}),
        )
        .await;
    assert_eq!(d["records"]["totalCount"], 1);
    assert_eq!(d["records"]["edges"][0]["node"]["title"], "K-1");
    assert_eq!(
        d["records"]["edges"][0]["node"]["currentPhase"]["id"],
        "3011"
    );
    let d = e
        .data(
            q,
            json!({"repo": "301", "f": uuid_of("301", "external_id"), "v": "K-404"}),
        )
        .await;
    assert_eq!(d["records"]["totalCount"], 0);
    assert_eq!(d["records"]["edges"], json!([]));
    // Dates compare as bare dates; numbers numerically.
    let d = e
        .data(
            q,
            json!({"repo": "301", "f": uuid_of("301", "signup_date"), "v": "2024-05-03"}),
        )
        .await;
    assert_eq!(d["records"]["edges"][0]["node"]["title"], "K-2");
    let d = e
        .data(
            q,
            json!({"repo": "301", "f": uuid_of("301", "seats"), "v": "10.0"}),
        )
        .await;
    assert_eq!(d["records"]["edges"][0]["node"]["title"], "K-1");
    // first: 1 of several: exact totalCount and hasNextPage.
    let d = e
        .data(
            q,
            json!({"repo": "301", "f": uuid_of("301", "customer_name"), "v": "Customer K-0"}),
        )
        .await;
    assert_eq!(d["records"]["totalCount"], 1);
    let d = e
        .data(
            "query($f: String!) { records(repoId: 301, where: {or: [{field: $f, eq: \"K-0\"}, {field: $f, eq: \"K-2\"}]}, first: 1) { totalCount pageInfo { hasNextPage endCursor } } }",
            json!({"f": uuid_of("301", "external_id")}),
        )
        .await;
    assert_eq!(d["records"]["totalCount"], 2);
    assert_eq!(d["records"]["pageInfo"]["hasNextPage"], true);
    // A slug in `field`, like a non-canonical uuid, is Pipefy's generic internal error.
    let body = e
        .gql(q, json!({"repo": "301", "f": "external_id", "v": "K-1"}))
        .await;
    assert_eq!(code(&body), "INTERNAL_SERVER_ERROR");
    assert_eq!(message(&body), "Something went wrong");
    let body = e
        .gql(
            q,
            json!({"repo": "301", "f": uuid_of("301", "external_id").to_uppercase(), "v": "K-1"}),
        )
        .await;
    assert_eq!(code(&body), "INTERNAL_SERVER_ERROR");
    assert_eq!(message(&body), "Something went wrong");
    // Attribute filters and tables as repos.
    let d = e
        .data(
            "{ records(repoId: 301, where: {attribute: TITLE, eq: \"K-0\"}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(d["records"]["totalCount"], 1);
    let d = e
        .data("query($f: String!) { records(repoId: \"tbl_accounts\", where: {field: $f, eq: \"GLOBEX\"}) { totalCount edges { node { id } } } }", json!({"f": uuid_of("tbl_accounts", "code")}))
        .await;
    assert_eq!(d["records"]["edges"][0]["node"]["id"], "bR4nT8wZ");
    let body = e
        .gql(
            "{ records(repoId: 301, where: {attribute: CREATOR, eq: \"a\"}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT");
}

#[tokio::test]
async fn records_filters_take_pipefys_types_and_order_by_is_honoured() {
    let e = emu().await;
    for i in 0..4 {
        e.create_customer(&format!("T-{i}"), json!({"seats": i * 10}))
            .await;
    }
    let seats = uuid_of("301", "seats");
    let ext = uuid_of("301", "external_id");
    let q = "query($w: FilterSet, $o: [OrderBy!]) { records(repoId: 301, where: $w, orderBy: $o) { totalCount edges { node { title } } } }";
    let titles = |d: &serde_json::Value| -> Vec<String> {
        d["records"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_string())
            .collect()
    };
    // Scalars of any JSON type for comparisons, a {min, max} range for between.
    let d = e
        .data(q, json!({"w": {"field": seats, "gte": 10, "lt": 30}}))
        .await;
    assert_eq!(titles(&d), ["T-1", "T-2"]);
    let d = e
        .data(
            q,
            json!({"w": {"field": seats, "between": {"min": 0, "max": 10}}}),
        )
        .await;
    assert_eq!(titles(&d), ["T-0", "T-1"]);
    let d = e
        .data(q, json!({"w": {"and": [{"field": seats, "nbetween": {"min": 0, "max": 10}}, {"attribute": "TITLE", "contains": ["T-"]}]}}))
        .await;
    assert_eq!(titles(&d), ["T-2", "T-3"]);
    // in/nin/contains take lists; in matches any, contains all.
    let d = e
        .data(q, json!({"w": {"field": ext, "in": ["T-0", "T-3"]}}))
        .await;
    assert_eq!(titles(&d), ["T-0", "T-3"]);
    let d = e
        .data(
            q,
            json!({"w": {"attribute": "TITLE", "contains": ["T-", "3"]}}),
        )
        .await;
    assert_eq!(titles(&d), ["T-3"]);
    let d = e
        .data(q, json!({"w": {"and": [{"field": ext, "in": ["T-0", "T-1", "T-2", "T-3"]}, {"attribute": "TITLE", "nin": ["T-0"], "ncontains": ["2"]}]}}))
        .await;
    assert_eq!(titles(&d), ["T-1", "T-3"]);
    // A plain string where Pipefy wants a range is a variable error, not a match.
    let body = e
        .gql(q, json!({"w": {"field": seats, "between": "0..10"}}))
        .await;
    assert!(body.get("data").is_none(), "{body}");
    // orderBy: by a field uuid, descending; by an attribute, ascending.
    let d = e
        .data(
            q,
            json!({"w": {"attribute": "TITLE", "contains": ["T-"], "ncontains": ["CUST"]}, "o": [{"field": seats, "direction": "DESC"}]}),
        )
        .await;
    assert_eq!(titles(&d), ["T-3", "T-2", "T-1", "T-0"]);
    let d = e
        .data(
            q,
            json!({"w": {"field": ext, "in": ["T-2", "T-1"]}, "o": [{"attribute": "TITLE"}]}),
        )
        .await;
    assert_eq!(titles(&d), ["T-1", "T-2"]);
    // A slug as orderBy field: the generic internal error too.
    let body = e.gql(q, json!({"o": [{"field": "seats"}]})).await;
    assert_eq!(code(&body), "INTERNAL_SERVER_ERROR");
}

#[tokio::test]
async fn records_filter_on_labels_and_assignees() {
    let e = emu().await;
    let id = e.create_customer("L-1", json!({})).await;
    e.create_customer("L-2", json!({})).await;
    e.data(
        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { card { id } } }",
        json!({"i": {"id": id, "label_ids": ["310001"], "assignee_ids": ["1002"]}}),
    )
    .await;
    let q = "query($w: FilterSet) { records(repoId: 301, where: $w) { edges { node { id } } } }";
    let ext = uuid_of("301", "external_id");
    let mine = |w: serde_json::Value| json!({"and": [{"field": ext, "in": ["L-1", "L-2"]}, w]});
    for w in [
        json!({"attribute": "LABELS", "in": ["310001"]}),
        json!({"attribute": "ASSIGNEES", "eq": "1002"}),
        json!({"and": [{"attribute": "LABELS", "contains": ["310001"]}, {"attribute": "ASSIGNEES", "in": ["1002", "1003"]}]}),
    ] {
        let d = e.data(q, json!({"w": mine(w.clone())})).await;
        assert_eq!(d["records"]["edges"], json!([{"node": {"id": id}}]), "{w}");
    }
    let d = e
        .data(
            q,
            json!({"w": mine(json!({"attribute": "LABELS", "nin": ["310001"]}))}),
        )
        .await;
    assert_eq!(d["records"]["edges"].as_array().map(Vec::len), Some(1));
    assert!(!d["records"]["edges"]
        .to_string()
        .contains(&format!("\"{id}\"")));
}

#[tokio::test]
async fn find_cards_and_find_records_by_slug() {
    let e = emu().await;
    let id = e.create_customer("F-1", json!({})).await;
    let d = e
        .data("{ findCards(pipeId: 301, search: {fieldId: \"external_id\", fieldValue: \"F-1\"}, first: 5) { edges { node { id title } } pageInfo { hasNextPage } } }", json!({}))
        .await;
    assert_eq!(
        d["findCards"]["edges"],
        json!([{"node": {"id": id, "title": "F-1"}}])
    );
    let d = e.data("{ findCards(pipeId: 301, search: {fieldId: \"external_id\", fieldValue: \"F-2\"}) { edges { node { id } } } }", json!({})).await;
    assert_eq!(d["findCards"]["edges"], json!([]));
    let body = e.gql("{ findCards(pipeId: 301, search: {fieldId: \"nope\", fieldValue: \"x\"}) { edges { node { id } } } }", json!({})).await;
    assert_eq!(code(&body), "RESOURCE_NOT_FOUND");
    let d = e
        .data("{ findRecords(tableId: \"tbl_accounts\", search: {fieldId: \"code\", fieldValue: \"INITECH\"}) { edges { node { id title fields { name value } } } } }", json!({}))
        .await;
    assert_eq!(d["findRecords"]["edges"][0]["node"]["id"], "Lm3Yd9Qe");
    assert_eq!(
        d["findRecords"]["edges"][0]["node"]["fields"][0],
        json!({"name": "Code", "value": "INITECH"})
    );
}

async fn walk(e: &Emu, query: &str, conn: &str, first: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let d = e.data(query, json!({"first": first, "after": after})).await;
        let c = &d[conn];
        let edges = c["edges"].as_array().unwrap();
        assert!(edges.len() <= first as usize);
        ids.extend(
            edges
                .iter()
                .map(|x| x["node"]["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = Some(c["pageInfo"]["endCursor"].as_str().unwrap().to_string());
    }
    (ids, pages)
}

#[tokio::test]
async fn cards_listing_paginates_with_cursors_and_caps_pages() {
    let e = emu().await;
    for i in 0..120 {
        e.create_customer(&format!("P-{i:03}"), json!({})).await;
    }
    let q = "query($first: Int, $after: String) { cards(pipe_id: 301, first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let (ids, pages) = walk(&e, q, "cards", 50).await;
    assert_eq!(ids.len(), 121);
    assert_eq!(pages, 3);
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 121);
    // first above 50 is capped at 50.
    let d = e.data(q, json!({"first": 500})).await;
    assert_eq!(d["cards"]["edges"].as_array().unwrap().len(), 50);
    let body = e.gql(q, json!({"first": 5, "after": "garbage"})).await;
    assert_eq!(code(&body), "INVALID_INPUT");

    // Cards in done phases are left out unless include_done (configurable default).
    let d = e
        .data(
            "{ cards(pipe_id: 302) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["cards"]["edges"].as_array().unwrap().len(), 2);
    let d = e
        .data(
            "{ cards(pipe_id: 302, search: {include_done: true}) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["cards"]["edges"].as_array().unwrap().len(), 3);
    let d = e.data("{ cards(pipe_id: 302, search: {title: \"data\", include_done: true}) { edges { node { title } } } }", json!({})).await;
    assert_eq!(
        d["cards"]["edges"],
        json!([{"node": {"title": "Data migration"}}])
    );
    let e2 = emu_with(EmulatorConfig {
        cards_include_done_default: true,
        ..EmulatorConfig::default()
    })
    .await;
    let d = e2
        .data(
            "{ cards(pipe_id: 302) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["cards"]["edges"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn table_records_paginate_up_to_200() {
    let e = emu().await;
    let mut doc = String::from("mutation {");
    for i in 0..250 {
        doc.push_str(&format!(" r{i}: createTableRecord(input: {{table_id: \"tbl_accounts\", fields_attributes: [{{field_id: \"code\", field_value: \"C{i}\"}}]}}) {{ table_record {{ id }} }}"));
    }
    doc.push('}');
    let body = e.gql(&doc, json!({})).await;
    assert!(body.get("errors").is_none());
    let q = "query($first: Int, $after: String) { table_records(table_id: \"tbl_accounts\", first: $first, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let d = e.data(q, json!({"first": 1000})).await;
    assert_eq!(d["table_records"]["edges"].as_array().unwrap().len(), 200);
    let (ids, pages) = walk(&e, q, "table_records", 200).await;
    assert_eq!(ids.len(), 253);
    assert_eq!(pages, 2);
}
