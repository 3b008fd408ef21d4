//! The typed cell value that every source reader produces and the mapping consumes.
//!
//! Readers keep the most precise type the file format carries (Parquet dates stay dates,
//! decimals keep their exact text) so that conversion to Pipefy's formats happens once,
//! in the mapping, with the destination's rules.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal kept as its canonical text (e.g. Parquet DECIMAL(10,2) -> "1234.50").
    Decimal(String),
    Str(String),
    Date(NaiveDate),
    /// A timestamp with a known offset (Parquet timestamps adjusted to UTC, ISO strings with offset).
    DateTime(DateTime<FixedOffset>),
    /// A timestamp without a zone (Parquet `isAdjustedToUTC = false`).
    NaiveDateTime(NaiveDateTime),
    List(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// True for null and for strings that are empty or only whitespace: CSV has no null, so an
    /// empty cell means "no value".
    pub fn is_blank(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Str(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// Name of the variant, for error messages ("expected a date, got a boolean").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Str(_) => "string",
            Value::Date(_) => "date",
            Value::DateTime(_) => "timestamp",
            Value::NaiveDateTime(_) => "timestamp without zone",
            Value::List(_) => "list",
        }
    }

    /// Converts a JSON value read from JSON Lines / JSON array sources.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(f) = n.as_f64() {
                    Value::Float(f)
                } else {
                    Value::Decimal(n.to_string())
                }
            }
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Value::from_json).collect())
            }
            // A nested object has no Pipefy counterpart; keep its JSON text so a template or a
            // text field can still carry it.
            obj @ serde_json::Value::Object(_) => Value::Str(obj.to_string()),
        }
    }

    /// The value as JSON, for the failed-rows file: what a reader of that file needs to
    /// reproduce the row. A non-finite float (which JSON cannot hold) is kept as its text
    /// (`"NaN"`, `"inf"`) rather than lost as null; other non-JSON types as their text form.
    pub fn to_json(&self) -> serde_json::Value {
        self.json(false)
    }

    /// Like [`Value::to_json`], for the members of a nested Parquet struct or map: a string
    /// holding a JSON object is an inner struct the reader already encoded, and goes back in
    /// as that object rather than as a quoted string.
    pub fn to_nested_json(&self) -> serde_json::Value {
        self.json(true)
    }

    fn json(&self, nested: bool) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(f.to_string())),
            Value::Str(s) if nested => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(obj @ serde_json::Value::Object(_)) => obj,
                _ => serde_json::Value::String(s.clone()),
            },
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(|v| v.json(nested)).collect())
            }
            other => serde_json::Value::String(other.to_string()),
        }
    }
}

/// The text form used by templates and text fields.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => f.write_str(d),
            Value::Str(s) => f.write_str(s),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::DateTime(dt) => write!(f, "{}", dt.to_rfc3339()),
            Value::NaiveDateTime(dt) => write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S")),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_form_for_failed_rows_and_nested_parquet_values() {
        // JSON has no NaN: both forms keep its text rather than turning it into null.
        for v in [Value::Float(f64::NAN), Value::Float(f64::INFINITY)] {
            assert_eq!(v.to_json(), v.to_nested_json());
            assert!(v.to_json().is_string(), "{:?}", v.to_json());
        }
        assert_eq!(Value::Float(1.5).to_json(), serde_json::json!(1.5));
        // A string holding an object is an inner struct only inside a nested value.
        let inner = Value::List(vec![Value::Str(r#"{"a":1}"#.into()), Value::Int(2)]);
        assert_eq!(inner.to_nested_json(), serde_json::json!([{"a": 1}, 2]));
        assert_eq!(inner.to_json(), serde_json::json!([r#"{"a":1}"#, 2]));
        let date = Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap_or_default());
        assert_eq!(date.to_json(), serde_json::json!("2026-01-02"));
    }
}
