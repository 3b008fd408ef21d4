//! Stage 6, commit: fold a window's outcomes into the counts, the ledger writes and the
//! report; checkpoint (delta segment, cleared intents, cursor) and finish the run.

use std::time::Instant;

use chrono::Utc;

use crate::report::{failed_row_json, RowAction, RunStatus, RunSummary};
use crate::state::Checkpoint;

use super::runner::Runner;
use super::window::WindowOutcome;
use super::{now_minutes, removed, EngineError, HandOffError, CHECKPOINT_EVERY, REPORT_PART_BYTES};

impl Runner<'_> {
    pub(super) async fn commit(&mut self, outcome: WindowOutcome) -> Result<(), EngineError> {
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
            counts.kept_edits += done.result.kept_edits.len() as u64;
            match done.result.action {
                RowAction::Created | RowAction::WouldCreate => counts.created += 1,
                RowAction::Recreated => {
                    counts.created += 1;
                    counts.recreated += 1;
                }
                RowAction::Updated | RowAction::WouldUpdate => counts.updated += 1,
                RowAction::Unchanged => counts.unchanged += 1,
                RowAction::Exists => counts.exists += 1,
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
            if !self.cursor.keys_missing.is_empty() {
                if let Some(key) = &done.result.key {
                    self.cursor.keys_missing.retain(|k| k != key);
                }
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
    pub(super) async fn checkpoint(&mut self, last: bool) -> Result<(), EngineError> {
        self.last_checkpoint = Instant::now();
        if self.report.has_buffered() {
            self.cursor.report_parts += 1;
            self.report.flush(self.cursor.report_parts).await?;
        }
        let Some(state) = &self.shared.state else {
            return Ok(());
        };
        state
            .checkpoint(Checkpoint {
                writes: std::mem::take(&mut self.since_checkpoint),
                run_writes: &self.run_writes,
                committed_intents: std::mem::take(&mut self.committed_intents),
                cursor: self.cursor.clone(),
                last,
                lease_lost: self.shared.lease_lost(),
            })
            .await?;
        Ok(())
    }

    pub(super) async fn finish(mut self, status: RunStatus) -> Result<RunSummary, EngineError> {
        if status == RunStatus::HandedOff && self.shared.removal.is_some() {
            // The next invocation must know every key this one read, or the keys of the
            // files read so far would all look removed.
            if let (Some(state), Some(seen)) = (&self.shared.state, &self.seen_keys) {
                state.store().save_seen(&self.cursor.run_id, seen).await?;
                self.cursor.seen_saved = true;
            }
        }
        self.checkpoint(true).await?;
        let finished = !matches!(status, RunStatus::HandedOff | RunStatus::LeaseLost);
        if let (Some(state), true) = (&self.shared.state, finished) {
            let last_run = crate::state::LastRun {
                run_id: self.cursor.run_id.clone(),
                finished_at: Utc::now(),
                failed_rows: self.cursor.counts.failed_rows(),
                status: status.name(),
            };
            state
                .finish(
                    last_run,
                    self.cursor.keys.is_empty(),
                    self.cursor.seen_saved,
                    || self.merged_ledger(),
                )
                .await?;
        }
        let mut summary = RunSummary {
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
            report_page: None,
            requests_avoided: self
                .cursor
                .counts
                .unchanged
                .div_ceil(u64::from(self.shared.dest.limits.mutations_per_request.max(1))),
            error: (status == RunStatus::LeaseLost).then(|| {
                "the run's lease on the destination could not be renewed in time, so it stopped sending; the rows it did not send are NOT_ATTEMPTED and the next run syncs them".to_string()
            }),
            stopped_at: self.stopped_at.clone(),
            removal_skipped: self.removal_skipped.clone(),
            keys: self.cursor.keys.clone(),
            keys_not_found: if finished {
                self.cursor.keys_missing.clone()
            } else {
                Vec::new()
            },
        };
        if status != RunStatus::HandedOff {
            self.write_pages(&mut summary).await;
        }
        self.report.write_summary(&summary).await?;
        if status != RunStatus::HandedOff {
            self.record_history(&summary).await;
        }
        if status == RunStatus::HandedOff {
            match &self.ctx.hand_off {
                Some(h) => {
                    h.continue_run(&self.shared.dest.name, &self.cursor.run_id)
                        .await?
                }
                None => return Err(HandOffError::NoContinuation.into()),
            }
        }
        Ok(summary)
    }

    /// The run's page, written once the run has ended. The rows are committed and the JSON
    /// report is complete without it, so a page that cannot be written is logged, not fatal.
    async fn write_pages(&self, summary: &mut RunSummary) {
        summary.report_page = Some(format!("{}report.html", self.report.location()));
        if let Err(e) = self.report.write_page(summary).await {
            tracing::warn!(error = %e, "the run page could not be written; summary.json has the run");
            summary.report_page = None;
        }
    }

    /// Adds the run to the destination's history page (logged, not fatal, when it fails).
    async fn record_history(&self, summary: &RunSummary) {
        let entry = crate::report::HistoryEntry::of(summary);
        if let Err(e) = crate::report::record_runs(
            &*self.ctx.report_store,
            &self.ctx.reports_prefix,
            &summary.destination,
            vec![entry],
        )
        .await
        {
            tracing::warn!(error = %e, "the destination's run history could not be updated");
        }
    }
}
