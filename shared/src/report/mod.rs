//! Run reports: a JSON summary, per-row results as JSON Lines, and the failed rows in a form
//! that can be fed back as a source (a folder of JSON Lines files with the original columns).
//!
//! ```text
//! reports/<destination>/<YYYY-MM-DD>/<run-id>/summary.json
//! reports/<destination>/<YYYY-MM-DD>/<run-id>/failed/part-00001.jsonl
//! reports/<destination>/results/<YYYY-MM-DD>/<run-id>-part-00001.jsonl
//! ```
//! Parts are written at every checkpoint, so a run that hands off to a new invocation keeps
//! adding parts to the same report. The result parts of a day's runs share one folder, which
//! holds nothing else, so that a query engine can read them as one table partitioned by
//! destination and date (the Glue table `pipefy_sync_results`, docs/results.md); every line
//! carries its `run_id`. The date is the run's start date (UTC). When the run ends, `report.html` ([`page`]) is written
//! beside `summary.json`, and the destination's history ([`history`]) gains the run:
//!
//! ```text
//! reports/<destination>/<YYYY-MM-DD>/<run-id>/report.html
//! reports/<destination>/history.json
//! reports/<destination>/index.html
//! ```
//! A drift report ([`drift`]) sits in the same place as a run's, its lines under `drift/`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::failure::RowFailure;
use crate::source::{Provenance, Row};
use crate::store::{ObjectStore, StoreError, WriteCondition};

pub mod drift;
pub mod history;
pub mod page;
pub use drift::{DriftCounts, DriftLine, DriftState, DriftSummary};
pub use history::{record_runs, History, HistoryEntry};
pub use page::{render_history, render_run_page, FailedRows, PAGE_ROWS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub read: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows that failed preflight (read, mapping or schema checks) and were never sent.
    pub skipped_by_preflight: u64,
    /// Rows Pipefy refused or that could not be written.
    pub failed: u64,
    /// Partial success off: rows after the first failure.
    pub not_attempted: u64,
    /// Cards/records whose row disappeared (removed_rows), moved or deleted (a dry run:
    /// would be).
    pub removed: u64,
    /// Creates left unconfirmed by an earlier, interrupted run that were found in Pipefy by
    /// their key and recorded, instead of being sent again.
    #[serde(default)]
    pub recovered_creates: u64,
    /// Create-only upserts: rows whose card or record exists, left alone (`EXISTS`).
    #[serde(default)]
    pub exists: u64,
    /// Rows whose card or record had been deleted in Pipefy and was created again (also
    /// counted in `created`).
    #[serde(default)]
    pub recreated: u64,
    /// Values people changed in Pipefy that were kept (`on_conflict: keep_edits`).
    #[serde(default)]
    pub kept_edits: u64,
    /// Cards or records read before an update (`write: if_empty`, `mode: add`,
    /// `keep_edits`) or after a write (`keep_edits`: what Pipefy shows of it).
    #[serde(default)]
    pub current_value_reads: u64,
    /// Attachments uploaded from S3 to Pipefy, and their bytes.
    #[serde(default)]
    pub files_uploaded: u64,
    #[serde(default)]
    pub bytes_uploaded: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttles: u64,
}

/// The words for rows created, updated and removed: what a dry run would do, or what a run
/// did.
pub fn outcome_words(dry_run: bool) -> (&'static str, &'static str, &'static str) {
    if dry_run {
        ("would create", "would update", "would remove")
    } else {
        ("created", "updated", "removed")
    }
}

impl Counts {
    /// Every failed row, whatever the stage.
    pub fn failed_rows(&self) -> u64 {
        self.skipped_by_preflight + self.failed + self.not_attempted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowAction {
    Created,
    Updated,
    Unchanged,
    /// Failed preflight: never sent.
    Skipped,
    Failed,
    NotAttempted,
    /// Dry run: what would happen.
    WouldCreate,
    WouldUpdate,
    Moved,
    Deleted,
    /// Dry run: the row left the table and its card or record would be moved or deleted.
    WouldRemove,
    /// A create-only upsert (`upsert: {update: false}`): the card or record exists and is
    /// left alone.
    Exists,
    /// The card or record the ledger knew had been deleted in Pipefy: created again.
    Recreated,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub file: String,
    pub line: u64,
    pub key: Option<String>,
    pub action: RowAction,
    pub id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub field: Option<String>,
    pub column: Option<String>,
    /// Values a person changed in Pipefy that this run left alone (`on_conflict: keep_edits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_edits: Vec<KeptEdit>,
}

/// One line of a result part: the row's result and the run it belongs to. The lines' schema
/// is stable (docs/results.md): fields may be added, none renamed or removed.
#[derive(Serialize)]
struct ResultLine<'a> {
    run_id: &'a str,
    #[serde(flatten)]
    result: &'a RowResult,
}

/// A value a person changed in Pipefy since pipefy-sync last wrote it, kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEdit {
    /// The mapping target (`customer_name`, `title`).
    pub field: String,
    /// What Pipefy holds (as Pipefy shows it).
    pub in_pipefy: String,
    /// What the table has (as it would have been written).
    pub in_table: String,
}

impl RowResult {
    pub fn ok(
        provenance: &Provenance,
        key: Option<String>,
        action: RowAction,
        id: Option<String>,
    ) -> Self {
        RowResult {
            file: provenance.file.to_string(),
            line: provenance.line,
            key,
            action,
            id,
            error_code: None,
            error_message: None,
            field: None,
            column: None,
            kept_edits: Vec::new(),
        }
    }

    pub fn failed(failure: &RowFailure, key: Option<String>, action: RowAction) -> Self {
        RowResult {
            file: failure.provenance.file.to_string(),
            line: failure.provenance.line,
            key,
            action,
            id: None,
            error_code: serde_json::to_value(failure.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string)),
            error_message: Some(failure.message.clone()),
            field: failure.field.clone(),
            column: failure.column.clone(),
            kept_edits: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every row is in Pipefy, unchanged, or in the failed rows.
    Completed,
    /// Partial success off and a row failed: the run stopped.
    Stopped,
    /// Continues in a new invocation (Lambda time budget).
    HandedOff,
    /// Another run holds the destination; the work was handed to it.
    Deferred,
    /// The run could not proceed (auth, config, storage).
    Failed,
    /// The run's lease on the destination could not be renewed in time: it stopped sending,
    /// recorded what it had, and left the rest to the run that holds the destination now.
    LeaseLost,
}

impl RunStatus {
    /// The status as the summary's JSON (and the manifest's `last_run`) spell it.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{self:?}").to_lowercase())
    }
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub destination: String,
    pub trigger: String,
    pub status: RunStatus,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub source_files: Vec<String>,
    pub counts: Counts,
    pub invocations: u32,
    /// Where the report lives (`s3://bucket/reports/...` or a local folder).
    pub report_location: Option<String>,
    /// The run's page (`.../report.html`), when it was written.
    pub report_page: Option<String>,
    /// Requests the unchanged rows would have taken had they been sent (change detection
    /// kept them from Pipefy): unchanged rows over the destination's mutations per request.
    #[serde(default)]
    pub requests_avoided: u64,
    /// The run-level error, when the status is `failed`.
    pub error: Option<String>,
    /// The first failed row when partial success is off.
    pub stopped_at: Option<RowResult>,
    /// Why a run that removes rows did not check for removed rows this time (a file that
    /// failed to read, a table that read 0 rows, `REMOVAL_GUARD: ...`).
    pub removal_skipped: Option<String>,
    /// The keys the run was limited to (`--key`, `"keys"`); empty: every row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Of those, the keys no row of the table carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_not_found: Vec<String>,
}

/// Column names the failed-rows file adds; they start with `_` so a replay ignores them
/// (no mapping refers to them) and they cannot clash with ordinary columns.
pub const FAILED_COLUMNS: [&str; 5] = [
    "_error_code",
    "_error_message",
    "_source_file",
    "_source_line",
    "_raw",
];

/// One failed-rows line: the original columns plus where and why it failed.
pub fn failed_row_json(
    row: Option<&Row>,
    raw: Option<&str>,
    failure: &RowFailure,
) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    if let Some(row) = row {
        for (name, value) in &row.values {
            obj.insert(name.to_string(), value.to_json());
        }
    }
    let code = serde_json::to_value(failure.code).unwrap_or(serde_json::Value::Null);
    obj.insert("_error_code".into(), code);
    let message = match &failure.field {
        Some(f) => format!("field '{f}': {}", failure.message),
        None => failure.message.clone(),
    };
    obj.insert("_error_message".into(), serde_json::Value::String(message));
    obj.insert(
        "_source_file".into(),
        serde_json::Value::String(failure.provenance.file.to_string()),
    );
    obj.insert(
        "_source_line".into(),
        serde_json::Value::from(failure.provenance.line),
    );
    if let Some(raw) = raw {
        obj.insert("_raw".into(), serde_json::Value::String(raw.to_string()));
    }
    serde_json::Value::Object(obj)
}

/// A destination's reports folder: `<reports>/<destination>/`.
pub fn destination_prefix(reports_prefix: &str, destination: &str) -> String {
    let base = reports_prefix.trim_end_matches('/');
    if base.is_empty() {
        format!("{destination}/")
    } else {
        format!("{base}/{destination}/")
    }
}

/// Where a run's (or a drift report's) files go: `<reports>/<destination>/<date>/<run-id>/`.
pub fn report_prefix(
    reports_prefix: &str,
    destination: &str,
    started_at: DateTime<Utc>,
    run_id: &str,
) -> String {
    format!(
        "{}{}/{run_id}/",
        destination_prefix(reports_prefix, destination),
        started_at.format("%Y-%m-%d")
    )
}

/// Where the result parts of a destination's runs that started on `started_at`'s day go:
/// `<reports>/<destination>/results/<date>/`.
pub fn results_prefix(
    reports_prefix: &str,
    destination: &str,
    started_at: DateTime<Utc>,
) -> String {
    format!(
        "{}results/{}/",
        destination_prefix(reports_prefix, destination),
        started_at.format("%Y-%m-%d")
    )
}

/// Where one run's files are: its folder, and the common start of its result parts' keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `<reports>/<destination>/<date>/<run-id>/`
    pub run: String,
    /// `<reports>/<destination>/results/<date>/<run-id>-part-`
    pub result_parts: String,
    /// `<reports>/<destination>/`
    destination: String,
}

impl ReportPaths {
    pub fn new(
        reports_prefix: &str,
        destination: &str,
        started_at: DateTime<Utc>,
        run_id: &str,
    ) -> Self {
        ReportPaths {
            run: report_prefix(reports_prefix, destination, started_at, run_id),
            result_parts: format!(
                "{}{run_id}-part-",
                results_prefix(reports_prefix, destination, started_at)
            ),
            destination: destination_prefix(reports_prefix, destination),
        }
    }

    /// A key of this destination's reports as a link from the run's folder (where its page
    /// is): `failed/part-00001.jsonl`, `../../results/<date>/<run-id>-part-00001.jsonl`.
    pub fn link(&self, key: &str) -> String {
        if let Some(inside) = key.strip_prefix(&self.run) {
            return inside.to_string();
        }
        match key.strip_prefix(&self.destination) {
            Some(rest) => format!("../../{rest}"),
            None => key.to_string(),
        }
    }
}

/// Whether a row result is a failed row (any stage).
pub fn is_failed(action: RowAction) -> bool {
    matches!(
        action,
        RowAction::Skipped | RowAction::Failed | RowAction::NotAttempted
    )
}

/// The keys of a run's result parts, in order. A run written before the result parts moved
/// to `results/<date>/` has them in its own folder, under `results/`.
pub async fn result_part_keys(
    store: &dyn ObjectStore,
    paths: &ReportPaths,
) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = store
        .list(&paths.result_parts)
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    if keys.is_empty() {
        keys = store
            .list(&format!("{}results/", paths.run))
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
    }
    Ok(keys)
}

/// Reads back the failed rows of a run's report (the first `cap` of them, and how many there
/// are) and the links to its parts, for its page.
pub async fn read_failed_rows(
    store: &dyn ObjectStore,
    paths: &ReportPaths,
    cap: usize,
) -> Result<FailedRows, StoreError> {
    let mut out = FailedRows::default();
    for meta in store.list(&format!("{}failed/", paths.run)).await? {
        out.failed_parts.push(paths.link(&meta.key));
    }
    for key in result_part_keys(store, paths).await? {
        out.result_parts.push(paths.link(&key));
        let (_, bytes) = store.get_bytes(&key).await?;
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(result) = serde_json::from_slice::<RowResult>(line) else {
                continue;
            };
            if is_failed(result.action) {
                out.total += 1;
                if out.rows.len() < cap {
                    out.rows.push(result);
                }
            }
        }
    }
    Ok(out)
}

/// Buffers report lines and writes them as numbered parts.
pub struct ReportWriter {
    store: Arc<dyn ObjectStore>,
    /// `reports/<destination>/<date>/<run-id>/`
    pub prefix: String,
    paths: ReportPaths,
    run_id: String,
    results: Vec<u8>,
    failed: Vec<u8>,
    /// Write per-row lines for unchanged rows too (off by default: a steady-state run over a
    /// big table would write a line per row for nothing).
    pub include_unchanged: bool,
    results_seen: bool,
    failed_seen: bool,
}

impl ReportWriter {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        reports_prefix: &str,
        destination: &str,
        started_at: DateTime<Utc>,
        run_id: &str,
    ) -> Self {
        let paths = ReportPaths::new(reports_prefix, destination, started_at, run_id);
        ReportWriter {
            store,
            prefix: paths.run.clone(),
            paths,
            run_id: run_id.to_string(),
            results: Vec::new(),
            failed: Vec::new(),
            include_unchanged: false,
            results_seen: false,
            failed_seen: false,
        }
    }

    /// Where this run's files are.
    pub fn paths(&self) -> &ReportPaths {
        &self.paths
    }

    pub fn location(&self) -> String {
        format!(
            "{}/{}",
            self.store.describe().trim_end_matches('/'),
            self.prefix
        )
    }

    pub fn row(&mut self, result: &RowResult) {
        if result.action == RowAction::Unchanged
            && result.kept_edits.is_empty()
            && !self.include_unchanged
        {
            return;
        }
        push_line(
            &mut self.results,
            &ResultLine {
                run_id: &self.run_id,
                result,
            },
        );
        self.results_seen = true;
    }

    pub fn failed_row(&mut self, line: &serde_json::Value) {
        push_line(&mut self.failed, line);
        self.failed_seen = true;
    }

    pub fn has_buffered(&self) -> bool {
        !self.results.is_empty() || !self.failed.is_empty()
    }

    /// Bytes waiting for the next part.
    pub fn buffered_bytes(&self) -> usize {
        self.results.len() + self.failed.len()
    }

    /// Writes what is buffered as part `part` (1-based, from the run cursor).
    pub async fn flush(&mut self, part: u32) -> Result<bool, StoreError> {
        if !self.has_buffered() {
            return Ok(false);
        }
        if !self.results.is_empty() {
            let body = std::mem::take(&mut self.results);
            self.store
                .put_bytes(
                    &format!("{}{part:05}.jsonl", self.paths.result_parts),
                    Bytes::from(body),
                    WriteCondition::None,
                )
                .await?;
        }
        if !self.failed.is_empty() {
            let body = std::mem::take(&mut self.failed);
            self.put_part("failed", part, body).await?;
        }
        Ok(true)
    }

    /// Writes JSON Lines as `<dir>/part-NNNNN.jsonl` of this report.
    pub async fn put_part(&self, dir: &str, part: u32, lines: Vec<u8>) -> Result<(), StoreError> {
        self.put(&format!("{dir}/part-{part:05}.jsonl"), lines)
            .await
    }

    /// Renders the run's page from its summary and the failed rows its parts hold, and
    /// writes it as `report.html`. Returns where it is.
    pub async fn write_page(&self, summary: &RunSummary) -> Result<String, StoreError> {
        let failed = read_failed_rows(&*self.store, &self.paths, PAGE_ROWS).await?;
        let page = render_run_page(summary, &failed);
        self.put("report.html", page.into_bytes()).await?;
        Ok(format!("{}report.html", self.location()))
    }

    /// Writes the report's `summary.json` (a run's or a drift report's).
    pub async fn write_summary<S: Serialize>(&self, summary: &S) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(summary).unwrap_or_default();
        self.put("summary.json", body).await
    }

    /// Writes `name` in this report's folder.
    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let key = format!("{}{name}", self.prefix);
        self.store
            .put_bytes(&key, Bytes::from(body), WriteCondition::None)
            .await?;
        Ok(())
    }
}

/// Appends `value` to `buf` as one JSON line.
pub fn push_line<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *buf, value).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prefixes_join_with_one_slash() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(report_prefix("", "d", at, "r1"), "d/1970-01-01/r1/");
        for base in ["reports", "reports/"] {
            assert_eq!(
                report_prefix(base, "d", at, "r1"),
                "reports/d/1970-01-01/r1/"
            );
        }
    }

    #[test]
    fn result_parts_share_a_day_folder_and_link_from_the_run_folder() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let paths = ReportPaths::new("reports/", "d", at, "r1");
        assert_eq!(paths.run, "reports/d/1970-01-01/r1/");
        assert_eq!(paths.result_parts, "reports/d/results/1970-01-01/r1-part-");
        assert_eq!(
            paths.link("reports/d/results/1970-01-01/r1-part-00002.jsonl"),
            "../../results/1970-01-01/r1-part-00002.jsonl"
        );
        assert_eq!(
            paths.link("reports/d/1970-01-01/r1/failed/part-00001.jsonl"),
            "failed/part-00001.jsonl"
        );
    }

    #[tokio::test]
    async fn result_lines_carry_the_run_id_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(crate::store::LocalStore::new(dir.path()));
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let mut writer = ReportWriter::new(store.clone(), "reports", "d", at, "r1");
        let provenance = Provenance {
            file: "t/a.csv".into(),
            line: 7,
        };
        let failure = RowFailure::new(
            provenance,
            crate::failure::FailureCode::NotAnOption,
            "no such option",
        )
        .with_field("stage");
        writer.row(&RowResult::failed(
            &failure,
            Some("k7".into()),
            RowAction::Failed,
        ));
        assert!(writer.flush(1).await.unwrap());
        let key = "reports/d/results/1970-01-01/r1-part-00001.jsonl";
        let (_, bytes) = store.get_bytes(key).await.unwrap();
        let line: serde_json::Value = serde_json::from_slice(bytes.trim_ascii_end()).unwrap();
        assert_eq!(line["run_id"], "r1");
        assert_eq!(line["error_code"], "NOT_AN_OPTION");
        assert_eq!(line["line"], 7);
        let failed = read_failed_rows(&*store, writer.paths(), 10).await.unwrap();
        assert_eq!(failed.total, 1);
        assert_eq!(failed.rows[0].key.as_deref(), Some("k7"));
        assert_eq!(
            failed.result_parts,
            vec!["../../results/1970-01-01/r1-part-00001.jsonl".to_string()]
        );
    }
}
