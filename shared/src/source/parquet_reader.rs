//! Parquet through the `parquet` crate's Arrow reader, a batch of rows at a time.
//!
//! Each batch is converted column by column (one type dispatch per column, tight loops per
//! type) into [`Value`]s that keep the file's precision: dates stay dates, timestamps keep
//! their zone (or lack of one), decimals keep their exact text, lists stay lists.

use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions as tc;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{Provenance, Row, RowError};
use crate::value::Value;

/// Rows per Arrow batch: big enough to amortise the per-batch work, small enough that a
/// wide table's batch stays a few MB.
pub(crate) const PARQUET_BATCH_ROWS: usize = 2048;

pub(crate) struct ParquetRows {
    file: Arc<str>,
    reader: Option<ParquetRecordBatchReader>,
    columns: Vec<Arc<str>>,
    rows: std::vec::IntoIter<Row>,
    next_line: u64,
    /// A fatal error to yield before anything else (the file could not be opened).
    failed: Option<RowError>,
}

impl ParquetRows {
    pub(crate) fn open(file: File, name: Arc<str>) -> Self {
        let built = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| {
            let columns: Vec<Arc<str>> = b
                .schema()
                .fields()
                .iter()
                .map(|f| Arc::from(f.name().as_str()))
                .collect();
            Ok((b.with_batch_size(PARQUET_BATCH_ROWS).build()?, columns))
        });
        match built {
            Ok((reader, columns)) => ParquetRows {
                file: name,
                reader: Some(reader),
                columns,
                rows: Vec::new().into_iter(),
                next_line: 1,
                failed: None,
            },
            Err(e) => ParquetRows::failed(name, format!("not a readable Parquet file: {e}")),
        }
    }

    pub(crate) fn failed(name: Arc<str>, message: String) -> Self {
        ParquetRows {
            failed: Some(RowError::whole_file(name.clone(), message)),
            file: name,
            reader: None,
            columns: Vec::new(),
            rows: Vec::new().into_iter(),
            next_line: 1,
        }
    }

    fn convert_batch(&mut self, batch: &RecordBatch) -> Vec<Row> {
        let n = batch.num_rows();
        let mut columns: Vec<std::vec::IntoIter<Value>> = batch
            .columns()
            .iter()
            .zip(self.columns.iter())
            .map(|(array, name)| column_values(array.as_ref(), name).into_iter())
            .collect();
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let values = columns
                .iter_mut()
                .zip(self.columns.iter())
                .map(|(col, name)| (name.clone(), col.next().unwrap_or(Value::Null)))
                .collect();
            rows.push(Row {
                provenance: Provenance {
                    file: self.file.clone(),
                    line: self.next_line,
                },
                values,
            });
            self.next_line += 1;
        }
        rows
    }
}

impl Iterator for ParquetRows {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.reader = None;
            return Some(Err(e));
        }
        loop {
            if let Some(row) = self.rows.next() {
                return Some(Ok(row));
            }
            match self.reader.as_mut()?.next() {
                None => {
                    self.reader = None;
                    return None;
                }
                Some(Err(e)) => {
                    self.reader = None;
                    return Some(Err(RowError::whole_file(
                        self.file.clone(),
                        format!(
                            "cannot read the Parquet file after row {}: {e}",
                            self.next_line - 1
                        ),
                    )));
                }
                Some(Ok(batch)) => self.rows = self.convert_batch(&batch).into_iter(),
            }
        }
    }
}

/// A timestamp column's zone.
#[derive(Clone, Copy)]
enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

fn parse_zone(tz: &str) -> Option<Zone> {
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") {
        return Some(Zone::Fixed(Utc.fix()));
    }
    if let Some(rest) = t.strip_prefix('+').or_else(|| t.strip_prefix('-')) {
        let sign = if t.starts_with('-') { -1 } else { 1 };
        let digits: String = rest.chars().filter(|c| c.is_ascii_digit()).collect();
        let (h, m) = match digits.len() {
            2 => (digits.parse::<i32>().ok()?, 0),
            4 => (
                digits.get(..2)?.parse::<i32>().ok()?,
                digits.get(2..)?.parse::<i32>().ok()?,
            ),
            _ => return None,
        };
        return FixedOffset::east_opt(sign * (h * 3600 + m * 60)).map(Zone::Fixed);
    }
    t.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
}

fn zoned(utc: NaiveDateTime, zone: Zone) -> DateTime<FixedOffset> {
    let instant = Utc.from_utc_datetime(&utc);
    match zone {
        Zone::Fixed(offset) => instant.with_timezone(&offset),
        Zone::Named(tz) => instant.with_timezone(&tz).fixed_offset(),
    }
}

/// The exact text of an unscaled decimal integer with a scale: (`123450`, 2) -> `1234.50`.
pub(crate) fn decimal_text(unscaled: &str, scale: i8) -> String {
    let (negative, digits) = match unscaled.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, unscaled),
    };
    let mut out = String::with_capacity(digits.len() + 4);
    if negative {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(digits);
        if digits != "0" {
            out.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        }
        return out;
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits.to_string()
    };
    let point = padded.len() - scale;
    out.push_str(padded.get(..point).unwrap_or("0"));
    out.push('.');
    out.push_str(padded.get(point..).unwrap_or(""));
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes without a UTF-8 annotation: older writers store strings that way, so valid UTF-8
/// reads as text; anything else as lowercase hex.
fn binary_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::Str(s.to_string()),
        Err(_) => Value::Str(hex(bytes)),
    }
}

fn primitive<T, F>(array: &dyn Array, f: F) -> Option<Vec<Value>>
where
    T: ArrowPrimitiveType,
    F: Fn(T::Native) -> Value,
{
    let a = array.as_primitive_opt::<T>()?;
    Some(a.iter().map(|v| v.map(&f).unwrap_or(Value::Null)).collect())
}

/// Decimals as exact text: the unscaled integer with the point put back.
fn decimals<T>(array: &dyn Array, scale: i8) -> Option<Vec<Value>>
where
    T: ArrowPrimitiveType,
    T::Native: ToString,
{
    primitive::<T, _>(array, |v| {
        Value::Decimal(decimal_text(&v.to_string(), scale))
    })
}

fn timestamps<T>(
    array: &dyn Array,
    to_naive: fn(i64) -> Option<NaiveDateTime>,
    zone: Option<Zone>,
) -> Option<Vec<Value>>
where
    T: ArrowPrimitiveType<Native = i64>,
{
    primitive::<T, _>(array, |v| match (to_naive(v), zone) {
        (Some(dt), Some(z)) => Value::DateTime(zoned(dt, z)),
        (Some(dt), None) => Value::NaiveDateTime(dt),
        (None, _) => Value::Null,
    })
}

fn lists<O: OffsetSizeTrait>(array: &dyn Array, column: &str) -> Option<Vec<Value>> {
    let a = array.as_list_opt::<O>()?;
    let offsets = a.value_offsets();
    let mut items = column_values(a.values().as_ref(), column).into_iter();
    let first = offsets.first().map(|o| o.as_usize()).unwrap_or(0);
    // Sliced arrays start part-way into their child values.
    for _ in 0..first {
        items.next();
    }
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        let start = offsets.get(i).map(|o| o.as_usize()).unwrap_or(0);
        let end = offsets.get(i + 1).map(|o| o.as_usize()).unwrap_or(start);
        let list: Vec<Value> = items.by_ref().take(end.saturating_sub(start)).collect();
        out.push(if a.is_null(i) {
            Value::Null
        } else {
            Value::List(list)
        });
    }
    Some(out)
}

fn per_row_lists(array: &dyn Array, column: &str, value: impl Fn(usize) -> ArrayRef) -> Vec<Value> {
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                Value::Null
            } else {
                Value::List(column_values(value(i).as_ref(), column))
            }
        })
        .collect()
}

static UNSUPPORTED_WARNED: std::sync::Once = std::sync::Once::new();

/// A struct's or a map's entries as the JSON object text a cell carries (a missing value is
/// `null`).
fn object_text<'a>(entries: impl Iterator<Item = (String, Option<&'a Value>)>) -> Value {
    let obj: serde_json::Map<String, serde_json::Value> = entries
        .map(|(k, v)| (k, v.map_or(serde_json::Value::Null, Value::to_nested_json)))
        .collect();
    Value::Str(serde_json::Value::Object(obj).to_string())
}

/// The values of one column of a batch.
fn column_values(array: &dyn Array, column: &str) -> Vec<Value> {
    let converted = match array.data_type() {
        DataType::Null => Some(vec![Value::Null; array.len()]),
        DataType::Boolean => array.as_boolean_opt().map(|a| {
            a.iter()
                .map(|v| v.map(Value::Bool).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::Int8 => primitive::<Int8Type, _>(array, |v| Value::Int(v.into())),
        DataType::Int16 => primitive::<Int16Type, _>(array, |v| Value::Int(v.into())),
        DataType::Int32 => primitive::<Int32Type, _>(array, |v| Value::Int(v.into())),
        DataType::Int64 => primitive::<Int64Type, _>(array, Value::Int),
        DataType::UInt8 => primitive::<UInt8Type, _>(array, |v| Value::Int(v.into())),
        DataType::UInt16 => primitive::<UInt16Type, _>(array, |v| Value::Int(v.into())),
        DataType::UInt32 => primitive::<UInt32Type, _>(array, |v| Value::Int(v.into())),
        DataType::UInt64 => primitive::<UInt64Type, _>(array, |v| {
            i64::try_from(v)
                .map(Value::Int)
                .unwrap_or_else(|_| Value::Decimal(v.to_string()))
        }),
        DataType::Float16 => primitive::<Float16Type, _>(array, |v| Value::Float(v.to_f64())),
        // Through the shortest text of the f32, so 0.1f32 reads as 0.1 and not 0.100000001.
        DataType::Float32 => primitive::<Float32Type, _>(array, |v| {
            Value::Float(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
        }),
        DataType::Float64 => primitive::<Float64Type, _>(array, Value::Float),
        DataType::Utf8 => array.as_string_opt::<i32>().map(|a| {
            a.iter()
                .map(|v| v.map(|s| Value::Str(s.to_string())).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::LargeUtf8 => array.as_string_opt::<i64>().map(|a| {
            a.iter()
                .map(|v| v.map(|s| Value::Str(s.to_string())).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::Utf8View => array.as_string_view_opt().map(|a| {
            a.iter()
                .map(|v| v.map(|s| Value::Str(s.to_string())).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::Binary => array.as_binary_opt::<i32>().map(|a| {
            a.iter()
                .map(|v| v.map(binary_value).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::LargeBinary => array.as_binary_opt::<i64>().map(|a| {
            a.iter()
                .map(|v| v.map(binary_value).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::BinaryView => array.as_binary_view_opt().map(|a| {
            a.iter()
                .map(|v| v.map(binary_value).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary_opt().map(|a| {
            a.iter()
                .map(|v| v.map(binary_value).unwrap_or(Value::Null))
                .collect()
        }),
        DataType::Date32 => primitive::<Date32Type, _>(array, |v| {
            tc::date32_to_datetime(v)
                .map(|d| Value::Date(d.date()))
                .unwrap_or(Value::Null)
        }),
        DataType::Date64 => primitive::<Date64Type, _>(array, |v| {
            tc::date64_to_datetime(v)
                .map(|d| Value::Date(d.date()))
                .unwrap_or(Value::Null)
        }),
        DataType::Timestamp(unit, tz) => {
            let zone = tz.as_deref().map(|t| {
                parse_zone(t).unwrap_or_else(|| {
                    tracing::warn!(column, zone = t, "unknown time zone; reading as UTC");
                    Zone::Fixed(Utc.fix())
                })
            });
            match unit {
                TimeUnit::Second => {
                    timestamps::<TimestampSecondType>(array, tc::timestamp_s_to_datetime, zone)
                }
                TimeUnit::Millisecond => timestamps::<TimestampMillisecondType>(
                    array,
                    tc::timestamp_ms_to_datetime,
                    zone,
                ),
                TimeUnit::Microsecond => timestamps::<TimestampMicrosecondType>(
                    array,
                    tc::timestamp_us_to_datetime,
                    zone,
                ),
                TimeUnit::Nanosecond => {
                    timestamps::<TimestampNanosecondType>(array, tc::timestamp_ns_to_datetime, zone)
                }
            }
        }
        DataType::Time32(TimeUnit::Second) => {
            primitive::<Time32SecondType, _>(array, |v| time_value(tc::time32s_to_time(v)))
        }
        DataType::Time32(_) => {
            primitive::<Time32MillisecondType, _>(array, |v| time_value(tc::time32ms_to_time(v)))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            primitive::<Time64MicrosecondType, _>(array, |v| time_value(tc::time64us_to_time(v)))
        }
        DataType::Time64(_) => {
            primitive::<Time64NanosecondType, _>(array, |v| time_value(tc::time64ns_to_time(v)))
        }
        DataType::Decimal32(_, scale) => decimals::<Decimal32Type>(array, *scale),
        DataType::Decimal64(_, scale) => decimals::<Decimal64Type>(array, *scale),
        DataType::Decimal128(_, scale) => decimals::<Decimal128Type>(array, *scale),
        DataType::Decimal256(_, scale) => decimals::<Decimal256Type>(array, *scale),
        DataType::List(_) => lists::<i32>(array, column),
        DataType::LargeList(_) => lists::<i64>(array, column),
        DataType::FixedSizeList(_, _) => array
            .as_fixed_size_list_opt()
            .map(|a| per_row_lists(array, column, |i| a.value(i))),
        DataType::ListView(_) => array
            .as_list_view_opt::<i32>()
            .map(|a| per_row_lists(array, column, |i| a.value(i))),
        DataType::LargeListView(_) => array
            .as_list_view_opt::<i64>()
            .map(|a| per_row_lists(array, column, |i| a.value(i))),
        DataType::Struct(fields) => array.as_struct_opt().map(|a| {
            let children: Vec<Vec<Value>> = a
                .columns()
                .iter()
                .map(|c| column_values(c.as_ref(), column))
                .collect();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        return Value::Null;
                    }
                    object_text(
                        fields
                            .iter()
                            .zip(children.iter())
                            .map(|(f, c)| (f.name().clone(), c.get(i))),
                    )
                })
                .collect()
        }),
        DataType::Map(_, _) => array.as_map_opt().map(|a| {
            let keys = column_values(a.keys().as_ref(), column);
            let values = column_values(a.values().as_ref(), column);
            let offsets = a.value_offsets();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        return Value::Null;
                    }
                    let start = offsets.get(i).copied().unwrap_or(0).max(0) as usize;
                    let end = offsets.get(i + 1).copied().unwrap_or(0).max(0) as usize;
                    object_text((start..end).map(|j| {
                        let key = keys.get(j).map(|k| k.to_string()).unwrap_or_default();
                        (key, values.get(j))
                    }))
                })
                .collect()
        }),
        DataType::Dictionary(_, _) => array.as_any_dictionary_opt().map(|d| {
            let values = column_values(d.values().as_ref(), column);
            if values.is_empty() {
                return vec![Value::Null; array.len()];
            }
            let keys = d.normalized_keys();
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        keys.get(i)
                            .and_then(|&k| values.get(k))
                            .cloned()
                            .unwrap_or(Value::Null)
                    }
                })
                .collect()
        }),
        _ => None,
    };
    converted.unwrap_or_else(|| {
        UNSUPPORTED_WARNED.call_once(|| {
            tracing::warn!(
                column,
                data_type = %array.data_type(),
                "Parquet column type not supported; its values read as null"
            );
        });
        vec![Value::Null; array.len()]
    })
}

fn time_value(t: Option<chrono::NaiveTime>) -> Value {
    t.map(|t| Value::Str(t.format("%H:%M:%S%.f").to_string()))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_texts() {
        assert_eq!(decimal_text("123450", 2), "1234.50");
        assert_eq!(decimal_text("-5", 3), "-0.005");
        assert_eq!(decimal_text("0", 2), "0.00");
        assert_eq!(decimal_text("12", 0), "12");
        assert_eq!(decimal_text("12", -2), "1200");
        assert_eq!(decimal_text("-100", 2), "-1.00");
    }

    #[test]
    fn zones() {
        let utc = chrono::NaiveDate::from_ymd_opt(2024, 1, 15)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let z = |s| zoned(utc, parse_zone(s).unwrap()).to_rfc3339();
        assert_eq!(z("UTC"), "2024-01-15T12:00:00+00:00");
        assert_eq!(z("+02:00"), "2024-01-15T14:00:00+02:00");
        assert_eq!(z("-0330"), "2024-01-15T08:30:00-03:30");
        assert_eq!(z("America/Sao_Paulo"), "2024-01-15T09:00:00-03:00");
        assert!(parse_zone("Mars/Olympus").is_none());
    }
}
