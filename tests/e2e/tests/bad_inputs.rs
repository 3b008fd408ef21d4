//! Bad inputs through the whole engine: every one is reported with its file, line and the
//! field or column to blame, lands in the failed-rows output, is never sent to Pipefy, and
//! nothing panics or goes missing (the counts add up).

use std::io::Write;

use pipefy_sync::config::{parse_destination, Destination};
use pipefy_sync::engine::{sync, RunRequest, RunScope};
use pipefy_sync::report::{RowAction, RowResult, RunStatus, RunSummary};
use pipefy_sync::source::formats::flate2;
use pipefy_sync_tests::sync::{assert_counts_add_up, result_at, Harness};

const FILE: &str = "refined/customers/part-0001.csv";

const HEADER: &str =
    "cid,name,email,phone,plan,seats,signup,renewal,call,tasks,tags,owner,stage,account";
const GOOD: [(&str, &str); 14] = [
    ("cid", "G1"),
    ("name", "Good"),
    ("email", "good@example.com"),
    ("phone", "+55 11 5555-0000"),
    ("plan", "Pro"),
    ("seats", "3"),
    ("signup", "01/02/2025"),
    ("renewal", "2026-02-27 09:30"),
    ("call", "14:30"),
    ("tasks", "Kickoff;Training"),
    ("tags", "VIP"),
    ("owner", "ana.souza@example.com"),
    ("stage", "Inbox"),
    ("account", "ACME"),
];

/// Pipe 301 through every kind of field the demo pipe has.
const MAPPING: &str = r#"  title: { template: "Customer {cid}" }
  customer_name: name
  email: email
  phone: phone
  plan: plan
  seats: seats
  signup_date: { column: signup, transforms: [{ parse_date: { format: "%d/%m/%Y" } }] }
  renewal_at: { column: renewal, transforms: [{ parse_date: { format: "%Y-%m-%d %H:%M", timezone: "America/Sao_Paulo" } }] }
  onboarding_call: call
  tasks: { column: tasks, transforms: [{ split: { separator: ";" } }] }
  label_ids: { column: tags, transforms: [{ split: { separator: "," } }] }
  assignee_ids: owner
  phase_id: stage
  account: { column: account, connect: { table_id: tbl_accounts, key_field: code } }
"#;

fn dest_with(h: &Harness, extra: &str, mapping: &str) -> Destination {
    h.destination(&format!(
        "name: bad-inputs\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n{extra}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{mapping}"
    ))
}

fn dest(h: &Harness) -> Destination {
    dest_with(h, "", MAPPING)
}

/// A CSV line: the good row with some columns replaced (quoted when they need it).
fn csv_row(overrides: &[(&str, &str)]) -> String {
    GOOD.iter()
        .map(|(col, good)| {
            let v = overrides
                .iter()
                .find(|(c, _)| c == col)
                .map(|(_, v)| *v)
                .unwrap_or(good);
            if v.contains(',') || v.contains('"') {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn cards_with_key(h: &Harness, key: &str) -> usize {
    h.cards_with("301", "external_id", key).len()
}

/// What a failed row must say.
struct Expect<'a> {
    file: &'a str,
    line: u64,
    code: &'a str,
    /// The Pipefy target to blame, if any.
    field: Option<&'a str>,
    /// The source column to blame, if any.
    column: Option<&'a str>,
    /// Text the message must contain (the offending value, what was expected...).
    needles: &'a [&'a str],
}

/// The row is reported with its file, line, code, field/column and a clear message, and is
/// in the failed-rows output with its provenance. Returns the failed-rows line.
fn assert_failed(h: &Harness, s: &RunSummary, e: Expect<'_>) -> serde_json::Value {
    let results = h.results(s);
    let r: &RowResult = result_at(&results, e.file, e.line);
    assert!(
        matches!(r.action, RowAction::Skipped | RowAction::Failed),
        "{}:{} should have failed: {r:#?}",
        e.file,
        e.line
    );
    assert!(r.id.is_none(), "{r:#?}");
    assert_eq!(r.error_code.as_deref(), Some(e.code), "{r:#?}");
    if e.field.is_some() {
        assert_eq!(r.field.as_deref(), e.field, "{r:#?}");
    }
    if e.column.is_some() {
        assert_eq!(r.column.as_deref(), e.column, "{r:#?}");
    }
    let msg = r.error_message.clone().unwrap_or_default();
    for n in e.needles {
        assert!(
            msg.contains(n),
            "message of {}:{} should contain {n:?}: {msg}",
            e.file,
            e.line
        );
    }
    let failed = h.failed_rows(s);
    let line = failed
        .iter()
        .find(|f| f["_source_file"] == e.file && f["_source_line"] == e.line)
        .unwrap_or_else(|| panic!("{}:{} not in the failed rows: {failed:#?}", e.file, e.line))
        .clone();
    assert_eq!(line["_error_code"], e.code, "{line}");
    let fmsg = line["_error_message"].as_str().unwrap_or_default();
    if let Some(field) = e.field {
        assert!(
            fmsg.contains(&format!("'{field}'")),
            "failed row should name field {field}: {fmsg}"
        );
    }
    if let Some(column) = e.column {
        assert!(
            fmsg.contains(column),
            "failed row should name column {column}: {fmsg}"
        );
    }
    line
}

/// A file with a good row (line 2) and one bad value (line 3); the good row is created, the
/// bad one reported and never sent.
async fn one_bad_value(
    column: &str,
    value: &str,
    code: &str,
    field: &str,
    needles: &[&str],
) -> (Harness, RunSummary) {
    let h = Harness::new().await;
    let bad = csv_row(&[("cid", "B1"), (column, value)]);
    h.write_file(FILE, format!("{HEADER}\n{}\n{bad}\n", csv_row(&[])));
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (2, 1, 1),
        "{s:#?}"
    );
    assert_eq!(cards_with_key(&h, "G1"), 1);
    assert_eq!(cards_with_key(&h, "B1"), 0, "the bad row must not be sent");
    assert_eq!(
        h.emulator.stats().mutations.get("createCard").copied(),
        Some(1)
    );
    assert_eq!(h.all_mutations(), 1, "{:?}", h.emulator.stats().mutations);
    let f = assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 3,
            code,
            field: Some(field),
            column: Some(column),
            needles,
        },
    );
    // The original columns are kept for a replay.
    assert_eq!(f["cid"], "B1");
    assert_eq!(f[column], value);
    (h, s)
}

#[tokio::test]
async fn text_in_a_number_field() {
    one_bad_value("seats", "many", "INVALID_VALUE", "seats", &["many"]).await;
}

#[tokio::test]
async fn an_impossible_date() {
    one_bad_value(
        "signup",
        "31/02/2025",
        "INVALID_VALUE",
        "signup_date",
        &["31/02/2025", "%d/%m/%Y"],
    )
    .await;
}

#[tokio::test]
async fn a_date_time_in_the_wrong_format() {
    one_bad_value(
        "renewal",
        "27/02/2026 9h30",
        "INVALID_VALUE",
        "renewal_at",
        &["27/02/2026 9h30"],
    )
    .await;
}

#[tokio::test]
async fn a_bad_time() {
    one_bad_value(
        "call",
        "25:99",
        "INVALID_VALUE",
        "onboarding_call",
        &["25:99"],
    )
    .await;
}

#[tokio::test]
async fn a_select_value_outside_the_options() {
    one_bad_value(
        "plan",
        "Platinum",
        "NOT_AN_OPTION",
        "plan",
        &["Platinum", "Enterprise"],
    )
    .await;
}

#[tokio::test]
async fn a_checklist_value_outside_the_options() {
    one_bad_value(
        "tasks",
        "Kickoff;Launch party",
        "NOT_AN_OPTION",
        "tasks",
        &["Launch party"],
    )
    .await;
}

#[tokio::test]
async fn a_bad_email() {
    one_bad_value(
        "email",
        "not an email",
        "INVALID_VALUE",
        "email",
        &["not an email"],
    )
    .await;
}

#[tokio::test]
async fn a_bad_phone() {
    one_bad_value(
        "phone",
        "call me maybe",
        "INVALID_VALUE",
        "phone",
        &["call me maybe"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_label_name() {
    one_bad_value(
        "tags",
        "VIP,Gold member",
        "UNKNOWN_REFERENCE",
        "label_ids",
        &["Gold member"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_assignee() {
    one_bad_value(
        "owner",
        "nobody@example.com",
        "UNKNOWN_REFERENCE",
        "assignee_ids",
        &["nobody@example.com"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_phase_name() {
    one_bad_value(
        "stage",
        "Limbo",
        "UNKNOWN_REFERENCE",
        "phase_id",
        &["Limbo"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_connected_record() {
    one_bad_value("account", "NOPE", "UNKNOWN_REFERENCE", "account", &["NOPE"]).await;
}

#[tokio::test]
async fn a_blank_required_field_on_create() {
    one_bad_value(
        "name",
        "   ",
        "MISSING_REQUIRED",
        "customer_name",
        &["customer_name"],
    )
    .await;
}

#[tokio::test]
async fn an_oversized_value() {
    let long = "x".repeat(pipefy_sync::mapping::limits::SHORT_TEXT_MAX_CHARS + 1);
    let (h, s) = one_bad_value("name", &long, "TOO_LARGE", "customer_name", &["256", "255"]).await;
    // The message quotes a long value cut short, not whole.
    let r = result_at(&h.results(&s), FILE, 3).clone();
    assert!(r.error_message.unwrap_or_default().len() < 1000);
}

#[tokio::test]
async fn a_blank_key() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        format!("{HEADER}\n{}\n{}\n", csv_row(&[]), csv_row(&[("cid", " ")])),
    );
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 3,
            code: "MISSING_REQUIRED",
            field: Some("external_id"),
            column: Some("cid"),
            needles: &["cid", "blank"],
        },
    );
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn a_key_part_holding_the_separator() {
    let h = Harness::new().await;
    let d = h.destination(&format!(
        "name: bad-inputs\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid, name], field: external_id }}\nsource:\n  path: ${{DATA}}\n  layer: refined\n  table: customers\nmapping:\n{MAPPING}"
    ));
    h.write_file(
        FILE,
        format!(
            "{HEADER}\n{}\n{}\n",
            csv_row(&[]),
            csv_row(&[("cid", "B|1")])
        ),
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.created, 1, "{s:#?}");
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 3,
            code: "INVALID_VALUE",
            field: Some("external_id"),
            column: Some("cid"),
            needles: &["B|1", "separator"],
        },
    );
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn duplicate_keys_in_one_file() {
    let h = Harness::new().await;
    h.write_file(
        FILE,
        format!(
            "{HEADER}\n{}\n{}\n{}\n",
            csv_row(&[]),
            csv_row(&[("cid", "G2")]),
            csv_row(&[("name", "Good again")])
        ),
    );
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.failed_rows()), (2, 1), "{s:#?}");
    let f = assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 4,
            code: "DUPLICATE_KEY",
            field: None,
            column: None,
            needles: &["'G1'", "more than once"],
        },
    );
    assert_eq!(f["name"], "Good again");
    // The first occurrence wins.
    let card = h.cards_with("301", "external_id", "G1");
    assert_eq!(card.len(), 1);
    assert_eq!(
        card[0].fields.get("customer_name"),
        Some(&serde_json::json!("Good"))
    );
    assert_eq!(
        result_at(&h.results(&s), FILE, 2).action,
        RowAction::Created
    );
}

#[tokio::test]
async fn a_csv_row_with_the_wrong_number_of_fields() {
    let h = Harness::new().await;
    let short = csv_row(&[("cid", "B1")]);
    let short = short.rsplit_once(',').unwrap().0.to_string();
    let long = format!("{},extra", csv_row(&[("cid", "B2")]));
    h.write_file(
        FILE,
        format!("{HEADER}\n{short}\n{}\n{long}\n", csv_row(&[])),
    );
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (3, 1, 2),
        "{s:#?}"
    );
    for (line, found, raw) in [(2, "found 13", &short), (4, "found 15", &long)] {
        let f = assert_failed(
            &h,
            &s,
            Expect {
                file: FILE,
                line,
                code: "READ_ERROR",
                field: None,
                column: None,
                needles: &["expected 14 fields", found],
            },
        );
        assert_eq!(
            f["_raw"].as_str().map(str::trim_end),
            Some(raw.as_str()),
            "the raw record is kept"
        );
    }
    assert_eq!(cards_with_key(&h, "G1"), 1);
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn bad_quoting_in_a_csv_row() {
    let h = Harness::new().await;
    let bad = csv_row(&[("cid", "B1")]).replacen(",Pro,", ",\"Pro\"x,", 1);
    h.write_file(FILE, format!("{HEADER}\n{bad}\n{}\n", csv_row(&[])));
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.failed_rows()), (1, 1), "{s:#?}");
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 2,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["bad quoting in field 5", "'x'"],
        },
    );
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn an_unterminated_quote_loses_no_row_after_it() {
    let h = Harness::new().await;
    let bad = csv_row(&[("cid", "B1")]).replacen(",Pro,", ",\"Pro,", 1);
    h.write_file(
        FILE,
        format!(
            "{HEADER}\n{bad}\n{}\n{}\n",
            csv_row(&[]),
            csv_row(&[("cid", "G2")])
        ),
    );
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_eq!((s.counts.created, s.counts.failed_rows()), (2, 1), "{s:#?}");
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 2,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["unterminated"],
        },
    );
    assert_eq!(cards_with_key(&h, "G1"), 1);
    assert_eq!(cards_with_key(&h, "G2"), 1);
}

#[tokio::test]
async fn non_utf8_bytes() {
    let h = Harness::new().await;
    let mut data = format!("{HEADER}\n{}\n", csv_row(&[])).into_bytes();
    // "Jos\xE9": a latin1 é in a UTF-8 file.
    let bad = csv_row(&[("cid", "B1"), ("name", "Jos~")]).into_bytes();
    data.extend(bad.into_iter().map(|b| if b == b'~' { 0xE9 } else { b }));
    data.push(b'\n');
    h.write_file(FILE, data);
    let s = h.run(&dest(&h)).await;
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (2, 1, 1),
        "{s:#?}"
    );
    let f = assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 3,
            code: "READ_ERROR",
            field: None,
            column: Some("name"),
            needles: &["not valid UTF-8", "encoding"],
        },
    );
    assert!(
        f["_raw"].as_str().is_some_and(|r| r.starts_with("B1,Jos")),
        "{f}"
    );
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn an_empty_file_is_skipped_by_a_table_run_and_reported_when_named() {
    let h = Harness::new().await;
    let empty = "refined/customers/part-0000.csv";
    h.write_file(empty, "");
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    // A whole-table run lists data files only: writers leave empty part files behind.
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(s.source_files, vec![FILE.to_string()]);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (1, 1, 0),
        "{s:#?}"
    );
    assert_counts_add_up(&s);

    // An upload of that very file: it is read, and reported as empty, not ignored.
    let up = h
        .run_with(
            &dest(&h),
            RunRequest {
                trigger: "upload".into(),
                scope: RunScope::Files(vec![empty.to_string()]),
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(up.status, RunStatus::Completed, "{up:#?}");
    assert_failed(
        &h,
        &up,
        Expect {
            file: empty,
            line: 0,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["empty file"],
        },
    );
    assert_counts_add_up(&up);
    assert_eq!(h.all_mutations(), 1);
}

#[tokio::test]
async fn a_header_only_file_has_no_rows_and_no_failures() {
    let h = Harness::new().await;
    h.write_file(FILE, format!("{HEADER}\n"));
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_counts_add_up(&s);
    assert_eq!(s.counts.read, 0);
    assert_eq!(s.counts.failed_rows(), 0);
    assert!(h.failed_rows(&s).is_empty());
    assert_eq!(h.all_mutations(), 0);
}

#[tokio::test]
async fn invalid_json_lines_and_non_object_elements() {
    let h = Harness::new().await;
    let file = "refined/customers/part-0001.jsonl";
    h.write_file(
        file,
        concat!(
            r#"{"cid": "J1", "name": "Jay", "seats": 3, "plan": "Pro"}"#,
            "\n",
            r#"{"cid": "J2", "name": "Broken", "seats": "#,
            "\n",
            "[\"J3\", \"not an object\"]\n",
            "42\n",
            "\n",
            r#"{"cid": "J4", "name": "Jo", "seats": {"n": 1}}"#,
            "\n",
            r#"{"cid": "J5", "name": "Five", "plan": null, "seats": 5}"#,
            "\n",
        ),
    );
    let s = h
        .run(&dest_with(
            &h,
            "",
            "  customer_name: name\n  seats: seats\n  plan: plan\n",
        ))
        .await;
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.read, s.counts.created, s.counts.failed_rows()),
        (6, 2, 4),
        "{s:#?}"
    );
    let f = assert_failed(
        &h,
        &s,
        Expect {
            file,
            line: 2,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["invalid JSON"],
        },
    );
    assert!(
        f["_raw"].as_str().is_some_and(|r| r.contains("Broken")),
        "{f}"
    );
    assert_failed(
        &h,
        &s,
        Expect {
            file,
            line: 3,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["array", "not an object"],
        },
    );
    assert_failed(
        &h,
        &s,
        Expect {
            file,
            line: 4,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["number", "not an object"],
        },
    );
    // A JSON object where a number is expected: the field is named.
    assert_failed(
        &h,
        &s,
        Expect {
            file,
            line: 6,
            code: "INVALID_VALUE",
            field: Some("seats"),
            column: Some("seats"),
            needles: &[],
        },
    );
    assert_eq!(cards_with_key(&h, "J1"), 1);
    assert_eq!(
        cards_with_key(&h, "J5"),
        1,
        "a null is a blank value (left alone)"
    );
    assert_eq!(h.all_mutations(), 2);
}

#[tokio::test]
async fn a_json_array_cut_short() {
    let h = Harness::new().await;
    let file = "refined/customers/part-0001.json";
    h.write_file(
        file,
        r#"[{"cid": "A1", "name": "One"}, {"cid": "A2", "name": "Two"}, {"cid": "A3""#,
    );
    let s = h.run(&dest_with(&h, "", "  customer_name: name\n")).await;
    assert_eq!(s.counts.created, 2, "{s:#?}");
    let results = h.results(&s);
    let cut = results
        .iter()
        .find(|r| r.error_code.as_deref() == Some("READ_ERROR"))
        .unwrap_or_else(|| panic!("{results:#?}"));
    assert_eq!(cut.file, file);
    assert!(
        cut.error_message
            .as_deref()
            .unwrap_or("")
            .contains("cut short"),
        "{cut:#?}"
    );
    assert_eq!(h.failed_rows(&s).len(), 1);
    // A file that cannot be read counts as a failed row: it must count as read too.
    assert_counts_add_up(&s);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn a_corrupt_gzip_file() {
    let h = Harness::new().await;
    let gz = "refined/customers/part-0002.csv.gz";
    let mut bytes = gzip(format!("{HEADER}\n{}\n", csv_row(&[("cid", "Z1")])).as_bytes());
    // Keep the gzip header, garble the deflate stream.
    for b in bytes.iter_mut().skip(12).take(20) {
        *b ^= 0x5A;
    }
    h.write_file(gz, bytes);
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(s.counts.created, 1, "{s:#?}");
    let results = h.results(&s);
    let r = results
        .iter()
        .find(|r| r.file == gz)
        .unwrap_or_else(|| panic!("{results:#?}"));
    assert_eq!(r.error_code.as_deref(), Some("READ_ERROR"), "{r:#?}");
    assert!(h.failed_rows(&s).iter().any(|f| f["_source_file"] == gz));
    assert_eq!(cards_with_key(&h, "Z1"), 0);
    // A file that cannot be read counts as a failed row: it must count as read too.
    assert_counts_add_up(&s);
}

#[tokio::test]
async fn a_truncated_gzip_file_keeps_the_rows_before_the_cut() {
    let h = Harness::new().await;
    let gz = "refined/customers/part-0001.csv.gz";
    let mut text = format!("{HEADER}\n");
    for i in 0..200 {
        text.push_str(&csv_row(&[("cid", &format!("T{i:03}"))]));
        text.push('\n');
    }
    let bytes = gzip(text.as_bytes());
    h.write_file(gz, &bytes[..bytes.len() - 40]);
    let s = h.run(&dest_with(&h, "", "  customer_name: name\n")).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    let results = h.results(&s);
    let err = results
        .iter()
        .find(|r| r.error_code.is_some())
        .unwrap_or_else(|| panic!("{results:#?}"));
    assert_eq!(
        (err.file.as_str(), err.error_code.as_deref()),
        (gz, Some("READ_ERROR")),
        "{err:#?}"
    );
    assert!(s.counts.created > 100, "{s:#?}");
    assert!(h.failed_rows(&s).iter().any(|f| f["_source_file"] == gz));
    // A file that cannot be read counts as a failed row: it must count as read too.
    assert_counts_add_up(&s);
}

#[tokio::test]
async fn a_corrupt_parquet_file() {
    let h = Harness::new().await;
    let pq = "refined/customers/part-0002.parquet";
    h.write_file(
        pq,
        b"PAR1 this is not really parquet at all PAR1".as_slice(),
    );
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_eq!(s.counts.created, 1);
    let f = assert_failed(
        &h,
        &s,
        Expect {
            file: pq,
            line: 0,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["Parquet"],
        },
    );
    assert!(f.get("_raw").is_none() || f["_raw"].is_string());
    // A file that cannot be read counts as a failed row: it must count as read too.
    assert_counts_add_up(&s);
}

#[tokio::test]
async fn a_file_of_unknown_format() {
    let h = Harness::new().await;
    let odd = "refined/customers/notes.txt";
    h.write_file(odd, "cid,name\nX1,X\n");
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    let s = h.run(&dest(&h)).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_failed(
        &h,
        &s,
        Expect {
            file: odd,
            line: 0,
            code: "READ_ERROR",
            field: None,
            column: None,
            needles: &["source.format", ".txt"],
        },
    );
    assert_eq!(cards_with_key(&h, "X1"), 0);
    // A file that cannot be read counts as a failed row: it must count as read too.
    assert_counts_add_up(&s);
}

#[tokio::test]
async fn a_template_referencing_a_missing_column() {
    let h = Harness::new().await;
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    let d = dest_with(
        &h,
        "",
        "  title: { template: \"{name} ({nickname})\" }\n  customer_name: name\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 2,
            code: "INVALID_VALUE",
            field: Some("title"),
            column: Some("nickname"),
            needles: &["nickname"],
        },
    );
    assert_eq!(h.all_mutations(), 0);
}

#[tokio::test]
async fn an_update_without_a_card_id() {
    let h = Harness::new().await;
    h.write_file(FILE, "card_id,name\n900004,Acme Renamed\n,Nobody\n");
    let d = h.destination(
        "name: bad-update\npipe_id: \"301\"\noperation: update_card\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  id: card_id\n  customer_name: name\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(s.counts.updated, 1, "{s:#?}");
    assert_failed(
        &h,
        &s,
        Expect {
            file: FILE,
            line: 3,
            code: "MISSING_REQUIRED",
            field: Some("id"),
            column: Some("card_id"),
            needles: &["card id"],
        },
    );
}

#[tokio::test]
async fn unknown_field_ids_fail_the_run_before_anything_is_sent() {
    let h = Harness::new().await;
    h.write_file(FILE, format!("{HEADER}\n{}\n", csv_row(&[])));
    let d = dest_with(
        &h,
        "",
        "  customer_name: name\n  seat_count: seats\n  plan: { constant: Diamond }\n",
    );
    let err = sync(
        &h.context(),
        &d,
        RunRequest {
            trigger: "test".into(),
            ..RunRequest::default()
        },
    )
    .await
    .expect_err("a mapping that names unknown fields must not run");
    let msg = err.to_string();
    assert!(msg.contains("bad-inputs"), "names the destination: {msg}");
    assert!(
        msg.contains("mapping.seat_count") && msg.contains("no field 'seat_count'"),
        "{msg}"
    );
    assert!(
        msg.contains("seats"),
        "lists the field ids there are: {msg}"
    );
    assert!(
        msg.contains("mapping.plan") && msg.contains("Diamond"),
        "{msg}"
    );
    assert_eq!(h.all_mutations(), 0);
    assert_eq!(
        h.emulator
            .stats()
            .queries
            .get("findCards")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[test]
fn config_typos_name_the_file_and_the_key_path() {
    let base = "name: typo\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\nsource: { path: ./data, layer: refined, table: customers }\nmapping:\n  customer_name: name\n  plan: plan\ntoken: { env: PIPEFY_TOKEN }\n";
    assert!(parse_destination("dest.yaml", base).is_ok());
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "  plan: plan",
            "  plan: { colum: plan }",
            &["mapping.plan", "`colum`"],
        ),
        (
            "operation: upsert_card",
            "operation: upsert_cards",
            &["operation", "upsert_cards"],
        ),
        (
            "token:",
            "partial_sucess: false\ntoken:",
            &["partial_sucess"],
        ),
        (
            "table: customers }",
            "tabel: customers }",
            &["source", "tabel"],
        ),
        (
            "  plan: plan",
            "  plan: { column: plan, transforms: [{ parse_dat: { format: x } }] }",
            &["mapping.plan", "`parse_dat`"],
        ),
        (
            "  plan: plan",
            "  plan: { column: plan, on_null: erase }",
            &["mapping.plan", "erase"],
        ),
        (
            "key: { columns: [cid], field: external_id }\n",
            "",
            &["key"],
        ),
        (
            "token:",
            "sync: { removed_rows: { action: move_to_phase, phsae: Done } }\ntoken:",
            &["sync.removed_rows", "phsae"],
        ),
        (
            "operation: upsert_card",
            "operation: update_card",
            &["mapping.id"],
        ),
    ];
    for (from, to, needles) in cases {
        assert!(base.contains(from), "{from}");
        let yaml = base.replacen(from, to, 1);
        let err = parse_destination("dest.yaml", &yaml)
            .expect_err(&yaml)
            .to_string();
        assert!(err.starts_with("dest.yaml: "), "{err}");
        for n in *needles {
            assert!(err.contains(n), "{to:?}: expected {n:?} in: {err}");
        }
    }
}
