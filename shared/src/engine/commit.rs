//! Stage 6, commit: fold a window's outcomes into the counts, the ledger writes and the
//! report; checkpoint (delta segment, cleared intents, cursor) and finish the run.

use std::collections::HashSet;
use std::time::Instant;

use chrono::Utc;

use crate::report::{failed_row_json, RowAction, RunStatus, RunSummary};
use crate::state::StateError;

use super::runner::*;
use super::window::*;
use super::*;

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
    pub(super) async fn checkpoint(&mut self, last: bool) -> Result<(), EngineError> {
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

    pub(super) async fn finish(mut self, status: RunStatus) -> Result<RunSummary, EngineError> {
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
pub(super) fn status_name(status: RunStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{status:?}").to_lowercase())
}
