//! Stage 1, produce: read the table's files row by row, plan each row, and cut the rows into
//! windows; on a whole-table run of a destination that removes, then cut the removals into
//! windows too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::source::open_rows;
use crate::state::SeenKeys;
use crate::store::ObjectMeta;

use super::plan::{Planner, WorkItem};
use super::removed::{RemovalDecision, RemovalInputs};
use super::window::Window;
use super::{removed, EngineError, RunContext, RunShared};

pub(super) enum ProduceEnd {
    Done,
    Deadline,
    LeaseLost,
}

/// How the producer ended, and what it learnt about the table on the way.
pub(super) struct Produced {
    pub(super) end: ProduceEnd,
    pub(super) seen: SeenKeys,
    /// Why this run must not remove (kept across hand-offs in the cursor).
    pub(super) removal_blocked: Option<String>,
    /// Why the removal pass did not run, when it was due.
    pub(super) removal_skipped: Option<String>,
}

/// What the producer owns: it runs beside the commits and shares nothing mutable with them.
pub(super) struct Producer {
    pub(super) ctx: RunContext,
    pub(super) shared: Arc<RunShared>,
    pub(super) files: Vec<ObjectMeta>,
    pub(super) start_file: usize,
    pub(super) start_line: u64,
    pub(super) deadline: Option<Instant>,
    pub(super) window_sends: usize,
    /// Mutations per request (the destination's `limits.mutations_per_request`).
    pub(super) per_request: usize,
    pub(super) planner: Planner,
    pub(super) seen: SeenKeys,
    pub(super) removal_blocked: Option<String>,
    /// Rows read by earlier invocations of this run.
    pub(super) rows_read_before: u64,
    pub(super) allow_mass_removal: bool,
    /// A run of a few keys: the rows with other keys (or none) are passed over, as if the
    /// table did not have them.
    pub(super) only_keys: Option<HashSet<String>>,
    pub(super) tx: tokio::sync::mpsc::Sender<Window>,
}

impl Producer {
    /// Whether a run of a few keys passes over this row: another key, or none to read. (A
    /// line that cannot be read is reported, whichever key it held.)
    fn passes_over(&self, row: &crate::source::Row) -> bool {
        let Some(keys) = &self.only_keys else {
            return false;
        };
        match self.shared.mapper.key(row) {
            Ok(Some(key)) => !keys.contains(&key),
            _ => true,
        }
    }
}

/// Reads rows and cuts them into windows; on a whole-table run of a destination that
/// removes, then cuts the removals of the keys no row carried into windows too.
pub(super) async fn produce(mut p: Producer) -> Result<Produced, EngineError> {
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
            if let Some(row) = next.as_ref().ok().filter(|r| p.passes_over(r)) {
                win.pass_over(row.provenance.line);
                // Passed-over rows fill windows, move the cursor and meet the deadline like
                // sent ones, so a run by key over a big file still hands off in time.
                if win.is_full(p.window_sends, p.per_request) {
                    let full = std::mem::replace(&mut win, Window::new(file_index));
                    if p.tx.send(full).await.is_err() {
                        return Ok(ended(p, ProduceEnd::Done));
                    }
                    if past_deadline(&p) && !stop_sending {
                        return Ok(ended(p, ProduceEnd::Deadline));
                    }
                }
                continue;
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
                Ok(row) if stop_sending => {
                    // Its key is known even though it is not sent: the report shows it.
                    let key = p.shared.mapper.key(&row).ok().flatten();
                    WorkItem::not_attempted(row, key)
                }
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
            if win.is_full(p.window_sends, p.per_request) || stop_here {
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
