//! Field types, write-side value validation/normalisation (docs/pipefy-api.md §6) and read-side
//! formatting (docs/pipefy-api.md §6).
//!
//! Stored (canonical) values, as seen in [`crate::StateSnapshot`]:
//! text-like, select/radio: JSON string; number/currency: JSON number; date: `"YYYY-MM-DD"`;
//! datetime/due_date: RFC 3339 with the offset the client sent (`2024-08-08T16:46:00-03:00`);
//! time: `"HH:MM"`; checklist: array of option strings; label_select/assignee_select/
//! connector: array of ids; attachment: array of paths.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Pipefy field type ids (lower-case; docs/pipefy-api.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    AssigneeSelect,
    Attachment,
    ChecklistHorizontal,
    ChecklistVertical,
    Cnpj,
    Connector,
    Cpf,
    Currency,
    Date,
    Datetime,
    DueDate,
    DynamicContent,
    Email,
    Formula,
    Id,
    LabelSelect,
    LongText,
    Number,
    Phone,
    RadioHorizontal,
    RadioVertical,
    Select,
    ShortText,
    Statement,
    Time,
}

impl FieldType {
    /// The wire name (`short_text`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::AssigneeSelect => "assignee_select",
            FieldType::Attachment => "attachment",
            FieldType::ChecklistHorizontal => "checklist_horizontal",
            FieldType::ChecklistVertical => "checklist_vertical",
            FieldType::Cnpj => "cnpj",
            FieldType::Connector => "connector",
            FieldType::Cpf => "cpf",
            FieldType::Currency => "currency",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::DueDate => "due_date",
            FieldType::DynamicContent => "dynamic_content",
            FieldType::Email => "email",
            FieldType::Formula => "formula",
            FieldType::Id => "id",
            FieldType::LabelSelect => "label_select",
            FieldType::LongText => "long_text",
            FieldType::Number => "number",
            FieldType::Phone => "phone",
            FieldType::RadioHorizontal => "radio_horizontal",
            FieldType::RadioVertical => "radio_vertical",
            FieldType::Select => "select",
            FieldType::ShortText => "short_text",
            FieldType::Statement => "statement",
            FieldType::Time => "time",
        }
    }

    /// Whether the stored value is a list of strings.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            FieldType::AssigneeSelect
                | FieldType::Attachment
                | FieldType::ChecklistHorizontal
                | FieldType::ChecklistVertical
                | FieldType::Connector
                | FieldType::LabelSelect
        )
    }

    /// Display, computed and auto-id fields cannot be written.
    pub fn is_writable(self) -> bool {
        !matches!(
            self,
            FieldType::Statement | FieldType::DynamicContent | FieldType::Formula | FieldType::Id
        )
    }

    fn has_options(self) -> bool {
        matches!(
            self,
            FieldType::Select
                | FieldType::RadioHorizontal
                | FieldType::RadioVertical
                | FieldType::ChecklistHorizontal
                | FieldType::ChecklistVertical
        )
    }
}

/// How `fields[].value` is rendered on reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// As recorded from a pt-BR organisation (docs/pipefy-api.md §6): dates `dd/mm/yyyy`, datetimes
    /// `dd/mm/yyyy HH:MM`, currency `350,21`.
    #[default]
    PtBr,
    /// ISO forms: `yyyy-mm-dd`, RFC 3339, currency `350.21`.
    Iso,
}

/// `true` for a lower-case, hyphenated 8-4-4-4-12 hex uuid.
pub fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// `true` for anything that is a uuid in some spelling (upper case, no hyphens, braces).
pub fn looks_like_uuid(s: &str) -> bool {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | '{' | '}'))
        .collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Splits a client's list input into strings. Accepts real JSON arrays, numbers, and the
/// `"[a, b]"` / `"[\"a\",\"b\"]"` string form older clients send (docs/pipefy-api.md §6).
pub fn flatten_list_input(raw: &[Json]) -> Vec<String> {
    let mut out = Vec::new();
    for v in raw {
        push_list_item(v, &mut out);
    }
    out
}

fn push_list_item(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Null => {}
        Json::Array(items) => items.iter().for_each(|i| push_list_item(i, out)),
        Json::Number(n) => out.push(n.to_string()),
        Json::Bool(b) => out.push(b.to_string()),
        Json::Object(_) => out.push(v.to_string()),
        Json::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                if let Ok(Json::Array(items)) = serde_json::from_str::<Json>(t) {
                    items.iter().for_each(|i| push_list_item(i, out));
                    return;
                }
                for part in inner.split(',') {
                    let p = part.trim().trim_matches(|c| c == '"' || c == '\'').trim();
                    if !p.is_empty() {
                        out.push(p.to_string());
                    }
                }
            } else if !t.is_empty() {
                out.push(s.clone());
            }
        }
    }
}

/// A value that failed validation; the message names the field by label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn bad(label: &str, what: impl std::fmt::Display) -> ValueError {
    ValueError(format!("Field \"{label}\" {what}"))
}

/// Validates and normalises the value of a scalar (non-list) field. `Ok(None)` clears it.
pub fn normalize_scalar(
    ft: FieldType,
    label: &str,
    options: &[String],
    raw: &[Json],
) -> Result<Option<Json>, ValueError> {
    let items: Vec<&Json> = raw
        .iter()
        .filter(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()))
        .collect();
    let v = match items.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => return Err(bad(label, "takes a single value")),
    };
    let text = match v {
        Json::String(s) => s.trim().to_string(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => return Err(bad(label, format!("has an invalid value: {other}"))),
    };
    let out = match ft {
        FieldType::ShortText | FieldType::LongText => Json::String(match v {
            Json::String(s) => s.clone(),
            _ => text,
        }),
        FieldType::Email => {
            if !is_email(&text) {
                return Err(bad(label, format!("is not a valid e-mail: {text:?}")));
            }
            Json::String(text)
        }
        FieldType::Phone => {
            let digits = text.chars().filter(char::is_ascii_digit).count();
            let ok_chars = text
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
            if !ok_chars || digits < 6 {
                return Err(bad(label, format!("is not a valid phone number: {text:?}")));
            }
            Json::String(text)
        }
        FieldType::Cpf | FieldType::Cnpj => {
            let digits = text.chars().filter(char::is_ascii_digit).count();
            let want = if ft == FieldType::Cpf { 11 } else { 14 };
            let ok_chars = text
                .chars()
                .all(|c| c.is_ascii_digit() || ".-/".contains(c));
            if !ok_chars || digits != want {
                return Err(bad(
                    label,
                    format!("is not a valid {}: {text:?}", ft.as_str()),
                ));
            }
            Json::String(text)
        }
        FieldType::Number => number_json(
            parse_number(&text)
                .ok_or_else(|| bad(label, format!("is not a valid number: {text:?}")))?,
        ),
        FieldType::Currency => {
            let n = parse_number(&text)
                .ok_or_else(|| bad(label, format!("is not a valid currency value: {text:?}")))?;
            number_json((n * 100.0).round() / 100.0)
        }
        FieldType::Date => Json::String(
            parse_date(&text)
                .ok_or_else(|| bad(label, format!("is not a valid date: {text:?}")))?
                .format("%Y-%m-%d")
                .to_string(),
        ),
        FieldType::Datetime | FieldType::DueDate => Json::String(
            parse_datetime(&text)
                .ok_or_else(|| bad(label, format!("is not a valid date time: {text:?}")))?
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        ),
        FieldType::Time => Json::String(
            parse_time(&text)
                .ok_or_else(|| bad(label, format!("is not a valid time: {text:?}")))?
                .format("%H:%M")
                .to_string(),
        ),
        FieldType::Select | FieldType::RadioHorizontal | FieldType::RadioVertical => {
            if !options.contains(&text) {
                return Err(bad(label, format!("has an invalid option: {text:?}")));
            }
            Json::String(text)
        }
        _ => return Err(bad(label, "is not editable")),
    };
    Ok(Some(out))
}

/// Validates the items of a list field syntactically (checklist options); reference
/// checks (labels, users, connected cards) are done by the state, which knows them.
pub fn check_list_items(
    ft: FieldType,
    label: &str,
    options: &[String],
    items: &[String],
) -> Result<(), ValueError> {
    if ft.has_options() {
        if let Some(bad_item) = items.iter().find(|i| !options.contains(i)) {
            return Err(bad(label, format!("has an invalid option: {bad_item:?}")));
        }
    }
    if ft == FieldType::Attachment {
        if let Some(url) = items.iter().find(|i| i.starts_with("http")) {
            return Err(bad(label, format!("takes upload paths, not URLs: {url:?}")));
        }
    }
    Ok(())
}

/// Checks one attachment storage path: an upload path, not a (signed) URL.
pub fn check_attachment_path(path: &str) -> Result<(), String> {
    if path.starts_with("http") {
        return Err(format!("attachments take upload paths, not URLs: {path:?}"));
    }
    if path.trim().is_empty() {
        return Err("attachments take upload paths, got an empty one".to_string());
    }
    Ok(())
}

/// Removes duplicates keeping the first occurrence.
pub fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !s.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn number_json(f: f64) -> Json {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        // Integral values stay integers so snapshots compare naturally with `5`.
        Json::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Json::Number)
            .unwrap_or(Json::Null)
    }
}

/// `YYYY-MM-DD`, `dd/mm/YYYY`, or an ISO date time (its date part).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(t, "%d/%m/%Y"))
        .ok()
        .or_else(|| parse_datetime(t).map(|d| d.date_naive()))
}

/// ISO 8601 with offset; a date time without offset is taken as UTC. A bare date is not a
/// date time.
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d);
    }
    for f in [
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M:%S %z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d);
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%d/%m/%Y %H:%M",
        "%d/%m/%Y %H:%M:%S",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(Utc.from_utc_datetime(&d).fixed_offset());
        }
    }
    None
}

/// The card/record `due_date` attribute: any ISO date time, stored as UTC `...Z`.
pub fn normalize_due_date(s: &str) -> Option<String> {
    parse_datetime(s).map(|d| {
        d.with_timezone(&Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    })
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let t = s.trim();
    NaiveTime::parse_from_str(t, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
        .ok()
}

/// Renders a stored value as `fields[].value`. `name_of` turns list ids into display names
/// (labels, users, connected titles); for checklists and attachments it is the identity.
pub fn display(
    ft: FieldType,
    stored: &Json,
    fmt: ValueFormat,
    name_of: &dyn Fn(&str) -> String,
) -> String {
    match stored {
        Json::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .map(|i| name_of(&json_text(i)))
                .map(|n| serde_json::to_string(&n).unwrap_or_default())
                .collect();
            format!("[{}]", names.join(", "))
        }
        Json::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            match (ft, fmt) {
                (FieldType::Currency, ValueFormat::PtBr) => format!("{f:.2}").replace('.', ","),
                (FieldType::Currency, ValueFormat::Iso) => format!("{f:.2}"),
                _ => n.to_string(),
            }
        }
        Json::String(s) => match (ft, fmt) {
            (FieldType::Date, ValueFormat::PtBr) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.format("%d/%m/%Y").to_string())
                .unwrap_or_else(|_| s.clone()),
            (FieldType::Datetime | FieldType::DueDate, ValueFormat::PtBr) => {
                DateTime::parse_from_rfc3339(s)
                    .map(|d| d.format("%d/%m/%Y %H:%M").to_string())
                    .unwrap_or_else(|_| s.clone())
            }
            _ => s.clone(),
        },
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// The text of a JSON scalar (strings without quotes).
pub fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a stored value equals a search value (`records` `eq`, `findCards`,
/// `findRecords`). Numbers compare numerically, dates and times by their value (any
/// accepted input spelling), lists match when one item equals.
pub fn matches(ft: FieldType, stored: &Json, query: &str) -> bool {
    let q = query.trim();
    match stored {
        Json::Array(items) => items.iter().any(|i| json_text(i) == q),
        Json::Number(n) => match (n.as_f64(), parse_number(q)) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => false,
        },
        Json::String(s) => match ft {
            FieldType::Date => {
                parse_date(q).is_some_and(|d| d.format("%Y-%m-%d").to_string() == *s)
            }
            FieldType::Datetime | FieldType::DueDate => {
                match (DateTime::parse_from_rfc3339(s), parse_datetime(q)) {
                    (Ok(a), Some(b)) => a == b,
                    (Ok(a), None) => parse_date(q).is_some_and(|d| a.date_naive() == d),
                    _ => false,
                }
            }
            FieldType::Time => parse_time(q).is_some_and(|t| t.format("%H:%M").to_string() == *s),
            _ => s == q,
        },
        _ => false,
    }
}

/// Loose check used by inspection helpers: stored value equals `want` as text.
pub fn json_equals_text(stored: &Json, want: &str) -> bool {
    match stored {
        Json::Array(items) => items.iter().any(|i| json_text(i) == want),
        Json::Number(n) => {
            n.to_string() == want
                || matches!((n.as_f64(), parse_number(want)), (Some(a), Some(b)) if (a - b).abs() < 1e-9)
        }
        other => json_text(other) == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_input_accepts_arrays_and_string_forms() {
        assert_eq!(
            flatten_list_input(&[json!("[a, b]")]),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(
            flatten_list_input(&[json!("[\"x y\",\"z\"]")]),
            vec!["x y".to_string(), "z".to_string()]
        );
        assert_eq!(
            flatten_list_input(&[json!(12), json!("13"), json!(null)]),
            vec!["12".to_string(), "13".to_string()]
        );
    }

    #[test]
    fn scalars_normalise() {
        let n = |ft, v: Json| normalize_scalar(ft, "F", &[], &[v]);
        assert_eq!(n(FieldType::Number, json!("12")).unwrap(), Some(json!(12)));
        assert_eq!(n(FieldType::Number, json!(1.5)).unwrap(), Some(json!(1.5)));
        assert!(n(FieldType::Number, json!("1,5")).is_err());
        assert_eq!(
            n(FieldType::Currency, json!("350.214")).unwrap(),
            Some(json!(350.21))
        );
        assert_eq!(
            n(FieldType::Date, json!("01/08/2024")).unwrap(),
            Some(json!("2024-08-01"))
        );
        assert!(n(FieldType::Date, json!("2024-13-01")).is_err());
        assert_eq!(
            n(FieldType::Datetime, json!("2024-08-08T16:46:00-03:00")).unwrap(),
            Some(json!("2024-08-08T16:46:00-03:00"))
        );
        assert!(n(FieldType::Datetime, json!("2024-08-08")).is_err());
        assert_eq!(
            n(FieldType::Time, json!("22:40")).unwrap(),
            Some(json!("22:40"))
        );
        assert!(n(FieldType::Time, json!("25:00")).is_err());
        assert!(n(FieldType::Email, json!("nope")).is_err());
        assert!(n(FieldType::Phone, json!("call me")).is_err());
        assert_eq!(n(FieldType::ShortText, json!("")).unwrap(), None);
        assert!(n(FieldType::Statement, json!("x")).is_err());
    }

    #[test]
    fn display_matches_recorded_formats() {
        let id = |s: &str| s.to_string();
        assert_eq!(
            display(FieldType::Currency, &json!(350.21), ValueFormat::PtBr, &id),
            "350,21"
        );
        assert_eq!(
            display(
                FieldType::Date,
                &json!("2024-08-01"),
                ValueFormat::PtBr,
                &id
            ),
            "01/08/2024"
        );
        assert_eq!(
            display(
                FieldType::Datetime,
                &json!("2024-08-08T16:46:00-03:00"),
                ValueFormat::PtBr,
                &id
            ),
            "08/08/2024 16:46"
        );
        assert_eq!(
            display(
                FieldType::ChecklistVertical,
                &json!(["2", "um"]),
                ValueFormat::PtBr,
                &id
            ),
            "[\"2\", \"um\"]"
        );
    }

    #[test]
    fn uuid_shapes() {
        assert!(is_canonical_uuid("0f8b7c1e-3a52-4c1d-9e77-5b2a4d6c8e01"));
        assert!(!is_canonical_uuid("0F8B7C1E-3A52-4C1D-9E77-5B2A4D6C8E01"));
        assert!(looks_like_uuid("0F8B7C1E3A524C1D9E775B2A4D6C8E01"));
        assert!(!looks_like_uuid("external_id"));
    }
}
