//! Generated tables: a customer table like the demo's, in CSV, JSON Lines and Parquet,
//! written once into `bench/out/data/` and reused by later runs (a marker file says a
//! table is complete; a half-written one is regenerated).
//!
//! Every row is a pure function of its index, so the same table can be rebuilt anywhere
//! and the steady-state part can seed the ledger from the rows a first run would have
//! written. Files are split into parts of [`PART_ROWS`] rows, as data lakes do.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use pipefy_sync::source::formats::arrow_array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use pipefy_sync::source::formats::arrow_schema::{DataType, Field, Schema, TimeUnit};
use pipefy_sync::source::formats::parquet::arrow::ArrowWriter;
use pipefy_sync::source::formats::parquet::basic::Compression;
use pipefy_sync::source::formats::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// `<layer>/<table>/` of every generated table.
pub const LAYER: &str = "bench";
pub const TABLE: &str = "customers";
/// Rows per part file.
pub const PART_ROWS: u64 = 1_000_000;
/// Rows per Arrow batch written to Parquet.
const PARQUET_WRITE_BATCH: usize = 65_536;
/// Bumped whenever the generated rows change, so cached tables are rebuilt.
const GENERATOR_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Csv, Format::Jsonl, Format::Parquet];

    pub fn ext(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Jsonl => "JSON Lines",
            Format::Parquet => "Parquet",
        }
    }
}

/// Which version of the table: the original, or the one where 1 % of rows changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Base,
    Changed,
}

/// Rows whose values differ in the `Changed` variant: exactly one in a hundred.
pub fn is_changed(i: u64) -> bool {
    i % 100 == 7
}

/// A generated table on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    /// The local "bucket": holds `<LAYER>/<TABLE>/part-*.ext`.
    pub root: PathBuf,
    pub format: Format,
    pub rows: u64,
    pub bytes: u64,
    pub files: Vec<PathBuf>,
}

const PLANS: [&str; 3] = ["Free", "Pro", "Enterprise"];
const TASKS: [&str; 3] = ["Kickoff", "Kickoff;Training", "Kickoff;Training;Go-live"];
/// Members of the demo fixture's pipe 301, by email (assignees resolve by email).
const OWNERS: [&str; 3] = [
    "ana.souza@example.com",
    "bruno.lima@example.com",
    "carla.dias@example.com",
];
/// Label names of pipe 301; a blank cell clears the labels.
const TAGS: [&str; 4] = ["", "VIP", "New", "VIP,Churn risk"];
/// Phases a card may be created in without further required fields.
const STAGES: [&str; 2] = ["Inbox", "Doing"];

/// One generated row.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRow {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub plan: &'static str,
    pub seats: i64,
    pub mrr_cents: i64,
    pub signup: NaiveDate,
    /// Renewal instant, UTC, whole minutes.
    pub renewal_ms: i64,
    pub tasks: &'static str,
    pub owner: &'static str,
    pub tags: &'static str,
    pub stage: &'static str,
}

/// SplitMix64: a fast, well-mixed hash of the row index.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(list: &[T], bits: u64) -> T {
    // `list` is never empty (constant tables above); the modulo keeps the index in range.
    list[(bits % list.len() as u64) as usize]
}

pub fn customer_id(i: u64) -> String {
    format!("C{i:09}")
}

pub fn row(i: u64, variant: Variant) -> GenRow {
    let h = mix(i);
    let epoch_2024 = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
    let renewal_base = Utc
        .with_ymd_and_hms(2026, 1, 1, 9, 30, 0)
        .single()
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let changed = variant == Variant::Changed && is_changed(i);
    GenRow {
        customer_id: customer_id(i),
        name: format!("Customer {i}"),
        email: format!(" Customer{i}@Example.com "),
        plan: pick(&PLANS, h),
        seats: 1 + ((h >> 8) % 500) as i64 + i64::from(changed),
        mrr_cents: ((h >> 20) % 1_000_000) as i64,
        signup: epoch_2024 + Duration::days(((h >> 32) % 700) as i64),
        renewal_ms: renewal_base + ((h >> 40) % 365) as i64 * 86_400_000,
        tasks: pick(&TASKS, h >> 12),
        owner: pick(&OWNERS, h >> 16),
        tags: pick(&TAGS, h >> 24),
        stage: pick(&STAGES, h >> 28),
    }
}

impl GenRow {
    fn renewal_text(&self) -> String {
        Utc.timestamp_millis_opt(self.renewal_ms)
            .single()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }

    fn mrr_text(&self) -> String {
        format!("{}.{:02}", self.mrr_cents / 100, self.mrr_cents % 100)
    }
}

pub const CSV_HEADER: &str =
    "customer_id,name,email,plan,seats,mrr,signup,renewal,tasks,owner_email,tags,stage";

fn write_csv_row(w: &mut impl Write, r: &GenRow) -> std::io::Result<()> {
    writeln!(
        w,
        "{},{},{},{},{},{},{},{},{},{},\"{}\",{}",
        r.customer_id,
        r.name,
        r.email,
        r.plan,
        r.seats,
        r.mrr_text(),
        r.signup.format("%Y-%m-%d"),
        r.renewal_text(),
        r.tasks,
        r.owner,
        r.tags,
        r.stage
    )
}

fn write_jsonl_row(w: &mut impl Write, r: &GenRow) -> std::io::Result<()> {
    // Every generated string is plain ASCII without quotes or backslashes: no escaping.
    writeln!(
        w,
        "{{\"customer_id\":\"{}\",\"name\":\"{}\",\"email\":\"{}\",\"plan\":\"{}\",\"seats\":{},\"mrr\":{},\"signup\":\"{}\",\"renewal\":\"{}\",\"tasks\":\"{}\",\"owner_email\":\"{}\",\"tags\":\"{}\",\"stage\":\"{}\"}}",
        r.customer_id,
        r.name,
        r.email,
        r.plan,
        r.seats,
        r.mrr_text(),
        r.signup.format("%Y-%m-%d"),
        r.renewal_text(),
        r.tasks,
        r.owner,
        r.tags,
        r.stage
    )
}

/// A small CSV table as text (header and rows `range`), for fixtures.
pub fn csv_text(range: std::ops::Range<u64>) -> String {
    let mut out = Vec::new();
    let _ = writeln!(out, "{CSV_HEADER}");
    for i in range {
        let _ = write_csv_row(&mut out, &row(i, Variant::Base));
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parquet_schema() -> Arc<Schema> {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("customer_id"),
        utf8("name"),
        utf8("email"),
        utf8("plan"),
        Field::new("seats", DataType::Int64, false),
        Field::new("mrr", DataType::Float64, false),
        Field::new("signup", DataType::Date32, false),
        Field::new(
            "renewal",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        utf8("tasks"),
        utf8("owner_email"),
        utf8("tags"),
        utf8("stage"),
    ]))
}

fn parquet_batch(
    schema: &Arc<Schema>,
    rows: &[GenRow],
) -> std::result::Result<RecordBatch, String> {
    let strings = |f: &dyn Fn(&GenRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let unix_epoch_days = NaiveDate::from_ymd_opt(1970, 1, 1)
        .map(|d| d.num_days_from_ce())
        .unwrap_or(0);
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| &r.customer_id),
        strings(&|r| &r.name),
        strings(&|r| &r.email),
        strings(&|r| r.plan),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seats))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.mrr_cents as f64 / 100.0),
        )),
        Arc::new(Date32Array::from_iter_values(
            rows.iter()
                .map(|r| r.signup.num_days_from_ce() - unix_epoch_days),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.renewal_ms))
                .with_timezone("UTC"),
        ),
        strings(&|r| r.tasks),
        strings(&|r| r.owner),
        strings(&|r| r.tags),
        strings(&|r| r.stage),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

fn write_part(
    path: &Path,
    format: Format,
    range: std::ops::Range<u64>,
    variant: Variant,
) -> Result<()> {
    let gen_err = |message: String| BenchError::Generate {
        path: path.to_path_buf(),
        message,
    };
    let file =
        File::create(path).map_err(BenchError::io(format!("creating {}", path.display())))?;
    match format {
        Format::Csv | Format::Jsonl => {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let io = |e: std::io::Error| gen_err(e.to_string());
            if format == Format::Csv {
                writeln!(w, "{CSV_HEADER}").map_err(io)?;
            }
            for i in range {
                let r = row(i, variant);
                match format {
                    Format::Csv => write_csv_row(&mut w, &r),
                    _ => write_jsonl_row(&mut w, &r),
                }
                .map_err(io)?;
            }
            w.flush().map_err(io)?;
        }
        Format::Parquet => {
            let schema = parquet_schema();
            // Snappy and the writer's default row groups (1 Mi rows): what Spark, pyarrow
            // and most lake writers produce.
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
                .map_err(|e| gen_err(e.to_string()))?;
            let mut start = range.start;
            while start < range.end {
                let end = (start + PARQUET_WRITE_BATCH as u64).min(range.end);
                let rows: Vec<GenRow> = (start..end).map(|i| row(i, variant)).collect();
                let batch = parquet_batch(&schema, &rows).map_err(gen_err)?;
                writer.write(&batch).map_err(|e| gen_err(e.to_string()))?;
                start = end;
            }
            writer.close().map_err(|e| gen_err(e.to_string()))?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Marker {
    generator: u32,
    format: Format,
    rows: u64,
    variant: Variant,
}

/// The table `variant` of `rows` rows in `format`, generated into `data_dir` unless a
/// complete copy is already there.
pub fn ensure(data_dir: &Path, format: Format, rows: u64, variant: Variant) -> Result<Table> {
    let name = format!(
        "{}-{}-{rows}",
        match variant {
            Variant::Base => "customers",
            Variant::Changed => "changed",
        },
        format.ext()
    );
    let root = data_dir.join(&name);
    let marker_path = root.join(".complete.json");
    let want = Marker {
        generator: GENERATOR_VERSION,
        format,
        rows,
        variant,
    };
    let cached = std::fs::read(&marker_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        .is_some_and(|m| m == want);
    if !cached {
        let partial = data_dir.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let _ = std::fs::remove_dir_all(&root);
        let dir = partial.join(LAYER).join(TABLE);
        std::fs::create_dir_all(&dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        let started = std::time::Instant::now();
        let mut part = 0u64;
        let mut start = 0u64;
        while start < rows {
            let end = (start + PART_ROWS).min(rows);
            let path = dir.join(format!("part-{part:05}.{}", format.ext()));
            write_part(&path, format, start..end, variant)?;
            start = end;
            part += 1;
        }
        std::fs::write(partial.join(".complete.json"), serde_json::to_vec(&want)?)
            .map_err(BenchError::io("writing the table marker"))?;
        std::fs::rename(&partial, &root).map_err(BenchError::io(format!(
            "moving {} into place",
            root.display()
        )))?;
        tracing::info!(table = %name, seconds = started.elapsed().as_secs_f64(), "generated");
    }
    let dir = root.join(LAYER).join(TABLE);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(BenchError::io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut bytes = 0;
    for f in &files {
        bytes += std::fs::metadata(f)
            .map_err(BenchError::io(format!("reading {}", f.display())))?
            .len();
    }
    Ok(Table {
        root,
        format,
        rows,
        bytes,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipefy_sync::config::{CsvOptions, FileFormat};
    use pipefy_sync::source::read_local_file;

    #[test]
    fn rows_are_deterministic_and_one_percent_change() {
        assert_eq!(row(12, Variant::Base), row(12, Variant::Base));
        let changed = (0..10_000)
            .filter(|&i| row(i, Variant::Base) != row(i, Variant::Changed))
            .count();
        assert_eq!(changed, 100);
        assert_ne!(
            row(107, Variant::Base).seats,
            row(107, Variant::Changed).seats
        );
    }

    #[test]
    fn every_format_reads_back_with_the_same_rows() {
        let dir = std::env::temp_dir().join(format!("bench-gen-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for format in Format::ALL {
            let t = ensure(&dir, format, 250, Variant::Base).unwrap();
            assert_eq!(t.files.len(), 1);
            let file_format = match format {
                Format::Csv => FileFormat::Csv,
                Format::Jsonl => FileFormat::Jsonl,
                Format::Parquet => FileFormat::Parquet,
            };
            let rows: Vec<_> = read_local_file(
                &t.files[0],
                Arc::from("x"),
                file_format,
                pipefy_sync::config::Compression::None,
                &CsvOptions::default(),
            )
            .collect::<std::result::Result<_, _>>()
            .unwrap();
            assert_eq!(rows.len(), 250, "{format:?}");
            let last = &rows[249];
            assert_eq!(
                last.get("customer_id").map(|v| v.to_string()),
                Some(customer_id(249)),
                "{format:?}"
            );
            // A second call reuses the cached table.
            let again = ensure(&dir, format, 250, Variant::Base).unwrap();
            assert_eq!(again.bytes, t.bytes);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
