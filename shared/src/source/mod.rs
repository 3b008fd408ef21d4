//! Table sources: every data file under `s3://bucket/<layer>/<table>/` (or a local folder),
//! read as a stream of rows, a row at a time, with bounded memory.
//!
//! What the engine and the mapping rely on:
//! - [`Row`] and [`Provenance`] below: the shape every reader produces, and the failed-rows
//!   file and checkpoints refer to.
//! - `list_table_files(store, &SourceConfig) -> Vec<ObjectMeta>` lists data files, skipping
//!   markers (`_SUCCESS`, `_delta_log/`, hidden `.x`/`_x` files, temporary files).
//! - `open_rows(store, &ObjectMeta, &SourceConfig, start_after_line) -> RowStream`: an async
//!   stream (bounded channel fed by a blocking reader thread) of `Result<Row, RowError>`; a
//!   malformed row is a `RowError` with its provenance and the stream goes on; a file that
//!   cannot be read at all ends the stream with a `RowError` whose `line` is 0. Rows with
//!   `line <= start_after_line` are parsed but not emitted (resuming a checkpointed run).
//! - `read_rows_blocking` / `read_parquet_file` / `read_local_file`: the synchronous core
//!   (benches, tools), the same readers without a runtime.
//!
//! Formats: CSV (any WHATWG encoding; cells are `Value::Str`, a blank cell is `""`;
//! headerless files name their columns `column_1`, `column_2`...), JSON Lines, JSON arrays
//! (a `.json` file not starting with `[` is read as JSON Lines), Parquet (typed values).
//! gzip / zstd by extension, option or magic bytes.

use std::sync::Arc;

use crate::value::Value;

mod csv_reader;
mod json_reader;
mod lines;
mod listing;
mod parquet_reader;
mod reader;
mod stream;

pub use listing::{csv_options_for, detect_format, is_marker, list_table_files};
pub use reader::{read_local_file, read_parquet_file, read_rows_blocking, RowIter};
pub use stream::{open_rows, RowStream};

/// The format crates the readers are built on, re-exported so tests, benches and tools write
/// fixtures with exactly the versions the readers read.
pub mod formats {
    pub use arrow_array;
    pub use arrow_schema;
    pub use flate2;
    pub use parquet;
    pub use zstd;
}

/// Where a row came from: enough for a person to find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// The object key or local path, as listed (e.g. `refined/customers/part-0001.csv.gz`).
    pub file: Arc<str>,
    /// 1-based physical line where the record starts (CSV, JSON Lines), or 1-based element /
    /// row index (JSON arrays, Parquet). 0 means "the file as a whole".
    pub line: u64,
}

/// One source row: column name -> value, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub provenance: Provenance,
    /// Column names are interned per file, so a million rows share a handful of `Arc<str>`.
    pub values: Vec<(Arc<str>, Value)>,
}

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(name, _)| name.as_ref() == column)
            .map(|(_, v)| v)
    }
}

/// A row that could not be read; it goes to the failed-rows output, never nowhere.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{}: {message}", provenance.file, provenance.line)]
pub struct RowError {
    pub provenance: Provenance,
    /// Column name when the problem is in one field, if known.
    pub column: Option<String>,
    pub message: String,
    /// The raw text of the record when it could be recovered (used by the failed-rows replay file).
    pub raw: Option<String>,
}

impl RowError {
    /// An error about the file as a whole (line 0: it cannot be opened, decoded or read on),
    /// with no column and no raw record.
    pub fn whole_file(file: Arc<str>, message: impl Into<String>) -> RowError {
        RowError {
            provenance: Provenance { file, line: 0 },
            column: None,
            message: message.into(),
            raw: None,
        }
    }
}
