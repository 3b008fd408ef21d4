//! Windows: consecutive rows planned together, sent together, committed together. A window
//! goes through the stages in order: key lookups, connections, create checks, intents, the
//! batched writes, the resolution of unknown outcomes, and the result of each row.

use std::sync::Arc;

use crate::failure::{FailureCode, RowFailure};
use crate::pipefy::{ErrorClass, OpError};
use crate::report::{KeptEdit, RowAction, RowResult};
use crate::source::Row;
use crate::state::{Entry, RecordId};

use super::attachments::upload_attachments;
use super::connections::resolve_connections;
use super::current::{read_current, read_shown};
use super::lookups::resolve_lookups;
use super::missing::resolve_missing;
use super::plan::{ItemKind, Plan, WorkItem};
use super::send::{record_intents, send};
use super::{EngineError, RunShared, MAX_WINDOW_ITEMS};

/// Why a row of a run that lost its lease was not sent.
pub(super) const LEASE_LOST: &str = "not sent: this run lost its lease on the destination; the run that holds it now syncs this row";

pub(crate) struct Window {
    pub items: Vec<WorkItem>,
    pub file_index: usize,
    pub sends: usize,
    /// The mutations its sends are expected to need.
    pub mutations: usize,
    pub end_of_file: bool,
    /// Rows a run by key passed over (other keys), and the last of their lines: the cursor
    /// moves past them as past the window's rows.
    pub passed_over: usize,
    pub passed_over_to: u64,
}

impl Window {
    pub fn new(file_index: usize) -> Self {
        Window {
            items: Vec::new(),
            file_index,
            sends: 0,
            mutations: 0,
            end_of_file: false,
            passed_over: 0,
            passed_over_to: 0,
        }
    }

    /// A row a run by key does not send, at `line`.
    pub fn pass_over(&mut self, line: u64) {
        self.passed_over += 1;
        self.passed_over_to = self.passed_over_to.max(line);
    }

    pub fn push(&mut self, item: WorkItem) {
        if matches!(item.kind, ItemKind::Send { .. }) {
            self.sends += 1;
            self.mutations += item.expected_mutations();
        }
        self.items.push(item);
    }

    /// Whether the window is cut here: its mutations fill the requests in flight, or it
    /// holds many rows that need none and its mutations fill whole requests (a rerun where
    /// few rows changed would otherwise send a half-empty request per window), or it holds
    /// so many rows that memory says so.
    pub(super) fn is_full(&self, capacity: usize, per_request: usize) -> bool {
        cut_here(
            self.items.len() + self.passed_over,
            self.mutations,
            capacity,
            per_request,
        )
    }

    pub(super) fn end_line(&self) -> u64 {
        self.items
            .iter()
            .map(|i| i.provenance.line)
            .max()
            .unwrap_or(0)
            .max(self.passed_over_to)
    }
}

/// The rule of [`Window::is_full`] for a window of `items` rows expected to need
/// `mutations`.
fn cut_here(items: usize, mutations: usize, capacity: usize, per_request: usize) -> bool {
    let whole_requests = mutations % per_request.max(1) == 0;
    mutations >= capacity
        || (items >= MAX_WINDOW_ITEMS && whole_requests)
        || items >= MAX_WINDOW_ITEMS * 4
}

/// What committing a window does for one row.
pub(crate) struct DoneItem {
    pub result: RowResult,
    pub failure: Option<RowFailure>,
    pub row: Option<Row>,
    pub raw: Option<String>,
    /// `(key, None)`: the key is forgotten (its card or record was removed).
    pub ledger_write: Option<(u64, Option<Entry>)>,
    /// The key hash of a create whose intent can be cleared.
    pub intent_done: Option<u64>,
}

pub(crate) struct WindowOutcome {
    pub file_index: usize,
    pub end_line: u64,
    pub end_of_file: bool,
    pub items: Vec<DoneItem>,
}

/// Per-item state while a window is processed.
pub(super) struct Slot {
    pub(super) item: WorkItem,
    /// Final outcome once known.
    pub(super) outcome: Option<Outcome>,
    /// The row is sent again because its card or record was gone from Pipefy.
    pub(super) recreate: bool,
    /// Values people changed in Pipefy that the row's update leaves alone.
    pub(super) kept: Vec<KeptEdit>,
}

pub(super) enum Outcome {
    Written {
        action: RowAction,
        id: String,
    },
    Failed {
        failure: RowFailure,
        clear_intent: bool,
    },
    /// An update Pipefy answered as if the card or record did not exist: settled by
    /// [`super::missing::resolve_missing`].
    Missing {
        failure: RowFailure,
    },
    Planned(RowAction),
}

pub(super) fn failure_for(item: &WorkItem, code: FailureCode, message: String) -> RowFailure {
    RowFailure::new(item.provenance.clone(), code, message)
}

/// Several cards or records hold the row's key: reported on the row, never guessed between.
pub(super) fn duplicate_in_pipefy(
    shared: &RunShared,
    item: &WorkItem,
    ids: &[String],
) -> RowFailure {
    failure_for(
        item,
        FailureCode::DuplicateKey,
        format!(
            "{} {}s in Pipefy already hold key '{}' (ids {}); fix the duplicates in Pipefy, then rerun",
            ids.len(),
            super::noun(shared.dest.operation),
            item.key.as_deref().unwrap_or_default(),
            ids.join(", ")
        ),
    )
}

/// The row's failure code for an operation Pipefy failed in this way.
pub(super) fn failure_code(class: ErrorClass) -> FailureCode {
    match class {
        ErrorClass::Permanent => FailureCode::PipefyRejected,
        ErrorClass::Retryable => FailureCode::PipefyUnavailable,
        ErrorClass::Ambiguous => FailureCode::AmbiguousCreate,
    }
}

pub(super) fn op_failure(item: &WorkItem, e: &OpError, what: &str) -> RowFailure {
    let code = failure_code(e.class);
    let detail = match &e.code {
        Some(c) => format!("{what}: Pipefy answered {c}: {}", e.message),
        None => format!("{what}: {}", e.message),
    };
    let detail = if e.class == ErrorClass::Retryable {
        format!(
            "{detail} (gave up after {} attempts; the next run retries it)",
            e.attempts
        )
    } else {
        detail
    };
    failure_for(item, code, detail)
}

pub(crate) async fn process(
    shared: &Arc<RunShared>,
    window: Window,
) -> Result<WindowOutcome, EngineError> {
    let file_index = window.file_index;
    let end_line = window.end_line();
    let end_of_file = window.end_of_file;
    // A window planned before an earlier one failed (partial success off) sends nothing,
    // and neither does one of a run that can no longer write.
    let stopped = shared.stopped.load(std::sync::atomic::Ordering::SeqCst);
    let fenced = !shared.dry_run && !shared.may_write();
    let mut slots: Vec<Slot> = window
        .items
        .into_iter()
        .map(|item| {
            if fenced {
                item.not_sent_if_sending(LEASE_LOST)
            } else if stopped {
                item.stop_if_sending()
            } else {
                item
            }
        })
        .map(|item| Slot {
            item,
            outcome: None,
            recreate: false,
            kept: Vec::new(),
        })
        .collect();

    resolve_lookups(shared, &mut slots).await?;
    let conns = resolve_connections(shared, &mut slots).await?;
    check_creates(shared, &mut slots);
    // A dry run reads too (it writes nothing): what it says would happen to `if_empty`,
    // `mode: add` and `keep_edits` targets is then what a run does.
    read_current(shared, &mut slots).await?;

    if shared.dry_run {
        for slot in slots.iter_mut().filter(|s| s.outcome.is_none()) {
            if let ItemKind::Send { plan, .. } = &slot.item.kind {
                slot.outcome = Some(Outcome::Planned(match plan {
                    Plan::Update { .. } => RowAction::WouldUpdate,
                    Plan::Remove { .. } => RowAction::WouldRemove,
                    Plan::Create | Plan::Lookup => RowAction::WouldCreate,
                }));
            }
        }
    } else {
        // Files first: a row's fields are written only once its files are in Pipefy.
        upload_attachments(shared, &mut slots).await?;
        record_intents(shared, &slots).await?;
        send(shared, &mut slots, &conns).await?;
        if resolve_missing(shared, &mut slots).await? {
            // Rows whose card was gone, planned again: one more pass, never a loop.
            let conns = resolve_connections(shared, &mut slots).await?;
            check_creates(shared, &mut slots);
            record_intents(shared, &slots).await?;
            send(shared, &mut slots, &conns).await?;
            for slot in slots.iter_mut().filter(|s| s.recreate) {
                if let Some(Outcome::Written { action, .. }) = &mut slot.outcome {
                    if *action == RowAction::Created {
                        *action = RowAction::Recreated;
                    }
                }
            }
        }
        read_shown(shared, &mut slots).await?;
    }
    Ok(WindowOutcome {
        file_index,
        end_line,
        end_of_file,
        items: slots.into_iter().map(finish_slot).collect(),
    })
}

pub(super) fn check_creates(shared: &RunShared, slots: &mut [Slot]) {
    for slot in slots.iter_mut().filter(|s| s.outcome.is_none()) {
        if let ItemKind::Send {
            mapped,
            plan: Plan::Create,
            ..
        } = &slot.item.kind
        {
            if let Err(failure) = shared.mapper.check_create(mapped) {
                slot.outcome = Some(Outcome::Failed {
                    failure,
                    clear_intent: false,
                });
            }
        }
    }
}

/// The row's source, for a failed row's report.
struct Source {
    key: Option<String>,
    key_hash: u64,
    row: Option<Row>,
    raw: Option<String>,
}

/// A row that failed; `clear_intent`: its create's intent can go (nothing was created).
fn failed_item(source: Source, failure: RowFailure, clear_intent: bool) -> DoneItem {
    let action = if failure.code == FailureCode::NotAttempted {
        RowAction::NotAttempted
    } else {
        RowAction::Failed
    };
    DoneItem {
        result: RowResult::failed(&failure, source.key, action),
        failure: Some(failure),
        row: source.row,
        raw: source.raw,
        ledger_write: None,
        intent_done: clear_intent.then_some(source.key_hash),
    }
}

pub(super) fn finish_slot(slot: Slot) -> DoneItem {
    let kept = slot.kept;
    let item = slot.item;
    match item.kind {
        ItemKind::Done {
            result,
            failure,
            record,
        } => DoneItem {
            result,
            failure,
            row: item.row,
            raw: item.raw,
            ledger_write: record.map(|e| (item.key_hash, Some(e))),
            intent_done: None,
        },
        ItemKind::Send {
            hash,
            phase,
            targets,
            plan,
            ..
        } => {
            let was_create = matches!(plan, Plan::Create);
            let was_removal = matches!(plan, Plan::Remove { .. });
            let source = Source {
                key: item.key.clone(),
                key_hash: item.key_hash,
                row: item.row,
                raw: item.raw,
            };
            // The row's result, with the values people changed that it kept.
            let done = |action, id| RowResult {
                kept_edits: kept,
                ..RowResult::ok(&item.provenance, item.key.clone(), action, id)
            };
            match slot.outcome {
                Some(Outcome::Written { action, id }) => DoneItem {
                    result: done(action, Some(id.clone())),
                    failure: None,
                    row: None,
                    raw: None,
                    // A removed key is forgotten, so a moved card is not moved again every
                    // run; if its row comes back, it is looked up by key.
                    ledger_write: Some((
                        item.key_hash,
                        (!was_removal).then(|| Entry {
                            targets,
                            ..Entry::new(RecordId::parse(&id), hash, phase)
                        }),
                    )),
                    intent_done: was_create.then_some(item.key_hash),
                },
                Some(Outcome::Planned(action)) => DoneItem {
                    result: done(
                        action,
                        match plan {
                            Plan::Update { id, .. } | Plan::Remove { id } => Some(id),
                            Plan::Create | Plan::Lookup => None,
                        },
                    ),
                    failure: None,
                    row: None,
                    raw: None,
                    ledger_write: None,
                    intent_done: None,
                },
                Some(Outcome::Failed {
                    failure,
                    clear_intent,
                }) => failed_item(source, failure, was_create && clear_intent),
                // A missing card still unsettled is a failed row.
                Some(Outcome::Missing { failure }) => failed_item(source, failure, false),
                None => {
                    // Every path above sets an outcome; a row without one is reported, not lost.
                    let failure = RowFailure::new(
                        item.provenance.clone(),
                        FailureCode::PipefyUnavailable,
                        "internal: the row's outcome was not determined; the next run retries it",
                    );
                    failed_item(source, failure, false)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_cut_at_whole_requests() {
        // The requests in flight are full.
        assert!(cut_here(100, 100, 100, 20));
        // Many rows that need nothing, and 41 mutations: a cut here would leave a request
        // of one; the window waits for 60.
        assert!(!cut_here(MAX_WINDOW_ITEMS, 41, 100, 20));
        assert!(cut_here(MAX_WINDOW_ITEMS + 900, 60, 100, 20));
        // A window of rows that all need nothing is cut like before.
        assert!(cut_here(MAX_WINDOW_ITEMS, 0, 100, 20));
        // Memory decides past four times the rows.
        assert!(cut_here(MAX_WINDOW_ITEMS * 4, 41, 100, 20));
        assert!(!cut_here(10, 5, 100, 20));
    }
}
