//! One run's side of the state protocol: everything a run writes to its destination's state,
//! in the order that keeps every row exactly once.
//!
//! ```text
//!  lease.json     taken (If-None-Match) or taken over (If-Match) before anything else;
//!                 renewed every ttl/4; no write leaves once it is not safely ours
//!       │
//!  manifest.json  loaded once; every later write is If-Match on its ETag
//!       │
//!       ├─ settle_leftover_intents   creates a crashed run left unconfirmed, found by key:
//!       │                            their ids in a new segment + the intents dropped, in ONE
//!       │                            manifest write
//!       ├─ record_intents            before a window's creates are sent
//!       ├─ checkpoint                a delta segment of the confirmed writes, committed
//!       │                            intents dropped, the cursor saved (one manifest write);
//!       │                            the run's deltas merged into one past MAX_RUN_SEGMENTS
//!       └─ finish                    deltas folded into a new base past MAX_SEGMENTS; the
//!                                    cursor cleared and `last_run` set
//! ```
//!
//! Segments are immutable and written before the manifest that lists them, so a crash at any
//! point leaves either the old manifest (and an unlisted segment) or the new one. A manifest
//! changed by another writer fails the write, unless that writer only dropped intents
//! (`forget-intents`), which is taken in ([`StateStore::save_manifest`]).

use std::collections::{HashMap, HashSet};

use tokio::sync::Mutex;

use super::ledger::encode_delta;
use super::{
    Entry, Intent, LastRun, Ledger, LoadedManifest, Manifest, RunCursor, StateError, StateStore,
};

/// A run's own delta segments before they are merged into one.
const MAX_RUN_SEGMENTS: usize = 16;
/// Segments of a destination before a finished run folds them into a new base.
const MAX_SEGMENTS: usize = 8;

/// What one checkpoint makes durable.
pub struct Checkpoint<'a> {
    /// Ledger writes since the last checkpoint (`None`: the key was removed).
    pub writes: Vec<(u64, Option<Entry>)>,
    /// Every write of this run so far, for merging its deltas into one.
    pub run_writes: &'a HashMap<u64, Option<Entry>>,
    /// Key hashes of creates whose outcome is now recorded (or known failed).
    pub committed_intents: Vec<u64>,
    pub cursor: RunCursor,
    /// The run is ending: no merge of its deltas (the finish may fold everything).
    pub last: bool,
    /// The run lost its lease: a manifest replaced by its successor is no error, because the
    /// successor resolves this run's intents by key.
    pub lease_lost: bool,
}

/// The state of one destination as one run writes it. Serialises the run's manifest writes.
pub struct RunState {
    store: StateStore,
    loaded: Mutex<LoadedManifest>,
    /// This run's delta segments (merged into one past [`MAX_RUN_SEGMENTS`]).
    run_segments: Mutex<Vec<String>>,
}

impl RunState {
    pub fn new(store: StateStore, loaded: LoadedManifest) -> Self {
        RunState {
            store,
            loaded: Mutex::new(loaded),
            run_segments: Mutex::new(Vec::new()),
        }
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The manifest as last loaded or written.
    pub async fn manifest(&self) -> Manifest {
        self.loaded.lock().await.manifest.clone()
    }

    /// Takes the intents a crashed run left, for the caller to look up.
    pub async fn take_leftover_intents(&self) -> Vec<Intent> {
        std::mem::take(&mut self.loaded.lock().await.manifest.intents)
    }

    /// Records the creates of leftover intents that were found in Pipefy (`found`), keeps the
    /// intents that could not be resolved (`kept`), and drops the cursor of a run that is
    /// not continued: one manifest write, after the segment it lists.
    pub async fn settle_leftover_intents(
        &self,
        found: Vec<(u64, Entry)>,
        kept: Vec<Intent>,
        keep_cursor: bool,
    ) -> Result<(), StateError> {
        let mut loaded = self.loaded.lock().await;
        if !found.is_empty() {
            let writes = found.into_iter().map(|(k, e)| (k, Some(e))).collect();
            let segment = self
                .store
                .write_segment(&mut loaded.manifest, encode_delta(writes))
                .await?;
            loaded.manifest.segments.push(segment);
        }
        loaded.manifest.intents = kept;
        if !keep_cursor {
            loaded.manifest.run = None;
        }
        self.store.save_manifest(&mut loaded).await
    }

    /// Makes intents durable before their creates are sent.
    pub async fn record_intents(&self, intents: Vec<Intent>) -> Result<(), StateError> {
        if intents.is_empty() {
            return Ok(());
        }
        let mut loaded = self.loaded.lock().await;
        loaded.manifest.intents.extend(intents);
        self.store.save_manifest(&mut loaded).await
    }

    /// Persists a checkpoint (see the module doc).
    pub async fn checkpoint(&self, cp: Checkpoint<'_>) -> Result<(), StateError> {
        let mut loaded = self.loaded.lock().await;
        let mut run_segments = self.run_segments.lock().await;
        if !cp.writes.is_empty() {
            let key = self
                .store
                .write_segment(&mut loaded.manifest, encode_delta(cp.writes))
                .await?;
            loaded.manifest.segments.push(key.clone());
            run_segments.push(key);
        }
        let mut replaced = Vec::new();
        if run_segments.len() > MAX_RUN_SEGMENTS && !cp.last {
            // Merge this run's deltas into one: `run_writes` holds exactly this run's writes.
            let all: Vec<(u64, Option<Entry>)> =
                cp.run_writes.iter().map(|(k, v)| (*k, v.clone())).collect();
            let merged = self
                .store
                .write_segment(&mut loaded.manifest, encode_delta(all))
                .await?;
            let old: HashSet<&String> = run_segments.iter().collect();
            loaded.manifest.segments.retain(|s| !old.contains(s));
            loaded.manifest.segments.push(merged.clone());
            replaced = std::mem::replace(&mut *run_segments, vec![merged]);
        }
        let done: HashSet<u64> = cp.committed_intents.into_iter().collect();
        loaded
            .manifest
            .intents
            .retain(|i| !done.contains(&i.key_hash));
        loaded.manifest.run = Some(cp.cursor);
        match self.store.save_manifest(&mut loaded).await {
            Ok(()) => {}
            Err(StateError::ManifestConflict(_)) if cp.lease_lost => {
                tracing::warn!(destination = %self.store.destination(), "the lease was lost and the manifest replaced by another run; this run's last writes are left to it");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        drop(loaded);
        self.store.delete_segments(&replaced).await;
        Ok(())
    }

    /// Ends the run: folds the segments into a new base when they pile up (`full_ledger`
    /// is asked for only then), clears the cursor and records `last_run`. A run of a few
    /// keys (`record_last_run` false) leaves the last run as it was: it is a sample, not a
    /// sync of the table.
    pub async fn finish(
        &self,
        last_run: LastRun,
        record_last_run: bool,
        seen_saved: bool,
        full_ledger: impl FnOnce() -> Ledger,
    ) -> Result<(), StateError> {
        let mut loaded = self.loaded.lock().await;
        let mut replaced = Vec::new();
        if loaded.manifest.segments.len() > MAX_SEGMENTS {
            let base = self
                .store
                .write_segment(&mut loaded.manifest, full_ledger().encode_full())
                .await?;
            replaced = std::mem::replace(&mut loaded.manifest.segments, vec![base]);
        }
        loaded.manifest.run = None;
        let run_id = last_run.run_id.clone();
        if record_last_run {
            loaded.manifest.last_run = Some(last_run);
        }
        self.store.save_manifest(&mut loaded).await?;
        drop(loaded);
        self.store.delete_segments(&replaced).await;
        if seen_saved {
            self.store.delete_seen(&run_id).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Provenance;
    use crate::store::MemoryStore;
    use std::sync::Arc;

    fn entry(id: u64) -> Entry {
        Entry::numbered(id)
    }

    fn intent(k: u64) -> Intent {
        Intent {
            key_hash: k,
            key: Some(format!("K{k}")),
            provenance: Provenance {
                file: Arc::from("t/a.csv"),
                line: k,
            },
            run_id: "r".into(),
            value_hash: 0,
            phase_hash: 0,
        }
    }

    #[tokio::test]
    async fn checkpoints_list_their_segments_and_drop_committed_intents() {
        let store = StateStore::new(Arc::new(MemoryStore::new()), "state/", "d");
        let run = RunState::new(store.clone(), store.load_manifest().await.unwrap());
        run.record_intents(vec![intent(1), intent(2)])
            .await
            .unwrap();
        let mut run_writes = HashMap::new();
        for n in 0..20u64 {
            run_writes.insert(n, Some(entry(n)));
            run.checkpoint(Checkpoint {
                writes: vec![(n, Some(entry(n)))],
                run_writes: &run_writes,
                committed_intents: if n == 0 { vec![1] } else { vec![] },
                cursor: RunCursor::default(),
                last: false,
                lease_lost: false,
            })
            .await
            .unwrap();
        }
        let stored = store.load_manifest().await.unwrap().manifest;
        assert_eq!(stored.intents, vec![intent(2)]);
        // 20 deltas were merged once they passed 16: fewer segments, the same ledger.
        assert!(stored.segments.len() < 20, "{:?}", stored.segments);
        let ledger = store.load_ledger(&stored).await.unwrap();
        assert_eq!(ledger.len(), 20);
        assert_eq!(ledger.get(7), Some(entry(7)));

        // The finish folds the segments into one base and clears the cursor.
        let mut folded = false;
        run.finish(
            LastRun {
                run_id: "r".into(),
                finished_at: chrono::Utc::now(),
                failed_rows: 0,
                status: "completed".into(),
            },
            true,
            false,
            || {
                folded = true;
                ledger.clone()
            },
        )
        .await
        .unwrap();
        let stored = store.load_manifest().await.unwrap().manifest;
        assert_eq!(stored.run, None);
        assert_eq!(
            stored.last_run.as_ref().map(|l| l.status.as_str()),
            Some("completed")
        );
        assert_eq!(folded, stored.segments.len() == 1);
        assert_eq!(store.load_ledger(&stored).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn leftover_intents_are_settled_in_one_manifest_write() {
        let store = StateStore::new(Arc::new(MemoryStore::new()), "state/", "d");
        let first = RunState::new(store.clone(), store.load_manifest().await.unwrap());
        first
            .record_intents(vec![intent(1), intent(2), intent(3)])
            .await
            .unwrap();
        // The next run: intent 1 was created (found), 2 was not, 3 could not be looked up.
        let next = RunState::new(store.clone(), store.load_manifest().await.unwrap());
        let leftover = next.take_leftover_intents().await;
        assert_eq!(leftover.len(), 3);
        next.settle_leftover_intents(vec![(1, entry(11))], vec![intent(3)], false)
            .await
            .unwrap();
        let stored = store.load_manifest().await.unwrap().manifest;
        assert_eq!(stored.intents, vec![intent(3)]);
        let ledger = store.load_ledger(&stored).await.unwrap();
        assert_eq!(ledger.get(1), Some(entry(11)));
        assert_eq!(ledger.get(2), None);
    }
}
