//! The run's loop: the producer plans windows while up to a few windows are sent at once,
//! and their outcomes are committed in file order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::plan::Planner;
use super::produce::{produce, ProduceEnd, Produced, Producer};
use super::window::Window;
use super::{
    tokio_stream_from, window, AbortOnDrop, EngineError, RunContext, RunRequest, RunShared,
};
use crate::report::{ReportWriter, RowResult, RunStatus};
use crate::state::{Ledger, RunCursor, SeenKeys};

/// The mutable side of a run.
pub(super) struct Runner<'a> {
    pub(super) ctx: &'a RunContext,
    pub(super) req: &'a RunRequest,
    pub(super) shared: Arc<RunShared>,
    /// The ledger as loaded; read-only while the run goes (the planner reads it).
    pub(super) ledger: Arc<Ledger>,
    /// This run's writes (`None`: removal), on top of `ledger`.
    pub(super) run_writes: HashMap<u64, Option<crate::state::Entry>>,
    pub(super) cursor: RunCursor,
    pub(super) report: ReportWriter,
    /// Ledger writes since the last checkpoint (`None`: removal).
    pub(super) since_checkpoint: Vec<(u64, Option<crate::state::Entry>)>,
    /// Intents whose outcome is now in the ledger (or known failed), cleared at checkpoint.
    pub(super) committed_intents: Vec<u64>,
    pub(super) last_checkpoint: Instant,
    /// Keys the run has seen (earlier invocations' included): the producer's while it runs,
    /// back here when it ends, to be saved for a continuation.
    pub(super) seen_keys: Option<SeenKeys>,
    pub(super) stopped_at: Option<RowResult>,
    pub(super) unresolvable: Arc<HashSet<u64>>,
    pub(super) backfill_only: bool,
    /// Why the removal pass did not run, for the summary.
    pub(super) removal_skipped: Option<String>,
}

impl Runner<'_> {
    /// The loaded ledger with this run's writes applied.
    pub(super) fn merged_ledger(&self) -> Ledger {
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

    pub(super) fn pipeline_depth(&self) -> usize {
        if self.shared.dest.partial_success {
            3
        } else {
            // The first failure must stop the run: one window at a time.
            1
        }
    }

    pub(super) fn window_sends(&self) -> usize {
        let per_request = self.shared.dest.limits.mutations_per_request.max(1) as usize;
        if self.shared.dest.partial_success {
            per_request * self.shared.dest.limits.concurrency.max(1) as usize
        } else {
            per_request
        }
    }

    pub(super) async fn run(&mut self) -> Result<RunStatus, EngineError> {
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
            per_request: self.shared.dest.limits.mutations_per_request.max(1) as usize,
            planner: Planner::new(
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
            only_keys: (!self.cursor.keys.is_empty())
                .then(|| self.cursor.keys.iter().cloned().collect()),
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
}
