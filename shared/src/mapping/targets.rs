//! Targets: the mapped attributes and custom fields of a destination, one per mapping entry,
//! each named by a slot (a hash of the entry) and fingerprinted per row, so a rerun sends
//! only the targets whose value changed since the last write (field-level sync).
//!
//! The card id, the phase (kept as its own hash in the ledger) and a key field the mapping
//! does not map (its value is the key, which never changes for a key) are not targets.

use xxhash_rust::xxh3::xxh3_64;

use crate::config::{FieldMapping, ListMode, OnConflict, SyncOptions, WritePolicy};
use crate::pipefy::Card;

use super::hash::{field_value_hash, list_hash, refs_hash, text_hash};
use super::{FieldValue, MappedRow, Mapper, Place, Set};

/// Where a target writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPlace {
    Title,
    DueDate,
    Assignees,
    Labels,
    Parents,
    /// A custom field, by slug.
    Field(Box<str>),
}

/// One mapped target and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The mapping key as written (`plan`, `title`).
    pub name: Box<str>,
    pub place: TargetPlace,
    /// Names the target in the ledger: a hash of what the mapping entry writes, so a changed
    /// source or transform is a new slot that every row writes once.
    pub slot: u64,
    pub write: WritePolicy,
    pub mode: ListMode,
    /// `on_conflict: keep_edits` applies: a value a person changed in Pipefy is left alone.
    pub keep_edits: bool,
    /// What Pipefy shows of the target after a write is recorded (`keep_edits`, or
    /// `sync.track_edits`): the baseline a person's edit is told by.
    pub tracks_shown: bool,
}

impl Target {
    pub(super) fn of(
        name: &str,
        place: &Place,
        fm: &FieldMapping,
        sync: &SyncOptions,
    ) -> Option<Target> {
        let place = match place {
            Place::Id | Place::Phase => return None,
            Place::Title => TargetPlace::Title,
            Place::DueDate => TargetPlace::DueDate,
            Place::Assignees => TargetPlace::Assignees,
            Place::Labels => TargetPlace::Labels,
            Place::Parents => TargetPlace::Parents,
            Place::Field(slug) => TargetPlace::Field(slug.clone()),
        };
        // What the entry writes, as canonical JSON (the same whatever its YAML spelling):
        // the source, transforms and null policy. How it writes (`write`, `mode`,
        // `on_conflict`) is left out, so turning on `keep_edits` or `if_empty` for an entry
        // does not send it to every row once, over what people changed.
        let what = FieldMapping {
            write: WritePolicy::default(),
            mode: ListMode::default(),
            on_conflict: None,
            ..fm.clone()
        };
        let definition = serde_json::to_vec(&(name, &what)).unwrap_or_default();
        let keep_edits = fm.on_conflict.unwrap_or(sync.on_conflict) == OnConflict::KeepEdits;
        Some(Target {
            name: name.into(),
            place,
            slot: xxh3_64(&definition),
            write: fm.write,
            mode: fm.mode,
            keep_edits,
            tracks_shown: keep_edits || sync.track_edits,
        })
    }

    /// The ledger slot of what Pipefy showed of the target right after pipefy-sync last
    /// wrote it: the baseline a person's edit is told by.
    pub fn shown_slot(&self) -> u64 {
        self.slot.rotate_left(17) ^ SHOWN_SALT
    }

    /// The target's value as Pipefy shows it on `card` (list ids sorted; nothing: empty).
    pub fn shown(&self, card: &Card) -> String {
        let sorted = |mut ids: Vec<&str>| {
            ids.sort_unstable();
            ids.join(",")
        };
        match &self.place {
            TargetPlace::Title => card.title.clone().unwrap_or_default(),
            TargetPlace::DueDate => card.due_date.clone().unwrap_or_default(),
            TargetPlace::Labels => sorted(card.labels.iter().map(|l| l.id.as_str()).collect()),
            TargetPlace::Assignees => {
                sorted(card.assignees.iter().map(|u| u.id.as_str()).collect())
            }
            // Parents are not read back; they are never taken for a person's edit.
            TargetPlace::Parents => String::new(),
            TargetPlace::Field(slug) => card.field(slug).unwrap_or_default().to_string(),
        }
    }

    /// The fingerprint of a shown value.
    pub fn shown_fingerprint(shown: &str) -> u32 {
        fingerprint(xxh3_64(shown.as_bytes()))
    }

    /// The target's value in `row` as text, for a report.
    pub fn table_text(&self, row: &MappedRow) -> String {
        let set_text = |s: &Option<Set<String>>| match s {
            Some(Set::Value(v)) => v.clone(),
            _ => String::new(),
        };
        let set_list = |s: &Option<Set<Vec<String>>>| match s {
            Some(Set::Value(v)) => v.join(","),
            _ => String::new(),
        };
        match &self.place {
            TargetPlace::Title => set_text(&row.title),
            TargetPlace::DueDate => set_text(&row.due_date),
            TargetPlace::Labels => set_list(&row.label_ids),
            TargetPlace::Assignees => set_list(&row.assignee_ids),
            TargetPlace::Parents => String::new(),
            TargetPlace::Field(slug) => match field_of(row, slug) {
                Some(FieldValue::Json(serde_json::Value::String(s))) => s.clone(),
                Some(FieldValue::Json(v)) => v.to_string(),
                Some(FieldValue::Connect(refs)) => format!("{} connections", refs.len()),
                Some(FieldValue::Files(files)) => files
                    .iter()
                    .map(crate::mapping::FileRef::location)
                    .collect::<Vec<_>>()
                    .join(","),
                Some(FieldValue::Clear) | None => String::new(),
            },
        }
    }
}

/// Keeps the shown-value slots apart from the value slots.
const SHOWN_SALT: u64 = 0x5348_4f57_4e00_0001;

/// A fingerprint that is never 0 (0 is the ledger's "nothing recorded").
fn fingerprint(h: u64) -> u32 {
    (h as u32) | 1
}

impl Mapper {
    /// The destination's targets: attributes in a fixed order, then fields by slug.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The fingerprint of each target's value in `row`, in the order of [`Mapper::targets`]:
    /// `None` where the row leaves the target alone (a blank value with `on_null: leave`).
    pub fn fingerprints(&self, row: &MappedRow) -> Vec<Option<u32>> {
        self.targets
            .iter()
            .map(|t| {
                let h = match &t.place {
                    TargetPlace::Title => row.title.as_ref().map(text_hash),
                    TargetPlace::DueDate => row.due_date.as_ref().map(text_hash),
                    TargetPlace::Assignees => row.assignee_ids.as_ref().map(list_hash),
                    TargetPlace::Labels => row.label_ids.as_ref().map(list_hash),
                    TargetPlace::Parents => row.parent_ids.as_deref().map(refs_hash),
                    TargetPlace::Field(slug) => field_of(row, slug).map(field_value_hash),
                };
                h.map(fingerprint)
            })
            .collect()
    }

    /// Leaves out of `row` the targets written only on create: what an update of a card
    /// pipefy-sync did not write before (found by its key) sends.
    pub fn without_create_only(&self, row: &mut MappedRow) {
        self.retain_targets(row, |i| {
            self.targets
                .get(i)
                .is_some_and(|t| t.write != WritePolicy::OnCreate)
        });
    }

    /// Leaves in `row` only the targets `keep` says yes to (by index in
    /// [`Mapper::targets`]); the phase and the card id are not targets and stay. Fields that
    /// are no target (the key field the mapping does not map) go: they never change.
    pub fn retain_targets(&self, row: &mut MappedRow, keep: impl Fn(usize) -> bool) {
        let mut kept_fields: Vec<&str> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let kept = keep(i);
            match (&t.place, kept) {
                (TargetPlace::Field(slug), true) => kept_fields.push(slug),
                (TargetPlace::Title, false) => row.title = None,
                (TargetPlace::DueDate, false) => row.due_date = None,
                (TargetPlace::Assignees, false) => row.assignee_ids = None,
                (TargetPlace::Labels, false) => row.label_ids = None,
                (TargetPlace::Parents, false) => row.parent_ids = None,
                _ => {}
            }
        }
        row.fields
            .retain(|f| kept_fields.contains(&f.field_id.as_str()));
    }
}

fn field_of<'r>(row: &'r MappedRow, slug: &str) -> Option<&'r FieldValue> {
    row.fields
        .binary_search_by(|f| f.field_id.as_str().cmp(slug))
        .ok()
        .and_then(|i| row.fields.get(i))
        .map(|f| &f.value)
}
