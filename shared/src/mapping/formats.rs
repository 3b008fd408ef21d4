//! Hand-written parsers and printers for the few text formats the mapping handles per row
//! (ISO dates and times, plain decimals). They run millions of times in a dry run, so they
//! avoid chrono's format-string machinery and allocate only the output.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

use crate::failure::FailureCode;

use super::resolve::quote;
use super::Problem;

/// An ISO 8601 date, optionally with a time and an offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Iso {
    pub(crate) date: NaiveDate,
    pub(crate) time: Option<NaiveTime>,
    pub(crate) offset: Option<FixedOffset>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.peek().filter(u8::is_ascii_digit)?;
            v = v * 10 + u32::from(d - b'0');
            self.at += 1;
        }
        Some(v)
    }
    /// One or two digits (hours written `9:30`).
    fn digits_1_2(&mut self) -> Option<u32> {
        let first = self.digits(1)?;
        match self.peek() {
            Some(d) if d.is_ascii_digit() => {
                self.at += 1;
                Some(first * 10 + u32::from(d - b'0'))
            }
            _ => Some(first),
        }
    }
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]`, with `T`, `t` or a space before the time and an
/// optional `Z` / `±HH:MM` / `±HHMM` / `±HH` offset (a space before it is allowed).
pub(crate) fn parse_iso(s: &str) -> Option<Iso> {
    let mut c = Cursor {
        b: s.as_bytes(),
        at: 0,
    };
    let y = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let m = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let d = c.digits(2)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?;
    if c.done() {
        return Some(Iso {
            date,
            time: None,
            offset: None,
        });
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return None;
    }
    let time = parse_hms(&mut c)?;
    c.eat(b' ');
    let offset = if c.done() {
        None
    } else if c.eat(b'Z') || c.eat(b'z') {
        Some(Utc.fix())
    } else {
        let sign: i32 = if c.eat(b'+') {
            1
        } else if c.eat(b'-') {
            -1
        } else {
            return None;
        };
        let oh = c.digits(2)?;
        let om = if c.done() {
            0
        } else {
            c.eat(b':');
            c.digits(2)?
        };
        if oh > 23 || om > 59 {
            return None;
        }
        let secs = i32::try_from(oh * 3600 + om * 60).ok()?;
        Some(FixedOffset::east_opt(sign * secs)?)
    };
    if !c.done() {
        return None;
    }
    Some(Iso {
        date,
        time: Some(time),
        offset,
    })
}

/// `H:MM`, `HH:MM`, `HH:MM:SS`, `HH:MM:SS.fff` (fraction dropped).
fn parse_hms(c: &mut Cursor<'_>) -> Option<NaiveTime> {
    let h = c.digits_1_2()?;
    if !c.eat(b':') {
        return None;
    }
    let m = c.digits(2)?;
    let mut sec = 0;
    if c.eat(b':') {
        sec = c.digits(2)?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.at;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.at += 1;
            }
            if c.at == start {
                return None;
            }
        }
    }
    // A leap second (:60) is folded into :59; Pipefy keeps minutes anyway.
    NaiveTime::from_hms_opt(h, m, sec.min(59))
}

/// A time of day: `14:30`, `9:05`, `14:30:15`, `2:30 PM`, `2:30pm`.
pub(crate) fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    let lower_tail = s
        .len()
        .checked_sub(2)
        .and_then(|i| s.get(i..))
        .map(str::to_ascii_lowercase);
    let (body, pm) = match lower_tail.as_deref() {
        Some("am") => (s.get(..s.len() - 2)?.trim_end(), Some(false)),
        Some("pm") => (s.get(..s.len() - 2)?.trim_end(), Some(true)),
        _ => (s, None),
    };
    let mut c = Cursor {
        b: body.as_bytes(),
        at: 0,
    };
    let t = parse_hms(&mut c)?;
    if !c.done() {
        return None;
    }
    match pm {
        None => Some(t),
        Some(pm) => {
            let h = t.hour();
            if !(1..=12).contains(&h) {
                return None;
            }
            let h24 = match (h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, false) => h,
                (h, true) => h + 12,
            };
            t.with_hour(h24)
        }
    }
}

/// Two digits, zero-padded; values are < 100 by construction (months, hours...).
fn push_2(out: &mut String, n: u32) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// Dates are printed by hand: `write!` with padding is a measurable share of a row's time.
pub(crate) fn push_date(out: &mut String, d: NaiveDate) {
    let y = d.year();
    if (0..=9999).contains(&y) {
        let y = y.unsigned_abs();
        push_2(out, y / 100);
        push_2(out, y % 100);
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{y:04}");
    }
    out.push('-');
    push_2(out, d.month());
    out.push('-');
    push_2(out, d.day());
}

pub(crate) fn format_date(d: NaiveDate) -> String {
    let mut out = String::with_capacity(10);
    push_date(&mut out, d);
    out
}

fn push_hms(out: &mut String, t: NaiveTime) {
    push_2(out, t.hour());
    out.push(':');
    push_2(out, t.minute());
    out.push(':');
    push_2(out, t.second());
}

/// `2024-08-08T16:46:00-03:00` (datetime and due_date fields). Sub-seconds are dropped:
/// Pipefy keeps minutes.
pub(crate) fn format_datetime_offset(dt: &DateTime<FixedOffset>) -> String {
    let mut out = String::with_capacity(25);
    let local = dt.naive_local();
    push_date(&mut out, local.date());
    out.push('T');
    push_hms(&mut out, local.time());
    let secs = dt.offset().local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let secs = secs.unsigned_abs();
    out.push(sign);
    push_2(&mut out, secs / 3600);
    out.push(':');
    push_2(&mut out, (secs % 3600) / 60);
    out
}

/// `2024-08-08T19:46:00Z` (the card attribute due_date).
pub(crate) fn format_datetime_utc(dt: &DateTime<FixedOffset>) -> String {
    let utc = dt.naive_utc();
    let mut out = String::with_capacity(20);
    push_date(&mut out, utc.date());
    out.push('T');
    push_hms(&mut out, utc.time());
    out.push('Z');
    out
}

/// `HH:MM`, 24 h.
pub(crate) fn format_time(t: NaiveTime) -> String {
    let mut out = String::with_capacity(5);
    push_2(&mut out, t.hour());
    out.push(':');
    push_2(&mut out, t.minute());
    out
}

/// A wall-clock time in a time zone. A time skipped by a daylight-saving change is an error;
/// a repeated one takes its first occurrence.
pub(crate) fn localize(tz: Tz, naive: NaiveDateTime) -> Result<DateTime<FixedOffset>, Problem> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(dt) => Ok(dt.fixed_offset()),
        chrono::LocalResult::Ambiguous(first, _) => Ok(first.fixed_offset()),
        chrono::LocalResult::None => Err(Problem::new(
            FailureCode::InvalidValue,
            format!(
                "{} does not exist in the time zone {} (the clocks skip it for daylight saving)",
                quote(&naive.format("%Y-%m-%d %H:%M").to_string()),
                tz.name()
            ),
        )),
    }
}

/// A plain decimal in canonical form: optional `-`, no leading zeros, no trailing fraction
/// zeros (`+001.50` -> `1.5`, `-0` -> `0`). `None` if `s` is not `[+-]digits[.digits]`.
pub(crate) fn canonical_decimal(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(assemble(neg, int, frac))
}

fn assemble(neg: bool, int: &str, frac: &str) -> String {
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(int.len() + frac.len() + 3);
    if neg && !(int.is_empty() && frac.is_empty()) {
        out.push('-');
    }
    if int.is_empty() {
        out.push('0');
    } else {
        out.push_str(int);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `[+-]digits[.digits]` with at least one digit (`.5` and `5.` included).
pub(crate) fn is_plain_decimal(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn is_exponent_form(s: &str) -> bool {
    s.bytes().any(|b| b == b'e' || b == b'E')
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'e' | b'E' | b'+' | b'-' | b'.'))
}

/// A float as a JSON number; whole values become integers so `3.0` and `3` write (and hash)
/// the same.
pub(crate) fn float_json(f: f64) -> Option<serde_json::Value> {
    if !f.is_finite() {
        return None;
    }
    // Below 2^53 every whole float is exactly an i64.
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        return Some(serde_json::Value::from(f as i64));
    }
    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
}

/// Number text (plain or exponent form) as a JSON number, without building canonical text:
/// this runs for every number cell.
pub(crate) fn number_json(s: &str) -> Option<serde_json::Value> {
    let t = s.trim();
    if is_plain_decimal(t) {
        if !t.contains('.') {
            if let Ok(i) = t.parse::<i64>() {
                return Some(serde_json::Value::from(i));
            }
        }
    } else if !is_exponent_form(t) {
        return None;
    }
    float_json(t.parse().ok()?)
}

/// Like [`canonical_decimal`], also accepting exponent forms (`1.5e3`, `1E-5`) that some
/// writers use for floats.
pub(crate) fn canonical_number(s: &str) -> Option<String> {
    if let Some(c) = canonical_decimal(s) {
        return Some(c);
    }
    let t = s.trim();
    if !is_exponent_form(t) {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    canonical_float(f)
}

/// A finite float in canonical decimal form (Rust prints floats without exponent).
pub(crate) fn canonical_float(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    canonical_decimal(&f.to_string())
}

/// Rounds a canonical decimal to two fraction digits, half away from zero (currency).
pub(crate) fn round2(canon: &str) -> Cow<'_, str> {
    let (neg, body) = match canon.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, canon),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() <= 2 {
        return Cow::Borrowed(canon);
    }
    let round_up = frac.as_bytes().get(2).is_some_and(|&d| d >= b'5');
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes().take(2)).collect();
    if round_up {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                if *d == b'9' {
                    *d = b'0';
                } else {
                    *d += 1;
                    break;
                }
            }
        }
    }
    let split = digits.len().saturating_sub(2);
    let (i, f) = digits.split_at(split);
    // Only ASCII digits went in.
    let i = std::str::from_utf8(i).unwrap_or("0");
    let f = std::str::from_utf8(f).unwrap_or("");
    Cow::Owned(assemble(neg, i, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_forms() {
        let d = NaiveDate::from_ymd_opt(2024, 5, 31).unwrap();
        assert_eq!(parse_iso("2024-05-31").unwrap().date, d);
        let t = parse_iso("2024-05-31T14:30").unwrap();
        assert_eq!(t.time, NaiveTime::from_hms_opt(14, 30, 0));
        assert_eq!(t.offset, None);
        let t = parse_iso("2024-05-31 14:30:15.123-03:00").unwrap();
        assert_eq!(t.time, NaiveTime::from_hms_opt(14, 30, 15));
        assert_eq!(t.offset, FixedOffset::west_opt(3 * 3600));
        assert_eq!(
            parse_iso("2024-05-31T14:30:00Z").unwrap().offset,
            Some(Utc.fix())
        );
        assert_eq!(
            parse_iso("2024-05-31T14:30:00+0530").unwrap().offset,
            FixedOffset::east_opt(5 * 3600 + 1800)
        );
        for bad in [
            "2024-13-01",
            "2024-02-30",
            "31/05/2024",
            "2024-05-31X",
            "2024-05-31T25:00",
            "2024-05-31T14:3",
            "2024-05-31T14:30+99:00",
            "",
        ] {
            assert!(parse_iso(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn times() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0);
        assert_eq!(parse_time("14:30"), t(14, 30));
        assert_eq!(parse_time(" 9:05 "), t(9, 5));
        assert_eq!(parse_time("2:30 PM"), t(14, 30));
        assert_eq!(parse_time("12:10am"), t(0, 10));
        assert_eq!(parse_time("12:10 pm"), t(12, 10));
        assert_eq!(parse_time("14:30:59").map(format_time).unwrap(), "14:30");
        for bad in ["24:00", "14:60", "13:00 pm", "1430", "noon", ""] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(canonical_decimal("+001.50").unwrap(), "1.5");
        assert_eq!(canonical_decimal("-0.000").unwrap(), "0");
        assert_eq!(canonical_decimal(".5").unwrap(), "0.5");
        assert_eq!(canonical_decimal("5.").unwrap(), "5");
        assert_eq!(canonical_decimal(" 42 ").unwrap(), "42");
        for bad in ["", ".", "-", "1,5", "1.2.3", "abc", "1e3", "--1"] {
            assert!(canonical_decimal(bad).is_none(), "{bad}");
        }
        assert_eq!(canonical_number("1.5e3").unwrap(), "1500");
        assert_eq!(canonical_number("1E-5").unwrap(), "0.00001");
        assert!(canonical_number("e").is_none());
        assert_eq!(canonical_float(0.1 + 0.2).unwrap(), "0.30000000000000004");
        assert!(canonical_float(f64::NAN).is_none());
    }

    #[test]
    fn numbers_without_text() {
        assert_eq!(number_json(" -0012 "), Some(serde_json::json!(-12)));
        assert_eq!(number_json("+3.0"), Some(serde_json::json!(3)));
        assert_eq!(number_json("1.50"), Some(serde_json::json!(1.5)));
        assert_eq!(number_json("2.5e2"), Some(serde_json::json!(250)));
        assert_eq!(number_json(".5"), Some(serde_json::json!(0.5)));
        for bad in ["", "-", ".", "1,5", "1.2.3", "e", "0x10", "inf", "NaN"] {
            assert_eq!(number_json(bad), None, "{bad}");
        }
        assert_eq!(float_json(f64::INFINITY), None);
        assert_eq!(float_json(-0.0), Some(serde_json::json!(0)));
    }

    #[test]
    fn rounding() {
        assert_eq!(round2("1.005"), "1.01");
        assert_eq!(round2("1.004"), "1");
        assert_eq!(round2("-2.675"), "-2.68");
        assert_eq!(round2("9.995"), "10");
        assert_eq!(round2("99.999"), "100");
        assert_eq!(round2("0.001"), "0");
        assert_eq!(round2("-0.004"), "0");
        assert_eq!(round2("12.3"), "12.3");
        assert_eq!(number_json("12").unwrap(), serde_json::json!(12));
        assert_eq!(number_json("1234.57").unwrap().to_string(), "1234.57");
        // Beyond i64: the nearest float.
        assert_eq!(
            number_json("99999999999999999999").unwrap().as_f64(),
            Some(1e20)
        );
    }

    #[test]
    fn printing() {
        let dt = DateTime::parse_from_rfc3339("2024-08-08T16:46:00.5-03:00").unwrap();
        assert_eq!(format_datetime_offset(&dt), "2024-08-08T16:46:00-03:00");
        assert_eq!(format_datetime_utc(&dt), "2024-08-08T19:46:00Z");
        let dt = DateTime::parse_from_rfc3339("2024-08-08T16:46:00+05:30").unwrap();
        assert_eq!(format_datetime_offset(&dt), "2024-08-08T16:46:00+05:30");
        assert_eq!(
            format_date(NaiveDate::from_ymd_opt(987, 1, 2).unwrap()),
            "0987-01-02"
        );
        assert_eq!(
            format_date(NaiveDate::from_ymd_opt(12345, 1, 2).unwrap()),
            "12345-01-02"
        );
    }

    #[test]
    fn daylight_saving() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let gap = NaiveDate::from_ymd_opt(2024, 3, 31)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        let err = localize(tz, gap).unwrap_err();
        assert!(err.message.contains("Europe/Berlin"), "{}", err.message);
        let repeated = NaiveDate::from_ymd_opt(2024, 10, 27)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            format_datetime_offset(&localize(tz, repeated).unwrap()),
            "2024-10-27T02:30:00+02:00"
        );
    }
}
