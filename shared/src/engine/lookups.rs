//! Stage 3a, lookups: upserts of keys the ledger does not know are looked up in Pipefy, in
//! one batch per window, and become updates or creates.

use super::plan::{ItemKind, Plan};
use super::window::{duplicate_in_pipefy, failure_for, op_failure, Outcome, Slot};
use super::{EngineError, RunShared};
use crate::failure::FailureCode;
use crate::pipefy::{ErrorClass, OpError};
use crate::report::RowAction;

/// Looks keys up in the destination's pipe/table. Per key: the ids found, or the error.
pub(super) async fn lookup_keys(
    shared: &RunShared,
    keys: &[String],
) -> Result<Vec<Result<Vec<String>, OpError>>, EngineError> {
    let Some(field) = &shared.key_field else {
        return Ok(keys
            .iter()
            .map(|_| {
                Err(OpError {
                    class: ErrorClass::Permanent,
                    code: None,
                    message: "the destination's key field is not in the pipe/table".into(),
                    attempts: 0,
                })
            })
            .collect());
    };
    Ok(shared
        .client
        .find_by_field(&shared.repo, field, keys)
        .await?)
}

/// Upserts of keys the ledger does not know: one batched lookup, then create or update.
pub(super) async fn resolve_lookups(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<(), EngineError> {
    let idx: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches!(
                &s.item.kind,
                ItemKind::Send {
                    plan: Plan::Lookup,
                    ..
                }
            )
        })
        .map(|(i, _)| i)
        .collect();
    if idx.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = idx
        .iter()
        .filter_map(|i| slots.get(*i).and_then(|s| s.item.key.clone()))
        .collect();
    let found = lookup_keys(shared, &keys).await?;
    for (i, result) in idx.into_iter().zip(found) {
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        let key = slot.item.key.clone().unwrap_or_default();
        let new_plan = match result {
            Ok(ids) if ids.is_empty() && !shared.dest.upsert.create => {
                slot.outcome = Some(Outcome::Failed {
                    failure: failure_for(
                        &slot.item,
                        FailureCode::NotFound,
                        format!(
                            "no {} holds key '{key}' and this destination only updates (upsert: {{create: false}})",
                            super::noun(shared.dest.operation)
                        ),
                    ),
                    clear_intent: false,
                });
                continue;
            }
            Ok(ids) if ids.is_empty() => Plan::Create,
            Ok(ids) if ids.len() == 1 && !shared.dest.upsert.update => {
                slot.outcome = Some(Outcome::Written {
                    action: RowAction::Exists,
                    id: ids.into_iter().next().unwrap_or_default(),
                });
                continue;
            }
            Ok(ids) if ids.len() == 1 => Plan::Update {
                id: ids.into_iter().next().unwrap_or_default(),
                move_phase: true,
            },
            Ok(ids) => {
                slot.outcome = Some(Outcome::Failed {
                    failure: duplicate_in_pipefy(shared, &slot.item, &ids),
                    clear_intent: false,
                });
                continue;
            }
            Err(e) => {
                slot.outcome = Some(Outcome::Failed {
                    failure: op_failure(&slot.item, &e, &format!("looking up key '{key}'")),
                    clear_intent: false,
                });
                continue;
            }
        };
        if let ItemKind::Send { plan, mapped, .. } = &mut slot.item.kind {
            // A found card only moves when the row names a phase, and is updated with every
            // target but those written only on create.
            *plan = match new_plan {
                Plan::Update { id, .. } => {
                    shared.mapper.without_create_only(mapped);
                    Plan::Update {
                        id,
                        move_phase: mapped.phase_id.is_some(),
                    }
                }
                other => other,
            };
        }
    }
    Ok(())
}
