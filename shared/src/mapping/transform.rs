//! Per-field transforms (`trim`, `lowercase`, `uppercase`, `split`, `parse_date`,
//! `parse_number`), compiled once per run and applied in order before type conversion.

use std::borrow::Cow;

use chrono::format::{Fixed, Item, Numeric, Parsed, StrftimeItems};
use chrono::{NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::config::Transform;
use crate::failure::FailureCode;
use crate::value::Value;

use super::formats::{format_time, is_plain_decimal, localize};
use super::resolve::quote;
use super::Problem;

#[derive(Debug)]
pub(crate) enum Step {
    Trim,
    Lowercase,
    Uppercase,
    Split(Box<str>),
    ParseDate(Box<DateParser>),
    ParseNumber(char),
}

/// What a `parse_date` format yields, decided from the format's specifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateKind {
    /// Has an offset (`%z`, `%:z`, `%+`, `%s`): an absolute instant.
    Instant,
    /// Date and time without offset: wall-clock time, placed with `timezone` (default UTC).
    Local,
    Date,
    Time,
}

#[derive(Debug)]
pub(crate) struct DateParser {
    format: Box<str>,
    items: Vec<Item<'static>>,
    kind: DateKind,
    tz: Option<Tz>,
    /// 2024-05-31 14:30 printed with the format, shown in errors.
    example: String,
}

impl Step {
    /// Compiles one transform; `Err` is a message for a config issue.
    pub(crate) fn compile(t: &Transform) -> Result<Step, String> {
        Ok(match t {
            Transform::Trim => Step::Trim,
            Transform::Lowercase => Step::Lowercase,
            Transform::Uppercase => Step::Uppercase,
            Transform::Split { separator } => {
                if separator.is_empty() {
                    return Err("split: the separator must not be empty".to_string());
                }
                Step::Split(separator.as_str().into())
            }
            Transform::ParseDate { format, timezone } => {
                Step::ParseDate(Box::new(DateParser::compile(format, timezone.as_deref())?))
            }
            Transform::ParseNumber { decimal_separator } => {
                if !matches!(decimal_separator, '.' | ',') {
                    return Err(format!(
                        "parse_number: decimal_separator must be '.' or ',', got '{decimal_separator}'"
                    ));
                }
                Step::ParseNumber(*decimal_separator)
            }
        })
    }

    /// Applies the step. Values the step does not concern pass through unchanged (a number
    /// is already a number for `parse_number`); lists are transformed item by item.
    pub(crate) fn apply<'v>(&self, v: Cow<'v, Value>) -> Result<Cow<'v, Value>, Problem> {
        if let Value::List(items) = v.as_ref() {
            if let Step::Split(sep) = self {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::Str(s) => split_into(s, sep, &mut out),
                        other => out.push(other.clone()),
                    }
                }
                return Ok(Cow::Owned(Value::List(out)));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let item = self.apply(Cow::Borrowed(item))?.into_owned();
                if !item.is_blank() {
                    out.push(item);
                }
            }
            return Ok(Cow::Owned(Value::List(out)));
        }
        match self {
            Step::Trim => Ok(map_str(v, |s| {
                let t = s.trim();
                (t.len() != s.len()).then(|| t.to_string())
            })),
            Step::Lowercase => Ok(map_str(v, |s| recase(s, Case::Lower))),
            Step::Uppercase => Ok(map_str(v, |s| recase(s, Case::Upper))),
            Step::Split(sep) => match v.as_ref() {
                Value::Str(s) => {
                    let mut out = Vec::new();
                    split_into(s, sep, &mut out);
                    Ok(Cow::Owned(Value::List(out)))
                }
                _ => Ok(v),
            },
            Step::ParseDate(p) => p.apply(v),
            Step::ParseNumber(sep) => parse_number(v, *sep),
        }
    }
}

#[derive(Clone, Copy)]
enum Case {
    Lower,
    Upper,
}

/// `s` in `case`, or `None` when it already is: most values are, and they are not copied.
fn recase(s: &str, case: Case) -> Option<String> {
    let changes = match (case, s.is_ascii()) {
        (Case::Lower, true) => s.bytes().any(|b| b.is_ascii_uppercase()),
        (Case::Upper, true) => s.bytes().any(|b| b.is_ascii_lowercase()),
        (Case::Lower, false) => s.chars().any(char::is_uppercase),
        (Case::Upper, false) => s.chars().any(char::is_lowercase),
    };
    changes.then(|| match case {
        Case::Lower => s.to_lowercase(),
        Case::Upper => s.to_uppercase(),
    })
}

fn map_str<'v>(v: Cow<'v, Value>, f: impl Fn(&str) -> Option<String>) -> Cow<'v, Value> {
    match v.as_ref() {
        Value::Str(s) => match f(s) {
            Some(changed) => Cow::Owned(Value::Str(changed)),
            None => v,
        },
        _ => v,
    }
}

fn split_into(s: &str, sep: &str, out: &mut Vec<Value>) {
    out.extend(
        s.split(sep)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Value::Str(p.to_string())),
    );
}

/// `1.234,56` with `,` -> `1234.56`. Group separators (the other of `.`/`,`, spaces,
/// apostrophes, underscores) and a currency symbol before or after the number are dropped.
fn parse_number(v: Cow<'_, Value>, sep: char) -> Result<Cow<'_, Value>, Problem> {
    let s = match v.as_ref() {
        Value::Str(s) => s,
        _ => return Ok(v),
    };
    let t = s.trim();
    if t.is_empty() {
        return Ok(Cow::Owned(Value::Null));
    }
    let group = if sep == ',' { '.' } else { ',' };
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let body = strip_currency(body);
    let (neg, body) = match (neg, body.strip_prefix('-')) {
        (false, Some(rest)) => (true, rest),
        (n, _) => (n, body),
    };
    let mut cleaned = String::with_capacity(body.len() + 1);
    if neg {
        cleaned.push('-');
    }
    for c in body.chars() {
        if c == sep {
            cleaned.push('.');
        } else if c == group || matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\'' | '_') {
            continue;
        } else {
            cleaned.push(c);
        }
    }
    if is_plain_decimal(&cleaned) {
        Ok(Cow::Owned(Value::Decimal(cleaned)))
    } else {
        Err(Problem::new(
            FailureCode::InvalidValue,
            format!(
                "expected a number with '{sep}' as decimal separator (like {}), got {}",
                if sep == ',' { "1.234,56" } else { "1,234.56" },
                quote(s)
            ),
        ))
    }
}

fn strip_currency(s: &str) -> &str {
    const SYMBOLS: [&str; 9] = ["R$", "US$", "$", "€", "£", "¥", "₹", "₽", "¢"];
    let mut s = s.trim();
    for sym in SYMBOLS {
        if let Some(rest) = s.strip_prefix(sym) {
            s = rest.trim_start();
            break;
        }
    }
    for sym in SYMBOLS {
        if let Some(rest) = s.strip_suffix(sym) {
            s = rest.trim_end();
            break;
        }
    }
    s
}

impl DateParser {
    fn compile(format: &str, timezone: Option<&str>) -> Result<DateParser, String> {
        let items = StrftimeItems::new(format)
            .parse_to_owned()
            .map_err(|_| format!("parse_date: invalid format '{format}' (chrono strftime syntax, e.g. '%d/%m/%Y %H:%M')"))?;
        let (mut has_date, mut has_time, mut has_offset) = (false, false, false);
        for item in &items {
            match item {
                Item::Numeric(n, _) => match n {
                    Numeric::Timestamp => {
                        has_date = true;
                        has_time = true;
                        has_offset = true;
                    }
                    Numeric::Hour
                    | Numeric::Hour12
                    | Numeric::Minute
                    | Numeric::Second
                    | Numeric::Nanosecond => has_time = true,
                    _ => has_date = true,
                },
                Item::Fixed(f) => match f {
                    Fixed::TimezoneOffset
                    | Fixed::TimezoneOffsetZ
                    | Fixed::TimezoneOffsetColon
                    | Fixed::TimezoneOffsetColonZ
                    | Fixed::TimezoneOffsetDoubleColon
                    | Fixed::TimezoneOffsetTripleColon => has_offset = true,
                    Fixed::RFC2822 | Fixed::RFC3339 => {
                        has_date = true;
                        has_time = true;
                        has_offset = true;
                    }
                    Fixed::ShortMonthName | Fixed::LongMonthName => has_date = true,
                    Fixed::LowerAmPm | Fixed::UpperAmPm => has_time = true,
                    Fixed::Nanosecond
                    | Fixed::Nanosecond3
                    | Fixed::Nanosecond6
                    | Fixed::Nanosecond9 => has_time = true,
                    _ => {}
                },
                _ => {}
            }
        }
        let kind = match (has_date, has_time, has_offset) {
            (true, true, true) => DateKind::Instant,
            (true, true, false) => DateKind::Local,
            (true, false, _) => DateKind::Date,
            (false, true, _) => DateKind::Time,
            (false, false, _) => {
                return Err(format!(
                    "parse_date: the format '{format}' has no date or time specifiers (like %Y, %m, %d, %H, %M)"
                ))
            }
        };
        let tz = match timezone {
            None => None,
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                format!("parse_date: unknown time zone '{name}' (use an IANA name like 'America/Sao_Paulo' or 'UTC')")
            })?),
        };
        let sample = NaiveDate::from_ymd_opt(2024, 5, 31)
            .and_then(|d| d.and_hms_opt(14, 30, 0))
            .ok_or("internal error: sample date")?;
        let sample = chrono::FixedOffset::west_opt(3 * 3600)
            .ok_or("internal error: sample offset")?
            .from_utc_datetime(&(sample + chrono::Duration::hours(3)));
        let example = sample.format_with_items(items.iter()).to_string();
        Ok(DateParser {
            format: format.into(),
            items,
            kind,
            tz,
            example,
        })
    }

    fn what(&self) -> &'static str {
        match self.kind {
            DateKind::Instant | DateKind::Local => "a date and time",
            DateKind::Date => "a date",
            DateKind::Time => "a time",
        }
    }

    fn apply<'v>(&self, v: Cow<'v, Value>) -> Result<Cow<'v, Value>, Problem> {
        let text: Cow<'_, str> = match v.as_ref() {
            Value::Str(s) => Cow::Borrowed(s.trim()),
            // Numbers like 20240531 with format %Y%m%d.
            Value::Int(_) | Value::Decimal(_) => Cow::Owned(v.to_string()),
            Value::NaiveDateTime(n) => {
                return match self.tz {
                    Some(tz) => Ok(Cow::Owned(Value::DateTime(localize(tz, *n)?))),
                    None => Ok(v),
                }
            }
            Value::Date(d) => {
                return match (self.tz, self.kind) {
                    (Some(tz), DateKind::Date) => self.midnight(tz, *d).map(Cow::Owned),
                    _ => Ok(v),
                }
            }
            Value::Null | Value::DateTime(_) | Value::List(_) => return Ok(v),
            Value::Bool(_) | Value::Float(_) => {
                return Err(Problem::new(
                    FailureCode::InvalidValue,
                    format!(
                        "expected {} like '{}' (format '{}'), got the {} {}",
                        self.what(),
                        self.example,
                        self.format,
                        v.kind(),
                        quote(&v.to_string())
                    ),
                ))
            }
        };
        if text.is_empty() {
            return Ok(Cow::Owned(Value::Null));
        }
        self.parse(&text).map(Cow::Owned)
    }

    fn midnight(&self, tz: Tz, d: NaiveDate) -> Result<Value, Problem> {
        Ok(Value::DateTime(localize(tz, d.and_time(NaiveTime::MIN))?))
    }

    fn parse(&self, text: &str) -> Result<Value, Problem> {
        let bad = || {
            Problem::new(
                FailureCode::InvalidValue,
                format!(
                    "expected {} like '{}' (format '{}'), got {}",
                    self.what(),
                    self.example,
                    self.format,
                    quote(text)
                ),
            )
        };
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, self.items.iter()).map_err(|_| bad())?;
        match self.kind {
            DateKind::Instant => parsed.to_datetime().map(Value::DateTime).map_err(|_| bad()),
            DateKind::Local => {
                let naive = parsed.to_naive_datetime_with_offset(0).map_err(|_| bad())?;
                match self.tz {
                    Some(tz) => Ok(Value::DateTime(localize(tz, naive)?)),
                    None => Ok(Value::NaiveDateTime(naive)),
                }
            }
            DateKind::Date => {
                let d = parsed.to_naive_date().map_err(|_| bad())?;
                match self.tz {
                    Some(tz) => self.midnight(tz, d),
                    None => Ok(Value::Date(d)),
                }
            }
            DateKind::Time => parsed
                .to_naive_time()
                .map(|t| Value::Str(format_time(t)))
                .map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{recase, Case};

    #[test]
    fn recase_changes_only_what_is_not_already_in_case() {
        assert_eq!(recase("ab-1", Case::Upper).as_deref(), Some("AB-1"));
        assert_eq!(recase("AB-1", Case::Lower).as_deref(), Some("ab-1"));
        assert_eq!(recase("àb", Case::Upper).as_deref(), Some("ÀB"));
        assert_eq!(recase("ÀB", Case::Lower).as_deref(), Some("àb"));
        // Already in case (or caseless): no copy.
        assert_eq!(recase("AB-1", Case::Upper), None);
        assert_eq!(recase("àb-1", Case::Lower), None);
        assert_eq!(recase("123", Case::Upper), None);
    }
}
