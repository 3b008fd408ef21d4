//! Stage 3c, current values: before updating, read the cards or records whose update
//! depends on what Pipefy holds now, in one batched read per window, and settle those
//! targets:
//! - `write: if_empty`: the target is sent only while Pipefy's value is empty;
//! - `mode: add` on the `label_ids` / `assignee_ids` attributes: `updateCard` replaces those
//!   lists, so the row's items are added to the ones the card has. (Custom list fields in
//!   add mode need no read: `updateFieldsValues` adds with `operation: ADD`.)

use std::sync::atomic::Ordering;

use crate::config::{ListMode, WritePolicy};
use crate::mapping::{MappedRow, Mapper, Set, Target, TargetPlace};
use crate::pipefy::Card;
use crate::report::RowAction;

use super::plan::{ItemKind, Plan};
use super::requests::sends_nothing;
use super::window::{failure_for, op_failure, Outcome, Slot};
use super::{EngineError, RunShared};

/// Whether an update of `row` needs the card's current values first.
fn needs_current(targets: &[Target], row: &MappedRow) -> bool {
    targets.iter().any(|t| {
        let present = carries(row, &t.place);
        let adds_to_attribute = t.mode == ListMode::Add
            && matches!(t.place, TargetPlace::Labels | TargetPlace::Assignees);
        present && (t.write == WritePolicy::IfEmpty || adds_to_attribute)
    })
}

fn carries(row: &MappedRow, place: &TargetPlace) -> bool {
    match place {
        TargetPlace::Title => row.title.is_some(),
        TargetPlace::DueDate => row.due_date.is_some(),
        TargetPlace::Assignees => row.assignee_ids.is_some(),
        TargetPlace::Labels => row.label_ids.is_some(),
        TargetPlace::Parents => row.parent_ids.is_some(),
        TargetPlace::Field(slug) => row.fields.iter().any(|f| f.field_id == **slug),
    }
}

/// Whether Pipefy's value of the target is empty (a list field reads as `[]`).
fn is_empty_in(card: &Card, place: &TargetPlace) -> bool {
    let blank = |v: Option<&str>| {
        v.map(str::trim)
            .is_none_or(|s| s.is_empty() || s == "[]" || s == "null")
    };
    match place {
        TargetPlace::Title => blank(card.title.as_deref()),
        TargetPlace::DueDate => blank(card.due_date.as_deref()),
        TargetPlace::Assignees => card.assignees.is_empty(),
        TargetPlace::Labels => card.labels.is_empty(),
        // Parents are not written by updates.
        TargetPlace::Parents => true,
        TargetPlace::Field(slug) => blank(card.field(slug)),
    }
}

/// The row's update, settled against the card as Pipefy holds it.
fn settle(mapper: &Mapper, row: &mut MappedRow, card: &Card) {
    let targets = mapper.targets();
    let mut skip = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.write == WritePolicy::IfEmpty && !is_empty_in(card, &t.place) {
            skip.push(i);
            continue;
        }
        if t.mode != ListMode::Add {
            continue;
        }
        let (list, current): (_, Vec<&str>) = match t.place {
            TargetPlace::Labels => (
                &mut row.label_ids,
                card.labels.iter().map(|l| l.id.as_str()).collect(),
            ),
            TargetPlace::Assignees => (
                &mut row.assignee_ids,
                card.assignees.iter().map(|u| u.id.as_str()).collect(),
            ),
            _ => continue,
        };
        *list = match list.take() {
            Some(Set::Value(items)) => {
                let new: Vec<String> = items
                    .into_iter()
                    .filter(|i| !current.contains(&i.as_str()))
                    .collect();
                // Nothing new: the card keeps its list and needs no updateCard for it.
                (!new.is_empty()).then(|| {
                    let mut merged: Vec<String> = current.iter().map(|s| s.to_string()).collect();
                    merged.extend(new);
                    Set::Value(merged)
                })
            }
            // A blank row in add mode has nothing to add.
            Some(Set::Clear) | None => None,
        };
    }
    if !skip.is_empty() {
        // Updates reach this stage without the fields that are no target (the key field).
        mapper.retain_targets(row, |i| !skip.contains(&i));
    }
}

pub(super) async fn read_current(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<(), EngineError> {
    let targets = shared.mapper.targets();
    let mut idx = Vec::new();
    let mut ids = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        if slot.outcome.is_some() {
            continue;
        }
        if let ItemKind::Send {
            mapped,
            plan: Plan::Update { id, .. },
            ..
        } = &slot.item.kind
        {
            if needs_current(targets, mapped) {
                idx.push(i);
                ids.push(id.clone());
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let found = shared.client.current(&shared.repo, &ids).await?;
    shared
        .current_reads
        .fetch_add(ids.len() as u64, Ordering::SeqCst);
    let noun = super::noun(shared.dest.operation);
    for ((i, id), result) in idx.into_iter().zip(ids).zip(found) {
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        let card = match result {
            Ok(Some(card)) => card,
            Ok(None) => {
                let failure = failure_for(
                    &slot.item,
                    crate::failure::FailureCode::PipefyRejected,
                    format!("{noun} {id} no longer exists in Pipefy"),
                );
                slot.outcome = Some(Outcome::Failed {
                    failure,
                    clear_intent: false,
                });
                continue;
            }
            Err(e) => {
                let what = format!("reading {noun} {id} before updating it");
                slot.outcome = Some(Outcome::Failed {
                    failure: op_failure(&slot.item, &e, &what),
                    clear_intent: false,
                });
                continue;
            }
        };
        if let ItemKind::Send {
            mapped,
            plan: Plan::Update { move_phase, .. },
            ..
        } = &mut slot.item.kind
        {
            settle(&shared.mapper, mapped, &card);
            if !*move_phase && sends_nothing(&shared.repo, mapped) {
                // Every target this update had is already filled in Pipefy: the row is
                // recorded as written, nothing is sent.
                slot.outcome = Some(Outcome::Written {
                    action: RowAction::Unchanged,
                    id,
                });
            }
        }
    }
    Ok(())
}
