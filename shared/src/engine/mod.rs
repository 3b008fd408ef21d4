//! The sync engine: one run of one destination.
//!
//! A run reads the table's files row by row, maps and preflights each row, decides what to do
//! with it against the ledger (create, update, nothing), and sends the writes to Pipefy in
//! windows of aliased requests. Windows are pipelined (a few in flight, committed in order),
//! so the rate limiter, not the bookkeeping, sets the pace. See docs/DESIGN.md for the
//! exactly-once protocol this follows (lease, intents, ledger, checkpoints, hand-off).

mod lease;
mod removed;
mod requests;
mod window;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::config::{Destination, Operation};
use crate::mapping::{Mapper, Schema};
use crate::pipefy::{FieldDef, PipefyClient, PipefyError};
use crate::report::{
    failed_row_json, Counts, ReportWriter, RowAction, RowResult, RunStatus, RunSummary,
};
use crate::source::{list_table_files, open_rows};
use crate::state::{
    Intent, Ledger, LoadedManifest, PendingWork, RunCursor, SeenKeys, StateError, StateStore,
};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

use crate::pipefy::WriteGate;
pub use crate::state::RunScope;
use lease::LeaseKeeper;
use removed::{RemovalDecision, RemovalInputs, RemovalOp};
pub use requests::{ConnectionIds, OpRole, Repo};
use window::{Window, WindowOutcome, WorkItem};

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
    #[error("cannot continue run {run_id} of '{destination}': {reason}")]
    Continuation {
        destination: String,
        run_id: String,
        reason: String,
    },
    #[error("could not hand the run over to a new invocation: {0}")]
    HandOff(String),
    #[error("the destination '{0}' has no pipe_id or table_id")]
    NoTarget(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Continues a run in a new invocation (the Lambda invokes itself asynchronously).
#[async_trait::async_trait]
pub trait HandOff: Send + Sync {
    async fn continue_run(&self, destination: &str, run_id: &str) -> Result<(), String>;
}

/// Receives running counts (the CLI's progress bar).
pub trait Progress: Send + Sync {
    fn update(&self, counts: &Counts, file: &str);
}

/// Everything a run talks to, built once per process.
#[derive(Clone)]
pub struct RunContext {
    pub source_store: Arc<dyn ObjectStore>,
    pub state_store: Arc<dyn ObjectStore>,
    pub state_prefix: String,
    pub report_store: Arc<dyn ObjectStore>,
    pub reports_prefix: String,
    pub pipefy: PipefyClient,
    pub hand_off: Option<Arc<dyn HandOff>>,
    pub progress: Option<Arc<dyn Progress>>,
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
}

/// How long a lease lives without renewal (`sync.lease_seconds`): a crashed holder blocks the
/// destination at most this long. It is renewed every quarter of that.
fn lease_ttl(dest: &Destination) -> Duration {
    Duration::from_secs(dest.sync.lease_seconds.max(1))
}
/// Checkpoint at most this often (a delta segment and a manifest write).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// A report part is written once this much is buffered, whatever the interval.
const REPORT_PART_BYTES: usize = 4 << 20;
/// Rows of a window that need no request (unchanged, failed preflight) before it is cut
/// anyway, to bound memory and keep checkpoints moving.
const MAX_WINDOW_ITEMS: usize = 4096;
/// Delta segments of one run before they are merged into one.
const MAX_RUN_SEGMENTS: usize = 16;

/// Runs a destination: takes the lease (or hands the work to the run holding it), runs, then
/// drains work that other invocations handed over while it ran.
pub async fn sync(
    ctx: &RunContext,
    dest: &Destination,
    req: RunRequest,
) -> Result<RunSummary, EngineError> {
    if req.dry_run {
        // A dry run writes no state, so it needs no lease and can run beside a real run.
        return run_once(ctx, dest, &req, None).await;
    }
    let state = StateStore::new(ctx.state_store.clone(), &ctx.state_prefix, &dest.name);
    let run_id = req.continue_run.clone().unwrap_or_else(new_run_id);
    let ttl = lease_ttl(dest);
    let Some(lease) = LeaseKeeper::acquire(&state, &run_id, ttl, req.lease_wait).await? else {
        return defer(ctx, dest, &state, &req, &run_id).await;
    };
    let renewer = lease.spawn_renewer();
    let first = run_once(
        ctx,
        dest,
        &RunRequest {
            continue_run: Some(run_id),
            ..req.clone()
        },
        Some(lease.clone()),
    )
    .await;
    let mut summary = match first {
        Ok(s) => s,
        Err(e) => {
            drop(renewer);
            // The lease is left to expire only if releasing fails; a failed run holds nothing.
            let _ = lease.release().await;
            return Err(e);
        }
    };
    match summary.status {
        // The continuation takes the lease over by its holder name (the run id).
        RunStatus::HandedOff => return Ok(summary),
        // Another run holds the destination now, or soon: it does the pending work too.
        RunStatus::LeaseLost => return Ok(summary),
        _ => {}
    }
    let drained = drain_pending(ctx, dest, &state, &req, lease, renewer).await?;
    if drained.requests > 0 {
        summary.trigger = format!(
            "{} (+{} handed-over requests)",
            summary.trigger, drained.requests
        );
    }
    Ok(summary)
}

/// What [`drain_pending`] did.
struct Drained {
    /// Handed-over requests run.
    requests: usize,
    /// The summary of the last run of handed-over work.
    last: Option<RunSummary>,
}

/// Runs the work other invocations handed over (`pending/`) under `lease`, then releases
/// it; looks once more after releasing, so that work handed over between the last look and
/// the release is never stranded.
async fn drain_pending(
    ctx: &RunContext,
    dest: &Destination,
    state: &StateStore,
    req: &RunRequest,
    mut lease: Arc<LeaseKeeper>,
    mut renewer: AbortOnDrop<()>,
) -> Result<Drained, EngineError> {
    let ttl = lease_ttl(dest);
    let mut drained = Drained {
        requests: 0,
        last: None,
    };
    loop {
        let pending = state.list_pending().await?;
        if pending.is_empty() {
            drop(renewer);
            lease.release().await?;
            if state.list_pending().await?.is_empty() {
                break;
            }
            match LeaseKeeper::acquire(state, &new_run_id(), ttl, Duration::ZERO).await? {
                Some(l) => {
                    lease = l;
                    renewer = lease.spawn_renewer();
                }
                // Someone else has it now and will drain.
                None => break,
            }
            continue;
        }
        if req.deadline.is_some_and(|d| Instant::now() >= d) {
            // No time left: the pending work stays for the next run of this destination.
            drop(renewer);
            lease.release().await?;
            break;
        }
        let pending_req = RunRequest {
            trigger: "handed-over".into(),
            scope: RunScope::union(pending.iter().map(|(_, p)| &p.scope)),
            full_resync: pending.iter().any(|(_, p)| p.full_resync),
            continue_run: Some(new_run_id()),
            ..req.clone()
        };
        lease
            .rename(pending_req.continue_run.as_deref().unwrap_or_default())
            .await?;
        let summary = run_once(ctx, dest, &pending_req, Some(lease.clone())).await?;
        for (key, _) in &pending {
            state.delete_pending(key).await?;
        }
        drained.requests += pending.len();
        tracing::info!(destination = %dest.name, run_id = %summary.run_id, requests = pending.len(), "ran work handed over by other invocations");
        let ended = matches!(summary.status, RunStatus::HandedOff | RunStatus::LeaseLost);
        drained.last = Some(summary);
        if ended {
            break;
        }
    }
    Ok(drained)
}

/// The destination is busy: leave the work for the holder, and take the lease after all if
/// the holder finished meanwhile.
async fn defer(
    ctx: &RunContext,
    dest: &Destination,
    state: &StateStore,
    req: &RunRequest,
    run_id: &str,
) -> Result<RunSummary, EngineError> {
    let work = PendingWork {
        id: run_id.to_string(),
        requested_at: Utc::now(),
        trigger: req.trigger.clone(),
        scope: req.scope.clone(),
        full_resync: req.full_resync,
    };
    state.put_pending(&work).await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(lease) =
            LeaseKeeper::acquire(state, run_id, lease_ttl(dest), Duration::ZERO).await?
        {
            // The holder is gone: drain everything handed over, our own request included,
            // each with the scope it was asked with.
            let renewer = lease.spawn_renewer();
            let drained = drain_pending(ctx, dest, state, req, lease, renewer).await?;
            if let Some(summary) = drained.last {
                return Ok(summary);
            }
            break;
        }
    }
    tracing::info!(destination = %dest.name, run_id, "another run holds the destination; work handed over to it");
    let now = Utc::now();
    Ok(RunSummary {
        run_id: run_id.to_string(),
        destination: dest.name.clone(),
        trigger: req.trigger.clone(),
        status: RunStatus::Deferred,
        dry_run: false,
        started_at: now,
        finished_at: Some(now),
        source_files: match &req.scope {
            RunScope::Files(files) => files.clone(),
            RunScope::WholeTable => Vec::new(),
        },
        counts: Counts::default(),
        invocations: 1,
        report_location: None,
        error: None,
        stopped_at: None,
        removal_skipped: None,
    })
}

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
    pub client: PipefyClient,
    pub repo: Repo,
    pub key_field: Option<FieldDef>,
    pub dry_run: bool,
    pub settle: Duration,
    /// `(repo, key_field, key)` -> id, or the reason it could not be resolved.
    pub connections: Mutex<ConnectionCache>,
    pub state: Option<StateWriter>,
    /// Partial success is off and a row failed: nothing more is sent.
    pub stopped: std::sync::atomic::AtomicBool,
    pub run_id: String,
    /// The run's lease (`None`: dry run): asked before every write.
    pub lease: Option<Arc<LeaseKeeper>>,
    /// What removed rows get, on a whole-table run of a destination that removes.
    pub removal: Option<RemovalOp>,
}

impl RunShared {
    /// Whether this run may still write to Pipefy (its lease is safely held).
    pub fn may_write(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.may_write())
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

/// Serialises every write of the manifest (intents, checkpoints) within a run.
pub(crate) struct StateWriter {
    pub state: StateStore,
    pub loaded: Mutex<LoadedManifest>,
}

impl StateWriter {
    pub async fn add_intents(&self, intents: Vec<Intent>) -> Result<(), StateError> {
        if intents.is_empty() {
            return Ok(());
        }
        // The conditional manifest write fences too, but a run that knows it lost its lease
        // does not even try.
        let mut loaded = self.loaded.lock().await;
        loaded.manifest.intents.extend(intents);
        self.state.save_manifest(&mut loaded).await
    }
}

fn repo_of(dest: &Destination) -> Result<Repo, EngineError> {
    match (&dest.pipe_id, &dest.table_id) {
        (Some(p), _) if dest.operation.is_card() => Ok(Repo::Pipe(p.clone())),
        (_, Some(t)) if !dest.operation.is_card() => Ok(Repo::Table(t.clone())),
        _ => Err(EngineError::NoTarget(dest.name.clone())),
    }
}

/// One run (or one invocation's share of a run) under a held lease (`None`: dry run).
async fn run_once(
    ctx: &RunContext,
    dest: &Destination,
    req: &RunRequest,
    lease: Option<Arc<LeaseKeeper>>,
) -> Result<RunSummary, EngineError> {
    let stats_at_start = ctx.pipefy.stats();
    let repo = repo_of(dest)?;
    let state = StateStore::new(ctx.state_store.clone(), &ctx.state_prefix, &dest.name);
    let run_id = req.continue_run.clone().unwrap_or_else(new_run_id);

    let mut loaded = state.load_manifest().await?;
    let mut ledger = state.load_ledger(&loaded.manifest).await?;

    let schema = match &repo {
        Repo::Pipe(id) => Schema::Pipe(ctx.pipefy.pipe_schema(id).await?),
        Repo::Table(id) => Schema::Table(ctx.pipefy.table_schema(id).await?),
    };
    let mapper = Mapper::new(dest, &schema).map_err(|issues| EngineError::Mapping {
        destination: dest.name.clone(),
        issues: issues
            .iter()
            .map(|i| format!("  - {i}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    let key_field = dest.key.as_ref().and_then(|k| match &schema {
        Schema::Pipe(p) => p.field(&k.field).cloned(),
        Schema::Table(t) => t.field(&k.field).cloned(),
    });

    // The cursor: continue the run named, or start a new one.
    let continuing = loaded
        .manifest
        .run
        .as_ref()
        .is_some_and(|r| Some(&r.run_id) == req.continue_run.as_ref() && !req.dry_run);
    let mut cursor = if continuing {
        let mut c = loaded.manifest.run.clone().unwrap_or_default();
        c.invocations += 1;
        c
    } else {
        let files = match &req.scope {
            RunScope::Files(keys) => {
                let mut metas = Vec::new();
                for key in keys {
                    metas.push(ctx.source_store.head(key).await?);
                }
                metas
            }
            RunScope::WholeTable => {
                list_table_files(ctx.source_store.as_ref(), &dest.source).await?
            }
        };
        RunCursor {
            run_id: run_id.clone(),
            started_at: Utc::now(),
            trigger: req.trigger.clone(),
            files,
            file_index: 0,
            line: 0,
            full_resync: req.full_resync,
            whole_table: req.scope.is_whole_table(),
            counts: Counts::default(),
            report_parts: 0,
            invocations: 1,
            removal_blocked: None,
            seen_saved: false,
            allow_mass_removal: req.allow_mass_removal,
        }
    };

    let mut report = ReportWriter::new(
        ctx.report_store.clone(),
        &ctx.reports_prefix,
        &dest.name,
        cursor.started_at,
        &cursor.run_id,
    );
    report.include_unchanged = req.report_unchanged;

    // Creates left unresolved by an earlier run (a crash between sending and recording):
    // resolve them by key before anything else can create them again.
    let mut unresolvable: HashSet<u64> = HashSet::new();
    if !req.dry_run && !loaded.manifest.intents.is_empty() {
        let found = resolve_leftover_intents(
            ctx,
            &repo,
            key_field.as_ref(),
            &mut loaded,
            &mut unresolvable,
        )
        .await?;
        // The ids found go into a ledger segment that the same manifest write lists as it
        // drops their intents: one conditional write, so a crash loses neither.
        cursor.counts.recovered_creates += found.len() as u64;
        if !found.is_empty() {
            tracing::warn!(
                destination = %dest.name,
                recovered = found.len(),
                "found creates left unconfirmed by an earlier run in Pipefy by their keys; recorded them instead of creating them again"
            );
            for (k, e) in &found {
                ledger.insert(*k, e.clone());
            }
            let writes = found.into_iter().map(|(k, e)| (k, Some(e))).collect();
            let segment = state
                .write_segment(
                    &mut loaded.manifest,
                    crate::state::ledger::encode_delta(writes),
                )
                .await?;
            loaded.manifest.segments.push(segment);
        }
        if !continuing {
            loaded.manifest.run = None;
        }
        state.save_manifest(&mut loaded).await?;
    }
    let backfill_only = dest.sync.skip_initial_backfill
        && loaded.manifest.last_run.is_none()
        && ledger.is_empty()
        && !req.dry_run;
    let removal = if cursor.whole_table {
        RemovalOp::of(&dest.sync.removed_rows, |phase| {
            mapper.phase_id_by_name(phase)
        })
    } else {
        None
    };
    let ledger = Arc::new(ledger);
    // The keys earlier invocations of this run read, so that removal sees the whole table.
    let mut seen = SeenKeys::new(ledger.clone());
    if continuing && cursor.seen_saved && removal.is_some() {
        if let Err(e) = state.load_seen(&cursor.run_id, &mut seen).await {
            tracing::warn!(error = %e, "the keys read before the hand-off could not be loaded");
            cursor.removal_blocked.get_or_insert_with(|| {
                format!("the keys read by this run's earlier invocations could not be loaded ({e})")
            });
        }
    }

    let shared = Arc::new(RunShared {
        dest: dest.clone(),
        mapper,
        client: ctx.pipefy.clone(),
        repo,
        key_field,
        dry_run: req.dry_run,
        settle: Duration::from_secs_f64(dest.sync.ambiguous_settle_seconds.max(0.0)),
        connections: Mutex::new(HashMap::new()),
        state: if req.dry_run {
            None
        } else {
            Some(StateWriter {
                state: state.clone(),
                loaded: Mutex::new(loaded),
            })
        },
        stopped: std::sync::atomic::AtomicBool::new(false),
        run_id: cursor.run_id.clone(),
        lease,
        removal,
    });

    let mut runner = Runner {
        ctx,
        req,
        shared: shared.clone(),
        ledger,
        run_writes: HashMap::new(),
        cursor,
        report,
        since_checkpoint: Vec::new(),
        committed_intents: Vec::new(),
        last_checkpoint: Instant::now(),
        seen_keys: Some(seen),
        run_segments: Vec::new(),
        stopped_at: None,
        unresolvable: Arc::new(unresolvable),
        backfill_only,
        removal_skipped: None,
    };
    let status = runner.run().await?;
    let stats = ctx.pipefy.stats();
    runner.cursor.counts.requests += stats.requests.saturating_sub(stats_at_start.requests);
    runner.cursor.counts.retries += stats.retries.saturating_sub(stats_at_start.retries);
    runner.cursor.counts.throttles += stats.throttles.saturating_sub(stats_at_start.throttles);
    runner.finish(status).await
}

async fn resolve_leftover_intents(
    ctx: &RunContext,
    repo: &Repo,
    key_field: Option<&FieldDef>,
    loaded: &mut LoadedManifest,
    unresolvable: &mut HashSet<u64>,
) -> Result<Vec<(u64, crate::state::Entry)>, EngineError> {
    let intents = std::mem::take(&mut loaded.manifest.intents);
    let mut recorded = Vec::new();
    let (keyed, unkeyed): (Vec<Intent>, Vec<Intent>) = intents
        .into_iter()
        .partition(|i| i.key.is_some() && key_field.is_some());
    let keys: Vec<String> = keyed.iter().filter_map(|i| i.key.clone()).collect();
    let found = match (repo, key_field) {
        (Repo::Pipe(p), Some(f)) if !keys.is_empty() => {
            ctx.pipefy.find_cards_by_field(p, f, &keys).await?
        }
        (Repo::Table(t), Some(f)) if !keys.is_empty() => {
            ctx.pipefy.find_records_by_field(t, f, &keys).await?
        }
        _ => Vec::new(),
    };
    let mut kept = Vec::new();
    for (intent, result) in keyed.into_iter().zip(found) {
        match result {
            Ok(ids) if ids.len() == 1 => {
                if let Some(id) = ids.first() {
                    // The card was created with the values the intent hashed: a row that
                    // still has them is unchanged, one that changed since is updated.
                    recorded.push((
                        intent.key_hash,
                        crate::state::Entry {
                            id: crate::state::RecordId::parse(id),
                            value_hash: intent.value_hash,
                            phase_hash: intent.phase_hash,
                            written_at_min: now_minutes(),
                        },
                    ));
                }
                tracing::info!(key = ?intent.key, "an interrupted create had been applied; recorded it");
            }
            // Not created: the row is created normally when it is read.
            Ok(ids) if ids.is_empty() => {}
            // Several cards hold the key, or the lookup failed: keep the intent so the row is
            // reported rather than created again.
            _ => {
                unresolvable.insert(intent.key_hash);
                kept.push(intent);
            }
        }
    }
    for intent in unkeyed {
        unresolvable.insert(intent.key_hash);
        kept.push(intent);
    }
    loaded.manifest.intents = kept;
    Ok(recorded)
}

pub(crate) fn now_minutes() -> u32 {
    u32::try_from(Utc::now().timestamp() / 60).unwrap_or(u32::MAX)
}

/// The mutable side of a run.
struct Runner<'a> {
    ctx: &'a RunContext,
    req: &'a RunRequest,
    shared: Arc<RunShared>,
    /// The ledger as loaded; read-only while the run goes (the planner reads it).
    ledger: Arc<Ledger>,
    /// This run's writes (`None`: removal), on top of `ledger`.
    run_writes: HashMap<u64, Option<crate::state::Entry>>,
    cursor: RunCursor,
    report: ReportWriter,
    /// Ledger writes since the last checkpoint (`None`: removal).
    since_checkpoint: Vec<(u64, Option<crate::state::Entry>)>,
    /// Intents whose outcome is now in the ledger (or known failed), cleared at checkpoint.
    committed_intents: Vec<u64>,
    last_checkpoint: Instant,
    /// Keys the run has seen (earlier invocations' included): the producer's while it runs,
    /// back here when it ends, to be saved for a continuation.
    seen_keys: Option<SeenKeys>,
    run_segments: Vec<String>,
    stopped_at: Option<RowResult>,
    unresolvable: Arc<HashSet<u64>>,
    backfill_only: bool,
    /// Why the removal pass did not run, for the summary.
    removal_skipped: Option<String>,
}

impl Runner<'_> {
    /// The loaded ledger with this run's writes applied.
    fn merged_ledger(&self) -> Ledger {
        let mut full = (*self.ledger).clone();
        for (k, v) in &self.run_writes {
            match v {
                Some(e) => full.insert(*k, e.clone()),
                None => full.remove(*k),
            }
        }
        full.compact();
        full
    }

    fn pipeline_depth(&self) -> usize {
        if self.shared.dest.partial_success {
            3
        } else {
            // The first failure must stop the run: one window at a time.
            1
        }
    }

    fn window_sends(&self) -> usize {
        let per_request = self.shared.dest.limits.mutations_per_request.max(1) as usize;
        if self.shared.dest.partial_success {
            per_request * self.shared.dest.limits.concurrency.max(1) as usize
        } else {
            per_request
        }
    }

    async fn run(&mut self) -> Result<RunStatus, EngineError> {
        let depth = self.pipeline_depth();
        let (tx, rx) = tokio::sync::mpsc::channel::<Window>(depth);
        let shared = self.shared.clone();
        // Windows are processed concurrently but yielded in order, so commits (ledger,
        // report, checkpoint cursor) happen in file order.
        let mut outcomes = tokio_stream_from(rx)
            .map(move |w| {
                let shared = shared.clone();
                // Each window is a task of its own, so it keeps going while the run commits
                // an earlier one. Polled only through this stream, a window holding the
                // manifest lock (recording intents) would wait for the commit that waits for
                // that lock (a checkpoint): a deadlock.
                AbortOnDrop(tokio::spawn(
                    async move { window::process(&shared, w).await },
                ))
            })
            .buffered(depth);

        let producer = produce(Producer {
            ctx: self.ctx.clone(),
            shared: self.shared.clone(),
            files: self.cursor.files.clone(),
            start_file: self.cursor.file_index,
            start_line: self.cursor.line,
            deadline: self.req.deadline,
            window_sends: self.window_sends(),
            planner: window::Planner::new(
                self.ledger.clone(),
                self.unresolvable.clone(),
                self.req.full_resync || self.cursor.full_resync,
                self.backfill_only,
            ),
            seen: self
                .seen_keys
                .take()
                .unwrap_or_else(|| SeenKeys::new(self.ledger.clone())),
            removal_blocked: self.cursor.removal_blocked.clone(),
            rows_read_before: self.cursor.counts.read,
            allow_mass_removal: self.req.allow_mass_removal || self.cursor.allow_mass_removal,
            tx,
        });
        tokio::pin!(producer);
        let mut produced: Option<Result<Produced, EngineError>> = None;
        loop {
            tokio::select! {
                end = &mut producer, if produced.is_none() => {
                    produced = Some(end);
                }
                next = outcomes.next() => {
                    match next {
                        Some(Ok(outcome)) => self.commit(outcome?).await?,
                        Some(Err(e)) => return Err(EngineError::Internal(format!("a window's task failed: {e}"))),
                        None => break,
                    }
                }
            }
        }
        let produced = match produced {
            Some(end) => end?,
            None => producer.await?,
        };
        self.seen_keys = Some(produced.seen);
        self.cursor.removal_blocked = produced.removal_blocked;
        self.removal_skipped = produced.removal_skipped;
        Ok(match produced.end {
            _ if self.shared.lease_lost() => RunStatus::LeaseLost,
            ProduceEnd::Done if self.stopped_at.is_some() => RunStatus::Stopped,
            ProduceEnd::Done => RunStatus::Completed,
            ProduceEnd::Deadline => RunStatus::HandedOff,
            ProduceEnd::LeaseLost => RunStatus::LeaseLost,
        })
    }

    async fn commit(&mut self, outcome: WindowOutcome) -> Result<(), EngineError> {
        let now_min = now_minutes();
        for done in outcome.items {
            let counts = &mut self.cursor.counts;
            // Every item is a row, or a file that could not be read (a failed row of its own),
            // or the removal of a key that left the table.
            if done.result.file != removed::REMOVED_FILE {
                counts.read += 1;
            }
            if let Some((key, entry)) = &done.ledger_write {
                let entry = entry.as_ref().map(|e| crate::state::Entry {
                    written_at_min: now_min,
                    ..e.clone()
                });
                self.run_writes.insert(*key, entry.clone());
                self.since_checkpoint.push((*key, entry));
            }
            if let Some(k) = done.intent_done {
                self.committed_intents.push(k);
            }
            match done.result.action {
                RowAction::Created | RowAction::WouldCreate => counts.created += 1,
                RowAction::Updated | RowAction::WouldUpdate => counts.updated += 1,
                RowAction::Unchanged => counts.unchanged += 1,
                RowAction::Skipped => counts.skipped_by_preflight += 1,
                RowAction::Failed => counts.failed += 1,
                RowAction::NotAttempted => counts.not_attempted += 1,
                RowAction::Moved | RowAction::Deleted | RowAction::WouldRemove => {
                    counts.removed += 1
                }
            }
            if let Some(failure) = &done.failure {
                if self.stopped_at.is_none()
                    && !self.shared.dest.partial_success
                    && done.result.action != RowAction::NotAttempted
                {
                    self.stopped_at = Some(done.result.clone());
                    self.shared
                        .stopped
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                self.report.failed_row(&failed_row_json(
                    done.row.as_ref(),
                    done.raw.as_deref(),
                    failure,
                ));
            }
            self.report.row(&done.result);
        }
        self.cursor.file_index = outcome.file_index;
        self.cursor.line = outcome.end_line;
        if outcome.end_of_file {
            self.cursor.file_index = outcome.file_index + 1;
            self.cursor.line = 0;
        }
        if let Some(p) = &self.ctx.progress {
            let file = self
                .cursor
                .files
                .get(outcome.file_index)
                .map(|f| f.key.as_str())
                .unwrap_or("");
            p.update(&self.cursor.counts, file);
        }
        // A dry run plans far faster than a run sends, so its report also goes out by size:
        // held for the whole checkpoint interval it would be tens of MiB.
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
            || self.report.buffered_bytes() >= REPORT_PART_BYTES
        {
            self.checkpoint(false).await?;
        }
        Ok(())
    }

    /// Persists the ledger delta, clears committed intents and saves the cursor; flushes the
    /// report part. `last`: the run is ending.
    async fn checkpoint(&mut self, last: bool) -> Result<(), EngineError> {
        self.last_checkpoint = Instant::now();
        if self.report.has_buffered() {
            self.cursor.report_parts += 1;
            self.report.flush(self.cursor.report_parts).await?;
        }
        let Some(writer) = &self.shared.state else {
            return Ok(());
        };
        let mut loaded = writer.loaded.lock().await;
        if !self.since_checkpoint.is_empty() {
            let writes = std::mem::take(&mut self.since_checkpoint);
            let bytes = crate::state::ledger::encode_delta(writes);
            let key = writer
                .state
                .write_segment(&mut loaded.manifest, bytes)
                .await?;
            loaded.manifest.segments.push(key.clone());
            self.run_segments.push(key);
        }
        let mut replaced = Vec::new();
        if self.run_segments.len() > MAX_RUN_SEGMENTS && !last {
            // Merge this run's deltas into one: the overlay holds exactly this run's writes.
            let all_run_writes: Vec<(u64, Option<crate::state::Entry>)> = self
                .run_writes
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let merged = writer
                .state
                .write_segment(
                    &mut loaded.manifest,
                    crate::state::ledger::encode_delta(all_run_writes),
                )
                .await?;
            let old: HashSet<&String> = self.run_segments.iter().collect();
            loaded.manifest.segments.retain(|s| !old.contains(s));
            loaded.manifest.segments.push(merged.clone());
            replaced = std::mem::replace(&mut self.run_segments, vec![merged]);
        }
        let done: HashSet<u64> = self.committed_intents.drain(..).collect();
        loaded
            .manifest
            .intents
            .retain(|i| !done.contains(&i.key_hash));
        loaded.manifest.run = Some(self.cursor.clone());
        match writer.state.save_manifest(&mut loaded).await {
            Ok(()) => {}
            // A run that lost its lease records what it can; once the run holding the
            // destination now has written, what this one did is found by that run's lookups.
            Err(StateError::ManifestConflict(_)) if self.shared.lease_lost() => {
                tracing::warn!(destination = %self.shared.dest.name, "the lease was lost and the manifest replaced by another run; this run's last writes are left to it");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        drop(loaded);
        writer.state.delete_segments(&replaced).await;
        Ok(())
    }

    async fn finish(mut self, status: RunStatus) -> Result<RunSummary, EngineError> {
        if status == RunStatus::HandedOff && self.shared.removal.is_some() {
            // The next invocation must know every key this one read, or the keys of the
            // files read so far would all look removed.
            if let (Some(writer), Some(seen)) = (&self.shared.state, &self.seen_keys) {
                writer.state.save_seen(&self.cursor.run_id, seen).await?;
                self.cursor.seen_saved = true;
            }
        }
        self.checkpoint(true).await?;
        let finished = !matches!(status, RunStatus::HandedOff | RunStatus::LeaseLost);
        if let (Some(writer), true) = (&self.shared.state, finished) {
            let mut loaded = writer.loaded.lock().await;
            // Fold everything into a new base when the deltas pile up.
            let mut replaced = Vec::new();
            if loaded.manifest.segments.len() > 8 {
                let full = self.merged_ledger();
                let base = writer
                    .state
                    .write_segment(&mut loaded.manifest, full.encode_full())
                    .await?;
                replaced = std::mem::replace(&mut loaded.manifest.segments, vec![base]);
            }
            loaded.manifest.run = None;
            loaded.manifest.last_run = Some(crate::state::LastRun {
                run_id: self.cursor.run_id.clone(),
                finished_at: Utc::now(),
                failed_rows: self.cursor.counts.failed_rows(),
                status: status_name(status),
            });
            writer.state.save_manifest(&mut loaded).await?;
            drop(loaded);
            writer.state.delete_segments(&replaced).await;
            if self.cursor.seen_saved {
                writer.state.delete_seen(&self.cursor.run_id).await;
            }
        }
        let summary = RunSummary {
            run_id: self.cursor.run_id.clone(),
            destination: self.shared.dest.name.clone(),
            trigger: self.cursor.trigger.clone(),
            status,
            dry_run: self.shared.dry_run,
            started_at: self.cursor.started_at,
            finished_at: (status != RunStatus::HandedOff).then(Utc::now),
            source_files: self.cursor.files.iter().map(|f| f.key.clone()).collect(),
            counts: self.cursor.counts,
            invocations: self.cursor.invocations,
            report_location: Some(self.report.location()),
            error: (status == RunStatus::LeaseLost).then(|| {
                "the run's lease on the destination could not be renewed in time, so it stopped sending; the rows it did not send are NOT_ATTEMPTED and the next run syncs them".to_string()
            }),
            stopped_at: self.stopped_at.clone(),
            removal_skipped: self.removal_skipped.clone(),
        };
        self.report.write_summary(&summary).await?;
        if status == RunStatus::HandedOff {
            match &self.ctx.hand_off {
                Some(h) => h
                    .continue_run(&self.shared.dest.name, &self.cursor.run_id)
                    .await
                    .map_err(EngineError::HandOff)?,
                None => {
                    return Err(EngineError::HandOff(
                        "the time budget ran out and this runner cannot invoke a continuation"
                            .into(),
                    ))
                }
            }
        }
        Ok(summary)
    }
}

/// A status as the manifest's `last_run` and the summary's JSON spell it.
fn status_name(status: RunStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{status:?}").to_lowercase())
}

enum ProduceEnd {
    Done,
    Deadline,
    LeaseLost,
}

/// How the producer ended, and what it learnt about the table on the way.
struct Produced {
    end: ProduceEnd,
    seen: SeenKeys,
    /// Why this run must not remove (kept across hand-offs in the cursor).
    removal_blocked: Option<String>,
    /// Why the removal pass did not run, when it was due.
    removal_skipped: Option<String>,
}

/// What the producer owns: it runs beside the commits and shares nothing mutable with them.
struct Producer {
    ctx: RunContext,
    shared: Arc<RunShared>,
    files: Vec<ObjectMeta>,
    start_file: usize,
    start_line: u64,
    deadline: Option<Instant>,
    window_sends: usize,
    planner: window::Planner,
    seen: SeenKeys,
    removal_blocked: Option<String>,
    /// Rows read by earlier invocations of this run.
    rows_read_before: u64,
    allow_mass_removal: bool,
    tx: tokio::sync::mpsc::Sender<Window>,
}

/// Reads rows and cuts them into windows; on a whole-table run of a destination that
/// removes, then cuts the removals of the keys no row carried into windows too.
async fn produce(mut p: Producer) -> Result<Produced, EngineError> {
    let partial = p.shared.dest.partial_success;
    let past_deadline = |p: &Producer| p.deadline.is_some_and(|d| Instant::now() >= d);
    let mut stop_sending = false;
    let mut rows_read = p.rows_read_before;
    let ended = |p: Producer, end: ProduceEnd| Produced {
        end,
        seen: p.seen,
        removal_blocked: p.removal_blocked,
        removal_skipped: None,
    };
    for (file_index, meta) in p.files.clone().iter().enumerate().skip(p.start_file) {
        let after = if file_index == p.start_file {
            p.start_line
        } else {
            0
        };
        let mut rows = open_rows(
            p.ctx.source_store.clone(),
            meta,
            &p.shared.dest.source,
            after,
        )
        .await;
        let mut win = Window::new(file_index);
        while let Some(next) = rows.next().await {
            if p.shared.lease_lost() {
                // What is planned now could not be sent: the run holding the lease reads it.
                return Ok(ended(p, ProduceEnd::LeaseLost));
            }
            if !stop_sending && p.shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                // An earlier window failed (partial success off): plan nothing more.
                stop_sending = true;
            }
            let item = match next {
                Err(e) => {
                    p.removal_blocked.get_or_insert_with(|| {
                        format!(
                            "{}:{} could not be read ({})",
                            e.provenance.file, e.provenance.line, e.message
                        )
                    });
                    WorkItem::read_failure(e)
                }
                Ok(row) if stop_sending => WorkItem::not_attempted(row),
                Ok(row) => {
                    rows_read += 1;
                    let provenance = row.provenance.clone();
                    let (item, identity_known) = p.planner.plan(&p.shared, meta, row, &mut p.seen);
                    if !identity_known {
                        p.removal_blocked.get_or_insert_with(|| {
                            format!(
                                "the key of the row at {}:{} could not be read",
                                provenance.file, provenance.line
                            )
                        });
                    }
                    item
                }
            };
            let stop_here = item.is_failure() && !partial && !stop_sending;
            win.push(item);
            if stop_here {
                // Partial success off: this window is the last one sent.
                stop_sending = true;
            }
            if win.sends >= p.window_sends || win.items.len() >= MAX_WINDOW_ITEMS || stop_here {
                let full = std::mem::replace(&mut win, Window::new(file_index));
                if p.tx.send(full).await.is_err() {
                    return Ok(ended(p, ProduceEnd::Done));
                }
                if past_deadline(&p) && !stop_sending {
                    return Ok(ended(p, ProduceEnd::Deadline));
                }
            }
        }
        // The last window of a file moves the cursor to the next file, even when empty.
        win.end_of_file = true;
        if p.tx.send(win).await.is_err() {
            return Ok(ended(p, ProduceEnd::Done));
        }
        if past_deadline(&p) && file_index + 1 < p.files.len() && !stop_sending {
            return Ok(ended(p, ProduceEnd::Deadline));
        }
    }
    if p.shared.removal.is_none() || stop_sending {
        return Ok(ended(p, ProduceEnd::Done));
    }
    let decision = removed::decide(RemovalInputs {
        ledger: p.planner.ledger(),
        seen: &p.seen,
        blocked: p.removal_blocked.as_deref(),
        rows_read,
        max_fraction: p.shared.dest.sync.removed_rows.max_fraction,
        allow_mass_removal: p.allow_mass_removal,
    });
    let gone = match decision {
        RemovalDecision::Skip(why) => {
            tracing::warn!(destination = %p.shared.dest.name, why = %why, "removed rows not checked");
            let mut produced = ended(p, ProduceEnd::Done);
            produced.removal_skipped = Some(why);
            return Ok(produced);
        }
        RemovalDecision::Remove(gone) => gone,
    };
    // Removal windows sit past the last file, so a continuation resumes with them.
    let file_index = p.files.len();
    let mut win = Window::new(file_index);
    for (n, (key_hash, id)) in gone.into_iter().enumerate() {
        if p.shared.lease_lost() {
            return Ok(ended(p, ProduceEnd::LeaseLost));
        }
        if p.shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        win.push(WorkItem::removal(key_hash, id, n as u64 + 1));
        if win.sends >= p.window_sends {
            let full = std::mem::replace(&mut win, Window::new(file_index));
            if p.tx.send(full).await.is_err() {
                return Ok(ended(p, ProduceEnd::Done));
            }
            if past_deadline(&p) {
                return Ok(ended(p, ProduceEnd::Deadline));
            }
        }
    }
    if !win.items.is_empty() && p.tx.send(win).await.is_err() {
        return Ok(ended(p, ProduceEnd::Done));
    }
    Ok(ended(p, ProduceEnd::Done))
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

fn tokio_stream_from<T: Send + 'static>(
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
