//! Stage 3c, current values: before updating, read the cards or records whose update
//! depends on what Pipefy holds now, in one batched read per window, and settle those
//! targets:
//! - `write: if_empty`: the target is sent only while Pipefy's value is empty;
//! - `mode: add` on the `label_ids` / `assignee_ids` attributes: `updateCard` replaces those
//!   lists, so the row's items are added to the ones the card has. (Custom list fields in
//!   add mode need no read: `updateFieldsValues` adds with `operation: ADD`.)
//! - `on_conflict: keep_edits`: a target whose value in Pipefy is no longer what Pipefy
//!   showed right after pipefy-sync last wrote it was changed by a person; it is left alone
//!   and the row's result says so.
//!
//! And after the writes, for `keep_edits` destinations: what Pipefy shows of the targets just
//! written, the baseline the next run tells a person's edit by ([`read_shown`]).

use std::sync::atomic::Ordering;

use crate::config::{ListMode, WritePolicy};
use crate::mapping::{MappedRow, Mapper, Set, Target, TargetPlace};
use crate::pipefy::Card;
use crate::report::{KeptEdit, RowAction};

use super::pipefy_api::CurrentResults;
use super::plan::{ItemKind, Plan};
use super::requests::sends_nothing;
use super::window::{failure_for, op_failure, Outcome, Slot};
use super::{EngineError, RunShared};

/// Whether an update of `row` needs the card's current values first. `recorded`: the
/// ledger's fingerprints for the row (a `keep_edits` target is checked only once a baseline
/// of it was recorded).
fn needs_current(targets: &[Target], row: &MappedRow, recorded: &[(u64, u32)]) -> bool {
    targets.iter().any(|t| {
        let present = carries(row, &t.place);
        let adds_to_attribute = t.mode == ListMode::Add
            && matches!(t.place, TargetPlace::Labels | TargetPlace::Assignees);
        let has_baseline = t.keep_edits && recorded.iter().any(|(s, _)| *s == t.shown_slot());
        present && (t.write == WritePolicy::IfEmpty || adds_to_attribute || has_baseline)
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

/// The row's update, settled against the card as Pipefy holds it; the values people
/// changed that are kept.
fn settle(
    mapper: &Mapper,
    row: &mut MappedRow,
    card: &Card,
    recorded: &[(u64, u32)],
) -> Vec<KeptEdit> {
    let targets = mapper.targets();
    let mut skip = Vec::new();
    let mut kept = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.write == WritePolicy::IfEmpty && !is_empty_in(card, &t.place) {
            skip.push(i);
            continue;
        }
        let baseline = recorded
            .iter()
            .find(|(s, _)| *s == t.shown_slot())
            .map(|(_, f)| *f);
        if let (true, true, Some(baseline)) = (t.keep_edits, carries(row, &t.place), baseline) {
            let shown = t.shown(card);
            if Target::shown_fingerprint(&shown) != baseline {
                kept.push(KeptEdit {
                    field: t.name.to_string(),
                    in_pipefy: shown,
                    in_table: t.table_text(row),
                });
                skip.push(i);
                continue;
            }
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
    kept
}

/// The cards or records, read in batches and counted in the summary.
async fn read(shared: &RunShared, ids: &[String]) -> Result<CurrentResults, EngineError> {
    let found = shared.client.current(&shared.repo, ids).await?;
    shared
        .current_reads
        .fetch_add(ids.len() as u64, Ordering::SeqCst);
    Ok(found)
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
            targets: recorded,
            ..
        } = &slot.item.kind
        {
            if needs_current(targets, mapped, recorded) {
                idx.push(i);
                ids.push(id.clone());
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let found = read(shared, &ids).await?;
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
            targets: recorded,
            ..
        } = &mut slot.item.kind
        {
            slot.kept = settle(&shared.mapper, mapped, &card, recorded);
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

/// After the writes of a destination that tracks edits (`keep_edits`, `sync.track_edits`): reads the cards and records just created
/// or updated (many per request, counted with the other reads) and records what Pipefy shows
/// of each target written, the baseline the next run tells a person's edit by. Targets the
/// update did not send keep their baseline, so an edit a person made there stays known.
pub(super) async fn read_shown(shared: &RunShared, slots: &mut [Slot]) -> Result<(), EngineError> {
    let targets = shared.mapper.targets();
    if !targets.iter().any(|t| t.tracks_shown) {
        return Ok(());
    }
    let mut idx = Vec::new();
    let mut ids = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let Some(Outcome::Written { action, id }) = &slot.outcome else {
            continue;
        };
        let written = matches!(
            action,
            RowAction::Created | RowAction::Updated | RowAction::Recreated
        );
        if let (true, ItemKind::Send { mapped, .. }) = (written, &slot.item.kind) {
            if targets
                .iter()
                .any(|t| t.tracks_shown && carries(mapped, &t.place))
            {
                idx.push(i);
                ids.push(id.clone());
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let found = read(shared, &ids).await?;
    for (i, result) in idx.into_iter().zip(found) {
        // Not readable now: the baseline stays as it was, and the next run overwrites (the
        // behaviour without keep_edits) rather than guess.
        let Ok(Some(card)) = result else { continue };
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        if let ItemKind::Send {
            mapped,
            targets: recorded,
            ..
        } = &mut slot.item.kind
        {
            let mut next: Vec<(u64, u32)> = recorded.to_vec();
            for t in targets
                .iter()
                .filter(|t| t.tracks_shown && carries(mapped, &t.place))
            {
                let f = Target::shown_fingerprint(&t.shown(&card));
                next.retain(|(s, _)| *s != t.shown_slot());
                next.push((t.shown_slot(), f));
            }
            *recorded = next.into_boxed_slice();
        }
    }
    Ok(())
}
