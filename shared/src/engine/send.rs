//! Stage 4, send: intents are made durable before creates leave, then the window's writes go
//! out as aliased batches, and each row's results are folded into its outcome.

use std::collections::HashMap;

use crate::failure::FailureCode;
use crate::pipefy::client::is_not_found;
use crate::pipefy::{ErrorClass, OpResult, NOT_SENT};
use crate::report::RowAction;
use crate::state::Intent;

use super::ambiguous::resolve_ambiguous;
use super::connections::ResolvedConnections;
use super::plan::{ItemKind, Plan, WorkItem};
use super::removed::RemovalOp;
use super::requests::{create_op, update_ops, OpRole};
use super::window::{failure_for, op_failure, Outcome, Slot, LEASE_LOST};
use super::{EngineError, RunShared};

pub(super) fn is_create(slot: &Slot) -> bool {
    slot.outcome.is_none()
        && matches!(
            &slot.item.kind,
            ItemKind::Send {
                plan: Plan::Create,
                ..
            }
        )
}

/// Intents are durable before the creates leave: a crash after sending can always be
/// resolved by looking the keys up.
pub(super) async fn record_intents(shared: &RunShared, slots: &[Slot]) -> Result<(), EngineError> {
    let Some(writer) = &shared.state else {
        return Ok(());
    };
    let run_id = shared.run_id.clone();
    let intents: Vec<Intent> = slots
        .iter()
        .filter(|s| is_create(s))
        .map(|s| {
            let (value_hash, phase_hash) = match &s.item.kind {
                ItemKind::Send { hash, phase, .. } => (*hash, *phase),
                ItemKind::Done { .. } => (0, 0),
            };
            Intent {
                key_hash: s.item.key_hash,
                key: if s.item.keyed {
                    s.item.key.clone()
                } else {
                    None
                },
                provenance: s.item.provenance.clone(),
                run_id: run_id.clone(),
                value_hash,
                phase_hash,
            }
        })
        .collect();
    writer.record_intents(intents).await?;
    Ok(())
}

pub(super) async fn send(
    shared: &RunShared,
    slots: &mut [Slot],
    conns: &ResolvedConnections,
) -> Result<(), EngineError> {
    // Build every op of the window, remembering which slot and role each belongs to.
    let mut ops = Vec::new();
    let mut owners: Vec<(usize, OpRole)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.outcome.is_some() {
            continue;
        }
        let ItemKind::Send { mapped, plan, .. } = &slot.item.kind else {
            continue;
        };
        match plan {
            Plan::Create => {
                ops.push(create_op(&shared.repo, mapped, conns));
                owners.push((i, OpRole::Create));
            }
            Plan::Update { id, move_phase } => {
                let adds = |field: &str| shared.adds_to(field);
                let row_ops = update_ops(&shared.repo, id, mapped, *move_phase, conns, &adds);
                if row_ops.is_empty() {
                    slot.outcome = Some(Outcome::Written {
                        action: RowAction::Updated,
                        id: id.clone(),
                    });
                }
                for (role, op) in row_ops {
                    ops.push(op);
                    owners.push((i, role));
                }
            }
            Plan::Remove { id } => {
                if let Some(removal) = &shared.removal {
                    ops.push(removal.mutation(&shared.repo, id));
                    owners.push((i, OpRole::Remove));
                }
            }
            Plan::Lookup => {}
        }
    }
    let results = shared.client.mutate(ops, shared.gate()).await?;
    let mut per_slot: HashMap<usize, Vec<(OpRole, OpResult)>> = HashMap::new();
    for ((i, role), result) in owners.into_iter().zip(results) {
        per_slot.entry(i).or_default().push((role, result));
    }
    let mut ambiguous: Vec<usize> = Vec::new();
    for (i, results) in per_slot {
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        if fold_results(shared, slot, results) {
            ambiguous.push(i);
        }
    }
    ambiguous.sort_unstable();
    resolve_ambiguous(shared, slots, ambiguous, conns).await
}

/// Whether Pipefy's answer to an update may mean the card or record is gone: a not-found
/// code, or `PERMISSION_DENIED`, which Pipefy usually answers for an id that does not exist
/// (docs/pipefy-api.md §7).
pub(super) fn is_missing(code: Option<&str>) -> bool {
    is_not_found(code) || code == Some("PERMISSION_DENIED")
}

/// Sets the slot's outcome from its ops' results; `true` when it is an ambiguous create,
/// left without an outcome for [`resolve_ambiguous`].
pub(super) fn fold_results(
    shared: &RunShared,
    slot: &mut Slot,
    results: Vec<(OpRole, OpResult)>,
) -> bool {
    let noun = super::noun(shared.dest.operation);
    let mut created_id = None;
    let mut update_error = None;
    let mut move_error = None;
    for (role, result) in results {
        match (role, result) {
            (_, Err(e)) if e.code.as_deref() == Some(NOT_SENT) => {
                slot.outcome = Some(Outcome::Failed {
                    failure: failure_for(&slot.item, FailureCode::NotAttempted, LEASE_LOST.into()),
                    // Never sent, but a run that lost its lease leaves its intents to the
                    // run that holds the destination now, which looks them up.
                    clear_intent: false,
                });
                return false;
            }
            (OpRole::Remove, result) => {
                slot.outcome = Some(removal_outcome(shared, &slot.item, result));
                return false;
            }
            (OpRole::Create, Ok(ok)) => created_id = ok.id,
            (OpRole::Create, Err(e)) if e.class == ErrorClass::Ambiguous => return true,
            (OpRole::Create, Err(e)) => {
                slot.outcome = Some(Outcome::Failed {
                    failure: op_failure(&slot.item, &e, &format!("create {noun}")),
                    // Pipefy refused it: nothing was created.
                    clear_intent: e.class == ErrorClass::Permanent,
                });
                return false;
            }
            (OpRole::Update, Err(e)) => {
                update_error.get_or_insert(e);
            }
            (OpRole::Move, Err(e)) => {
                move_error.get_or_insert(e);
            }
            (_, Ok(_)) => {}
        }
    }
    let id = match &slot.item.kind {
        ItemKind::Send {
            plan: Plan::Update { id, .. },
            ..
        } => Some(id.clone()),
        _ => created_id,
    };
    slot.outcome = Some(match (update_error, move_error, id) {
        (Some(e), _, Some(id)) if is_missing(e.code.as_deref()) => Outcome::Missing {
            failure: op_failure(&slot.item, &e, &format!("update {noun} {id}")),
        },
        (Some(e), _, Some(id)) => Outcome::Failed {
            failure: op_failure(&slot.item, &e, &format!("update {noun} {id}")),
            clear_intent: false,
        },
        (None, Some(e), Some(id)) => Outcome::Failed {
            failure: {
                let mut f = op_failure(&slot.item, &e, &format!("move card {id} to its phase"));
                f.code = FailureCode::MoveRefused;
                f.with_field("phase_id")
            },
            clear_intent: false,
        },
        (None, None, Some(id)) => Outcome::Written {
            action: if matches!(
                &slot.item.kind,
                ItemKind::Send {
                    plan: Plan::Create,
                    ..
                }
            ) {
                RowAction::Created
            } else {
                RowAction::Updated
            },
            id,
        },
        // A create that answered without an id: its outcome is as unknown as a timeout's.
        (_, _, None) => return true,
    });
    false
}

/// A removal's result. A card or record that is already gone (deleted by a person) counts
/// as removed: the key is forgotten either way.
pub(super) fn removal_outcome(shared: &RunShared, item: &WorkItem, result: OpResult) -> Outcome {
    let ItemKind::Send {
        plan: Plan::Remove { id },
        ..
    } = &item.kind
    else {
        return Outcome::Failed {
            failure: failure_for(
                item,
                FailureCode::PipefyRejected,
                "internal: not a removal".into(),
            ),
            clear_intent: false,
        };
    };
    let is_move = shared.removal.as_ref().is_some_and(RemovalOp::is_move);
    let action = if is_move {
        RowAction::Moved
    } else {
        RowAction::Deleted
    };
    match result {
        Ok(_) => Outcome::Written {
            action,
            id: id.clone(),
        },
        Err(e) if !is_move && is_not_found(e.code.as_deref()) => Outcome::Written {
            action,
            id: id.clone(),
        },
        Err(e) => {
            let what = format!(
                "{} of {} {id} (its row left the table)",
                if is_move { "move" } else { "delete" },
                super::noun(shared.dest.operation)
            );
            let mut failure = op_failure(item, &e, &what);
            if is_move {
                failure.code = FailureCode::MoveRefused;
            }
            Outcome::Failed {
                failure,
                clear_intent: false,
            }
        }
    }
}
