//! Stage 4b, missing cards: an update Pipefy answered as if its card or record did not exist
//! (a person deleted it, or merged it into another). The row's key is looked up again:
//! - found under another id: the row updates that card or record, and the ledger follows;
//! - not found: an upsert creates it again (`recreated` in the results), through the same
//!   intent protocol as every create;
//! - otherwise (`update_card`, update-only upserts, the same id found, a failed lookup): the
//!   row fails, `DELETED_IN_PIPEFY` when the card is gone.
//!
//! Never a silent success, and never a row that fails the same way on every run.

use crate::config::Operation;
use crate::failure::{FailureCode, RowFailure};

use super::lookups::lookup_keys;
use super::plan::{ItemKind, Plan};
use super::window::{duplicate_in_pipefy, failure_for, Outcome, Slot};
use super::{EngineError, RunShared};

/// The failure of a row whose card or record is gone and is not created again.
fn deleted(shared: &RunShared, slot: &Slot, id: &str) -> RowFailure {
    let noun = super::noun(shared.dest.operation);
    let why = match shared.dest.operation {
        Operation::UpdateCard => "update_card never creates",
        _ => "this destination only updates (upsert: {create: false})",
    };
    failure_for(
        &slot.item,
        FailureCode::DeletedInPipefy,
        format!(
            "{noun} {id} is no longer in Pipefy (deleted, or this token cannot see it) and {why}; restore it in Pipefy, or remove the row"
        ),
    )
}

fn planned_id(slot: &Slot) -> String {
    match &slot.item.kind {
        ItemKind::Send {
            plan: Plan::Update { id, .. },
            ..
        } => id.clone(),
        _ => String::new(),
    }
}

/// Settles the rows whose update found no card or record. `true` when some were planned
/// again (an update of another id, or a create) and must be sent.
pub(super) async fn resolve_missing(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<bool, EngineError> {
    let upsert = matches!(
        shared.dest.operation,
        Operation::UpsertCard | Operation::UpsertRecord
    );
    let mut idx = Vec::new();
    let mut keys = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(Outcome::Missing { failure }) = &slot.outcome else {
            continue;
        };
        match (&slot.item.key, upsert && slot.item.keyed) {
            (Some(key), true) => {
                idx.push(i);
                keys.push(key.clone());
            }
            // A card id the ledger never wrote (update_card of an id from the table): Pipefy's
            // refusal is the answer.
            _ if !slot.item.in_ledger => {
                let failure = failure.clone();
                slot.outcome = Some(Outcome::Failed {
                    failure,
                    clear_intent: false,
                });
            }
            _ => {
                // Without a key there is nothing to look up: the card is gone for good,
                // unless Pipefy's answer meant something else, which its message says.
                let id = planned_id(slot);
                let mut f = deleted(shared, slot, &id);
                f.message = format!("{}; Pipefy answered: {}", f.message, failure.message);
                slot.outcome = Some(Outcome::Failed {
                    failure: f,
                    clear_intent: false,
                });
            }
        }
    }
    if idx.is_empty() {
        return Ok(false);
    }
    let found = lookup_keys(shared, &keys).await?;
    let mut replanned = false;
    for (i, result) in idx.into_iter().zip(found) {
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        let old_id = planned_id(slot);
        let original = match slot.outcome.take() {
            Some(Outcome::Missing { failure }) => failure,
            other => {
                slot.outcome = other;
                continue;
            }
        };
        let new_plan = match result {
            Ok(ids) if ids.len() > 1 => {
                slot.outcome = Some(Outcome::Failed {
                    failure: duplicate_in_pipefy(shared, &slot.item, &ids),
                    clear_intent: false,
                });
                continue;
            }
            Ok(ids) => match ids.into_iter().next() {
                Some(id) if id != old_id => Plan::Update {
                    id,
                    move_phase: true,
                },
                // The same card answers the lookup: Pipefy's refusal was about something
                // else, and stands.
                Some(_) => {
                    slot.outcome = Some(Outcome::Failed {
                        failure: original,
                        clear_intent: false,
                    });
                    continue;
                }
                None if shared.dest.upsert.create => Plan::Create,
                None => {
                    slot.outcome = Some(Outcome::Failed {
                        failure: deleted(shared, slot, &old_id),
                        clear_intent: false,
                    });
                    continue;
                }
            },
            Err(_) => {
                // Nothing is known: the row fails as Pipefy answered, and the next run
                // looks again.
                slot.outcome = Some(Outcome::Failed {
                    failure: original,
                    clear_intent: false,
                });
                continue;
            }
        };
        // The new card or record holds nothing of the row yet: the whole row goes, from
        // its source (the planned update carried only the targets that had changed).
        let full = slot
            .item
            .row
            .as_ref()
            .map(|row| shared.mapper.map_with_key(row, slot.item.key.clone()));
        let Some(Ok(mut full)) = full else {
            slot.outcome = Some(Outcome::Failed {
                failure: original,
                clear_intent: false,
            });
            continue;
        };
        let create = matches!(new_plan, Plan::Create);
        let new_plan = match new_plan {
            Plan::Update { id, .. } => {
                shared.mapper.without_create_only(&mut full);
                Plan::Update {
                    id,
                    move_phase: full.phase_id.is_some(),
                }
            }
            other => other,
        };
        if let ItemKind::Send { mapped, plan, .. } = &mut slot.item.kind {
            **mapped = full;
            *plan = new_plan;
            slot.recreate = create;
            replanned = true;
        }
    }
    Ok(replanned)
}
