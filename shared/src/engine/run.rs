//! Stage 0, the run as a whole: take the destination's lease (or hand the work to the run
//! holding it), set the run up (manifest, ledger, schema, mapper, cursor, leftover intents),
//! run it, and drain the work other invocations handed over meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Mutex;

use crate::config::Destination;
use crate::mapping::{Mapper, Schema};
use crate::pipefy::FieldDef;
use crate::report::{Counts, ReportWriter, RunStatus, RunSummary};
use crate::source::list_table_files;
use crate::state::{PendingWork, RunCursor, RunScope, SeenKeys, StateStore};

use super::ambiguous::resolve_leftover_intents;
use super::lifecycle::RunEvent;
use super::removed::RemovalOp;
use super::runner::Runner;
use super::{
    new_run_id, repo_of, AbortOnDrop, EngineError, PipefyApi, RunContext, RunRequest, RunShared,
};
use crate::state::LeaseKeeper;
use crate::state::RunState;

/// How long a lease lives without renewal (`sync.lease_seconds`): a crashed holder blocks the
/// destination at most this long. It is renewed every quarter of that.
pub(super) fn lease_ttl(dest: &Destination) -> Duration {
    Duration::from_secs(dest.sync.lease_seconds.max(1))
}

/// Runs a destination: takes the lease (or hands the work to the run holding it), runs, then
/// drains work that other invocations handed over while it ran.
pub async fn sync(
    ctx: &RunContext,
    dest: &Destination,
    req: RunRequest,
) -> Result<RunSummary, EngineError> {
    let run_id = req.continue_run.clone().unwrap_or_else(new_run_id);
    if !req.keys.is_empty() && dest.key.is_none() {
        let e = EngineError::Request(format!(
            "destination '{}' has no key (key.columns), so a run cannot pick rows by key",
            dest.name
        ));
        return Err(failed_before_start(ctx, dest, &req, &run_id, e).await);
    }
    if req.dry_run {
        // A dry run writes no state, so it needs no lease and can run beside a real run.
        return run_once(ctx, dest, &req, None).await;
    }
    let state = StateStore::new(ctx.state_store.clone(), &ctx.state_prefix, &dest.name);
    let ttl = lease_ttl(dest);
    let acquired = match LeaseKeeper::acquire(&state, &run_id, ttl, req.lease_wait).await {
        Ok(acquired) => acquired,
        Err(e) => return Err(failed_before_start(ctx, dest, &req, &run_id, e.into()).await),
    };
    let Some(lease) = acquired else {
        return defer(ctx, dest, &state, &req, &run_id).await;
    };
    let renewer = AbortOnDrop(lease.spawn_renewer());
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

/// `run failed` for a run that failed before it started (the runs that start send their
/// own events, in [`run_once`]); gives the error back.
async fn failed_before_start(
    ctx: &RunContext,
    dest: &Destination,
    req: &RunRequest,
    run_id: &str,
    e: EngineError,
) -> EngineError {
    if let Some(events) = &ctx.lifecycle {
        let failed = RunEvent::failed(&dest.name, run_id, &req.trigger, req.dry_run, e.to_string());
        events.publish(&failed).await;
    }
    e
}

/// What [`drain_pending`] did.
pub(super) struct Drained {
    /// Handed-over requests run.
    pub(super) requests: usize,
    /// The summary of the last run of handed-over work.
    pub(super) last: Option<RunSummary>,
}

/// Runs the work other invocations handed over (`pending/`) under `lease`, then releases
/// it; looks once more after releasing, so that work handed over between the last look and
/// the release is never stranded.
pub(super) async fn drain_pending(
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
                    renewer = AbortOnDrop(lease.spawn_renewer());
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
        // Requests for a few keys run apart from the others: merged into a table run they
        // would lose what they asked for (those rows sent even when unchanged).
        let plain = pending.iter().any(|(_, p)| p.keys.is_empty());
        let pending: Vec<_> = pending
            .into_iter()
            .filter(|(_, p)| p.keys.is_empty() == plain)
            .collect();
        let mut keys: Vec<String> = pending
            .iter()
            .flat_map(|(_, p)| p.keys.iter().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        let pending_req = RunRequest {
            trigger: "handed-over".into(),
            scope: RunScope::union(pending.iter().map(|(_, p)| &p.scope)),
            full_resync: pending.iter().any(|(_, p)| p.full_resync),
            continue_run: Some(new_run_id()),
            keys,
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
pub(super) async fn defer(
    ctx: &RunContext,
    dest: &Destination,
    state: &StateStore,
    req: &RunRequest,
    run_id: &str,
) -> Result<RunSummary, EngineError> {
    let mut work = PendingWork {
        id: run_id.to_string(),
        requested_at: Utc::now(),
        trigger: req.trigger.clone(),
        scope: req.scope.clone(),
        full_resync: req.full_resync,
        keys: req.keys.clone(),
    };
    // A continuation that finds the destination taken hands over what its run was asked
    // (its files or its keys), not the whole table its payload does not name.
    if let Some(continued) = &req.continue_run {
        let loaded = match state.load_manifest().await {
            Ok(loaded) => loaded,
            Err(e) => return Err(failed_before_start(ctx, dest, req, run_id, e.into()).await),
        };
        if let Some(cursor) = loaded.manifest.run.filter(|c| &c.run_id == continued) {
            if !cursor.whole_table {
                work.scope = RunScope::Files(cursor.files.iter().map(|f| f.key.clone()).collect());
            }
            work.full_resync |= cursor.full_resync && cursor.keys.is_empty();
            work.keys = cursor.keys;
        }
    }
    if let Err(e) = state.put_pending(&work).await {
        return Err(failed_before_start(ctx, dest, req, run_id, e.into()).await);
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(lease) =
            LeaseKeeper::acquire(state, run_id, lease_ttl(dest), Duration::ZERO).await?
        {
            // The holder is gone: drain everything handed over, our own request included,
            // each with the scope it was asked with.
            let renewer = AbortOnDrop(lease.spawn_renewer());
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
        report_page: None,
        requests_avoided: 0,
        error: None,
        stopped_at: None,
        removal_skipped: None,
        keys: req.keys.clone(),
        keys_not_found: Vec::new(),
    })
}

/// The destination's mapping compiled against the live schema, its key field, and the
/// schema.
pub(super) async fn mapper_for(
    api: &dyn PipefyApi,
    dest: &Destination,
    repo: &super::Repo,
) -> Result<(Mapper, Option<FieldDef>, Schema), EngineError> {
    let schema = api.schema(repo).await?;
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
    Ok((mapper, key_field, schema))
}

/// One run (or one invocation's share of a run) under a held lease (`None`: dry run), and
/// the lifecycle event that ends it.
pub(super) async fn run_once(
    ctx: &RunContext,
    dest: &Destination,
    req: &RunRequest,
    lease: Option<Arc<LeaseKeeper>>,
) -> Result<RunSummary, EngineError> {
    // The run's id is fixed here, so that an event names the run even when it fails.
    let run_id = req.continue_run.clone().unwrap_or_else(new_run_id);
    let req = RunRequest {
        continue_run: Some(run_id.clone()),
        ..req.clone()
    };
    let outcome = run_invocation(ctx, dest, &req, &run_id, lease).await;
    if let Some(events) = &ctx.lifecycle {
        let ended = match &outcome {
            Ok(summary) => RunEvent::ended(summary),
            Err(e) => Some(RunEvent::failed(
                &dest.name,
                &run_id,
                &req.trigger,
                req.dry_run,
                e.to_string(),
            )),
        };
        if let Some(event) = ended {
            events.publish(&event).await;
        }
    }
    outcome
}

async fn run_invocation(
    ctx: &RunContext,
    dest: &Destination,
    req: &RunRequest,
    run_id: &str,
    lease: Option<Arc<LeaseKeeper>>,
) -> Result<RunSummary, EngineError> {
    let api: Arc<dyn PipefyApi> = Arc::new(ctx.pipefy.clone());
    let stats_at_start = api.stats();
    let repo = repo_of(dest)?;
    let state = StateStore::new(ctx.state_store.clone(), &ctx.state_prefix, &dest.name);

    let loaded = state.load_manifest().await?;
    let mut ledger = state.load_ledger(&loaded.manifest).await?;

    let (mapper, key_field, schema) = mapper_for(&*api, dest, &repo).await?;
    let attachments =
        super::attachments::prepare(ctx, dest, &*api, &schema, &mapper, &state, req.dry_run)
            .await?;

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
        let mut keys = req.keys.clone();
        keys.sort();
        keys.dedup();
        if !keys.is_empty()
            && dest.sync.skip_initial_backfill
            && loaded.manifest.last_run.is_none()
            && !req.dry_run
        {
            // Its first run records the table without sending it: rows sent before would
            // make that run send the whole table.
            return Err(EngineError::Request(format!(
                "destination '{}' has skip_initial_backfill and has not run yet: run it once (it records the table's rows without sending them) before sending rows by key",
                dest.name
            )));
        }
        RunCursor {
            run_id: run_id.to_string(),
            started_at: Utc::now(),
            trigger: req.trigger.clone(),
            files,
            file_index: 0,
            line: 0,
            // Rows asked for by key are sent whether or not they changed.
            full_resync: req.full_resync || !keys.is_empty(),
            // A run of a few keys never removes: it has not read the table's other keys.
            whole_table: req.scope.is_whole_table() && keys.is_empty(),
            keys_missing: keys.clone(),
            keys,
            counts: Counts::default(),
            report_parts: 0,
            invocations: 1,
            removal_blocked: None,
            seen_saved: false,
            allow_mass_removal: req.allow_mass_removal,
        }
    };

    if let (false, Some(events)) = (continuing, &ctx.lifecycle) {
        let mut started =
            RunEvent::started(&dest.name, &cursor.run_id, &cursor.trigger, req.dry_run);
        started.started_at = cursor.started_at;
        events.publish(&started).await;
    }

    let mut report = ReportWriter::new(
        ctx.report_store.clone(),
        &ctx.reports_prefix,
        &dest.name,
        cursor.started_at,
        &cursor.run_id,
    );
    // A run of a few keys reports every one of its rows.
    report.include_unchanged = req.report_unchanged || !cursor.keys.is_empty();

    // Creates left unresolved by an earlier run (a crash between sending and recording):
    // resolve them by key before anything else can create them again.
    let run_state = (!req.dry_run).then(|| RunState::new(state.clone(), loaded.clone()));
    let mut unresolvable: HashSet<u64> = HashSet::new();
    if let (Some(run_state), false) = (&run_state, loaded.manifest.intents.is_empty()) {
        let leftover = run_state.take_leftover_intents().await;
        let settled = resolve_leftover_intents(&*api, &repo, key_field.as_ref(), leftover).await?;
        unresolvable = settled.kept.iter().map(|i| i.key_hash).collect();
        cursor.counts.recovered_creates += settled.found.len() as u64;
        if !settled.found.is_empty() {
            tracing::warn!(
                destination = %dest.name,
                recovered = settled.found.len(),
                "found creates left unconfirmed by an earlier run in Pipefy by their keys; recorded them instead of creating them again"
            );
            for (k, e) in &settled.found {
                ledger.insert(*k, e.clone());
            }
        }
        // The ids found go into a ledger segment that the same manifest write lists as it
        // drops their intents: one conditional write, so a crash loses neither.
        run_state
            .settle_leftover_intents(settled.found, settled.kept, continuing)
            .await?;
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
        client: api.clone(),
        repo,
        key_field,
        dry_run: req.dry_run,
        settle: Duration::from_secs_f64(dest.sync.ambiguous_settle_seconds.max(0.0)),
        connections: Mutex::new(HashMap::new()),
        state: run_state,
        stopped: std::sync::atomic::AtomicBool::new(false),
        run_id: cursor.run_id.clone(),
        lease,
        removal,
        current_reads: Default::default(),
        attachments,
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
        stopped_at: None,
        unresolvable: Arc::new(unresolvable),
        backfill_only,
        removal_skipped: None,
    };
    let status = runner.run().await?;
    let stats = api.stats();
    runner.cursor.counts.requests += stats.requests.saturating_sub(stats_at_start.requests);
    runner.cursor.counts.retries += stats.retries.saturating_sub(stats_at_start.retries);
    runner.cursor.counts.throttles += stats.throttles.saturating_sub(stats_at_start.throttles);
    runner.cursor.counts.current_value_reads += runner
        .shared
        .current_reads
        .load(std::sync::atomic::Ordering::SeqCst);
    if let Some(att) = &runner.shared.attachments {
        let counts = &mut runner.cursor.counts;
        counts.files_uploaded += att.files_uploaded.load(std::sync::atomic::Ordering::SeqCst);
        counts.bytes_uploaded += att.bytes_uploaded.load(std::sync::atomic::Ordering::SeqCst);
    }
    runner.finish(status).await
}
