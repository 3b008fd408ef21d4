//! The sync engine: one run of one destination.
//!
//! A run reads the table's files row by row, maps and preflights each row, decides what to do
//! with it against the ledger (create, update, nothing), and sends the writes to Pipefy in
//! windows of aliased requests. Windows are pipelined (a few in flight, committed in order),
//! so the rate limiter, not the bookkeeping, sets the pace. See docs/DESIGN.md for the
//! exactly-once protocol this follows (lease, intents, ledger, checkpoints, hand-off).

mod ops;
mod window;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::config::{Destination, Operation, RemovedRows};
use crate::failure::{FailureCode, RowFailure};
use crate::mapping::{Mapper, Schema};
use crate::pipefy::{FieldDef, PipefyClient, PipefyError};
use crate::report::{
    failed_row_json, Counts, ReportWriter, RowAction, RowResult, RunStatus, RunSummary,
};
use crate::source::{list_table_files, open_rows, Provenance};
use crate::state::{
    Intent, Lease, Ledger, LoadedManifest, PendingWork, RunCursor, SeenKeys, StateError, StateStore,
};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

pub use ops::{ConnectionIds, OpRole, Repo};
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
    /// Only these object keys (an upload, a manual list); `None`: the whole table.
    pub files: Option<Vec<String>>,
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
    let lease = match acquire_lease(&state, &run_id, ttl, req.lease_wait).await? {
        Some(lease) => lease,
        None => return defer(ctx, dest, &state, &req, &run_id).await,
    };
    let lease = Arc::new(Mutex::new(lease));
    let renewer = spawn_lease_renewer(state.clone(), lease.clone(), ttl);
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
            renewer.abort();
            // The lease is left to expire only if releasing fails; a failed run holds nothing.
            let held = lease.lock().await.clone();
            let _ = state.release_lease(held).await;
            return Err(e);
        }
    };
    if summary.status == RunStatus::HandedOff {
        // The continuation takes the lease over by its holder name (the run id).
        renewer.abort();
        return Ok(summary);
    }
    // Drain work handed over while we ran, then release; look once more after releasing, so
    // that work handed over between our last look and the release is never stranded.
    let mut drained = 0;
    loop {
        let pending = state.list_pending().await?;
        if pending.is_empty() {
            renewer.abort();
            let held = lease.lock().await.clone();
            state.release_lease(held).await?;
            let again = state.list_pending().await?;
            if again.is_empty() {
                break;
            }
            let new_holder = new_run_id();
            match state.try_acquire_lease(&new_holder, ttl).await? {
                Some(l) => {
                    *lease.lock().await = l;
                }
                // Someone else has it now and will drain.
                None => break,
            }
            continue;
        }
        if req.deadline.is_some_and(|d| Instant::now() >= d) {
            // No time left: the pending work stays for the next run of this destination.
            renewer.abort();
            let held = lease.lock().await.clone();
            state.release_lease(held).await?;
            break;
        }
        let files = merge_pending_files(&pending);
        let pending_req = RunRequest {
            trigger: "handed-over".into(),
            files,
            full_resync: pending.iter().any(|(_, p)| p.full_resync),
            continue_run: Some(new_run_id()),
            ..req.clone()
        };
        {
            let mut l = lease.lock().await;
            l.holder = pending_req.continue_run.clone().unwrap_or_default();
            state.renew_lease(&mut l, ttl).await?;
        }
        let drained_summary = run_once(ctx, dest, &pending_req, Some(lease.clone())).await?;
        for (key, _) in &pending {
            state.delete_pending(key).await?;
        }
        drained += pending.len();
        tracing::info!(destination = %dest.name, run_id = %drained_summary.run_id, requests = pending.len(), "ran work handed over by other invocations");
        if drained_summary.status == RunStatus::HandedOff {
            renewer.abort();
            break;
        }
    }
    if drained > 0 {
        summary.trigger = format!("{} (+{drained} handed-over requests)", summary.trigger);
    }
    Ok(summary)
}

async fn acquire_lease(
    state: &StateStore,
    holder: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<Option<Lease>, EngineError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(lease) = state.try_acquire_lease(holder, ttl).await? {
            return Ok(Some(lease));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
        files: req.files.clone(),
        full_resync: req.full_resync,
    };
    state.put_pending(&work).await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(lease) = state.try_acquire_lease(run_id, lease_ttl(dest)).await? {
            // The holder is gone: we drain everything, our own request included.
            state.release_lease(lease).await?;
            let drain = RunRequest {
                files: Some(Vec::new()),
                lease_wait: Duration::ZERO,
                ..req.clone()
            };
            return Box::pin(sync(ctx, dest, drain)).await;
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
        source_files: req.files.clone().unwrap_or_default(),
        counts: Counts::default(),
        invocations: 1,
        report_location: None,
        error: None,
        stopped_at: None,
    })
}

fn merge_pending_files(pending: &[(String, PendingWork)]) -> Option<Vec<String>> {
    let mut files = Vec::new();
    for (_, p) in pending {
        match &p.files {
            None => return None,
            Some(list) => files.extend(list.iter().cloned()),
        }
    }
    files.sort();
    files.dedup();
    Some(files)
}

fn spawn_lease_renewer(
    state: StateStore,
    lease: Arc<Mutex<Lease>>,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 4).await;
            let mut l = lease.lock().await;
            if let Err(e) = state.renew_lease(&mut l, ttl).await {
                // The manifest's conditional write fences a run that lost its lease.
                tracing::warn!(error = %e, "lease renewal failed");
                return;
            }
        }
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

/// What a removed row's card or record gets, from its id (`None`: nothing to send).
type RemovalOp = Box<dyn Fn(&str) -> Option<crate::pipefy::Mutation>>;

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
    lease: Option<Arc<Mutex<Lease>>>,
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
    let cursor = if continuing {
        let mut c = loaded.manifest.run.clone().unwrap_or_default();
        c.invocations += 1;
        c
    } else {
        let files = match &req.files {
            Some(keys) if !keys.is_empty() => {
                let mut metas = Vec::new();
                for key in keys {
                    metas.push(ctx.source_store.head(key).await?);
                }
                metas
            }
            _ => list_table_files(ctx.source_store.as_ref(), &dest.source).await?,
        };
        RunCursor {
            run_id: run_id.clone(),
            started_at: Utc::now(),
            trigger: req.trigger.clone(),
            files,
            file_index: 0,
            line: 0,
            full_resync: req.full_resync,
            whole_table: req.files.as_ref().is_none_or(|f| f.is_empty()),
            counts: Counts::default(),
            report_parts: 0,
            invocations: 1,
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
        if !found.is_empty() {
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
    });

    let mut runner = Runner {
        ctx,
        req,
        shared: shared.clone(),
        ledger: Arc::new(ledger),
        run_writes: HashMap::new(),
        cursor,
        report,
        since_checkpoint: Vec::new(),
        committed_intents: Vec::new(),
        last_checkpoint: Instant::now(),
        seen_keys: SeenKeys::new(Arc::new(Ledger::new())),
        run_segments: Vec::new(),
        stopped_at: None,
        unresolvable: Arc::new(unresolvable),
        backfill_only,
        lease,
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
    /// Keys seen in this invocation: duplicates within a run, and removed-rows detection.
    seen_keys: SeenKeys,
    run_segments: Vec<String>,
    stopped_at: Option<RowResult>,
    unresolvable: Arc<HashSet<u64>>,
    backfill_only: bool,
    lease: Option<Arc<Mutex<Lease>>>,
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
            tx,
        });
        tokio::pin!(producer);
        let mut produced: Option<Result<(ProduceEnd, SeenKeys), EngineError>> = None;
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
        let (end, seen) = match produced {
            Some(end) => end?,
            None => producer.await?,
        };
        self.seen_keys = seen;
        Ok(match end {
            ProduceEnd::Done if self.stopped_at.is_some() => RunStatus::Stopped,
            ProduceEnd::Done => RunStatus::Completed,
            ProduceEnd::Deadline => RunStatus::HandedOff,
        })
    }

    async fn commit(&mut self, outcome: WindowOutcome) -> Result<(), EngineError> {
        let now_min = now_minutes();
        for done in outcome.items {
            let counts = &mut self.cursor.counts;
            // Every item is a row, or a file that could not be read (a failed row of its own).
            counts.read += 1;
            if let Some((key, entry)) = &done.ledger_write {
                let entry = crate::state::Entry {
                    written_at_min: now_min,
                    ..entry.clone()
                };
                self.run_writes.insert(*key, Some(entry.clone()));
                self.since_checkpoint.push((*key, Some(entry)));
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
                RowAction::Moved | RowAction::Deleted => counts.removed += 1,
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
        writer.state.save_manifest(&mut loaded).await?;
        drop(loaded);
        writer.state.delete_segments(&replaced).await;
        if let Some(lease) = &self.lease {
            let l = lease.lock().await;
            if l.expires_at <= Utc::now() {
                return Err(StateError::LeaseLost(self.shared.dest.name.clone()).into());
            }
        }
        Ok(())
    }

    async fn finish(mut self, status: RunStatus) -> Result<RunSummary, EngineError> {
        if status == RunStatus::Completed
            && self.cursor.whole_table
            && !self.shared.dry_run
            && self.shared.dest.sync.removed_rows != RemovedRows::Ignore
        {
            if self.cursor.invocations == 1 {
                self.handle_removed_rows().await?;
            } else {
                // The seen keys cover this invocation's rows only: the keys of files read
                // before the hand-off would all look removed.
                tracing::warn!(
                    destination = %self.shared.dest.name,
                    invocations = self.cursor.invocations,
                    "removed rows not checked: the run spanned several invocations"
                );
            }
        }
        self.checkpoint(true).await?;
        let finished = status != RunStatus::HandedOff;
        if let Some(writer) = &self.shared.state {
            let mut loaded = writer.loaded.lock().await;
            if finished {
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
                    status: format!("{status:?}").to_lowercase(),
                });
                writer.state.save_manifest(&mut loaded).await?;
                drop(loaded);
                writer.state.delete_segments(&replaced).await;
            }
        }
        let summary = RunSummary {
            run_id: self.cursor.run_id.clone(),
            destination: self.shared.dest.name.clone(),
            trigger: self.cursor.trigger.clone(),
            status,
            dry_run: self.shared.dry_run,
            started_at: self.cursor.started_at,
            finished_at: finished.then(Utc::now),
            source_files: self.cursor.files.iter().map(|f| f.key.clone()).collect(),
            counts: self.cursor.counts,
            invocations: self.cursor.invocations,
            report_location: Some(self.report.location()),
            error: None,
            stopped_at: self.stopped_at.clone(),
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

    /// Cards/records in the ledger whose key no row of this whole-table run carried.
    async fn handle_removed_rows(&mut self) -> Result<(), EngineError> {
        let gone: Vec<(u64, crate::state::Entry)> = self
            .merged_ledger()
            .iter()
            .filter(|(k, _)| !self.seen_keys.contains(*k))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let (op_for, action): (RemovalOp, RowAction) =
            match (&self.shared.dest.sync.removed_rows, &self.shared.repo) {
                (RemovedRows::Delete, Repo::Pipe(_)) => (
                    Box::new(|id: &str| {
                        Some(crate::pipefy::Mutation::DeleteCard { id: id.to_string() })
                    }),
                    RowAction::Deleted,
                ),
                (RemovedRows::Delete, Repo::Table(_)) => (
                    Box::new(|id: &str| {
                        Some(crate::pipefy::Mutation::DeleteTableRecord { id: id.to_string() })
                    }),
                    RowAction::Deleted,
                ),
                (RemovedRows::MoveToPhase { phase }, Repo::Pipe(_)) => {
                    let phase_id = self.shared.mapper.phase_id_by_name(phase);
                    (
                        Box::new(move |id: &str| {
                            phase_id
                                .as_ref()
                                .map(|p| crate::pipefy::Mutation::MoveCardToPhase {
                                    card_id: id.to_string(),
                                    phase_id: p.clone(),
                                })
                        }),
                        RowAction::Moved,
                    )
                }
                _ => return Ok(()),
            };
        let mut ops = Vec::new();
        let mut owners = Vec::new();
        for (k, e) in &gone {
            if let Some(op) = op_for(&e.id.to_string()) {
                ops.push(op);
                owners.push((*k, e.clone()));
            }
        }
        let results = self.shared.client.mutate(ops).await?;
        let provenance = Provenance {
            file: Arc::from("(removed from the table)"),
            line: 0,
        };
        for ((k, e), result) in owners.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    // Deleted, or moved: forget the key either way, so a moved card is not
                    // moved again every run; if the row comes back it is looked up by key.
                    self.run_writes.insert(k, None);
                    self.since_checkpoint.push((k, None));
                    self.cursor.counts.removed += 1;
                    self.report.row(&RowResult::ok(
                        &provenance,
                        None,
                        action,
                        Some(e.id.to_string()),
                    ));
                }
                Err(err) => {
                    self.cursor.counts.failed += 1;
                    let failure = RowFailure::new(
                        provenance.clone(),
                        if action == RowAction::Moved {
                            FailureCode::MoveRefused
                        } else {
                            FailureCode::PipefyRejected
                        },
                        format!(
                            "{} of {} {}: {}",
                            if action == RowAction::Moved {
                                "move"
                            } else {
                                "delete"
                            },
                            if matches!(self.shared.repo, Repo::Pipe(_)) {
                                "card"
                            } else {
                                "record"
                            },
                            e.id,
                            err.message
                        ),
                    );
                    self.report
                        .row(&RowResult::failed(&failure, None, RowAction::Failed));
                }
            }
        }
        Ok(())
    }
}

enum ProduceEnd {
    Done,
    Deadline,
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
    tx: tokio::sync::mpsc::Sender<Window>,
}

/// Reads rows and cuts them into windows. Returns how it ended and the keys it saw.
async fn produce(p: Producer) -> Result<(ProduceEnd, SeenKeys), EngineError> {
    let mut seen = p.planner.seen_keys();
    let partial = p.shared.dest.partial_success;
    let past_deadline = || p.deadline.is_some_and(|d| Instant::now() >= d);
    let mut stop_sending = false;
    for (file_index, meta) in p.files.iter().enumerate().skip(p.start_file) {
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
            if !stop_sending && p.shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                // An earlier window failed (partial success off): plan nothing more.
                stop_sending = true;
            }
            let item = match next {
                Err(e) => WorkItem::read_failure(e),
                Ok(row) if stop_sending => WorkItem::not_attempted(row),
                Ok(row) => p.planner.plan(&p.shared, meta, row, &mut seen),
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
                    return Ok((ProduceEnd::Done, seen));
                }
                if past_deadline() && !stop_sending {
                    return Ok((ProduceEnd::Deadline, seen));
                }
            }
        }
        // The last window of a file moves the cursor to the next file, even when empty.
        win.end_of_file = true;
        if p.tx.send(win).await.is_err() {
            return Ok((ProduceEnd::Done, seen));
        }
        if past_deadline() && file_index + 1 < p.files.len() && !stop_sending {
            return Ok((ProduceEnd::Deadline, seen));
        }
    }
    Ok((ProduceEnd::Done, seen))
}

/// A window's task, aborted when the run stops waiting for it. A run that ends on an error
/// drops its windows in flight; a dropped `JoinHandle` would leave them writing to Pipefy
/// after the lease is released. Aborting one mid-send is a crash as far as the window is
/// concerned, which its recorded intents already cover.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

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
