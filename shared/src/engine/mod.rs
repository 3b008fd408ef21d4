//! The sync engine: one run of one destination, as a pipeline of stages, one file each.
//!
//! ```text
//!   run.rs        lease (or hand the work over) -> set up -> run -> drain handed-over work
//!     │
//!   runner.rs     producer and windows side by side; outcomes committed in file order
//!     │
//!   produce.rs    1 read rows, plan each, cut into windows (then the removals, removed.rs)
//!   plan.rs       2 a row -> create | update | look up | remove | nothing   (pure)
//!   window.rs     a window through the stages below, then each row's result
//!   lookups.rs    3a unknown keys of upserts looked up in Pipefy -> update or create
//!   connections.rs 3b connected cards and records by key -> ids
//!   attachments.rs 3d files in S3 uploaded to Pipefy -> storage paths
//!   send.rs       4 intents made durable, then the batched writes (requests.rs builds them)
//!   ambiguous.rs  5 unknown outcomes resolved by key, never by blind repetition
//!   commit.rs     6 counts, ledger writes, report, checkpoint, finish
//!
//!   drift.rs      apart from runs: Pipefy read back against the ledger, per key
//!   lifecycle.rs  the events that mark a run's start and end, for users' own jobs
//! ```
//!
//! The state protocol the stages follow (lease, intents, ledger segments, manifest,
//! checkpoints, hand-off) is drawn in `state/` and docs/DESIGN.md ("Exactly-once delivery").
//! Windows are pipelined (a few in flight, committed in order), so the rate limiter, not the
//! bookkeeping, sets the pace.

mod ambiguous;
mod attachments;
mod commit;
mod connections;
mod current;
mod drift;
mod lifecycle;
mod lookups;
mod missing;
mod pipefy_api;
mod plan;
mod produce;
mod removed;
mod requests;
mod run;
mod runner;
mod send;
#[cfg(test)]
mod tests;
mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Mutex;

use crate::config::{Destination, Operation};
use crate::mapping::Mapper;
use crate::pipefy::{FieldDef, PipefyClient, PipefyError, WriteGate};
use crate::report::Counts;
use crate::state::{RunState, StateError};
use crate::store::{ObjectStore, StoreError};

use crate::state::LeaseKeeper;
pub use crate::state::RunScope;
pub use drift::{drift, DriftRequest};
pub use lifecycle::{RunEvent, RunEventKind, RunEvents};
pub use pipefy_api::{LookupResults, PipefyApi};
use removed::RemovalOp;
pub use requests::{ConnectionIds, OpRole, Repo};
pub use run::sync;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("destination '{destination}' does not match the Pipefy schema:\n{issues}")]
    Mapping { destination: String, issues: String },
    #[error("Pipefy: {0}")]
    Pipefy(#[from] PipefyError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("could not hand the run over to a new invocation: {0}")]
    HandOff(#[from] HandOffError),
    #[error("the destination '{0}' has no pipe_id or table_id")]
    NoTarget(String),
    /// The run was asked for something this destination cannot do (`keys` without a key).
    #[error("{0}")]
    Request(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a run could not be handed over to a new invocation.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("the time budget ran out and this runner cannot invoke a continuation")]
    NoContinuation,
    #[error("the continuation payload could not be built: {0}")]
    Payload(#[from] serde_json::Error),
    /// The invocation was not accepted (Lambda's answer, as it gave it).
    #[error("invoking {function} for run {run_id}: {reason}")]
    Invoke {
        function: String,
        run_id: String,
        reason: String,
    },
}

/// Continues a run in a new invocation (the Lambda invokes itself asynchronously).
#[async_trait::async_trait]
pub trait HandOff: Send + Sync {
    async fn continue_run(&self, destination: &str, run_id: &str) -> Result<(), HandOffError>;
}

/// Receives running counts (the CLI's progress bar).
pub trait Progress: Send + Sync {
    fn update(&self, counts: &Counts, file: &str);
}

/// Everything a run talks to, built once per process.
#[derive(Clone)]
pub struct RunContext {
    pub source_store: Arc<dyn ObjectStore>,
    /// Buckets other than the source's that attachments are read from (`None`: only the
    /// source's store).
    pub attachment_buckets: Option<Arc<dyn crate::store::BucketStores>>,
    pub state_store: Arc<dyn ObjectStore>,
    pub state_prefix: String,
    pub report_store: Arc<dyn ObjectStore>,
    pub reports_prefix: String,
    pub pipefy: PipefyClient,
    pub hand_off: Option<Arc<dyn HandOff>>,
    pub progress: Option<Arc<dyn Progress>>,
    /// Where the run's lifecycle events go (`None`: nowhere).
    pub lifecycle: Option<Arc<dyn RunEvents>>,
}

#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `schedule`, `upload`, `manual`, `cli`...
    pub trigger: String,
    /// The whole table (removals included), or only these object keys (an upload, a
    /// manual list).
    pub scope: RunScope,
    pub dry_run: bool,
    /// Send every row again, even unchanged ones.
    pub full_resync: bool,
    /// The run this invocation continues (hand-off).
    pub continue_run: Option<String>,
    /// Stop at a window boundary and hand off after this instant.
    pub deadline: Option<Instant>,
    /// How long to keep trying for the lease before handing the work to its holder.
    pub lease_wait: Duration,
    /// Write unchanged rows to the per-row results too.
    pub report_unchanged: bool,
    /// Let this run's removal pass touch more than `removed_rows.max_fraction` of the keys.
    pub allow_mass_removal: bool,
    /// Only the rows with these keys (empty: every row). Such a run sends those rows even
    /// when unchanged, removes nothing, and leaves every other row as it was.
    pub keys: Vec<String>,
}

/// The most keys one run takes: a run of a few rows to try a destination, not a sync.
pub const MAX_KEYS: usize = 100;

/// The keys a run is limited to, trimmed; never blank, never more than [`MAX_KEYS`].
pub fn checked_keys(keys: &[String]) -> Result<Vec<String>, String> {
    if keys.iter().any(|k| k.trim().is_empty()) {
        return Err("a key is empty".into());
    }
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys given; a run by key takes at most {MAX_KEYS}",
            keys.len()
        ));
    }
    Ok(keys.iter().map(|k| k.trim().to_string()).collect())
}

/// Checkpoint at most this often (a delta segment and a manifest write).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// A report part is written once this much is buffered, whatever the interval.
pub(super) const REPORT_PART_BYTES: usize = 4 << 20;

/// Rows of a window that need no request (unchanged, failed preflight) before it is cut
/// anyway, at the next whole request, to bound memory and keep checkpoints moving; at four
/// times this it is cut whatever its requests.
pub(super) const MAX_WINDOW_ITEMS: usize = 4096;

/// A sortable, unique run id: `20261122T073000Z-1a2b3c4d`.
pub fn new_run_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        uuid.get(..8).unwrap_or(&uuid)
    )
}

/// Connections resolved by key in this run: `(repo, key_field, key)` -> id, or why not.
pub(crate) type ConnectionCache = HashMap<(String, String, String), Result<String, String>>;

/// Per-run things every window needs.
pub(crate) struct RunShared {
    pub dest: Destination,
    pub mapper: Mapper,
    pub client: Arc<dyn PipefyApi>,
    pub repo: Repo,
    pub key_field: Option<FieldDef>,
    pub dry_run: bool,
    pub settle: Duration,
    /// `(repo, key_field, key)` -> id, or the reason it could not be resolved.
    pub connections: Mutex<ConnectionCache>,
    /// The run's side of the state protocol (`None`: dry run).
    pub state: Option<RunState>,
    /// Partial success is off and a row failed: nothing more is sent.
    pub stopped: std::sync::atomic::AtomicBool,
    pub run_id: String,
    /// The run's lease (`None`: dry run): asked before every write.
    pub lease: Option<Arc<LeaseKeeper>>,
    /// What removed rows get, on a whole-table run of a destination that removes.
    pub removal: Option<RemovalOp>,
    /// Cards or records read before updates (`write: if_empty`, `mode: add`).
    pub current_reads: std::sync::atomic::AtomicU64,
    /// Uploads of attachments from S3 (`None`: the mapping has none, or a dry run).
    pub attachments: Option<attachments::Attachments>,
}

impl RunShared {
    /// Whether this run may still write to Pipefy (its lease is safely held).
    pub fn may_write(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.may_write())
    }

    /// Whether the custom field's target has `mode: add`.
    pub fn adds_to(&self, field: &str) -> bool {
        self.mapper.targets().iter().any(|t| {
            t.mode == crate::config::ListMode::Add
                && matches!(&t.place, crate::mapping::TargetPlace::Field(s) if &**s == field)
        })
    }

    pub fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.is_lost())
    }

    /// The gate the client asks before each request that writes.
    pub fn gate(&self) -> Option<&dyn crate::pipefy::WriteGate> {
        self.lease
            .as_deref()
            .map(|l| l as &dyn crate::pipefy::WriteGate)
    }
}

pub(super) fn repo_of(dest: &Destination) -> Result<Repo, EngineError> {
    match (&dest.pipe_id, &dest.table_id) {
        (Some(p), _) if dest.operation.is_card() => Ok(Repo::Pipe(p.clone())),
        (_, Some(t)) if !dest.operation.is_card() => Ok(Repo::Table(t.clone())),
        _ => Err(EngineError::NoTarget(dest.name.clone())),
    }
}

pub(crate) fn now_minutes() -> u32 {
    u32::try_from(Utc::now().timestamp() / 60).unwrap_or(u32::MAX)
}

/// A window's task, aborted when the run stops waiting for it. A run that ends on an error
/// drops its windows in flight; a dropped `JoinHandle` would leave them writing to Pipefy
/// after the lease is released. Aborting one mid-send is a crash as far as the window is
/// concerned, which its recorded intents already cover.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Whether an operation writes cards (for messages).
pub fn noun(op: Operation) -> &'static str {
    if op.is_card() {
        "card"
    } else {
        "record"
    }
}
