//! Conversion of a (transformed) value to what Pipefy accepts for the target (docs/pipefy-api.md §6).

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};

use crate::failure::FailureCode;
use crate::value::Value;

use super::attach::{AttachSource, FileRef};
use super::formats::{
    canonical_float, canonical_number, float_json, format_date, format_datetime_offset,
    format_datetime_utc, format_time, number_json, parse_iso, parse_time, round2,
};
use super::limits::{MAX_LIST_ITEMS, SHORT_TEXT_MAX_CHARS};
use super::resolve::{quote, MemberIndex, NamedIndex, OptionIndex};
use super::{ConnectionRef, Problem};

/// Where connected cards/records are looked up by key.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSpec {
    /// `pipe:<id>` or `table:<id>`.
    pub(crate) repo: String,
    pub(crate) key_field: String,
}

#[derive(Debug)]
pub(crate) enum Conv {
    /// short_text, long_text, cpf, cnpj and the title attribute.
    Text {
        max: usize,
    },
    Email,
    Phone,
    Number,
    Currency,
    Date,
    /// datetime and due_date fields: ISO 8601 with the value's offset.
    DateTime,
    /// The card attribute due_date: ISO 8601 UTC.
    DateTimeUtc,
    Time,
    Select(OptionIndex),
    Checklist(OptionIndex),
    /// `None`: the table schema carries no labels, values are taken as label ids.
    Labels(Option<Arc<NamedIndex>>),
    /// `None`: the table schema carries no members, values are taken as user ids.
    Assignees(Option<Arc<MemberIndex>>),
    Phase(Arc<NamedIndex>),
    /// `None`: values are card/record ids.
    Connect(Option<ConnectSpec>),
    /// Storage paths of files already uploaded to Pipefy.
    Attachment,
    /// Files in S3 that pipefy-sync uploads (`attach:`).
    Files(Arc<AttachSource>),
    /// The card id of update_card.
    CardId,
}

impl Conv {
    /// Whether the target holds a list that `mode: add` can add to.
    pub(crate) fn is_list(&self) -> bool {
        matches!(
            self,
            Conv::Checklist(_) | Conv::Labels(_) | Conv::Assignees(_) | Conv::Connect(_)
        )
    }
}

/// Each item of a list value resolved to its id or option, without repeats.
fn unique_items(
    v: &Value,
    resolve: impl Fn(&str) -> Result<String, Problem>,
) -> Result<Converted, Problem> {
    let mut out = Vec::new();
    each_item(v, |text| {
        push_unique(&mut out, resolve(text)?);
        Ok(())
    })?;
    Ok(Converted::List(out))
}

fn owned(s: &str) -> String {
    s.to_string()
}

/// A converted value, before it is placed in the [`super::MappedRow`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Converted {
    Text(String),
    Json(serde_json::Value),
    List(Vec<String>),
    Refs(Vec<ConnectionRef>),
    Files(Vec<FileRef>),
}

/// "the integer '42'" / "'abc'": what a person sees of the offending value.
pub(crate) fn got(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        other => format!("the {} {}", other.kind(), quote(&other.to_string())),
    }
}

fn invalid(message: String) -> Problem {
    Problem::new(FailureCode::InvalidValue, message)
}

fn into_text(v: Cow<'_, Value>) -> String {
    match v {
        Cow::Owned(Value::Str(s)) => s,
        Cow::Borrowed(Value::Str(s)) => s.clone(),
        other => other.to_string(),
    }
}

/// Character count when it exceeds `max`; byte length bounds it, so short values are not
/// counted.
fn too_long(s: &str, max: usize) -> Option<usize> {
    if s.len() <= max {
        return None;
    }
    let n = s.chars().count();
    (n > max).then_some(n)
}

fn check_len(s: &str, max: usize) -> Result<(), Problem> {
    match too_long(s, max) {
        Some(n) => Err(Problem::new(
            FailureCode::TooLarge,
            format!(
                "the text is {n} characters long; the limit is {max} (value starts with {})",
                quote(s)
            ),
        )),
        None => Ok(()),
    }
}

/// The single value of a scalar target: a one-item list is accepted as its item.
fn single(v: &Value) -> Result<&Value, Problem> {
    match v {
        Value::List(items) if items.len() == 1 => match items.first() {
            Some(item) => Ok(item),
            None => Err(Problem::internal("empty one-item list")),
        },
        Value::List(items) => Err(invalid(format!(
            "expected one value, got a list of {} items: {}",
            items.len(),
            quote(&v.to_string())
        ))),
        other => Ok(other),
    }
}

fn scalar_text(v: &Value) -> Result<Cow<'_, str>, Problem> {
    Ok(match single(v)? {
        Value::Str(s) => Cow::Borrowed(s.trim()),
        other => Cow::Owned(other.to_string()),
    })
}

/// Calls `f` with the text of each non-blank item (a scalar is a list of one).
fn each_item(v: &Value, mut f: impl FnMut(&str) -> Result<(), Problem>) -> Result<(), Problem> {
    let items = match v {
        Value::List(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    if items.len() > MAX_LIST_ITEMS {
        return Err(Problem::new(
            FailureCode::TooLarge,
            format!(
                "the list has {} items; the limit is {MAX_LIST_ITEMS}",
                items.len()
            ),
        ));
    }
    for item in items {
        match item {
            Value::List(_) => {
                return Err(invalid(format!(
                    "expected a flat list, got a nested list {}",
                    quote(&item.to_string())
                )))
            }
            Value::Str(s) => {
                let t = s.trim();
                if !t.is_empty() {
                    f(t)?;
                }
            }
            Value::Null => {}
            other => f(&other.to_string())?,
        }
    }
    Ok(())
}

fn push_unique<T: PartialEq>(out: &mut Vec<T>, item: T) {
    if !out.contains(&item) {
        out.push(item);
    }
}

/// A plain id: no spaces inside (ids are numbers or short opaque strings).
fn plain_id<'a>(text: &'a str, what: &str) -> Result<&'a str, Problem> {
    if text.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "expected a {what} id, got {} (ids have no spaces)",
            quote(text)
        )));
    }
    Ok(text)
}

pub(crate) fn to_date(v: &Value) -> Result<NaiveDate, Problem> {
    match single(v)? {
        Value::Date(d) => Ok(*d),
        // The calendar date where the instant was recorded.
        Value::DateTime(dt) => Ok(dt.date_naive()),
        Value::NaiveDateTime(n) => Ok(n.date()),
        Value::Str(s) => parse_iso(s.trim()).map(|iso| iso.date).ok_or_else(|| {
            invalid(format!(
                "expected a date like 2024-05-31, got {}; for another layout add a parse_date transform (e.g. format '%d/%m/%Y')",
                quote(s)
            ))
        }),
        other => Err(invalid(format!(
            "expected a date like 2024-05-31, got {}; a parse_date transform can read numbers like 20240531 (format '%Y%m%d')",
            got(other)
        ))),
    }
}

/// Values without an offset are taken as UTC: a time zone is given with `parse_date`.
pub(crate) fn to_datetime(v: &Value) -> Result<DateTime<FixedOffset>, Problem> {
    let utc = |n: chrono::NaiveDateTime| n.and_utc().fixed_offset();
    match single(v)? {
        Value::DateTime(dt) => Ok(*dt),
        Value::NaiveDateTime(n) => Ok(utc(*n)),
        Value::Date(d) => Ok(utc(d.and_time(NaiveTime::MIN))),
        Value::Str(s) => match parse_iso(s.trim()) {
            Some(iso) => {
                let naive = iso.date.and_time(iso.time.unwrap_or(NaiveTime::MIN));
                match iso.offset {
                    Some(off) => naive
                        .and_local_timezone(off)
                        .single()
                        .ok_or_else(|| invalid(format!("{} is out of range", quote(s)))),
                    None => Ok(utc(naive)),
                }
            }
            None => Err(invalid(format!(
                "expected a date and time like 2024-05-31T14:30:00-03:00, got {}; for another layout add a parse_date transform (e.g. format '%d/%m/%Y %H:%M' with a timezone)",
                quote(s)
            ))),
        },
        other => Err(invalid(format!(
            "expected a date and time like 2024-05-31T14:30:00-03:00, got {}",
            got(other)
        ))),
    }
}

fn to_time(v: &Value) -> Result<NaiveTime, Problem> {
    match single(v)? {
        Value::DateTime(dt) => Ok(dt.time()),
        Value::NaiveDateTime(n) => Ok(n.time()),
        Value::Str(s) => parse_time(s).ok_or_else(|| {
            invalid(format!(
                "expected a time like 14:30 (24 h) or 2:30 PM, got {}",
                quote(s)
            ))
        }),
        other => Err(invalid(format!(
            "expected a time like 14:30, got {}",
            got(other)
        ))),
    }
}

fn not_a_number(v: &Value) -> Problem {
    invalid(format!(
        "expected a number like 1234.56, got {}; for '1.234,56' add a parse_number transform with decimal_separator ','",
        got(v)
    ))
}

/// A number field's value.
fn to_number(v: &Value) -> Result<serde_json::Value, Problem> {
    match single(v)? {
        Value::Int(i) => Ok(serde_json::Value::from(*i)),
        Value::Float(f) => float_json(*f).ok_or_else(|| not_a_number(v)),
        Value::Decimal(s) | Value::Str(s) => number_json(s).ok_or_else(|| not_a_number(v)),
        other => Err(not_a_number(other)),
    }
}

/// A number in canonical decimal text (currency rounds on the text, exactly).
fn to_decimal(v: &Value) -> Result<String, Problem> {
    match single(v)? {
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) => canonical_float(*f).ok_or_else(|| not_a_number(v)),
        Value::Decimal(s) | Value::Str(s) => canonical_number(s).ok_or_else(|| not_a_number(v)),
        other => Err(not_a_number(other)),
    }
}

/// Loose check: one `@` with text before it and a dotted domain after it, no spaces.
fn check_email(s: &str) -> Result<(), Problem> {
    let ok = match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with(['.', '-'])
                && !domain.ends_with(['.', '-'])
                && !domain.contains("..")
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "expected an email address like name@example.com, got {}",
            quote(s)
        )))
    }
}

/// Loose check: digits with the usual punctuation (`+55 (11) 98765-4321`), 4 to 20 digits.
fn check_phone(s: &str) -> Result<(), Problem> {
    let mut digits = 0usize;
    let mut ok = true;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits += 1,
            '+' if i == 0 => {}
            ' ' | '-' | '(' | ')' | '.' | '/' => {}
            _ => ok = false,
        }
    }
    if ok && (4..=20).contains(&digits) {
        Ok(())
    } else {
        Err(invalid(format!(
            "expected a phone number like +55 11 98765-4321 (digits, spaces, + - ( ) . /), got {}",
            quote(s)
        )))
    }
}

impl Conv {
    pub(crate) fn convert(&self, v: Cow<'_, Value>) -> Result<Converted, Problem> {
        match self {
            Conv::Text { max } => {
                let s = into_text(v);
                check_len(&s, *max)?;
                Ok(Converted::Text(s))
            }
            Conv::Email => {
                let s = scalar_text(&v)?;
                check_len(&s, SHORT_TEXT_MAX_CHARS)?;
                check_email(&s)?;
                Ok(Converted::Text(s.into_owned()))
            }
            Conv::Phone => {
                let s = scalar_text(&v)?;
                check_len(&s, SHORT_TEXT_MAX_CHARS)?;
                check_phone(&s)?;
                Ok(Converted::Text(s.into_owned()))
            }
            Conv::Number => Ok(Converted::Json(to_number(&v)?)),
            Conv::Currency => {
                let decimal = to_decimal(&v)?;
                let rounded = round2(&decimal);
                number_json(&rounded)
                    .map(Converted::Json)
                    .ok_or_else(|| Problem::internal("rounded currency is not a number"))
            }
            Conv::Date => Ok(Converted::Text(format_date(to_date(&v)?))),
            Conv::DateTime => Ok(Converted::Text(format_datetime_offset(&to_datetime(&v)?))),
            Conv::DateTimeUtc => Ok(Converted::Text(format_datetime_utc(&to_datetime(&v)?))),
            Conv::Time => Ok(Converted::Text(format_time(to_time(&v)?))),
            Conv::Select(options) => {
                let s = match single(&v)? {
                    Value::Str(s) => Cow::Borrowed(s.as_str()),
                    other => Cow::Owned(other.to_string()),
                };
                Ok(Converted::Text(options.resolve(&s)?.to_string()))
            }
            Conv::Checklist(options) => unique_items(&v, |text| options.resolve(text).map(owned)),
            Conv::Labels(index) => unique_items(&v, |text| match index {
                Some(ix) => ix.resolve(text).map(owned),
                None => plain_id(text, "label").map(owned),
            }),
            Conv::Assignees(index) => unique_items(&v, |text| match index {
                Some(ix) => ix.resolve(text).map(owned),
                None => plain_id(text, "user").map(owned),
            }),
            Conv::Phase(index) => {
                let s = scalar_text(&v)?;
                Ok(Converted::Text(index.resolve(&s)?.to_string()))
            }
            Conv::Connect(spec) => {
                let mut out = Vec::new();
                each_item(&v, |text| {
                    let r = match spec {
                        Some(spec) => ConnectionRef::Key {
                            repo: spec.repo.clone(),
                            key_field: spec.key_field.clone(),
                            key: text.to_string(),
                        },
                        None => ConnectionRef::Id(plain_id(text, "card or record")?.to_string()),
                    };
                    push_unique(&mut out, r);
                    Ok(())
                })?;
                Ok(Converted::Refs(out))
            }
            Conv::Attachment => {
                let mut out = Vec::new();
                each_item(&v, |text| {
                    if !text.starts_with("orgs/") || text.contains("://") {
                        return Err(invalid(format!(
                            "expected an uploaded file's storage path like orgs/<org>/uploads/<id>/<file>, got {} (to upload files from S3, give the mapping entry `attach:`)",
                            quote(text)
                        )));
                    }
                    push_unique(&mut out, text.to_string());
                    Ok(())
                })?;
                Ok(Converted::List(out))
            }
            Conv::Files(source) => {
                let mut out = Vec::new();
                each_item(&v, |text| {
                    push_unique(&mut out, source.resolve(text)?);
                    Ok(())
                })?;
                Ok(Converted::Files(out))
            }
            Conv::CardId => {
                let s = scalar_text(&v)?;
                Ok(Converted::Text(plain_id(&s, "card")?.to_string()))
            }
        }
    }
}
