//! Stage 5, unknown outcomes: a create that Pipefy may have applied without saying so is
//! looked up by its key (after a settle time) and only sent again when it is surely absent;
//! creates left unconfirmed by a crashed run are resolved the same way before a run starts.

use crate::failure::FailureCode;
use crate::pipefy::FieldDef;
use crate::report::RowAction;
use crate::state::Intent;

use super::connections::ResolvedConnections;
use super::lookups::lookup_keys;
use super::plan::ItemKind;
use super::requests::{create_op, OpRole, Repo};
use super::send::fold_results;
use super::window::{duplicate_in_pipefy, failure_for, op_failure, Outcome, Slot};
use super::{now_minutes, EngineError, PipefyApi, RunShared};

/// What the leftover intents of a crashed run turned out to be.
pub(super) struct SettledIntents {
    /// Found in Pipefy by their key: recorded, never created again.
    pub found: Vec<(u64, crate::state::Entry)>,
    /// Not resolvable (no key, several cards hold it, the lookup failed): kept, and their
    /// rows reported rather than created again.
    pub kept: Vec<Intent>,
}

/// Looks the keys of a crashed run's intents up. An intent whose key is not in Pipefy is
/// simply dropped: its row is created normally when it is read.
pub(super) async fn resolve_leftover_intents(
    api: &dyn PipefyApi,
    repo: &Repo,
    key_field: Option<&FieldDef>,
    intents: Vec<Intent>,
) -> Result<SettledIntents, EngineError> {
    let mut recorded = Vec::new();
    let (keyed, unkeyed): (Vec<Intent>, Vec<Intent>) = intents
        .into_iter()
        .partition(|i| i.key.is_some() && key_field.is_some());
    let keys: Vec<String> = keyed.iter().filter_map(|i| i.key.clone()).collect();
    let found = match key_field {
        Some(f) if !keys.is_empty() => api.find_by_field(repo, f, &keys).await?,
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
                            written_at_min: now_minutes(),
                            ..crate::state::Entry::new(
                                crate::state::RecordId::parse(id),
                                intent.value_hash,
                                intent.phase_hash,
                            )
                        },
                    ));
                }
                tracing::info!(key = ?intent.key, "an interrupted create had been applied; recorded it");
            }
            // Not created: the row is created normally when it is read.
            Ok(ids) if ids.is_empty() => {}
            // Several cards hold the key, or the lookup failed: keep the intent so the row is
            // reported rather than created again.
            _ => kept.push(intent),
        }
    }
    kept.extend(unkeyed);
    Ok(SettledIntents {
        found: recorded,
        kept,
    })
}

/// How many times an ambiguous create is looked up and, if absent, sent again.
pub(super) const AMBIGUOUS_ROUNDS: usize = 3;

/// Resolves creates whose outcome is unknown: wait for Pipefy to settle, look the key up,
/// and only send the create again when the key is certainly absent.
pub(super) async fn resolve_ambiguous(
    shared: &RunShared,
    slots: &mut [Slot],
    mut pending: Vec<usize>,
    conns: &ResolvedConnections,
) -> Result<(), EngineError> {
    for round in 0..AMBIGUOUS_ROUNDS {
        if pending.is_empty() {
            return Ok(());
        }
        // Rows without a key cannot be looked up: report them, keep their intents.
        pending.retain(|i| {
            let Some(slot) = slots.get_mut(*i) else { return false };
            if slot.item.keyed && shared.key_field.is_some() {
                return true;
            }
            slot.outcome = Some(Outcome::Failed {
                failure: failure_for(
                    &slot.item,
                    FailureCode::AmbiguousCreate,
                    "Pipefy did not confirm the create and the destination has no key to look it up by; it is not sent again, so it cannot become a duplicate. Check the pipe, then run `pipefy-sync forget-intents` to let the next run create it".into(),
                ),
                clear_intent: false,
            });
            false
        });
        if pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(shared.settle).await;
        let keys: Vec<String> = pending
            .iter()
            .filter_map(|i| slots.get(*i).and_then(|s| s.item.key.clone()))
            .collect();
        let found = lookup_keys(shared, &keys).await?;
        let mut resend = Vec::new();
        for (i, result) in pending.iter().copied().zip(found) {
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            match result {
                Ok(ids) if ids.len() == 1 => {
                    slot.outcome = Some(Outcome::Written {
                        action: RowAction::Created,
                        id: ids.into_iter().next().unwrap_or_default(),
                    });
                }
                Ok(ids) if ids.is_empty() => resend.push(i),
                Ok(ids) => {
                    slot.outcome = Some(Outcome::Failed {
                        failure: duplicate_in_pipefy(shared, &slot.item, &ids),
                        clear_intent: true,
                    });
                }
                Err(e) => {
                    // Unknown still: leave the intent for the next run to resolve.
                    slot.outcome = Some(Outcome::Failed {
                        failure: op_failure(&slot.item, &e, "looking up an unconfirmed create"),
                        clear_intent: false,
                    });
                }
            }
        }
        if resend.is_empty() || round + 1 == AMBIGUOUS_ROUNDS {
            for i in &resend {
                if let Some(slot) = slots.get_mut(*i) {
                    slot.outcome = Some(Outcome::Failed {
                        failure: failure_for(
                            &slot.item,
                            FailureCode::AmbiguousCreate,
                            format!("Pipefy did not confirm the create after {AMBIGUOUS_ROUNDS} tries and the key is not found; the next run looks it up again"),
                        ),
                        clear_intent: false,
                    });
                }
            }
            return Ok(());
        }
        // Certainly absent: sending the create again cannot make a duplicate.
        let ops: Vec<_> = resend
            .iter()
            .filter_map(|i| match slots.get(*i).map(|s| &s.item.kind) {
                Some(ItemKind::Send { mapped, .. }) => Some(create_op(&shared.repo, mapped, conns)),
                _ => None,
            })
            .collect();
        let results = shared.client.mutate(ops, shared.gate()).await?;
        let mut still = Vec::new();
        for (i, result) in resend.into_iter().zip(results) {
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            if fold_results(shared, slot, vec![(OpRole::Create, result)]) {
                still.push(i);
            }
        }
        pending = still;
    }
    Ok(())
}
