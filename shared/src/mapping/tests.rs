//! Mapping tests: schemas and rows built in memory, destinations from YAML as users write them.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use serde_json::json;

use super::*;
use crate::config::Destination;
use crate::pipefy::schema::{FieldDef, FieldType, LabelDef, MemberDef, PhaseDef};

fn fd(id: &str, ty: FieldType) -> FieldDef {
    FieldDef {
        id: id.to_string(),
        uuid: None,
        internal_id: None,
        label: id.replace('_', " "),
        field_type: ty,
        required: false,
        options: Vec::new(),
    }
}

fn with_options(mut f: FieldDef, options: &[&str]) -> FieldDef {
    f.options = options.iter().map(|s| s.to_string()).collect();
    f
}

fn required(mut f: FieldDef) -> FieldDef {
    f.required = true;
    f
}

fn pipe() -> PipeSchema {
    PipeSchema {
        id: "301".into(),
        name: "Sales".into(),
        start_form_phase_id: Some("10".into()),
        organization_id: None,
        phases: vec![
            PhaseDef {
                id: "10".into(),
                name: "Inbox".into(),
                done: false,
                fields: vec![fd("review_notes", FieldType::LongText)],
                cards_can_be_moved_to_phases: vec!["11".into()],
            },
            PhaseDef {
                id: "11".into(),
                name: "In Progress".into(),
                done: false,
                fields: vec![],
                cards_can_be_moved_to_phases: vec![],
            },
            PhaseDef {
                id: "12".into(),
                name: "Done".into(),
                done: true,
                fields: vec![],
                cards_can_be_moved_to_phases: vec![],
            },
        ],
        start_form_fields: vec![
            required(fd("customer_name", FieldType::ShortText)),
            fd("external_id", FieldType::ShortText),
            fd("notes", FieldType::LongText),
            fd("contact_email", FieldType::Email),
            fd("phone", FieldType::Phone),
            fd("cpf", FieldType::Cpf),
            fd("amount", FieldType::Number),
            fd("price", FieldType::Currency),
            fd("birth", FieldType::Date),
            fd("meeting", FieldType::Datetime),
            fd("deadline", FieldType::DueDate),
            fd("slot", FieldType::Time),
            with_options(
                fd("plan", FieldType::Select),
                &["Basic", "Pro", "Enterprise"],
            ),
            with_options(fd("size", FieldType::RadioVertical), &["S", "M", "L"]),
            with_options(
                fd("features", FieldType::ChecklistVertical),
                &["API", "SSO", "Audit log"],
            ),
            fd("tags", FieldType::LabelSelect),
            fd("owner", FieldType::AssigneeSelect),
            fd("company", FieldType::Connector),
            fd("files", FieldType::Attachment),
            fd("total", FieldType::Formula),
            fd("intro", FieldType::Statement),
            fd("title", FieldType::ShortText),
        ],
        labels: vec![
            LabelDef {
                id: "L1".into(),
                name: "Urgent".into(),
            },
            LabelDef {
                id: "L2".into(),
                name: "Low priority".into(),
            },
            LabelDef {
                id: "L3".into(),
                name: "VIP".into(),
            },
            LabelDef {
                id: "L4".into(),
                name: "vip".into(),
            },
        ],
        members: vec![
            MemberDef {
                id: "U1".into(),
                name: "Ana Souza".into(),
                email: "ana@example.com".into(),
            },
            MemberDef {
                id: "U2".into(),
                name: "Bruno Lima".into(),
                email: "Bruno@Example.com".into(),
            },
            MemberDef {
                id: "U3".into(),
                name: "Sam".into(),
                email: "sam1@example.com".into(),
            },
            MemberDef {
                id: "U4".into(),
                name: "sam".into(),
                email: "sam2@example.com".into(),
            },
        ],
    }
}

fn table() -> TableSchema {
    TableSchema {
        id: "tb1".into(),
        name: "Companies".into(),
        fields: vec![
            required(fd("company_code", FieldType::ShortText)),
            fd("employees", FieldType::Number),
            fd("sector_tags", FieldType::LabelSelect),
        ],
    }
}

/// A destination file as a user writes it; `mapping` and `extra` are YAML fragments.
fn dest(operation: &str, extra: &str, mapping: &str) -> Destination {
    let target = if operation.ends_with("record") {
        "table_id: tb1"
    } else {
        "pipe_id: '301'"
    };
    let indented: String = mapping.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "name: test\n{target}\noperation: {operation}\nsource: {{layer: refined, table: t}}\ntoken: {{env: PIPEFY_TOKEN}}\n{extra}\nmapping:\n{indented}"
    );
    match serde_norway::from_str(&text) {
        Ok(d) => d,
        Err(e) => panic!("test destination does not parse: {e}\n{text}"),
    }
}

/// create_card with the required field mapped; `mapping` adds to it.
fn card_dest(mapping: &str) -> Destination {
    dest(
        "create_card",
        "",
        &format!("customer_name: name\n{mapping}"),
    )
}

fn mapper(d: &Destination) -> Mapper {
    match Mapper::new(d, &Schema::Pipe(pipe())) {
        Ok(m) => m,
        Err(issues) => panic!("unexpected config issues: {issues:?}"),
    }
}

fn issues(d: &Destination, schema: Schema) -> Vec<ConfigIssue> {
    match Mapper::new(d, &schema) {
        Ok(_) => panic!("expected config issues"),
        Err(i) => i,
    }
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn row_at(file: &str, line: u64, cols: &[(&str, Value)]) -> Row {
    Row {
        provenance: Provenance {
            file: Arc::from(file),
            line,
        },
        values: cols
            .iter()
            .map(|(k, v)| (Arc::<str>::from(*k), v.clone()))
            .collect(),
    }
}

/// A row from `in/part-1.csv` line 7 with a customer name plus `cols`.
fn row(cols: &[(&str, Value)]) -> Row {
    let mut all = vec![("name", s("ACME"))];
    all.extend(cols.iter().cloned());
    row_at("in/part-1.csv", 7, &all)
}

fn field<'a>(m: &'a MappedRow, id: &str) -> Option<&'a FieldValue> {
    m.fields.iter().find(|f| f.field_id == id).map(|f| &f.value)
}

fn json_of(m: &MappedRow, id: &str) -> serde_json::Value {
    match field(m, id) {
        Some(FieldValue::Json(j)) => j.clone(),
        other => panic!("field {id}: expected a JSON value, got {other:?}"),
    }
}

/// Maps one column `c` into field `target` with optional extra YAML for the entry.
fn map_one(target: &str, entry: &str, value: Value) -> Result<MappedRow, RowFailure> {
    let d = card_dest(&format!("{target}: {entry}"));
    mapper(&d).map(&row(&[("c", value)]))
}

fn ok_json(target: &str, entry: &str, value: Value) -> serde_json::Value {
    match map_one(target, entry, value) {
        Ok(m) => json_of(&m, target),
        Err(f) => panic!("{target}: unexpected failure {f}"),
    }
}

fn fails(target: &str, entry: &str, value: Value) -> RowFailure {
    match map_one(target, entry, value) {
        Ok(m) => panic!("{target}: expected a failure, got {m:?}"),
        Err(f) => f,
    }
}

/// Every row failure names file, line, target field and source column.
fn assert_names(f: &RowFailure, field: &str, column: &str) {
    assert_eq!(f.provenance.file.as_ref(), "in/part-1.csv");
    assert_eq!(f.provenance.line, 7);
    assert_eq!(f.field.as_deref(), Some(field), "{f}");
    assert_eq!(f.column.as_deref(), Some(column), "{f}");
    let text = f.to_string();
    assert!(text.starts_with("in/part-1.csv:7: "), "{text}");
    assert!(text.contains(&format!("field '{field}'")), "{text}");
    assert!(text.contains(column), "{text}");
}

// ---------- field types ----------

#[test]
fn text_fields_pass_through() {
    assert_eq!(
        ok_json("notes", "c", s("line 1\nline 2")),
        json!("line 1\nline 2")
    );
    assert_eq!(
        ok_json("cpf", "c", s("805.451.910-92")),
        json!("805.451.910-92")
    );
    // Non-text values become their text.
    assert_eq!(ok_json("external_id", "c", Value::Int(42)), json!("42"));
    assert_eq!(
        ok_json("external_id", "c", Value::Bool(true)),
        json!("true")
    );
}

#[test]
fn short_text_over_limit_is_too_large() {
    let long = "é".repeat(limits::SHORT_TEXT_MAX_CHARS + 1);
    let f = fails("external_id", "c", s(&long));
    assert_eq!(f.code, FailureCode::TooLarge);
    assert_names(&f, "external_id", "c");
    assert!(f.message.contains("256 characters"), "{}", f.message);
    // Exactly at the limit, counted in characters not bytes, passes.
    let at = "é".repeat(limits::SHORT_TEXT_MAX_CHARS);
    assert_eq!(ok_json("external_id", "c", s(&at)), json!(at));
}

#[test]
fn long_text_and_title_limits() {
    let f = fails(
        "notes",
        "c",
        s(&"x".repeat(limits::LONG_TEXT_MAX_CHARS + 1)),
    );
    assert_eq!(f.code, FailureCode::TooLarge);
    let d = card_dest("title: c");
    let f = mapper(&d)
        .map(&row(&[("c", s(&"t".repeat(limits::TITLE_MAX_CHARS + 1)))]))
        .unwrap_err();
    assert_eq!(f.code, FailureCode::TooLarge);
    assert_names(&f, "title", "c");
}

#[test]
fn numbers() {
    assert_eq!(ok_json("amount", "c", s("1234.5")), json!(1234.5));
    assert_eq!(ok_json("amount", "c", s(" -0012 ")), json!(-12));
    assert_eq!(ok_json("amount", "c", Value::Int(7)), json!(7));
    assert_eq!(ok_json("amount", "c", Value::Float(2.25)), json!(2.25));
    assert_eq!(ok_json("amount", "c", Value::Float(3.0)), json!(3));
    assert_eq!(
        ok_json("amount", "c", Value::Decimal("001.50".into())),
        json!(1.5)
    );
    assert_eq!(ok_json("amount", "c", s("1e3")), json!(1000));
}

#[test]
fn number_with_comma_needs_parse_number() {
    let f = fails("amount", "c", s("1.234,56"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "amount", "c");
    assert!(f.message.contains("'1.234,56'"), "{}", f.message);
    assert!(f.message.contains("decimal_separator ','"), "{}", f.message);
    let entry = "{column: c, transforms: [{parse_number: {decimal_separator: ','}}]}";
    assert_eq!(ok_json("amount", entry, s("1.234,56")), json!(1234.56));
    assert_eq!(ok_json("amount", entry, s("R$ 1.234,56")), json!(1234.56));
    assert_eq!(ok_json("amount", entry, s("-R$ 12,5")), json!(-12.5));
    assert_eq!(ok_json("amount", entry, s("1 234 567")), json!(1234567));
    let dot = "{column: c, transforms: [{parse_number: {}}]}";
    assert_eq!(ok_json("amount", dot, s("$1,234.50")), json!(1234.5));
    let f = fails("amount", entry, s("12,3,4"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert!(f.message.contains("'12,3,4'"), "{}", f.message);
}

#[test]
fn number_rejects_non_numbers() {
    for bad in [
        s("twelve"),
        Value::Bool(true),
        s("1.2.3"),
        Value::Float(f64::NAN),
    ] {
        let f = fails("amount", "c", bad);
        assert_eq!(f.code, FailureCode::InvalidValue);
        assert_names(&f, "amount", "c");
    }
}

#[test]
fn currency_rounds_to_two_decimals() {
    assert_eq!(ok_json("price", "c", s("10.005")), json!(10.01));
    assert_eq!(ok_json("price", "c", s("19.9")), json!(19.9));
    assert_eq!(ok_json("price", "c", Value::Float(0.1 + 0.2)), json!(0.3));
    assert_eq!(ok_json("price", "c", Value::Int(5)), json!(5));
    let entry = "{column: c, transforms: [{parse_number: {decimal_separator: ','}}]}";
    assert_eq!(ok_json("price", entry, s("350,219")), json!(350.22));
    let f = fails("price", "c", s("R$"));
    assert_eq!(f.code, FailureCode::InvalidValue);
}

#[test]
fn dates() {
    assert_eq!(ok_json("birth", "c", s("2024-05-31")), json!("2024-05-31"));
    let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    assert_eq!(ok_json("birth", "c", Value::Date(d)), json!("2024-02-29"));
    let dt = DateTime::parse_from_rfc3339("2024-05-31T23:30:00-03:00").unwrap();
    // The calendar date where the instant was recorded, not its UTC date.
    assert_eq!(
        ok_json("birth", "c", Value::DateTime(dt)),
        json!("2024-05-31")
    );
    assert_eq!(
        ok_json("birth", "c", s("2024-05-31T10:00:00Z")),
        json!("2024-05-31")
    );
}

#[test]
fn date_in_another_layout_fails_with_a_hint() {
    let f = fails("birth", "c", s("31/05/2024"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "birth", "c");
    assert!(f.message.contains("2024-05-31"), "{}", f.message);
    assert!(f.message.contains("parse_date"), "{}", f.message);
    let f = fails("birth", "c", Value::Int(20240531));
    assert!(f.message.contains("%Y%m%d"), "{}", f.message);
}

#[test]
fn parse_date_with_format() {
    let entry = "{column: c, transforms: [{parse_date: {format: '%d/%m/%Y'}}]}";
    assert_eq!(
        ok_json("birth", entry, s("31/05/2024")),
        json!("2024-05-31")
    );
    let f = fails("birth", entry, s("31/13/2024"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "birth", "c");
    assert!(
        f.message
            .contains("expected a date like '31/05/2024' (format '%d/%m/%Y'), got '31/13/2024'"),
        "{}",
        f.message
    );
    let ymd = "{column: c, transforms: [{parse_date: {format: '%Y%m%d'}}]}";
    assert_eq!(
        ok_json("birth", ymd, Value::Int(20240531)),
        json!("2024-05-31")
    );
}

#[test]
fn datetimes_keep_or_get_an_offset() {
    // No offset and no time zone: UTC.
    assert_eq!(
        ok_json("meeting", "c", s("2024-08-08 16:46")),
        json!("2024-08-08T16:46:00+00:00")
    );
    assert_eq!(
        ok_json("meeting", "c", s("2024-08-08T16:46:00-03:00")),
        json!("2024-08-08T16:46:00-03:00")
    );
    let entry = "{column: c, transforms: [{parse_date: {format: '%d/%m/%Y %H:%M', timezone: America/Sao_Paulo}}]}";
    assert_eq!(
        ok_json("meeting", entry, s("08/08/2024 16:46")),
        json!("2024-08-08T16:46:00-03:00")
    );
    // The due_date field type takes the same form.
    assert_eq!(
        ok_json("deadline", entry, s("08/08/2024 16:46")),
        json!("2024-08-08T16:46:00-03:00")
    );
    let with_offset = "{column: c, transforms: [{parse_date: {format: '%Y-%m-%d %H:%M %z', timezone: Asia/Tokyo}}]}";
    // An explicit offset wins over the time zone.
    assert_eq!(
        ok_json("meeting", with_offset, s("2024-08-08 16:46 +0200")),
        json!("2024-08-08T16:46:00+02:00")
    );
    // A naive timestamp (Parquet without UTC adjustment) placed in a zone.
    let naive = NaiveDate::from_ymd_opt(2024, 1, 15)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    let tz_only =
        "{column: c, transforms: [{parse_date: {format: '%Y', timezone: Europe/Lisbon}}]}";
    assert_eq!(
        ok_json("meeting", tz_only, Value::NaiveDateTime(naive)),
        json!("2024-01-15T09:00:00+00:00")
    );
    let d = NaiveDate::from_ymd_opt(2024, 5, 31).unwrap();
    assert_eq!(
        ok_json("meeting", "c", Value::Date(d)),
        json!("2024-05-31T00:00:00+00:00")
    );
    let f = fails("meeting", "c", s("tomorrow"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "meeting", "c");
}

#[test]
fn datetime_in_a_daylight_saving_gap_fails() {
    let entry = "{column: c, transforms: [{parse_date: {format: '%Y-%m-%d %H:%M', timezone: Europe/Berlin}}]}";
    let f = fails("meeting", entry, s("2024-03-31 02:30"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert!(f.message.contains("Europe/Berlin"), "{}", f.message);
}

#[test]
fn due_date_attribute_is_utc() {
    let d = card_dest("due_date: c");
    let m = mapper(&d)
        .map(&row(&[("c", s("2024-08-08T16:46:00-03:00"))]))
        .unwrap();
    assert_eq!(m.due_date, Some(Set::Value("2024-08-08T19:46:00Z".into())));
    let d = card_dest(
        "due_date: {column: c, transforms: [{parse_date: {format: '%d/%m/%Y', timezone: America/Sao_Paulo}}]}",
    );
    let m = mapper(&d).map(&row(&[("c", s("08/08/2024"))])).unwrap();
    // A date read in a time zone is midnight there.
    assert_eq!(m.due_date, Some(Set::Value("2024-08-08T03:00:00Z".into())));
}

#[test]
fn times() {
    assert_eq!(ok_json("slot", "c", s("9:05")), json!("09:05"));
    assert_eq!(ok_json("slot", "c", s("2:30 PM")), json!("14:30"));
    assert_eq!(ok_json("slot", "c", s("14:30:59")), json!("14:30"));
    let dt = DateTime::parse_from_rfc3339("2024-05-31T22:40:00-03:00").unwrap();
    assert_eq!(ok_json("slot", "c", Value::DateTime(dt)), json!("22:40"));
    let entry = "{column: c, transforms: [{parse_date: {format: '%Hh%M'}}]}";
    assert_eq!(ok_json("slot", entry, s("07h15")), json!("07:15"));
    let f = fails("slot", "c", s("25:00"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "slot", "c");
    assert!(f.message.contains("'25:00'"), "{}", f.message);
}

#[test]
fn select_and_radio_match_options() {
    assert_eq!(ok_json("plan", "c", s("Pro")), json!("Pro"));
    // Case-insensitive match writes the option's exact text.
    assert_eq!(ok_json("plan", "c", s(" enterPRISE ")), json!("Enterprise"));
    assert_eq!(ok_json("size", "c", s("m")), json!("M"));
    let f = fails("plan", "c", s("Gold"));
    assert_eq!(f.code, FailureCode::NotAnOption);
    assert_names(&f, "plan", "c");
    assert!(f.message.contains("'Gold'"), "{}", f.message);
    assert!(
        f.message.contains("'Basic', 'Pro', 'Enterprise'"),
        "{}",
        f.message
    );
    let f = fails("plan", "c", Value::List(vec![s("Pro"), s("Basic")]));
    assert_eq!(f.code, FailureCode::InvalidValue);
}

#[test]
fn select_with_options_equal_ignoring_case_needs_exact_text() {
    let mut p = pipe();
    p.start_form_fields.push(with_options(
        fd("tier", FieldType::Select),
        &["gold", "GOLD"],
    ));
    let d = card_dest("tier: c");
    let m = Mapper::new(&d, &Schema::Pipe(p)).unwrap();
    let ok = m.map(&row(&[("c", s("GOLD"))])).unwrap();
    assert_eq!(json_of(&ok, "tier"), json!("GOLD"));
    let f = m.map(&row(&[("c", s("Gold"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::NotAnOption);
    assert!(f.message.contains("several options"), "{}", f.message);
}

#[test]
fn checklists_are_arrays() {
    let entry = "{column: c, transforms: [{split: {separator: ';'}}]}";
    assert_eq!(
        ok_json("features", entry, s("api; Audit Log;;API ")),
        json!(["API", "Audit log"])
    );
    assert_eq!(
        ok_json("features", "c", Value::List(vec![s("SSO"), s("api")])),
        json!(["SSO", "API"])
    );
    let f = fails("features", entry, s("API;Billing"));
    assert_eq!(f.code, FailureCode::NotAnOption);
    assert_names(&f, "features", "c");
    assert!(f.message.contains("'Billing'"), "{}", f.message);
}

#[test]
fn email_and_phone_are_checked_loosely() {
    assert_eq!(
        ok_json("contact_email", "c", s(" ana@example.com ")),
        json!("ana@example.com")
    );
    for bad in [
        "ana",
        "ana@localhost",
        "a b@example.com",
        "@example.com",
        "ana@example..com",
    ] {
        let f = fails("contact_email", "c", s(bad));
        assert_eq!(f.code, FailureCode::InvalidValue, "{bad}");
        assert_names(&f, "contact_email", "c");
    }
    assert_eq!(
        ok_json("phone", "c", s("+55 (11) 98765-4321")),
        json!("+55 (11) 98765-4321")
    );
    for bad in ["call me", "12", "+55 11 9876+5432"] {
        let f = fails("phone", "c", s(bad));
        assert_eq!(f.code, FailureCode::InvalidValue, "{bad}");
    }
}

#[test]
fn attachments_take_storage_paths_only() {
    assert_eq!(
        ok_json("files", "c", s("orgs/o1/uploads/u1/a.pdf")),
        json!(["orgs/o1/uploads/u1/a.pdf"])
    );
    let f = fails("files", "c", s("https://example.com/a.pdf"));
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "files", "c");
}

#[test]
fn attach_applies_to_attachment_fields_and_reads_listed_files() {
    let d = card_dest("plan: {column: c, attach: {prefix: docs}}");
    let found = issues(&d, Schema::Pipe(pipe()));
    assert_eq!(paths(&found), ["mapping.plan.attach"]);
    assert!(found[0]
        .to_string()
        .contains("attach applies only to attachment fields"));

    let d = card_dest("files: {column: c, attach: {prefix: docs}}");
    let m = mapper(&d);
    let sources = m.attach_sources();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].prefix, "docs/");
    // Until the run has listed the location, no file maps: the row fails, it is not sent.
    assert!(m.map(&row(&[("c", s("a.pdf"))])).is_err());
    sources[0].set_listing(Ok([(
        "docs/a.pdf".to_string(),
        crate::mapping::attach::ObjectStat {
            etag: "\"e1\"".into(),
            size: 4,
        },
    )]
    .into_iter()
    .collect()));
    let out = m.map(&row(&[("c", s("a.pdf"))])).expect("maps");
    let file = crate::mapping::FileRef {
        bucket: None,
        key: "docs/a.pdf".into(),
        etag: "\"e1\"".into(),
        size: 4,
    };
    let files = out
        .fields
        .iter()
        .find(|f| f.field_id == "files")
        .expect("files");
    assert_eq!(files.value, FieldValue::Files(vec![file]));
}

// ---------- name resolution ----------

#[test]
fn mapper_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Mapper>();
}

#[test]
fn labels_by_id_or_name() {
    let d = card_dest("label_ids: {column: c, transforms: [{split: {separator: ','}}]}");
    let m = mapper(&d);
    let out = m.map(&row(&[("c", s("urgent, L2, URGENT"))])).unwrap();
    assert_eq!(
        out.label_ids,
        Some(Set::Value(vec!["L1".into(), "L2".into()]))
    );
    let f = m.map(&row(&[("c", s("Urgnt"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::UnknownReference);
    assert_names(&f, "label_ids", "c");
    assert!(
        f.message.contains("'Urgnt'") && f.message.contains("'Urgent'"),
        "{}",
        f.message
    );
    // Two labels named VIP ignoring case: the exact id is needed.
    let f = m.map(&row(&[("c", s("Vip"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::UnknownReference);
    assert!(m.map(&row(&[("c", s("L4"))])).is_ok());
    let f = mapper(&card_dest("label_ids: c"))
        .map(&row(&[("c", s("Urgent, VIP"))]))
        .unwrap_err();
    assert!(f.message.contains("add a split transform"), "{}", f.message);
    // The label_select field type resolves the same way.
    assert_eq!(ok_json("tags", "c", s("low PRIORITY")), json!(["L2"]));
}

#[test]
fn assignees_by_id_email_or_name() {
    let d = card_dest("assignee_ids: {column: c, transforms: [{split: {separator: '|'}}]}");
    let m = mapper(&d);
    let out = m
        .map(&row(&[("c", s("U1|bruno@example.COM|ana souza"))]))
        .unwrap();
    assert_eq!(
        out.assignee_ids,
        Some(Set::Value(vec!["U1".into(), "U2".into()]))
    );
    let f = m.map(&row(&[("c", s("sam"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::UnknownReference);
    assert!(f.message.contains("several members"), "{}", f.message);
    let f = m.map(&row(&[("c", s("nobody@example.com"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::UnknownReference);
    assert_names(&f, "assignee_ids", "c");
    assert_eq!(ok_json("owner", "c", s("sam2@example.com")), json!(["U4"]));
    assert_eq!(
        ok_json("owner", "c", Value::List(vec![s("U3")])),
        json!(["U3"])
    );
}

#[test]
fn phases_by_id_or_name() {
    let d = card_dest("phase_id: c");
    let m = mapper(&d);
    assert_eq!(
        m.map(&row(&[("c", s("in progress"))]))
            .unwrap()
            .phase_id
            .as_deref(),
        Some("11")
    );
    assert_eq!(
        m.map(&row(&[("c", Value::Int(12))]))
            .unwrap()
            .phase_id
            .as_deref(),
        Some("12")
    );
    let f = m.map(&row(&[("c", s("Archive"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::UnknownReference);
    assert_names(&f, "phase_id", "c");
    assert!(
        f.message.contains("'Inbox', 'In Progress', 'Done'"),
        "{}",
        f.message
    );
    assert_eq!(m.phase_id_by_name("DONE").as_deref(), Some("12"));
    assert_eq!(m.phase_id_by_name("10").as_deref(), Some("10"));
    assert_eq!(m.phase_id_by_name("Archive"), None);
}

#[test]
fn connections_by_key_or_id() {
    let d = card_dest(
        "company: {column: c, transforms: [{split: {separator: ','}}], connect: {table_id: tb1, key_field: company_code}}\nparent_ids: {column: p, connect: {pipe_id: '77', key_field: order_no}}",
    );
    let m = mapper(&d)
        .map(&row(&[("c", s("C1, C2,C1")), ("p", s("O-9"))]))
        .unwrap();
    let key = |repo: &str, kf: &str, k: &str| ConnectionRef::Key {
        repo: repo.into(),
        key_field: kf.into(),
        key: k.into(),
    };
    assert_eq!(
        field(&m, "company"),
        Some(&FieldValue::Connect(vec![
            key("table:tb1", "company_code", "C1"),
            key("table:tb1", "company_code", "C2")
        ]))
    );
    assert_eq!(m.parent_ids, Some(vec![key("pipe:77", "order_no", "O-9")]));

    // Without key_field the values are ids.
    let d = card_dest("company: c\nparent_ids: p");
    let m = mapper(&d)
        .map(&row(&[("c", Value::Int(5501)), ("p", s("9001"))]))
        .unwrap();
    assert_eq!(
        field(&m, "company"),
        Some(&FieldValue::Connect(vec![ConnectionRef::Id("5501".into())]))
    );
    assert_eq!(m.parent_ids, Some(vec![ConnectionRef::Id("9001".into())]));
    let f = mapper(&d).map(&row(&[("c", s("ACME Corp"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "company", "c");
}

#[test]
fn list_size_is_limited() {
    let many: Vec<Value> = (0..=limits::MAX_LIST_ITEMS)
        .map(|i| s(&i.to_string()))
        .collect();
    let f = fails("company", "c", Value::List(many));
    assert_eq!(f.code, FailureCode::TooLarge);
    assert_names(&f, "company", "c");
}

// ---------- transforms, templates, constants ----------

#[test]
fn text_transforms() {
    let entry = "{column: c, transforms: [trim, uppercase]}";
    assert_eq!(ok_json("external_id", entry, s("  ab-1 ")), json!("AB-1"));
    let entry = "{column: c, transforms: [lowercase]}";
    assert_eq!(ok_json("external_id", entry, s("ÀB")), json!("àb"));
    // Without trim, spaces are kept.
    assert_eq!(ok_json("external_id", "c", s(" x ")), json!(" x "));
    // Transforms apply to each item of a list.
    let entry = "{column: c, transforms: [{split: {separator: ','}}, uppercase]}";
    assert_eq!(
        ok_json("features", entry, s("api,sso")),
        json!(["API", "SSO"])
    );
}

#[test]
fn templates_combine_columns() {
    let d = card_dest("title: {template: '{first} {last} ({{id}} {id})'}");
    let m = mapper(&d);
    let out = m
        .map(&row(&[
            ("first", s("Ana")),
            ("last", s("Souza")),
            ("id", Value::Int(7)),
        ]))
        .unwrap();
    assert_eq!(out.title, Some(Set::Value("Ana Souza ({id} 7)".into())));
    // All referenced columns blank: the value is blank, so nothing is sent.
    let out = m
        .map(&row(&[
            ("first", s("")),
            ("last", Value::Null),
            ("id", s(" ")),
        ]))
        .unwrap();
    assert_eq!(out.title, None);
    let f = m
        .map(&row(&[("first", s("Ana")), ("id", s("1"))]))
        .unwrap_err();
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_eq!(f.column.as_deref(), Some("last"));
    assert_eq!(f.field.as_deref(), Some("title"));
    assert!(f
        .to_string()
        .starts_with("in/part-1.csv:7: field 'title': template"));
    assert!(f.message.contains("no column 'last'"), "{}", f.message);
}

#[test]
fn template_feeds_typed_fields() {
    let d = card_dest("meeting: {template: '{day}T{time}:00-03:00'}");
    let out = mapper(&d)
        .map(&row(&[("day", s("2024-08-08")), ("time", s("16:46"))]))
        .unwrap();
    assert_eq!(json_of(&out, "meeting"), json!("2024-08-08T16:46:00-03:00"));
    let f = mapper(&d)
        .map(&row(&[("day", s("08/08/2024")), ("time", s("16:46"))]))
        .unwrap_err();
    assert_eq!(f.column.as_deref(), Some("day, time"));
}

#[test]
fn constants_are_converted_once() {
    let d = card_dest(
        "plan: {constant: pro}\namount: {constant: 12}\nfeatures: {constant: [API, sso]}\nlabel_ids: {constant: [Urgent]}\nphase_id: {constant: Done}",
    );
    let out = mapper(&d).map(&row(&[])).unwrap();
    assert_eq!(json_of(&out, "plan"), json!("Pro"));
    assert_eq!(json_of(&out, "amount"), json!(12));
    assert_eq!(json_of(&out, "features"), json!(["API", "SSO"]));
    assert_eq!(out.label_ids, Some(Set::Value(vec!["L1".into()])));
    assert_eq!(out.phase_id.as_deref(), Some("12"));
    // An empty constant with on_null: clear always clears.
    let d = card_dest("notes: {constant: '', on_null: clear}\nbirth: {constant: ''}");
    let out = mapper(&d).map(&row(&[])).unwrap();
    assert_eq!(field(&out, "notes"), Some(&FieldValue::Clear));
    assert_eq!(field(&out, "birth"), None);
}

// ---------- null policy ----------

#[test]
fn null_policy_leave_or_clear() {
    let d = card_dest(
        "notes: c\nbirth: {column: c, on_null: clear}\ntitle: {column: c, on_null: clear}\nlabel_ids: {column: c, on_null: clear}\nassignee_ids: c\ncompany: {column: c, on_null: clear}",
    );
    let m = mapper(&d);
    for blank in [Value::Null, s(""), s("   "), Value::List(vec![])] {
        let out = m.map(&row(&[("c", blank.clone())])).unwrap();
        assert_eq!(field(&out, "notes"), None, "{blank:?}");
        assert_eq!(field(&out, "birth"), Some(&FieldValue::Clear));
        assert_eq!(field(&out, "company"), Some(&FieldValue::Clear));
        assert_eq!(out.title, Some(Set::Clear));
        assert_eq!(out.label_ids, Some(Set::Clear));
        assert_eq!(out.assignee_ids, None);
    }
    // A column the row does not have reads as null.
    let out = m.map(&row(&[])).unwrap();
    assert_eq!(field(&out, "notes"), None);
    assert_eq!(field(&out, "birth"), Some(&FieldValue::Clear));
    // A value that transforms into nothing is blank too.
    let d = card_dest(
        "features: {column: c, transforms: [{split: {separator: ','}}], on_null: clear}\nnotes: {column: c, transforms: [trim]}",
    );
    let out = mapper(&d).map(&row(&[("c", s(" , ,"))])).unwrap();
    assert_eq!(field(&out, "features"), Some(&FieldValue::Clear));
    assert_eq!(json_of(&out, "notes"), json!(", ,"));
    let out = mapper(&d).map(&row(&[("c", s("API"))])).unwrap();
    assert_eq!(json_of(&out, "features"), json!(["API"]));
}

// ---------- key and id ----------

#[test]
fn key_is_joined_and_written_to_its_field() {
    let d = dest(
        "upsert_card",
        "key: {columns: [country, code], separator: '/', field: external_id}",
        "customer_name: name\nnotes: n",
    );
    let m = mapper(&d);
    let out = m
        .map(&row(&[
            ("country", s(" BR ")),
            ("code", Value::Int(42)),
            ("n", s("x")),
        ]))
        .unwrap();
    assert_eq!(out.key.as_deref(), Some("BR/42"));
    assert_eq!(json_of(&out, "external_id"), json!("BR/42"));
    // Fields come out sorted by id, the key field in its place.
    let ids: Vec<&str> = out.fields.iter().map(|f| f.field_id.as_str()).collect();
    assert_eq!(ids, ["customer_name", "external_id", "notes"]);
    assert_eq!(m.source_columns(), ["country", "code", "name", "n"]);
}

#[test]
fn blank_or_missing_key_column_fails() {
    let d = dest(
        "upsert_card",
        "key: {columns: [country, code], field: external_id}",
        "customer_name: name",
    );
    let m = mapper(&d);
    let f = m
        .map(&row(&[("country", s("BR")), ("code", s(" "))]))
        .unwrap_err();
    assert_eq!(f.code, FailureCode::MissingRequired);
    assert_names(&f, "external_id", "code");
    assert!(
        f.message.contains("column 'code' is blank"),
        "{}",
        f.message
    );
    let f = m.map(&row(&[("country", s("BR"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::MissingRequired);
    assert_names(&f, "external_id", "code");
    // The separator inside a part would make two different rows share a key.
    let f = m
        .map(&row(&[("country", s("BR|SP")), ("code", s("1"))]))
        .unwrap_err();
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "external_id", "country");
}

#[test]
fn mapped_key_field_must_equal_the_key() {
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: external_id}",
        "customer_name: name\nexternal_id: {column: code, transforms: [trim]}",
    );
    let m = mapper(&d);
    let out = m.map(&row(&[("code", s(" A1 "))])).unwrap();
    assert_eq!(json_of(&out, "external_id"), json!("A1"));
    assert_eq!(
        out.fields
            .iter()
            .filter(|f| f.field_id == "external_id")
            .count(),
        1
    );
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: external_id}",
        "customer_name: name\nexternal_id: {column: code, transforms: [lowercase]}",
    );
    let f = mapper(&d).map(&row(&[("code", s("A1"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::InvalidValue);
    assert_names(&f, "external_id", "code");
    assert!(
        f.message.contains("must equal the key 'A1'"),
        "{}",
        f.message
    );
}

#[test]
fn key_longer_than_its_field_is_too_large() {
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: external_id}",
        "customer_name: name",
    );
    let f = mapper(&d)
        .map(&row(&[("code", s(&"k".repeat(300)))]))
        .unwrap_err();
    assert_eq!(f.code, FailureCode::TooLarge);
    assert_names(&f, "external_id", "code");
}

#[test]
fn update_card_needs_an_id() {
    let d = dest("update_card", "", "id: card\nnotes: n");
    let m = mapper(&d);
    let out = m
        .map(&row(&[("card", Value::Int(1234)), ("n", s("x"))]))
        .unwrap();
    assert_eq!(out.id.as_deref(), Some("1234"));
    let f = m.map(&row(&[("card", s("")), ("n", s("x"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::MissingRequired);
    assert_names(&f, "id", "card");
    let f = m.map(&row(&[("card", s("12 34"))])).unwrap_err();
    assert_eq!(f.code, FailureCode::InvalidValue);
    // Required start-form fields do not concern updates.
    assert!(m.check_create(&out).is_ok());
}

// ---------- preflight: config issues ----------

fn paths(issues: &[ConfigIssue]) -> Vec<&str> {
    issues.iter().map(|i| i.path.as_str()).collect()
}

#[test]
fn config_issues_are_all_reported() {
    let d = card_dest(
        "nope: c\ntotal: c\nplan: {constant: Gold}\nphase_id: {constant: Archive}\nbirth: {column: c, transforms: [{parse_date: {format: '%Q'}}]}\nmeeting: {column: c, transforms: [{parse_date: {format: '%Y-%m-%d', timezone: Mars/Olympus}}]}\nnotes: {template: 'Hi {name'}\namount: {column: c, connect: {pipe_id: '1', key_field: k}}\nfeatures: {column: c, transforms: [{split: {separator: ''}}]}\nprice: {column: c, transforms: [{parse_number: {decimal_separator: 'x'}}]}\nid: c",
    );
    let found = issues(&d, Schema::Pipe(pipe()));
    let p = paths(&found);
    for expected in [
        "mapping.nope",
        "mapping.total",
        "mapping.plan.constant",
        "mapping.phase_id.constant",
        "mapping.birth.transforms[0]",
        "mapping.meeting.transforms[0]",
        "mapping.notes.template",
        "mapping.amount.connect",
        "mapping.features.transforms[0]",
        "mapping.price.transforms[0]",
        "mapping.id",
    ] {
        assert!(p.contains(&expected), "missing {expected} in {found:#?}");
    }
    let text = |path: &str| {
        found
            .iter()
            .find(|i| i.path == path)
            .map(|i| i.to_string())
            .unwrap_or_default()
    };
    assert!(text("mapping.nope").contains("no field 'nope' in pipe 'Sales' (301)"));
    assert!(text("mapping.total").contains("formula"));
    assert!(text("mapping.plan.constant").contains("'Gold'"));
    assert!(text("mapping.phase_id.constant").contains("'Archive'"));
    assert!(text("mapping.meeting.transforms[0]").contains("Mars/Olympus"));
}

#[test]
fn required_start_form_field_must_be_mapped_for_creates() {
    let d = dest("create_card", "", "notes: n");
    let found = issues(&d, Schema::Pipe(pipe()));
    assert_eq!(paths(&found), ["mapping"]);
    assert!(found[0].message.contains("'customer_name'"), "{}", found[0]);
    // A phase field that is required is not a start-form field.
    let mut p = pipe();
    p.phases[0].fields[0].required = true;
    assert!(Mapper::new(&card_dest(""), &Schema::Pipe(p)).is_ok());
    // The key field counts as mapped: the mapper fills it.
    let mut p = pipe();
    p.start_form_fields[1].required = true;
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: external_id}",
        "customer_name: name",
    );
    assert!(Mapper::new(&d, &Schema::Pipe(p)).is_ok());
}

#[test]
fn key_and_operation_issues() {
    let d = dest("upsert_card", "", "customer_name: name");
    assert_eq!(paths(&issues(&d, Schema::Pipe(pipe()))), ["key"]);
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: missing}",
        "customer_name: name",
    );
    assert_eq!(paths(&issues(&d, Schema::Pipe(pipe()))), ["key.field"]);
    let d = dest(
        "upsert_card",
        "key: {columns: [code], field: plan}",
        "customer_name: name",
    );
    assert_eq!(paths(&issues(&d, Schema::Pipe(pipe()))), ["key.field"]);
    let d = dest("update_card", "", "notes: n");
    assert_eq!(paths(&issues(&d, Schema::Pipe(pipe()))), ["mapping"]);
    // A card operation against a table schema.
    let d = card_dest("");
    assert_eq!(paths(&issues(&d, Schema::Table(table()))), ["operation"]);
    let d = card_dest("");
    let mut p = pipe();
    p.id = "999".into();
    assert_eq!(paths(&issues(&d, Schema::Pipe(p))), ["pipe_id"]);
    let d = dest(
        "create_card",
        "sync: {removed_rows: {action: move_to_phase, phase: Archive}}",
        "customer_name: name",
    );
    assert_eq!(
        paths(&issues(&d, Schema::Pipe(pipe()))),
        ["sync.removed_rows.phase"]
    );
    let d = card_dest("external_id: c\nfield:external_id: c");
    assert_eq!(
        paths(&issues(&d, Schema::Pipe(pipe()))),
        ["mapping.field:external_id"]
    );
    let d = card_dest("company: {column: c, connect: {pipe_id: '1', table_id: t, key_field: k}}\nparent_ids: {column: p, connect: {table_id: t, key_field: k}}");
    assert_eq!(
        paths(&issues(&d, Schema::Pipe(pipe()))),
        [
            "mapping.company.connect",
            "mapping.parent_ids.connect.table_id"
        ]
    );
    let d = card_dest("phase_id: {column: c, on_null: clear}");
    assert_eq!(
        paths(&issues(&d, Schema::Pipe(pipe()))),
        ["mapping.phase_id.on_null"]
    );
}

#[test]
fn field_prefix_reaches_a_field_named_like_an_attribute() {
    let d = card_dest("title: t\nfield:title: c");
    let out = mapper(&d)
        .map(&row(&[("t", s("Card")), ("c", s("Field"))]))
        .unwrap();
    assert_eq!(out.title, Some(Set::Value("Card".into())));
    assert_eq!(json_of(&out, "title"), json!("Field"));
}

// ---------- check_create ----------

#[test]
fn an_update_only_upsert_needs_no_required_field() {
    let base = "name: d\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [k], field: external_id }\nsource: { path: x, layer: l, table: t }\nmapping:\n  notes: n\ntoken: { env: T }\n";
    let creating = crate::config::parse_destination("d.yaml", base).unwrap();
    let found = issues(&creating, Schema::Pipe(pipe()));
    assert!(
        found
            .iter()
            .any(|i| i.to_string().contains("'customer_name'")
                && i.to_string().contains("is not mapped")),
        "{found:?}"
    );
    let update_only =
        crate::config::parse_destination("d.yaml", &format!("{base}upsert: {{ create: false }}\n"))
            .unwrap();
    if let Err(found) = Mapper::new(&update_only, &Schema::Pipe(pipe())) {
        panic!("{found:?}");
    }
}

#[test]
fn check_create_fails_a_blank_required_field() {
    let d = card_dest("");
    let m = mapper(&d);
    let ok = m.map(&row(&[])).unwrap();
    assert!(m.check_create(&ok).is_ok());
    let blank = m
        .map(&row_at("in/part-1.csv", 7, &[("name", s(" "))]))
        .unwrap();
    let f = m.check_create(&blank).unwrap_err();
    assert_eq!(f.code, FailureCode::MissingRequired);
    assert_names(&f, "customer_name", "name");
    assert!(
        f.message.contains("required start-form field"),
        "{}",
        f.message
    );
}

// ---------- tables ----------

#[test]
fn records_map_against_a_table() {
    let d = dest(
        "upsert_record",
        "key: {columns: [code], field: company_code}",
        "employees: n\nlabel_ids: l\nsector_tags: l",
    );
    let m = Mapper::new(&d, &Schema::Table(table())).unwrap();
    let out = m
        .map(&row(&[("code", s("C1")), ("n", s("250")), ("l", s("t-9"))]))
        .unwrap();
    assert_eq!(json_of(&out, "company_code"), json!("C1"));
    assert_eq!(json_of(&out, "employees"), json!(250));
    // Tables carry no label list: values are taken as ids.
    assert_eq!(out.label_ids, Some(Set::Value(vec!["t-9".into()])));
    assert_eq!(json_of(&out, "sector_tags"), json!(["t-9"]));
    assert!(m.check_create(&out).is_ok());
    assert_eq!(m.phase_id_by_name("Inbox"), None);

    let d = dest("create_record", "", "phase_id: p\nparent_ids: q");
    let found = issues(&d, Schema::Table(table()));
    let p = paths(&found);
    assert!(
        p.contains(&"mapping.phase_id") && p.contains(&"mapping.parent_ids"),
        "{found:?}"
    );
    // company_code is required and not mapped.
    assert!(p.contains(&"mapping"), "{found:?}");
}

// ---------- hash ----------

#[test]
fn hash_ignores_provenance_and_field_order() {
    let d = card_dest("notes: n\nplan: p\nlabel_ids: l");
    let m = mapper(&d);
    let a = m
        .map(&row_at(
            "a.csv",
            1,
            &[
                ("name", s("X")),
                ("n", s("hi")),
                ("p", s("pro")),
                ("l", s("L1")),
            ],
        ))
        .unwrap();
    let b = m
        .map(&row_at(
            "b.csv",
            99,
            &[
                ("l", s("urgent")),
                ("p", s("Pro")),
                ("n", s("hi")),
                ("name", s("X")),
            ],
        ))
        .unwrap();
    assert_ne!(a.provenance, b.provenance);
    assert_eq!(canonical_hash(&a), canonical_hash(&b));
    let mut shuffled = a.clone();
    shuffled.fields.reverse();
    assert_eq!(canonical_hash(&a), canonical_hash(&shuffled));

    let mut changed = a.clone();
    changed.fields[0].value = FieldValue::Json(json!("ho"));
    assert_ne!(canonical_hash(&a), canonical_hash(&changed));
    let mut cleared = a.clone();
    cleared.label_ids = Some(Set::Clear);
    let mut absent = a.clone();
    absent.label_ids = None;
    assert_ne!(canonical_hash(&cleared), canonical_hash(&absent));
    assert_ne!(canonical_hash(&a), canonical_hash(&absent));
    // Boundaries between values matter.
    let x = MappedRow {
        title: Some(Set::Value("ab".into())),
        due_date: Some(Set::Value("c".into())),
        ..MappedRow::default()
    };
    let y = MappedRow {
        title: Some(Set::Value("a".into())),
        due_date: Some(Set::Value("bc".into())),
        ..MappedRow::default()
    };
    assert_ne!(canonical_hash(&x), canonical_hash(&y));
    // Numbers and strings with the same text differ.
    let mut n = MappedRow::default();
    n.fields.push(MappedField {
        field_id: "f".into(),
        value: FieldValue::Json(json!(1)),
    });
    let mut t = n.clone();
    t.fields[0].value = FieldValue::Json(json!("1"));
    assert_ne!(canonical_hash(&n), canonical_hash(&t));
}

#[test]
fn hash_is_stable_across_releases() {
    // The ledger keeps hashes between runs: a change of encoding must be deliberate
    // (bump ENCODING_VERSION and update this value).
    let mut r = MappedRow {
        key: Some("BR/42".into()),
        title: Some(Set::Value("ACME".into())),
        ..MappedRow::default()
    };
    r.fields.push(MappedField {
        field_id: "amount".into(),
        value: FieldValue::Json(json!(12.5)),
    });
    r.fields.push(MappedField {
        field_id: "company".into(),
        value: FieldValue::Connect(vec![ConnectionRef::Id("9".into())]),
    });
    let h = canonical_hash(&r);
    assert_eq!(h, canonical_hash(&r.clone()));
    assert_eq!(h, STABLE_HASH, "encoding changed: {h:#x}");
}

const STABLE_HASH: u64 = 0xd29564f5d4960d0f;

// ---------- targets (field-level sync) ----------

#[test]
fn add_mode_on_a_single_value_field_is_a_config_issue() {
    let d = card_dest("plan: { column: plan, mode: add }");
    let found = issues(&d, Schema::Pipe(pipe()));
    assert!(
        found
            .iter()
            .any(|i| i.path == "mapping.plan.mode" && i.message.contains("list targets")),
        "{found:?}"
    );
    let d = card_dest("tags: { column: tags, mode: add }\nfeatures: { column: f, mode: add }");
    assert!(Mapper::new(&d, &Schema::Pipe(pipe())).is_ok());
}

#[test]
fn a_changed_entry_is_a_new_slot_and_the_same_value_the_same_fingerprint() {
    let a = mapper(&card_dest("notes: notes"));
    let b = mapper(&card_dest("notes: { column: notes, transforms: [trim] }"));
    let slot = |m: &Mapper, name: &str| {
        m.targets()
            .iter()
            .find(|t| &*t.name == name)
            .map(|t| t.slot)
    };
    assert_ne!(slot(&a, "notes"), slot(&b, "notes"));
    assert_eq!(slot(&a, "customer_name"), slot(&b, "customer_name"));
    // How an entry writes is not what it writes: the slot stays.
    let c = mapper(&card_dest(
        "notes: { column: notes, write: if_empty, on_conflict: keep_edits }",
    ));
    assert_eq!(slot(&a, "notes"), slot(&c, "notes"));
    let r1 = row(&[("notes", s("x"))]);
    let r2 = row(&[("notes", s("y"))]);
    let f1 = a.fingerprints(&a.map(&r1).unwrap());
    let f2 = a.fingerprints(&a.map(&r2).unwrap());
    assert_eq!(f1.len(), a.targets().len());
    let changed: Vec<&str> = a
        .targets()
        .iter()
        .zip(f1.iter().zip(&f2))
        .filter(|(_, (x, y))| x != y)
        .map(|(t, _)| &*t.name)
        .collect();
    assert_eq!(changed, ["notes"]);
    assert!(f1.iter().flatten().all(|f| *f != 0));
}
