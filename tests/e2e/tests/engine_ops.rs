//! The sync engine's operations against the Pipefy emulator over HTTP: create/update/upsert of
//! cards and records, names and keys resolved to ids, the null policy, preflight, partial
//! success on and off, the run report and a replay of its failed rows, removed rows, phase
//! moves, skip_initial_backfill, full_resync and dry runs.

use pipefy_emulator::{EmulatorConfig, FieldDef, Fixture};
use pipefy_sync::config::Destination;
use pipefy_sync::engine::{sync, RunRequest, RunScope};
use pipefy_sync::pipefy::{CreateTableRecordInput, FieldValueInput, Mutation};
use pipefy_sync::report::{RowAction, RowResult, RunStatus};
use pipefy_sync_tests::sync::{
    assert_counts_add_up, fast_emulator_config, field_text, result_at, Harness,
};
use serde_json::json;

const FILE: &str = "refined/customers/part-0001.csv";

/// A card destination writing pipe 301 from `refined/customers/`.
fn card_dest(h: &Harness, name: &str, operation: &str, extra: &str, mapping: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\npipe_id: \"301\"\noperation: {operation}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{mapping}"
    ))
}

/// An upsert into pipe 301 keyed by `cid` into `external_id`.
fn upsert_dest(h: &Harness, name: &str, extra: &str, mapping: &str) -> Destination {
    card_dest(
        h,
        name,
        "upsert_card",
        &format!("key: {{ columns: [cid], field: external_id }}\n{extra}"),
        mapping,
    )
}

const BASIC_MAPPING: &str = "  title: name\n  customer_name: name\n";

fn card_by_key(h: &Harness, key: &str) -> pipefy_emulator::Card {
    let cards = h.cards_with("301", "external_id", key);
    assert_eq!(
        cards.len(),
        1,
        "exactly one card with external_id {key}: {cards:#?}"
    );
    cards.into_iter().next().unwrap()
}

fn no_card(h: &Harness, key: &str) {
    assert!(
        h.cards_with("301", "external_id", key).is_empty(),
        "no card for {key} expected"
    );
}

fn actions(results: &[RowResult]) -> Vec<(u64, RowAction)> {
    results.iter().map(|r| (r.line, r.action)).collect()
}

#[tokio::test]
async fn create_card_resolves_names_connections_and_parents_by_key() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        "cid,name,email,plan,tags,owner,stage,account,parent\n\
         N1,New One,n1@example.com,Pro,\"VIP, new\",bruno.lima@example.com,Doing,ACME,P-100\n\
         N2,New Two,,Free,,Carla Dias,inbox,GLOBEX,\n\
         N3,New Three,,Free,,,Inbox,ACME,P-999\n",
    );
    let dest = card_dest(
        &h,
        "ops-create",
        "create_card",
        "",
        "  title: { template: \"{name} ({plan})\" }\n  external_id: cid\n  customer_name: name\n  email: email\n  plan: plan\n  label_ids: { column: tags, transforms: [{ split: { separator: \",\" } }] }\n  assignee_ids: owner\n  phase_id: stage\n  account: { column: account, connect: { table_id: tbl_accounts, key_field: code } }\n  parent_ids: { column: parent, connect: { pipe_id: \"302\", key_field: project_code } }\n",
    );

    let s = h.run(&dest).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (3, 2, 1),
        "{s:#?}"
    );
    assert_counts_add_up(&s);
    // createCard with fields_attributes only: nothing is updated afterwards.
    assert_eq!(h.mutations("createCard"), 2);
    assert_eq!(h.all_mutations(), 2, "{:?}", h.emulator.stats().mutations);

    let n1 = card_by_key(&h, "N1");
    assert_eq!(n1.title, "New One (Pro)");
    assert_eq!(field_text(n1.fields.get("customer_name")), "New One");
    assert_eq!(field_text(n1.fields.get("email")), "n1@example.com");
    assert_eq!(field_text(n1.fields.get("plan")), "Pro");
    // Labels by name (case-insensitive), assignee by e-mail, phase by name.
    assert_eq!(n1.labels, vec!["310001".to_string(), "310003".to_string()]);
    assert_eq!(n1.assignees, vec!["1002".to_string()]);
    assert_eq!(n1.phase_id, "3012");
    // Connector by its key in tbl_accounts, parent by its key in pipe 302.
    assert_eq!(n1.fields.get("account"), Some(&json!(["Xa7KpQ2m"])));
    assert_eq!(n1.parent_ids, vec!["900001".to_string()]);

    let n2 = card_by_key(&h, "N2");
    assert_eq!(n2.assignees, vec!["1003".to_string()], "assignee by name");
    assert_eq!(n2.phase_id, "3011", "phase name ignoring case");
    assert!(n2.labels.is_empty());
    assert!(
        !n2.fields.contains_key("email"),
        "a blank value is not sent"
    );
    assert_eq!(n2.fields.get("account"), Some(&json!(["bR4nT8wZ"])));
    assert!(n2.parent_ids.is_empty());

    // A parent key that is not in pipe 302: reported, never sent.
    let results = h.results(&s);
    let n3 = result_at(&results, FILE, 4);
    assert_eq!(
        n3.error_code.as_deref(),
        Some("UNKNOWN_REFERENCE"),
        "{n3:#?}"
    );
    assert_eq!(n3.field.as_deref(), Some("parent_ids"));
    assert!(
        n3.error_message.as_deref().unwrap_or("").contains("P-999"),
        "{n3:#?}"
    );
    no_card(&h, "N3");
    let created = result_at(&results, FILE, 2);
    assert_eq!(created.action, RowAction::Created);
    assert_eq!(created.id.as_deref(), Some(n1.id.as_str()));

    // Without a change nothing is sent again.
    let again = h.run(&dest).await;
    assert_eq!(again.counts.unchanged, 2, "{again:#?}");
    assert_eq!(again.counts.created + again.counts.updated, 0);
    assert_eq!(h.mutations("createCard"), 2);
}

/// The demo fixture with `n` more (optional, short text) start-form fields in pipe 301:
/// `extra_00`, `extra_01`...
fn fixture_with_extra_fields(n: usize) -> Fixture {
    let mut fx = Fixture::demo();
    let pipe = fx.pipes.iter_mut().find(|p| p.id == "301").unwrap();
    for i in 0..n {
        let def: FieldDef = serde_json::from_value(json!({
            "id": format!("extra_{i:02}"),
            "uuid": uuid::Uuid::new_v4().to_string(),
            "internal_id": format!("{}", 429_000_000 + i),
            "label": format!("Extra {i}"),
            "type": "short_text",
        }))
        .unwrap();
        pipe.start_form_fields.push(def);
    }
    fx
}

#[tokio::test]
async fn update_card_sends_one_update_card_and_field_values_in_chunks_of_thirty() {
    let h = Harness::with_config(EmulatorConfig {
        fixture: fixture_with_extra_fields(35),
        ..fast_emulator_config()
    })
    .await;
    let extras: Vec<String> = (0..35).map(|i| format!("extra_{i:02}")).collect();
    let header = format!("card_id,title,due,owner,tags,seats,{}", extras.join(","));
    let values: Vec<String> = (0..35).map(|i| format!("v{i}")).collect();
    h.write_file(
        FILE,
        format!(
            "{header}\n900004,Acme renamed,2026-03-01 10:00,carla.dias@example.com,New;VIP,77,{}\n999999,Nobody,,,,1,{}\n",
            values.join(","),
            values.join(",")
        ),
    );
    let mut mapping = String::from(
        "  id: card_id\n  title: title\n  due_date: { column: due, transforms: [{ parse_date: { format: \"%Y-%m-%d %H:%M\" } }] }\n  assignee_ids: owner\n  label_ids: { column: tags, transforms: [{ split: { separator: \";\" } }] }\n  seats: seats\n",
    );
    for e in &extras {
        mapping.push_str(&format!("  {e}: {e}\n"));
    }
    let dest = card_dest(&h, "ops-update", "update_card", "", &mapping);

    let s = h.run(&dest).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    assert_eq!(s.counts.failed, 1, "{s:#?}");
    let card = h.snapshot().card("900004").cloned().unwrap();
    assert_eq!(card.title, "Acme renamed");
    assert_eq!(card.due_date.as_deref(), Some("2026-03-01T10:00:00Z"));
    assert_eq!(card.assignees, vec!["1003".to_string()]);
    assert_eq!(
        card.labels,
        vec!["310003".to_string(), "310001".to_string()]
    );
    assert_eq!(field_text(card.fields.get("seats")), "77");
    for (i, e) in extras.iter().enumerate() {
        assert_eq!(field_text(card.fields.get(e)), format!("v{i}"), "{e}");
    }
    // Untouched fields keep their values.
    assert_eq!(field_text(card.fields.get("customer_name")), "Acme Corp");
    // Per row: one updateCard for the attributes, 36 custom fields in chunks of 30 + 6.
    // The card that does not exist got the same shape of request and was refused.
    assert_eq!(
        h.mutations("updateCard"),
        2,
        "{:?}",
        h.emulator.stats().mutations
    );
    assert_eq!(
        h.mutations("updateFieldsValues"),
        4,
        "{:?}",
        h.emulator.stats().mutations
    );
    assert_eq!(h.mutations("createCard"), 0);

    let results = h.results(&s);
    let ok = result_at(&results, FILE, 2);
    assert_eq!(
        (ok.action, ok.id.as_deref()),
        (RowAction::Updated, Some("900004"))
    );
    let missing = result_at(&results, FILE, 3);
    assert_eq!(missing.action, RowAction::Failed);
    assert_eq!(
        missing.error_code.as_deref(),
        Some("PIPEFY_REJECTED"),
        "{missing:#?}"
    );
    assert!(
        missing
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("999999"),
        "{missing:#?}"
    );
    assert_eq!(h.failed_rows(&s).len(), 1);
}

#[tokio::test]
async fn upsert_card_looks_keys_up_then_updates_or_creates() {
    let h = Harness::new().await;
    // CUST-0001 is card 900004 in the fixture, made outside pipefy-sync.
    h.write_file(
        FILE,
        "cid,name,seats\nCUST-0001,Acme Corporation,150\nNEW-1,Brand New,3\n",
    );
    let dest = upsert_dest(
        &h,
        "ops-upsert",
        "",
        "  title: name\n  customer_name: name\n  seats: seats\n",
    );
    let s = h.run(&dest).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.updated), (1, 1), "{s:#?}");
    assert_eq!(h.mutations("createCard"), 1);

    let acme = card_by_key(&h, "CUST-0001");
    assert_eq!(acme.id, "900004");
    assert_eq!(
        field_text(acme.fields.get("customer_name")),
        "Acme Corporation"
    );
    assert_eq!(field_text(acme.fields.get("seats")), "150");
    assert_eq!(acme.title, "Acme Corporation");
    // Fields the mapping does not name are left alone.
    assert_eq!(field_text(acme.fields.get("email")), "ops@acme.example");
    let new = card_by_key(&h, "NEW-1");
    assert_eq!(field_text(new.fields.get("seats")), "3");

    let results = h.results(&s);
    let r = result_at(&results, FILE, 2);
    assert_eq!(
        (r.action, r.id.as_deref(), r.key.as_deref()),
        (RowAction::Updated, Some("900004"), Some("CUST-0001"))
    );
    let r = result_at(&results, FILE, 3);
    assert_eq!(
        (r.action, r.id.as_deref()),
        (RowAction::Created, Some(new.id.as_str()))
    );

    // A changed row updates the card the ledger knows, without creating another.
    h.write_file(
        FILE,
        "cid,name,seats\nCUST-0001,Acme Corporation,151\nNEW-1,Brand New,3\n",
    );
    let s2 = h.run(&dest).await;
    assert_eq!(
        (s2.counts.updated, s2.counts.unchanged, s2.counts.created),
        (1, 1, 0),
        "{s2:#?}"
    );
    assert_eq!(
        field_text(card_by_key(&h, "CUST-0001").fields.get("seats")),
        "151"
    );
    assert_eq!(h.mutations("createCard"), 1);
}

fn records_dest(h: &Harness, name: &str, operation: &str, extra: &str) -> Destination {
    h.destination(&format!(
        "name: {name}\ntable_id: tbl_accounts\noperation: {operation}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: accounts\nmapping:\n  code: code\n  name: name\n  region: region\n"
    ))
}

const ACCOUNTS: &str = "refined/accounts/part-0001.csv";

#[tokio::test]
async fn create_record_writes_records_and_reports_what_the_table_refuses() {
    let h = Harness::new().await;
    h.write_file(
        ACCOUNTS,
        "code,name,region\nUMBRELLA,Umbrella,europe\nACME,Acme again,APAC\nHOOLI,Hooli,North America\n",
    );
    let dest = records_dest(&h, "ops-create-record", "create_record", "");
    let s = h.run(&dest).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.failed), (2, 1), "{s:#?}");
    let snap = h.snapshot();
    let umbrella: Vec<_> = snap
        .records_where("tbl_accounts", "code", "UMBRELLA")
        .collect();
    assert_eq!(umbrella.len(), 1);
    assert_eq!(
        field_text(umbrella[0].fields.get("region")),
        "Europe",
        "option's exact text"
    );
    assert_eq!(umbrella[0].title, "Umbrella");
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "HOOLI"), 1);
    // `code` is unique in the table: the second ACME is refused by Pipefy, and reported.
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "ACME"), 1);
    let results = h.results(&s);
    let acme = result_at(&results, ACCOUNTS, 3);
    assert_eq!(acme.action, RowAction::Failed);
    assert_eq!(
        acme.error_code.as_deref(),
        Some("PIPEFY_REJECTED"),
        "{acme:#?}"
    );
    assert_eq!(h.mutations("createTableRecord"), 3);
    let failed = h.failed_rows(&s);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["code"], "ACME");
    assert_eq!(failed[0]["_error_code"], "PIPEFY_REJECTED");
}

#[tokio::test]
async fn upsert_record_updates_by_key_and_creates_the_rest() {
    let h = Harness::new().await;
    h.write_file(
        ACCOUNTS,
        "code,name,region\nACME,Acme Corp,APAC\nNEWB,New B,LATAM\n",
    );
    let dest = records_dest(
        &h,
        "ops-upsert-record",
        "upsert_record",
        "key: { columns: [code], field: code }",
    );
    let s = h.run(&dest).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.updated), (1, 1), "{s:#?}");
    let snap = h.snapshot();
    let acme = snap.record("Xa7KpQ2m").unwrap();
    assert_eq!(field_text(acme.fields.get("region")), "APAC");
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "ACME"), 1);
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "NEWB"), 1);
    assert_eq!(h.mutations("createTableRecord"), 1);
    let results = h.results(&s);
    assert_eq!(
        result_at(&results, ACCOUNTS, 2).id.as_deref(),
        Some("Xa7KpQ2m")
    );

    // Second run: unchanged, nothing sent.
    let before = h.all_mutations();
    let s2 = h.run(&dest).await;
    assert_eq!(s2.counts.unchanged, 2, "{s2:#?}");
    assert_eq!(h.all_mutations(), before);
}

#[tokio::test]
async fn null_policy_leaves_or_clears_each_field() {
    let h = Harness::new().await;
    let mapping = "  title: name\n  customer_name: name\n  email: { column: email, on_null: clear }\n  phone: phone\n  plan: { column: plan, on_null: leave }\n  label_ids: { column: tags, on_null: clear }\n  assignee_ids: owner\n";
    let dest = upsert_dest(&h, "ops-null", "", mapping);
    h.write_file(
        FILE,
        "cid,name,email,phone,plan,tags,owner\nK1,Kay,kay@example.com,+55 11 5555-0000,Pro,VIP,ana.souza@example.com\n",
    );
    let s = h.run(&dest).await;
    assert_eq!(s.counts.created, 1, "{s:#?}");
    let card = card_by_key(&h, "K1");
    assert_eq!(field_text(card.fields.get("email")), "kay@example.com");
    assert_eq!(card.labels, vec!["310001".to_string()]);

    // Every value blank: `clear` fields are cleared, the others keep what Pipefy has.
    h.write_file(
        FILE,
        "cid,name,email,phone,plan,tags,owner\nK1,Kay,,,  ,,\n",
    );
    let s2 = h.run(&dest).await;
    assert_eq!(s2.counts.updated, 1, "{s2:#?}");
    let card = card_by_key(&h, "K1");
    assert!(
        field_text(card.fields.get("email")).is_empty(),
        "email cleared: {:?}",
        card.fields
    );
    assert!(card.labels.is_empty(), "labels cleared");
    assert_eq!(
        field_text(card.fields.get("phone")),
        "+55 11 5555-0000",
        "phone left alone"
    );
    assert_eq!(
        field_text(card.fields.get("plan")),
        "Pro",
        "plan left alone"
    );
    assert_eq!(
        card.assignees,
        vec!["1001".to_string()],
        "assignees left alone"
    );
    assert_eq!(field_text(card.fields.get("customer_name")), "Kay");
}

#[tokio::test]
async fn preflight_rejects_rows_before_anything_is_sent() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        "cid,name,plan,stage,tags\n\
         G1,Good,Pro,Inbox,VIP\n\
         B1,Bad plan,Gold,Inbox,\n\
         B2,Bad phase,Pro,Nowhere,\n\
         B3,,Pro,Inbox,\n\
         B4,Bad label,Pro,Inbox,Platinum customer\n",
    );
    let dest = card_dest(
        &h,
        "ops-preflight",
        "create_card",
        "key: { columns: [cid], field: external_id }",
        "  title: { template: \"{cid} {name}\" }\n  customer_name: name\n  plan: plan\n  phase_id: stage\n  label_ids: tags\n",
    );
    let s = h.run(&dest).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.read, s.counts.created), (5, 1), "{s:#?}");
    assert_eq!(s.counts.failed_rows(), 4, "{s:#?}");
    // Only the good row reached Pipefy.
    assert_eq!(h.all_mutations(), 1, "{:?}", h.emulator.stats().mutations);
    card_by_key(&h, "G1");
    for k in ["B1", "B2", "B3", "B4"] {
        no_card(&h, k);
    }
    let results = h.results(&s);
    let expect = [
        (3, "NOT_AN_OPTION", "plan", "Gold"),
        (4, "UNKNOWN_REFERENCE", "phase_id", "Nowhere"),
        (5, "MISSING_REQUIRED", "customer_name", "customer_name"),
        (6, "UNKNOWN_REFERENCE", "label_ids", "Platinum customer"),
    ];
    for (line, code, field, needle) in expect {
        let r = result_at(&results, FILE, line);
        assert_eq!(r.error_code.as_deref(), Some(code), "{r:#?}");
        assert_eq!(r.field.as_deref(), Some(field), "{r:#?}");
        assert!(
            r.error_message.as_deref().unwrap_or("").contains(needle),
            "{r:#?}"
        );
        assert!(r.id.is_none());
    }
    let failed = h.failed_rows(&s);
    let lines: Vec<u64> = failed
        .iter()
        .map(|f| f["_source_line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6]);
}

#[tokio::test]
async fn a_mapping_that_does_not_match_the_schema_stops_the_run_before_sending() {
    let h = Harness::new().await;
    h.write_file(FILE, "cid,name,plan\nG1,Good,Pro\n");
    // Unknown field id, a constant outside the select's options, a required start-form
    // field (customer_name) not mapped: all reported at once, nothing sent.
    let dest = card_dest(
        &h,
        "ops-schema",
        "create_card",
        "key: { columns: [cid], field: external_id }",
        "  title: name\n  plann: plan\n  plan: { constant: Gold }\n",
    );
    let err = sync(
        &h.context(),
        &dest,
        RunRequest {
            trigger: "test".into(),
            ..RunRequest::default()
        },
    )
    .await
    .expect_err("the run must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("mapping.plann") && msg.contains("no field 'plann'"),
        "{msg}"
    );
    assert!(
        msg.contains("mapping.plan") && msg.contains("Gold"),
        "{msg}"
    );
    assert!(msg.contains("customer_name"), "{msg}");
    assert_eq!(h.all_mutations(), 0);
    assert!(h.cards_with("301", "external_id", "G1").is_empty());
}

#[tokio::test]
async fn partial_success_off_stops_at_the_first_failure_and_lists_what_was_not_attempted() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        "cid,name,plan\nA1,One,Pro\nA2,Two,Free\nA3,Three,Gold\nA4,Four,Pro\nA5,Five,Pro\n",
    );
    let dest = upsert_dest(
        &h,
        "ops-stop",
        "partial_success: false",
        "  title: name\n  customer_name: name\n  plan: plan\n",
    );
    let s = h.run(&dest).await;
    assert_eq!(s.status, RunStatus::Stopped, "{s:#?}");
    assert_counts_add_up(&s);
    let c = s.counts;
    assert_eq!(
        (c.read, c.created, c.skipped_by_preflight, c.not_attempted),
        (5, 2, 1, 2),
        "{c:#?}"
    );
    let stopped = s.stopped_at.clone().expect("stopped_at");
    assert_eq!((stopped.file.as_str(), stopped.line), (FILE, 4));
    assert_eq!(stopped.error_code.as_deref(), Some("NOT_AN_OPTION"));
    assert_eq!(h.summary_file(&s).stopped_at, s.stopped_at);
    card_by_key(&h, "A1");
    card_by_key(&h, "A2");
    for k in ["A3", "A4", "A5"] {
        no_card(&h, k);
    }
    let results = h.results(&s);
    assert_eq!(
        actions(&results),
        vec![
            (2, RowAction::Created),
            (3, RowAction::Created),
            (4, RowAction::Skipped),
            (5, RowAction::NotAttempted),
            (6, RowAction::NotAttempted),
        ]
    );
    // Rows that failed preflight or were not attempted still show their keys.
    let keys: Vec<_> = results[2..].iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some("A3"), Some("A4"), Some("A5")]);
    let failed = h.failed_rows(&s);
    let codes: Vec<(u64, &str)> = failed
        .iter()
        .map(|f| {
            (
                f["_source_line"].as_u64().unwrap(),
                f["_error_code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (4, "NOT_AN_OPTION"),
            (5, "NOT_ATTEMPTED"),
            (6, "NOT_ATTEMPTED")
        ]
    );
    assert!(failed
        .iter()
        .all(|f| f["cid"].is_string() && f["name"].is_string()));

    // Fixed, the next run picks up the rows that were not attempted.
    h.write_file(
        FILE,
        "cid,name,plan\nA1,One,Pro\nA2,Two,Free\nA3,Three,Enterprise\nA4,Four,Pro\nA5,Five,Pro\n",
    );
    let s2 = h.run(&dest).await;
    assert_eq!(s2.status, RunStatus::Completed, "{s2:#?}");
    assert_eq!((s2.counts.created, s2.counts.unchanged), (3, 2), "{s2:#?}");
}

#[tokio::test]
async fn partial_success_off_stops_when_pipefy_refuses_a_row() {
    let h = Harness::new().await;
    // ACME already exists and `code` is unique: Pipefy refuses the second row.
    h.write_file(
        ACCOUNTS,
        "code,name,region\nNEWA,New A,APAC\nACME,Acme again,APAC\nNEWC,New C,LATAM\nNEWD,New D,LATAM\n",
    );
    let dest = records_dest(
        &h,
        "ops-stop-pipefy",
        "create_record",
        "partial_success: false\nlimits: { mutations_per_request: 1, concurrency: 1 }",
    );
    let s = h.run(&dest).await;
    assert_eq!(s.status, RunStatus::Stopped, "{s:#?}");
    assert_counts_add_up(&s);
    let stopped = s.stopped_at.clone().expect("stopped_at");
    assert_eq!(stopped.line, 3, "{stopped:#?}");
    assert_eq!(stopped.error_code.as_deref(), Some("PIPEFY_REJECTED"));
    let snap = h.snapshot();
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "NEWA"), 1);
    // The run stops at the refused row: the rows after it are never sent.
    assert_eq!(
        snap.count_records_where("tbl_accounts", "code", "NEWC"),
        0,
        "row after the failure was sent"
    );
    assert_eq!(
        snap.count_records_where("tbl_accounts", "code", "NEWD"),
        0,
        "row after the failure was sent"
    );
    let results = h.results(&s);
    assert_eq!(
        result_at(&results, ACCOUNTS, 4).action,
        RowAction::NotAttempted
    );
    assert_eq!(
        result_at(&results, ACCOUNTS, 5).action,
        RowAction::NotAttempted
    );
    assert_eq!(s.counts.not_attempted, 2, "{s:#?}");
}

#[tokio::test]
async fn the_report_has_counts_rows_and_replayable_failed_rows() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        "cid,name,seats,account\nR1,One,3,ACME\nR2,Two,4,NEWCO\nR3,Three,5,INITECH\n",
    );
    let mapping = "  title: name\n  customer_name: name\n  seats: seats\n  account: { column: account, connect: { table_id: tbl_accounts, key_field: code } }\n";
    let dest = upsert_dest(&h, "ops-report", "", mapping);
    let s = h.run(&dest).await;
    assert_eq!(s.status, RunStatus::Completed);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (3, 2, 1),
        "{s:#?}"
    );
    assert_counts_add_up(&s);
    assert_eq!(s.source_files, vec![FILE.to_string()]);
    assert!(s.finished_at.is_some());
    assert_eq!(h.summary_file(&s), s, "summary.json holds the same summary");

    // Per-row results: file, line, key, action, id; failures with code and message.
    let results = h.results(&s);
    assert_eq!(results.len(), 3);
    let r1 = result_at(&results, FILE, 2);
    assert_eq!(r1.key.as_deref(), Some("R1"));
    assert_eq!(r1.action, RowAction::Created);
    assert_eq!(r1.id.as_deref(), Some(card_by_key(&h, "R1").id.as_str()));
    assert!(r1.error_code.is_none());
    let r2 = result_at(&results, FILE, 3);
    assert_eq!(r2.key.as_deref(), Some("R2"));
    assert_eq!(r2.error_code.as_deref(), Some("UNKNOWN_REFERENCE"));
    assert_eq!(r2.field.as_deref(), Some("account"));
    assert!(
        r2.error_message.as_deref().unwrap_or("").contains("NEWCO"),
        "{r2:#?}"
    );

    // Failed rows: the original columns plus where and why.
    let failed = h.failed_rows(&s);
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(
        (
            f["cid"].as_str(),
            f["name"].as_str(),
            f["seats"].as_str(),
            f["account"].as_str()
        ),
        (Some("R2"), Some("Two"), Some("4"), Some("NEWCO"))
    );
    assert_eq!(f["_error_code"], "UNKNOWN_REFERENCE");
    assert!(
        f["_error_message"].as_str().unwrap().contains("account"),
        "{f}"
    );
    assert_eq!(f["_source_file"], FILE);
    assert_eq!(f["_source_line"], 3);

    // Fix the cause in Pipefy: the account the row refers to.
    let created = h
        .client()
        .mutate(vec![Mutation::CreateTableRecord(CreateTableRecordInput {
            table_id: "tbl_accounts".into(),
            title: None,
            due_date: None,
            assignee_ids: None,
            label_ids: None,
            fields_attributes: vec![
                FieldValueInput {
                    field_id: "code".into(),
                    field_value: json!("NEWCO"),
                },
                FieldValueInput {
                    field_id: "name".into(),
                    field_value: json!("NewCo"),
                },
            ],
        })])
        .await
        .unwrap();
    let newco = created[0].as_ref().unwrap().id.clone().unwrap();

    // Replay: the run's failed/ folder becomes the source of the same destination.
    let replay_dir = h.data_root().join("replay/customers-failed");
    std::fs::create_dir_all(&replay_dir).unwrap();
    for entry in std::fs::read_dir(h.report_dir(&s).join("failed")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, replay_dir.join(p.file_name().unwrap())).unwrap();
    }
    let mut replay = dest.clone();
    replay.source.layer = "replay".into();
    replay.source.table = "customers-failed".into();
    replay.source.format = Some(pipefy_sync::config::FileFormat::Jsonl);
    let before = h.mutations("createCard");
    let s2 = h.run(&replay).await;
    assert_eq!(s2.status, RunStatus::Completed, "{s2:#?}");
    assert_eq!(
        (s2.counts.read, s2.counts.created, s2.counts.failed_rows()),
        (1, 1, 0),
        "{s2:#?}"
    );
    assert_eq!(h.mutations("createCard"), before + 1);
    let r2card = card_by_key(&h, "R2");
    assert_eq!(field_text(r2card.fields.get("customer_name")), "Two");
    assert_eq!(field_text(r2card.fields.get("seats")), "4");
    assert_eq!(r2card.fields.get("account"), Some(&json!([newco])));
    assert!(h.failed_rows(&s2).is_empty());
}

#[tokio::test]
async fn removed_rows_are_moved_to_a_phase_on_a_whole_table_run() {
    let h = Harness::new().await;
    let dest = upsert_dest(
        &h,
        "ops-removed-move",
        "sync: { removed_rows: { action: move_to_phase, phase: archived, max_fraction: 0.5 } }",
        BASIC_MAPPING,
    );
    h.write_file(FILE, "cid,name\nM1,One\nM2,Two\nM3,Three\n");
    let s = h.run(&dest).await;
    assert_eq!(s.counts.created, 3, "{s:#?}");
    let m3 = card_by_key(&h, "M3");
    assert_eq!(m3.phase_id, "3011");

    h.write_file(FILE, "cid,name\nM1,One\nM2,Two\n");
    let s2 = h.run(&dest).await;
    assert_eq!((s2.counts.unchanged, s2.counts.removed), (2, 1), "{s2:#?}");
    assert_eq!(
        h.snapshot().card(&m3.id).unwrap().phase_id,
        "3014",
        "moved to Archived"
    );
    assert_eq!(card_by_key(&h, "M1").phase_id, "3011");
    assert_eq!(h.mutations("moveCardToPhase"), 1);
    let results = h.results(&s2);
    let moved: Vec<&RowResult> = results
        .iter()
        .filter(|r| r.action == RowAction::Moved)
        .collect();
    assert_eq!(moved.len(), 1, "{results:#?}");
    assert_eq!(moved[0].id.as_deref(), Some(m3.id.as_str()));

    // The moved card is not moved again.
    let s3 = h.run(&dest).await;
    assert_eq!(s3.counts.removed, 0, "{s3:#?}");
    assert_eq!(h.mutations("moveCardToPhase"), 1);
}

#[tokio::test]
async fn removed_rows_are_deleted_only_on_whole_table_runs() {
    let h = Harness::new().await;
    let dest = upsert_dest(
        &h,
        "ops-removed-delete",
        "sync: { removed_rows: { action: delete, max_fraction: 0.5 } }",
        BASIC_MAPPING,
    );
    let a = "refined/customers/a.csv";
    let b = "refined/customers/b.csv";
    h.write_file(a, "cid,name\nD1,One\nD2,Two\n");
    h.write_file(b, "cid,name\nD3,Three\n");
    let s = h.run(&dest).await;
    assert_eq!(s.counts.created, 3, "{s:#?}");
    let d2 = card_by_key(&h, "D2");

    // A run over one file does not know the rest of the table: nothing is removed.
    h.write_file(a, "cid,name\nD1,One\n");
    let part = h
        .run_with(
            &dest,
            RunRequest {
                trigger: "upload".into(),
                scope: RunScope::Files(vec![a.to_string()]),
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(
        (part.counts.unchanged, part.counts.removed),
        (1, 0),
        "{part:#?}"
    );
    assert!(h.snapshot().card(&d2.id).is_some());
    assert_eq!(h.mutations("deleteCard"), 0);

    // A whole-table run: D2 is in no file any more.
    let whole = h.run(&dest).await;
    assert_eq!(
        (whole.counts.unchanged, whole.counts.removed),
        (2, 1),
        "{whole:#?}"
    );
    assert!(h.snapshot().card(&d2.id).is_none(), "D2 deleted");
    card_by_key(&h, "D1");
    card_by_key(&h, "D3");
    assert_eq!(h.mutations("deleteCard"), 1);
    let results = h.results(&whole);
    assert!(
        results
            .iter()
            .any(|r| r.action == RowAction::Deleted && r.id.as_deref() == Some(d2.id.as_str())),
        "{results:#?}"
    );
}

#[tokio::test]
async fn removed_records_are_deleted() {
    let h = Harness::new().await;
    let dest = records_dest(
        &h,
        "ops-removed-records",
        "upsert_record",
        "key: { columns: [code], field: code }\nsync: { removed_rows: { action: delete, max_fraction: 0.5 } }",
    );
    h.write_file(ACCOUNTS, "code,name,region\nR1,R one,APAC\nR2,R two,APAC\n");
    let s = h.run(&dest).await;
    assert_eq!(s.counts.created, 2, "{s:#?}");
    h.write_file(ACCOUNTS, "code,name,region\nR1,R one,APAC\n");
    let s2 = h.run(&dest).await;
    assert_eq!(s2.counts.removed, 1, "{s2:#?}");
    let snap = h.snapshot();
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "R2"), 0);
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "R1"), 1);
    // The seeded records the destination never wrote are not touched.
    assert_eq!(snap.count_records_where("tbl_accounts", "code", "ACME"), 1);
    assert_eq!(h.mutations("deleteTableRecord"), 1);
}

#[tokio::test]
async fn a_phase_change_moves_the_card_and_a_refused_move_is_reported() {
    let h = Harness::new().await;
    let mapping =
        "  title: name\n  customer_name: name\n  phase_id: stage\n  go_live_date: go_live\n";
    let dest = upsert_dest(&h, "ops-moves", "", mapping);
    h.write_file(
        FILE,
        "cid,name,stage,go_live\nP1,One,Inbox,\nP2,Two,Done,\n",
    );
    let s = h.run(&dest).await;
    assert_eq!(s.counts.created, 2, "{s:#?}");
    assert_eq!(card_by_key(&h, "P1").phase_id, "3011");
    assert_eq!(card_by_key(&h, "P2").phase_id, "3013");
    assert_eq!(
        h.mutations("moveCardToPhase"),
        0,
        "a create places the card in its phase"
    );

    // P1 Inbox -> Doing is allowed; P2 Done -> Inbox is not.
    h.write_file(
        FILE,
        "cid,name,stage,go_live\nP1,One,Doing,\nP2,Two,Inbox,\n",
    );
    let s2 = h.run(&dest).await;
    assert_counts_add_up(&s2);
    assert_eq!((s2.counts.updated, s2.counts.failed), (1, 1), "{s2:#?}");
    assert_eq!(card_by_key(&h, "P1").phase_id, "3012");
    assert_eq!(card_by_key(&h, "P2").phase_id, "3013");
    let results = h.results(&s2);
    let p1 = result_at(&results, FILE, 2);
    assert_eq!(p1.action, RowAction::Updated);
    let p2 = result_at(&results, FILE, 3);
    assert_eq!(p2.action, RowAction::Failed);
    assert_eq!(p2.error_code.as_deref(), Some("MOVE_REFUSED"), "{p2:#?}");
    assert_eq!(p2.field.as_deref(), Some("phase_id"));
    assert!(
        p2.error_message
            .as_deref()
            .unwrap_or("")
            .contains("not allowed"),
        "{p2:#?}"
    );
    assert_eq!(h.failed_rows(&s2)[0]["_error_code"], "MOVE_REFUSED");

    // P1 Doing -> Done needs the Done phase's required field: refused while it is blank...
    h.write_file(FILE, "cid,name,stage,go_live\nP1,One,Done,\n");
    let dest_p1 = dest.clone();
    let s3 = h
        .run_with(
            &dest_p1,
            RunRequest {
                trigger: "test".into(),
                scope: RunScope::Files(vec![FILE.into()]),
                ..RunRequest::default()
            },
        )
        .await;
    let r = result_at(&h.results(&s3), FILE, 2).clone();
    assert_eq!(r.error_code.as_deref(), Some("MOVE_REFUSED"), "{r:#?}");
    assert!(
        r.error_message
            .as_deref()
            .unwrap_or("")
            .contains("Go-live date"),
        "{r:#?}"
    );
    assert_eq!(card_by_key(&h, "P1").phase_id, "3012");

    // ...and done once the row carries it (the value is written before the move).
    h.write_file(FILE, "cid,name,stage,go_live\nP1,One,Done,2026-05-01\n");
    let s4 = h
        .run_with(
            &dest_p1,
            RunRequest {
                trigger: "test".into(),
                scope: RunScope::Files(vec![FILE.into()]),
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(s4.counts.updated, 1, "{s4:#?}");
    let p1 = card_by_key(&h, "P1");
    assert_eq!(p1.phase_id, "3013");
    assert_eq!(field_text(p1.fields.get("go_live_date")), "2026-05-01");
}

#[tokio::test]
async fn skip_initial_backfill_records_first_then_updates_after_a_lookup() {
    let h = Harness::new().await;
    let dest = upsert_dest(
        &h,
        "ops-backfill",
        "sync: { skip_initial_backfill: true }",
        "  customer_name: name\n  seats: seats\n",
    );
    // CUST-0001 is card 900004; BF-2 is in the table but not (yet) in Pipefy.
    h.write_file(
        FILE,
        "cid,name,seats\nCUST-0001,Acme Corp,120\nBF-2,Backfilled,1\n",
    );
    let s = h.run(&dest).await;
    assert_eq!(s.status, RunStatus::Completed);
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.updated),
        (2, 0, 0),
        "{s:#?}"
    );
    assert_eq!(h.all_mutations(), 0, "the first run sends nothing");
    no_card(&h, "BF-2");

    // Unchanged: still nothing.
    let s2 = h.run(&dest).await;
    assert_eq!(s2.counts.unchanged, 2, "{s2:#?}");
    assert_eq!(h.all_mutations(), 0);

    // A change: the card id is not known, so it is looked up, then updated.
    h.write_file(
        FILE,
        "cid,name,seats\nCUST-0001,Acme Corp,121\nBF-2,Backfilled,1\n",
    );
    let s3 = h.run(&dest).await;
    assert_eq!(
        (s3.counts.updated, s3.counts.unchanged, s3.counts.created),
        (1, 1, 0),
        "{s3:#?}"
    );
    let r = result_at(&h.results(&s3), FILE, 2).clone();
    assert_eq!(
        (r.action, r.id.as_deref()),
        (RowAction::Updated, Some("900004"))
    );
    assert_eq!(
        field_text(h.snapshot().card("900004").unwrap().fields.get("seats")),
        "121"
    );
    assert_eq!(h.mutations("createCard"), 0);
    no_card(&h, "BF-2");
}

#[tokio::test]
async fn full_resync_sends_unchanged_rows_again() {
    let h = Harness::new().await;
    let dest = upsert_dest(&h, "ops-resync", "", BASIC_MAPPING);
    h.write_file(FILE, "cid,name\nF1,One\nF2,Two\n");
    assert_eq!(h.run(&dest).await.counts.created, 2);
    let unchanged = h.run(&dest).await;
    assert_eq!(unchanged.counts.unchanged, 2);
    let before = h.all_mutations();

    // Someone edits a card in Pipefy; a full resync puts the table's values back.
    let f1 = card_by_key(&h, "F1");
    h.client()
        .mutate(vec![Mutation::UpdateFieldsValues {
            node_id: f1.id.clone(),
            values: vec![pipefy_sync::pipefy::NodeFieldValue {
                field_id: "customer_name".into(),
                value: json!("Edited by hand"),
                operation: pipefy_sync::pipefy::FieldOperation::Replace,
            }],
        }])
        .await
        .unwrap();
    let s = h
        .run_with(
            &dest,
            RunRequest {
                trigger: "test".into(),
                full_resync: true,
                ..RunRequest::default()
            },
        )
        .await;
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.updated, s.counts.unchanged, s.counts.created),
        (2, 0, 0),
        "{s:#?}"
    );
    assert!(h.all_mutations() > before + 1);
    assert_eq!(
        field_text(card_by_key(&h, "F1").fields.get("customer_name")),
        "One"
    );
    assert_eq!(h.mutations("createCard"), 2);
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_says_what_would_happen() {
    let h = Harness::new().await;
    let dest = upsert_dest(&h, "ops-dry", "", BASIC_MAPPING);
    h.write_file(FILE, "cid,name\nY1,One\nY2,Two\nY3,\n");
    let dry = RunRequest {
        trigger: "test".into(),
        dry_run: true,
        ..RunRequest::default()
    };
    let s = h.run_with(&dest, dry.clone()).await;
    assert!(s.dry_run);
    assert_counts_add_up(&s);
    assert_eq!(h.all_mutations(), 0);
    no_card(&h, "Y1");
    let results = h.results(&s);
    assert_eq!(result_at(&results, FILE, 2).action, RowAction::WouldCreate);
    assert_eq!(result_at(&results, FILE, 3).action, RowAction::WouldCreate);
    // Preflight failures are reported in a dry run too.
    assert_eq!(
        result_at(&results, FILE, 4).error_code.as_deref(),
        Some("MISSING_REQUIRED")
    );

    // The dry run recorded nothing: the real run creates both.
    let real = h.run(&dest).await;
    assert_eq!(real.counts.created, 2, "{real:#?}");
    let creates = h.mutations("createCard");

    h.write_file(FILE, "cid,name\nY1,One changed\nY2,Two\nY3,\n");
    let before = h.all_mutations();
    let s2 = h
        .run_with(
            &dest,
            RunRequest {
                report_unchanged: true,
                ..dry
            },
        )
        .await;
    assert_eq!(h.all_mutations(), before);
    let results = h.results(&s2);
    let y1 = result_at(&results, FILE, 2);
    assert_eq!(y1.action, RowAction::WouldUpdate);
    assert_eq!(y1.id.as_deref(), Some(card_by_key(&h, "Y1").id.as_str()));
    assert_eq!(result_at(&results, FILE, 3).action, RowAction::Unchanged);
    assert_eq!(
        field_text(card_by_key(&h, "Y1").fields.get("customer_name")),
        "One"
    );
    assert_eq!(h.mutations("createCard"), creates);

    // And the real run after it still sees the change.
    let s3 = h.run(&dest).await;
    assert_eq!(s3.counts.updated, 1, "{s3:#?}");
}

#[tokio::test]
async fn a_big_dry_run_reports_every_row_once_in_parts_and_catches_duplicates() {
    let h = Harness::new().await;
    let dest = upsert_dest(&h, "ops-dry-big", "", BASIC_MAPPING);
    // Enough rows for the report to go out in several parts by size, not by time, and for
    // the seen keys to be merged into their sorted part twice before the repeats.
    let rows = 140_000u64;
    let mut csv = String::from("cid,name\n");
    for i in 0..rows {
        csv.push_str(&format!("B{i},Customer number {i} with a longer name\n"));
    }
    // Two repeats of keys far apart in the file: the first row with a key is the one kept.
    csv.push_str("B7,again\nB139999,again\n");
    h.write_file(FILE, csv);
    let s = h
        .run_with(
            &dest,
            RunRequest {
                trigger: "test".into(),
                dry_run: true,
                ..RunRequest::default()
            },
        )
        .await;
    assert_counts_add_up(&s);
    // A duplicate fails in preflight: counted as skipped, and in the failed rows.
    assert_eq!(
        (
            s.counts.read,
            s.counts.created,
            s.counts.skipped_by_preflight
        ),
        (rows + 2, rows, 2),
        "{s:#?}"
    );
    assert_eq!(s.counts.failed_rows(), 2);
    assert_eq!(
        h.failed_rows(&s).len(),
        2,
        "both duplicates are in the failed rows"
    );
    assert_eq!(h.all_mutations(), 0);
    let parts = h.result_parts(&s).len();
    assert!(parts >= 2, "the report went out in {parts} part(s)");
    let results = h.results(&s);
    assert_eq!(results.len() as u64, rows + 2, "one result per row");
    let mut lines: Vec<u64> = results.iter().map(|r| r.line).collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len() as u64, rows + 2, "no row reported twice");
    for line in [rows + 2, rows + 3] {
        let dup = result_at(&results, FILE, line);
        assert_eq!(dup.error_code.as_deref(), Some("DUPLICATE_KEY"), "{dup:?}");
    }
    assert_eq!(result_at(&results, FILE, 9).action, RowAction::WouldCreate);
}
