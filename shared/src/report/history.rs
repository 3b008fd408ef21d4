//! A destination's run history: `<reports>/<destination>/history.json` (the entries, newest
//! first) and `index.html` (the page drawn from them), rewritten after every run.
//!
//! Two runs of one destination can finish together (a scheduled run and a manual one on
//! different report prefixes of one bucket, a dry run beside a run), so the entries are
//! updated read-modify-write under the object's ETag and retried after re-reading when
//! another writer got there first: no entry is lost. The page is then rendered from what
//! was written; if the history changed again meanwhile, the page is rendered again from the
//! newer history, so the last page written holds every entry.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::page::render_history;
use super::{destination_prefix, RunStatus, RunSummary};
use crate::store::{ObjectStore, StoreError, WriteCondition};

/// The most runs the history keeps (the page draws the last [`super::page::CHART_RUNS`]).
pub const HISTORY_RUNS: usize = 500;

/// Conditional writes tried before giving up on a history update.
const ATTEMPTS: u32 = 8;

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub run_id: String,
    pub trigger: String,
    pub status: RunStatus,
    #[serde(default)]
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Every failed row, whatever the stage.
    pub failed: u64,
    pub removed: u64,
    pub requests: u64,
    /// The run page, relative to the destination's folder (`<date>/<run-id>/report.html`).
    pub page: String,
}

impl HistoryEntry {
    pub fn of(summary: &RunSummary) -> HistoryEntry {
        let c = &summary.counts;
        HistoryEntry {
            run_id: summary.run_id.clone(),
            trigger: summary.trigger.clone(),
            status: summary.status,
            dry_run: summary.dry_run,
            started_at: summary.started_at,
            finished_at: summary.finished_at,
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            failed: c.failed_rows(),
            removed: c.removed,
            requests: c.requests,
            page: format!(
                "{}/{}/report.html",
                summary.started_at.format("%Y-%m-%d"),
                summary.run_id
            ),
        }
    }

    /// The run's duration in seconds (0 while unknown).
    pub fn seconds(&self) -> f64 {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub destination: String,
    /// Newest first.
    pub runs: Vec<HistoryEntry>,
}

impl History {
    /// A destination's history before its first run.
    pub fn empty(destination: &str) -> History {
        History {
            destination: destination.to_string(),
            runs: Vec::new(),
        }
    }

    /// Adds the entry, or replaces the one of the same run (a run rendered again), keeping
    /// the runs newest first and at most [`HISTORY_RUNS`].
    pub fn upsert(&mut self, entry: HistoryEntry) {
        self.runs.retain(|e| e.run_id != entry.run_id);
        let at = self
            .runs
            .iter()
            .position(|e| e.started_at <= entry.started_at)
            .unwrap_or(self.runs.len());
        self.runs.insert(at, entry);
        self.runs.truncate(HISTORY_RUNS);
    }
}

/// The history's object keys: `(history.json, index.html)`.
pub fn history_keys(reports_prefix: &str, destination: &str) -> (String, String) {
    let dir = destination_prefix(reports_prefix, destination);
    (format!("{dir}history.json"), format!("{dir}index.html"))
}

/// Reads the history (empty when there is none yet) and its ETag.
pub async fn read_history(
    store: &dyn ObjectStore,
    key: &str,
    destination: &str,
) -> Result<(History, Option<String>), StoreError> {
    match store.get_bytes(key).await {
        Ok((meta, bytes)) => {
            // A history that does not parse is replaced rather than blocking every run.
            let history = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(key, error = %e, "run history unreadable; starting a new one");
                History::empty(destination)
            });
            Ok((history, Some(meta.etag)))
        }
        Err(StoreError::NotFound(_)) => Ok((History::empty(destination), None)),
        Err(e) => Err(e),
    }
}

/// Adds the runs to the destination's history and rewrites its page. Returns the page's key.
pub async fn record_runs(
    store: &dyn ObjectStore,
    reports_prefix: &str,
    destination: &str,
    entries: Vec<HistoryEntry>,
) -> Result<String, StoreError> {
    let (history_key, index_key) = history_keys(reports_prefix, destination);
    let mut written = None;
    for attempt in 1..=ATTEMPTS {
        let (mut history, etag) = read_history(store, &history_key, destination).await?;
        for entry in &entries {
            history.upsert(entry.clone());
        }
        let body = Bytes::from(serde_json::to_vec_pretty(&history).unwrap_or_default());
        let when = match etag {
            Some(etag) => WriteCondition::IfMatch(etag),
            None => WriteCondition::IfAbsent,
        };
        match store.put_bytes(&history_key, body, when).await {
            Ok(etag) => {
                written = Some((history, etag));
                break;
            }
            Err(StoreError::PreconditionFailed(_)) => {
                // Another run's entry landed first: read it and add ours again.
                tokio::time::sleep(Duration::from_millis(
                    20 * u64::from(attempt) + rand::random::<u64>() % 50,
                ))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    let Some((mut history, mut etag)) = written else {
        return Err(StoreError::PreconditionFailed(history_key));
    };
    // Render until the page is drawn from the newest history: a run that wrote the history
    // after ours renders too, but its page may land before ours.
    for _ in 0..ATTEMPTS {
        let page = render_history(destination, &history.runs);
        store
            .put_bytes(&index_key, Bytes::from(page), WriteCondition::None)
            .await?;
        let now = store.head(&history_key).await?;
        if crate::store::etag_eq(&now.etag, &etag) {
            break;
        }
        (history, etag) = match read_history(store, &history_key, destination).await? {
            (h, Some(e)) => (h, e),
            (h, None) => (h, String::new()),
        };
    }
    Ok(index_key)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::report::Counts;
    use crate::store::memory::MemoryStore;
    use crate::store::{BeforeWrite, HookedStore};

    fn entry(run: &str, minute: i64) -> HistoryEntry {
        let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minute);
        let mut summary = crate::lambda::fakes::summary("d", "schedule", RunStatus::Completed);
        summary.run_id = run.into();
        summary.started_at = at;
        summary.finished_at = Some(at + chrono::Duration::seconds(3));
        summary.counts = Counts {
            created: 2,
            failed: 1,
            ..Counts::default()
        };
        HistoryEntry::of(&summary)
    }

    #[test]
    fn entries_stay_newest_first_and_a_run_is_listed_once() {
        let mut h = History::default();
        h.upsert(entry("b", 2));
        h.upsert(entry("a", 1));
        h.upsert(entry("c", 3));
        h.upsert(entry("b", 2));
        let ids: Vec<_> = h.runs.iter().map(|e| e.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(h.runs[0].page, "1970-01-01/c/report.html");
        assert_eq!(h.runs[0].failed, 1);
    }

    /// Another run writes its entry between this run's read and its write.
    struct OtherRunFirst {
        raced: AtomicBool,
    }

    #[async_trait]
    impl BeforeWrite for OtherRunFirst {
        async fn before_put(
            &self,
            inner: &dyn ObjectStore,
            key: &str,
            _when: &WriteCondition,
        ) -> Result<(), StoreError> {
            if key.ends_with("history.json") && !self.raced.swap(true, Ordering::SeqCst) {
                // The other run finishes first, through the same protocol.
                record_runs(inner, "reports", "d", vec![entry("other", 5)]).await?;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn two_runs_finishing_together_both_reach_the_history_and_its_page() {
        let inner = Arc::new(MemoryStore::new());
        record_runs(&*inner, "reports", "d", vec![entry("first", 1)])
            .await
            .expect("first run recorded");
        let racing = HookedStore::with_hook(
            inner.clone(),
            OtherRunFirst {
                raced: AtomicBool::new(false),
            },
        );
        let index = record_runs(&racing, "reports/", "d", vec![entry("mine", 6)])
            .await
            .expect("recorded after a lost race");
        assert_eq!(index, "reports/d/index.html");
        let (history, _) = read_history(&*inner, "reports/d/history.json", "d")
            .await
            .expect("history");
        let ids: Vec<_> = history.runs.iter().map(|e| e.run_id.as_str()).collect();
        assert_eq!(ids, ["mine", "other", "first"]);
        let (_, page) = inner.get_bytes(&index).await.expect("page");
        let page = String::from_utf8_lossy(&page);
        for run in ["mine", "other", "first"] {
            assert!(
                page.contains(&format!("data-run=\"{run}\"")),
                "{run} listed"
            );
        }
    }
}
