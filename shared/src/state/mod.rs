//! Per-destination state in object storage, written only with conditional writes.
//!
//! ```text
//! state/<destination>/lease.json          who may run now (If-None-Match create, If-Match takeover)
//! state/<destination>/manifest.json       ledger segments, in-flight create intents, the active run's cursor
//! state/<destination>/ledger/<seq>-<id>.bin  immutable ledger segments (base + deltas)
//! state/<destination>/pending/<id>.json   work handed over by runs that found the lease taken
//! state/<destination>/runs/<run>/seen.bin the keys a run has read so far, kept across hand-offs
//! ```
//! See docs/DESIGN.md, "Exactly-once delivery".

mod fingerprints;
mod lease;
pub mod ledger;
mod run;
pub mod seen;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::Provenance;
use crate::store::{ObjectStore, StoreError, WriteCondition};
pub use lease::LeaseKeeper;
pub use ledger::{key_hash, phase_hash, Entry, Ledger, RecordId};
pub use run::{Checkpoint, RunState};
pub use seen::SeenKeys;
pub use uploads::{UploadedFile, UploadedFiles};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state storage: {0}")]
    Store(#[from] StoreError),
    #[error("state object {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("the lease on destination '{0}' was lost to another run; stopping without writing")]
    LeaseLost(String),
    #[error("the manifest of destination '{0}' was changed by another writer")]
    ManifestConflict(String),
}

/// A create that was (or is about to be) sent and whose card id is not yet in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub key_hash: u64,
    /// The key text, to look it up in Pipefy. `None` for rows without a configured key:
    /// those cannot be looked up, so their outcome stays unknown until a person decides.
    pub key: Option<String>,
    pub provenance: Provenance,
    /// The run that recorded the intent.
    pub run_id: String,
    /// Hashes of the values the create sends: a create found applied after a crash holds
    /// exactly these, so it is recorded as synced rather than updated once more.
    #[serde(default)]
    pub value_hash: u64,
    #[serde(default)]
    pub phase_hash: u32,
}

/// Where an unfinished run stands, so a continuation (hand-off) or a rerun can go on.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunCursor {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub trigger: String,
    /// The files of the run, fixed at its start.
    pub files: Vec<crate::store::ObjectMeta>,
    /// Index into `files` of the file being read.
    pub file_index: usize,
    /// Rows of that file up to this line are done (committed or reported).
    pub line: u64,
    pub full_resync: bool,
    /// Whether the run covers the whole table (removed-rows handling applies).
    pub whole_table: bool,
    /// Counts so far, so one report covers every invocation of the run.
    pub counts: crate::report::Counts,
    /// Report part files written so far.
    pub report_parts: u32,
    pub invocations: u32,
    /// Why this run must not remove anything (a file that failed to read, a row whose key
    /// could not be computed), found by an earlier invocation of the run.
    pub removal_blocked: Option<String>,
    /// The invocation that handed over saved the keys it had seen (`runs/<run>/seen.bin`).
    #[serde(default)]
    pub seen_saved: bool,
    /// The run was asked with `allow_mass_removal`: its continuations are too.
    #[serde(default)]
    pub allow_mass_removal: bool,
    /// The run sends only the rows with these keys (empty: every row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Of `keys`, those no row committed so far carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Ledger segment keys in the order they apply (first is the base).
    pub segments: Vec<String>,
    /// Creates whose outcome is not yet recorded.
    pub intents: Vec<Intent>,
    /// The active run, if one is unfinished.
    pub run: Option<RunCursor>,
    /// Monotonic counter for segment names.
    pub next_segment: u64,
    /// The last completed run, for `notify` and people.
    pub last_run: Option<LastRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub run_id: String,
    pub finished_at: DateTime<Utc>,
    pub failed_rows: u64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseBody {
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A held lease: the ETag proves it is still ours when we renew or release it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub holder: String,
    pub etag: String,
    pub expires_at: DateTime<Utc>,
}

/// Work left by a run that found the lease taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingWork {
    pub id: String,
    pub requested_at: DateTime<Utc>,
    pub trigger: String,
    pub scope: RunScope,
    #[serde(default)]
    pub full_resync: bool,
    /// Only the rows with these keys (empty: every row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// What a run reads: the whole table (removals included), or only the named objects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunScope {
    #[default]
    WholeTable,
    Files(Vec<String>),
}

impl RunScope {
    pub fn is_whole_table(&self) -> bool {
        matches!(self, RunScope::WholeTable)
    }

    /// The work of several requests as one: any whole-table request makes it whole-table.
    pub fn union<'a>(scopes: impl IntoIterator<Item = &'a RunScope>) -> RunScope {
        let mut files = Vec::new();
        for scope in scopes {
            match scope {
                RunScope::WholeTable => return RunScope::WholeTable,
                RunScope::Files(list) => files.extend(list.iter().cloned()),
            }
        }
        files.sort();
        files.dedup();
        RunScope::Files(files)
    }
}

/// The state of one destination.
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn ObjectStore>,
    destination: String,
    prefix: String,
}

/// The manifest as loaded, with the ETag that a replacement must match.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    /// `None`: no manifest exists yet (the first write creates it).
    pub etag: Option<String>,
    /// The manifest as stored under `etag`: what another writer's change is compared with.
    pub stored: Manifest,
}

/// How many times a manifest write is rebased onto a benign writer's change.
const MANIFEST_REBASES: usize = 3;

impl StateStore {
    pub fn new(store: Arc<dyn ObjectStore>, state_prefix: &str, destination: &str) -> Self {
        let base = state_prefix.trim_end_matches('/');
        let prefix = if base.is_empty() {
            format!("{destination}/")
        } else {
            format!("{base}/{destination}/")
        };
        StateStore {
            store,
            destination: destination.to_string(),
            prefix,
        }
    }

    pub fn destination(&self) -> &str {
        &self.destination
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    // ---- lease ----

    /// Takes the lease if it is free or expired (or already ours: a continuation of the same
    /// run). `Ok(None)`: another run holds it.
    pub async fn try_acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StateError> {
        let key = self.key("lease.json");
        let now = Utc::now();
        let body = LeaseBody {
            holder: holder.to_string(),
            acquired_at: now,
            expires_at: now + chrono_duration(ttl),
        };
        let bytes = to_json(&body);
        match self
            .store
            .put_bytes(&key, bytes.clone(), WriteCondition::IfAbsent)
            .await
        {
            Ok(etag) => {
                return Ok(Some(Lease {
                    holder: holder.to_string(),
                    etag,
                    expires_at: body.expires_at,
                }))
            }
            Err(StoreError::PreconditionFailed(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let (meta, current) = match self.store.get_bytes(&key).await {
            Ok(v) => v,
            // Released between our two calls: try once more from the start.
            Err(StoreError::NotFound(_)) => {
                return match self
                    .store
                    .put_bytes(&key, bytes, WriteCondition::IfAbsent)
                    .await
                {
                    Ok(etag) => Ok(Some(Lease {
                        holder: holder.to_string(),
                        etag,
                        expires_at: body.expires_at,
                    })),
                    Err(StoreError::PreconditionFailed(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let existing: LeaseBody = from_json(&key, &current)?;
        if existing.holder != holder && existing.expires_at > now {
            return Ok(None);
        }
        // Expired (its holder crashed) or ours: take it over, only if nobody else did first.
        match self
            .store
            .put_bytes(&key, bytes, WriteCondition::IfMatch(meta.etag))
            .await
        {
            Ok(etag) => Ok(Some(Lease {
                holder: holder.to_string(),
                etag,
                expires_at: body.expires_at,
            })),
            Err(StoreError::PreconditionFailed(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn renew_lease(&self, lease: &mut Lease, ttl: Duration) -> Result<(), StateError> {
        let now = Utc::now();
        let body = LeaseBody {
            holder: lease.holder.clone(),
            acquired_at: now,
            expires_at: now + chrono_duration(ttl),
        };
        match self
            .store
            .put_bytes(
                &self.key("lease.json"),
                to_json(&body),
                WriteCondition::IfMatch(lease.etag.clone()),
            )
            .await
        {
            Ok(etag) => {
                lease.etag = etag;
                lease.expires_at = body.expires_at;
                Ok(())
            }
            Err(StoreError::PreconditionFailed(_)) | Err(StoreError::NotFound(_)) => {
                Err(StateError::LeaseLost(self.destination.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn release_lease(&self, lease: Lease) -> Result<(), StateError> {
        match self
            .store
            .delete(&self.key("lease.json"), WriteCondition::IfMatch(lease.etag))
            .await
        {
            Ok(()) => Ok(()),
            // Someone took it over after it expired: nothing of ours to release.
            Err(StoreError::PreconditionFailed(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- manifest and ledger ----

    pub async fn load_manifest(&self) -> Result<LoadedManifest, StateError> {
        let key = self.key("manifest.json");
        match self.store.get_bytes(&key).await {
            Ok((meta, bytes)) => {
                let manifest: Manifest = from_json(&key, &bytes)?;
                Ok(LoadedManifest {
                    stored: manifest.clone(),
                    manifest,
                    etag: Some(meta.etag),
                })
            }
            Err(StoreError::NotFound(_)) => {
                let manifest = Manifest {
                    version: 1,
                    ..Manifest::default()
                };
                Ok(LoadedManifest {
                    stored: manifest.clone(),
                    manifest,
                    etag: None,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the manifest only if nobody changed it since `loaded` was read; on success
    /// `loaded` carries the new ETag.
    /// Replaces the manifest if nobody changed it since it was loaded. A change by a benign
    /// writer (`forget-intents` dropping intents) is taken in and the write tried again;
    /// any other change is a [`StateError::ManifestConflict`].
    pub async fn save_manifest(&self, loaded: &mut LoadedManifest) -> Result<(), StateError> {
        let key = self.key("manifest.json");
        for _ in 0..=MANIFEST_REBASES {
            let condition = match &loaded.etag {
                Some(etag) => WriteCondition::IfMatch(etag.clone()),
                None => WriteCondition::IfAbsent,
            };
            match self
                .store
                .put_bytes(&key, to_json(&loaded.manifest), condition)
                .await
            {
                Ok(etag) => {
                    loaded.etag = Some(etag);
                    loaded.stored = loaded.manifest.clone();
                    return Ok(());
                }
                Err(StoreError::PreconditionFailed(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let current = self.load_manifest().await?;
            if !rebase_manifest(loaded, current) {
                return Err(StateError::ManifestConflict(self.destination.clone()));
            }
            tracing::info!(destination = %self.destination, "the manifest was changed by a benign writer; taken in and written again");
        }
        Err(StateError::ManifestConflict(self.destination.clone()))
    }

    pub async fn load_ledger(&self, manifest: &Manifest) -> Result<Ledger, StateError> {
        let mut ledger = Ledger::new();
        for seg in &manifest.segments {
            let (_, bytes) = self.store.get_bytes(seg).await?;
            ledger
                .apply_segment(&bytes)
                .map_err(|e| StateError::Corrupt {
                    key: seg.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(ledger)
    }

    /// Writes a new immutable segment and returns its key (to be listed in the manifest).
    pub async fn write_segment(
        &self,
        manifest: &mut Manifest,
        bytes: Vec<u8>,
    ) -> Result<String, StateError> {
        let seq = manifest.next_segment;
        manifest.next_segment += 1;
        let key = self.key(&format!(
            "ledger/{seq:010}-{}.bin",
            uuid::Uuid::new_v4().simple()
        ));
        self.store
            .put_bytes(&key, Bytes::from(bytes), WriteCondition::IfAbsent)
            .await?;
        Ok(key)
    }

    /// Deletes segments that a new base replaced. Failures only leave garbage behind.
    pub async fn delete_segments(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.store.delete(key, WriteCondition::None).await {
                tracing::warn!(key = %key, error = %e, "could not delete an old ledger segment");
            }
        }
    }

    // ---- pending work ----

    pub async fn put_pending(&self, work: &PendingWork) -> Result<(), StateError> {
        self.store
            .put_bytes(
                &self.key(&format!("pending/{}.json", work.id)),
                to_json(work),
                WriteCondition::None,
            )
            .await?;
        Ok(())
    }

    pub async fn list_pending(&self) -> Result<Vec<(String, PendingWork)>, StateError> {
        let mut out = Vec::new();
        for meta in self.store.list(&self.key("pending/")).await? {
            match self.store.get_bytes(&meta.key).await {
                Ok((_, bytes)) => out.push((meta.key.clone(), from_json(&meta.key, &bytes)?)),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    pub async fn delete_pending(&self, key: &str) -> Result<(), StateError> {
        self.store.delete(key, WriteCondition::None).await?;
        Ok(())
    }

    // --- Keys seen by a run that spans several invocations ---

    fn seen_key(&self, run_id: &str) -> String {
        self.key(&format!("runs/{run_id}/seen.bin"))
    }

    /// Saves the keys an invocation read, for the next invocation of the same run.
    pub async fn save_seen(&self, run_id: &str, seen: &SeenKeys) -> Result<(), StateError> {
        self.store
            .put_bytes(
                &self.seen_key(run_id),
                Bytes::from(seen.encode()),
                WriteCondition::None,
            )
            .await?;
        Ok(())
    }

    /// Adds the keys saved by the run's earlier invocation to `seen`.
    pub async fn load_seen(&self, run_id: &str, seen: &mut SeenKeys) -> Result<(), StateError> {
        let key = self.seen_key(run_id);
        let (_, bytes) = self.store.get_bytes(&key).await?;
        seen.decode_into(&bytes)
            .map_err(|message| StateError::Corrupt { key, message })
    }

    pub async fn delete_seen(&self, run_id: &str) {
        if let Err(e) = self
            .store
            .delete(&self.seen_key(run_id), WriteCondition::None)
            .await
        {
            tracing::warn!(run_id, error = %e, "could not delete a run's saved keys");
        }
    }
}

/// Takes `current`, written by another writer since `loaded` was read, into `loaded` when
/// that writer only dropped intents (`forget-intents`): those intents are dropped here too,
/// and everything this writer changed is kept. Anything else changed: `false`, a conflict.
fn rebase_manifest(loaded: &mut LoadedManifest, current: LoadedManifest) -> bool {
    let theirs = &current.manifest;
    let base = &loaded.stored;
    let only_intents_dropped = theirs.version == base.version
        && theirs.segments == base.segments
        && theirs.run == base.run
        && theirs.next_segment == base.next_segment
        && theirs.last_run == base.last_run
        && theirs.intents.iter().all(|i| base.intents.contains(i));
    if !only_intents_dropped || current.etag.is_none() {
        return false;
    }
    let dropped: Vec<&Intent> = base
        .intents
        .iter()
        .filter(|i| !theirs.intents.contains(i))
        .collect();
    loaded.manifest.intents.retain(|i| !dropped.contains(&i));
    loaded.etag = current.etag;
    loaded.stored = current.manifest;
    true
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail; an empty object is a safe fallback.
    Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec()))
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn intent(n: u64) -> Intent {
        Intent {
            key_hash: n,
            key: Some(format!("K{n}")),
            provenance: Provenance {
                file: Arc::from("t/a.csv"),
                line: n,
            },
            run_id: "run-1".into(),
            value_hash: 0,
            phase_hash: 0,
        }
    }

    #[tokio::test]
    async fn a_benign_writer_dropping_intents_is_taken_in_and_retried() {
        let state = StateStore::new(Arc::new(MemoryStore::new()), "state/", "d");
        let mut run = state.load_manifest().await.unwrap();
        run.manifest.intents = vec![intent(1), intent(2)];
        state.save_manifest(&mut run).await.unwrap();
        // `forget-intents` clears the intents behind the run's back.
        let mut forget = state.load_manifest().await.unwrap();
        forget.manifest.intents.clear();
        state.save_manifest(&mut forget).await.unwrap();
        // The run records another intent: its write is rebased, not refused.
        run.manifest.intents.push(intent(3));
        state.save_manifest(&mut run).await.unwrap();
        let stored = state.load_manifest().await.unwrap();
        assert_eq!(stored.manifest.intents, vec![intent(3)]);
        assert_eq!(run.manifest, stored.manifest);
        // And the run's next write goes through without another conflict.
        run.manifest.next_segment += 1;
        state.save_manifest(&mut run).await.unwrap();
    }

    #[tokio::test]
    async fn any_other_change_by_another_writer_is_a_conflict() {
        let state = StateStore::new(Arc::new(MemoryStore::new()), "state/", "d");
        let mut run = state.load_manifest().await.unwrap();
        state.save_manifest(&mut run).await.unwrap();
        let mut other = state.load_manifest().await.unwrap();
        other.manifest.segments.push("state/d/ledger/x.bin".into());
        state.save_manifest(&mut other).await.unwrap();
        run.manifest.intents.push(intent(1));
        assert!(matches!(
            state.save_manifest(&mut run).await,
            Err(StateError::ManifestConflict(_))
        ));
        // An intent added by another writer is no benign change either.
        let mut run = state.load_manifest().await.unwrap();
        let mut other = state.load_manifest().await.unwrap();
        other.manifest.intents.push(intent(9));
        state.save_manifest(&mut other).await.unwrap();
        run.manifest.next_segment += 1;
        assert!(matches!(
            state.save_manifest(&mut run).await,
            Err(StateError::ManifestConflict(_))
        ));
    }

    #[test]
    fn run_scopes_union_to_the_whole_table_only_when_one_asks_for_it() {
        let a = RunScope::Files(vec!["t/b.csv".into(), "t/a.csv".into()]);
        let b = RunScope::Files(vec!["t/a.csv".into()]);
        assert_eq!(
            RunScope::union([&a, &b]),
            RunScope::Files(vec!["t/a.csv".into(), "t/b.csv".into()])
        );
        assert_eq!(
            RunScope::union([&a, &RunScope::WholeTable]),
            RunScope::WholeTable
        );
        // A pending upload read back from storage keeps its files.
        let work = PendingWork {
            id: "p".into(),
            requested_at: Utc::now(),
            trigger: "upload".into(),
            scope: a.clone(),
            full_resync: false,
            keys: vec!["C1".into()],
        };
        let back: PendingWork = from_json("k", &to_json(&work)).unwrap();
        assert_eq!(back.scope, a);
        assert_eq!(back.keys, ["C1"], "a request by key keeps its keys");
    }
}
