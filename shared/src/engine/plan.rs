//! Stage 2, plan: what one row becomes (create, update, look up, remove, or nothing), from
//! the mapping and the ledger as it was when the run started. Pure: no request is sent here.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Operation, WritePolicy};
use crate::failure::{FailureCode, RowFailure};
use crate::mapping::{canonical_hash, MappedRow, Target};
use crate::pipefy::MAX_VALUES_PER_UPDATE;
use crate::report::{RowAction, RowResult};
use crate::source::{Provenance, Row, RowError};
use crate::state::ledger::SlotLookup;
use crate::state::{key_hash, phase_hash, Entry, Ledger, RecordId, SeenKeys};
use crate::store::ObjectMeta;

use super::requests::sends_nothing;
use super::RunShared;

/// The id recorded for rows marked synced without sending (skip_initial_backfill): the card
/// exists but its id is not known; an update looks the key up first.
pub(crate) const UNKNOWN_ID: &str = "?";

#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Create,
    Update {
        id: String,
        move_phase: bool,
    },
    /// Upsert of a key the ledger does not know: look it up in Pipefy first.
    Lookup,
    /// The key left the table: move or delete its card or record.
    Remove {
        id: String,
    },
}

// `Done` (unchanged rows, the common case of a rerun) is the larger variant; boxing it would
// allocate for every such row, to save a few bytes on the bounded windows in flight.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ItemKind {
    /// Nothing to send: unchanged, or failed before sending.
    Done {
        result: RowResult,
        failure: Option<RowFailure>,
        /// skip_initial_backfill: record without sending.
        record: Option<Entry>,
    },
    Send {
        /// What the row sends: for an update of a key the ledger knows, only the targets
        /// that changed.
        mapped: Box<MappedRow>,
        hash: u64,
        phase: u32,
        /// The target fingerprints the ledger records once the row is written.
        targets: Box<[(u64, u32)]>,
        plan: Plan,
    },
}

pub(crate) struct WorkItem {
    pub provenance: Provenance,
    pub row: Option<Row>,
    pub raw: Option<String>,
    pub key: Option<String>,
    pub key_hash: u64,
    /// Whether the destination has a real key (lookups possible).
    pub keyed: bool,
    /// Whether the ledger knew the row's key when it was planned (its card was written by
    /// pipefy-sync before).
    pub in_ledger: bool,
    pub kind: ItemKind,
}

impl WorkItem {
    /// The one constructor: an item of `kind` read at `provenance`, with no key until
    /// [`WorkItem::identified`] gives it one.
    fn new(provenance: Provenance, row: Option<Row>, key: Option<String>, kind: ItemKind) -> Self {
        WorkItem {
            provenance,
            row,
            raw: None,
            key,
            key_hash: 0,
            keyed: false,
            in_ledger: false,
            kind,
        }
    }

    /// The row's identity, for lookups, intents and the ledger.
    fn identified(mut self, key_hash: u64, keyed: bool) -> Self {
        self.key_hash = key_hash;
        self.keyed = keyed;
        self
    }

    /// A row that ends here, failed with `failure`, reported as `action`.
    fn failed(
        provenance: Provenance,
        row: Option<Row>,
        key: Option<String>,
        failure: RowFailure,
        action: RowAction,
    ) -> Self {
        let result = RowResult::failed(&failure, key.clone(), action);
        let kind = ItemKind::Done {
            result,
            failure: Some(failure),
            record: None,
        };
        WorkItem::new(provenance, row, key, kind)
    }

    pub fn read_failure(e: RowError) -> Self {
        let raw = e.raw.clone();
        let failure = RowFailure::from(e);
        let mut item = WorkItem::failed(
            failure.provenance.clone(),
            None,
            None,
            failure,
            RowAction::Skipped,
        );
        item.raw = raw;
        item
    }

    pub fn not_attempted(row: Row, key: Option<String>) -> Self {
        let provenance = row.provenance.clone();
        Self::not_sent(
            provenance,
            Some(row),
            key,
            "not attempted: partial success is off and an earlier row failed",
        )
    }

    /// A row that is not sent, reported as `NOT_ATTEMPTED` with why.
    pub(super) fn not_sent(
        provenance: Provenance,
        row: Option<Row>,
        key: Option<String>,
        why: &str,
    ) -> Self {
        let failure = RowFailure::new(provenance.clone(), FailureCode::NotAttempted, why);
        WorkItem::failed(provenance, row, key, failure, RowAction::NotAttempted)
    }

    /// The move or delete of a removed key's card or record.
    pub fn removal(key_hash: u64, id: String, n: u64) -> Self {
        let kind = ItemKind::Send {
            mapped: Box::default(),
            hash: 0,
            phase: 0,
            targets: Box::default(),
            plan: Plan::Remove { id },
        };
        WorkItem::new(super::removed::provenance(n), None, None, kind).identified(key_hash, false)
    }

    pub(super) fn preflight_failure(row: Row, key: Option<String>, failure: RowFailure) -> Self {
        let provenance = row.provenance.clone();
        WorkItem::failed(provenance, Some(row), key, failure, RowAction::Skipped)
    }

    /// Partial success is off and an earlier row failed: a row that would be sent is not.
    pub fn stop_if_sending(self) -> WorkItem {
        self.not_sent_if_sending("not attempted: partial success is off and an earlier row failed")
    }

    /// A row that would be sent is reported `NOT_ATTEMPTED` with `why` instead.
    pub(super) fn not_sent_if_sending(self, why: &str) -> WorkItem {
        match self.kind {
            ItemKind::Send { .. } => WorkItem::not_sent(self.provenance, self.row, self.key, why),
            ItemKind::Done { .. } => self,
        }
    }

    /// About how many mutations the item sends: what windows are cut by, so that their
    /// requests go out full.
    pub fn expected_mutations(&self) -> usize {
        let ItemKind::Send { mapped, plan, .. } = &self.kind else {
            return 0;
        };
        match plan {
            Plan::Update { move_phase, .. } => {
                let attributes = mapped.title.is_some()
                    || mapped.due_date.is_some()
                    || mapped.assignee_ids.is_some()
                    || mapped.label_ids.is_some();
                let fields = mapped.fields.len().div_ceil(MAX_VALUES_PER_UPDATE);
                (usize::from(attributes) + fields + usize::from(*move_phase)).max(1)
            }
            Plan::Create | Plan::Lookup | Plan::Remove { .. } => 1,
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(
            &self.kind,
            ItemKind::Done {
                failure: Some(_),
                ..
            }
        )
    }
}

/// The ledger's name of a row: the hash of its key, or for a destination without one, of
/// where it was read (the file's version and the line).
pub(crate) fn identity_hash(file: &ObjectMeta, line: u64, key: Option<&str>) -> u64 {
    match key {
        Some(k) => key_hash(k),
        None => key_hash(&format!(
            "{}\u{0}{}\u{0}{}",
            file.key,
            file.version_id.as_deref().unwrap_or(&file.etag),
            line
        )),
    }
}

/// Decides per row, from the mapping and the ledger as it was when the run started.
pub(crate) struct Planner {
    ledger: Arc<Ledger>,
    unresolvable: Arc<HashSet<u64>>,
    full_resync: bool,
    backfill_only: bool,
    slots: std::sync::OnceLock<SlotLookup>,
}

impl Planner {
    pub fn new(
        ledger: Arc<Ledger>,
        unresolvable: Arc<HashSet<u64>>,
        full_resync: bool,
        backfill_only: bool,
    ) -> Self {
        Planner {
            ledger,
            unresolvable,
            full_resync,
            backfill_only,
            slots: std::sync::OnceLock::new(),
        }
    }

    /// The ledger as the run loaded it.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The slots of the mapping's targets.
    fn slots(&self, shared: &RunShared) -> &SlotLookup {
        self.slots.get_or_init(|| {
            let slots = shared.mapper.targets().iter().map(|t| t.slot).collect();
            self.ledger.slot_lookup(slots)
        })
    }

    /// Plans one row. The flag says whether the row's identity (its key, or the card id it
    /// updates) was known: a row without one may be a present row, so removals must not run.
    pub fn plan(
        &self,
        shared: &RunShared,
        file: &ObjectMeta,
        row: Row,
        seen: &mut SeenKeys,
    ) -> (WorkItem, bool) {
        let op = shared.dest.operation;
        let key = match shared.mapper.key(&row) {
            Ok(k) => k,
            Err(f) => return (WorkItem::preflight_failure(row, None, f), false),
        };
        let mapped = shared.mapper.map_with_key(&row, key.clone());
        // The row's identity: its key, the card id it updates, or where it was read.
        let (key, keyed) = match (op, &mapped) {
            (Operation::UpdateCard, Ok(m)) => (m.id.clone(), false),
            // The card id is a mapped value: a row that did not map has none.
            (Operation::UpdateCard, Err(f)) => {
                return (WorkItem::preflight_failure(row, None, f.clone()), false)
            }
            _ => {
                let keyed = key.is_some();
                (key, keyed)
            }
        };
        let khash = identity_hash(file, row.provenance.line, key.as_deref());
        // The key is present in the table whether or not the rest of the row mapped.
        let first = seen.insert(khash);
        let mapped = match mapped {
            Ok(m) => m,
            Err(f) => return (WorkItem::preflight_failure(row, key, f), true),
        };
        if !first {
            let failure = RowFailure::new(
                row.provenance.clone(),
                FailureCode::DuplicateKey,
                format!(
                    "key '{}' appears more than once in this run; only its first row is synced",
                    key.as_deref().unwrap_or("")
                ),
            );
            return (WorkItem::preflight_failure(row, key, failure), true);
        }
        if self.unresolvable.contains(&khash) {
            let failure = RowFailure::new(
                row.provenance.clone(),
                FailureCode::AmbiguousCreate,
                "an earlier create of this row may have been applied (Pipefy did not answer) and cannot be looked up; check the pipe for it, then clear it with `pipefy-sync forget-intents`",
            );
            return (WorkItem::preflight_failure(row, key, failure), true);
        }
        (
            self.plan_mapped(shared, row, key, khash, keyed, mapped),
            true,
        )
    }

    pub(super) fn plan_mapped(
        &self,
        shared: &RunShared,
        row: Row,
        key: Option<String>,
        khash: u64,
        keyed: bool,
        mapped: MappedRow,
    ) -> WorkItem {
        let op = shared.dest.operation;
        let hash = canonical_hash(&mapped);
        let phase = phase_hash(mapped.phase_id.as_deref());
        if !self.full_resync && !self.backfill_only {
            // The common case of a rerun, decided without fingerprinting the row: the same
            // values as last written, and a fingerprint for every target the mapping has.
            let slots = self.slots(shared);
            if let Some((id, v, p, true)) = self.ledger.summary(khash, slots) {
                if v == hash && p == phase {
                    let id = Some(id.to_string());
                    return done(row, key, khash, keyed, RowAction::Unchanged, id, None);
                }
            }
        }
        let known = self.ledger.get(khash);
        let changes = TargetChanges::new(shared, &mapped, known.as_ref(), self.full_resync);

        if self.backfill_only {
            let record = Entry {
                targets: changes.recorded(),
                ..Entry::new(
                    known
                        .map(|e| e.id)
                        .unwrap_or(RecordId::Text(UNKNOWN_ID.into())),
                    hash,
                    phase,
                )
            };
            return done(
                row,
                key,
                khash,
                keyed,
                RowAction::Unchanged,
                None,
                Some(record),
            );
        }
        let upsert = matches!(op, Operation::UpsertCard | Operation::UpsertRecord);
        let plan = match (op, &known) {
            (_, Some(e))
                if !self.full_resync
                    && e.value_hash == hash
                    && e.phase_hash == phase
                    && !changes.any() =>
            {
                // Unchanged. A key written before targets were fingerprinted gets its
                // fingerprints now, without sending anything.
                let record =
                    (e.targets.is_empty() && !shared.mapper.targets().is_empty()).then(|| Entry {
                        targets: changes.recorded(),
                        ..e.clone()
                    });
                let id = Some(e.id.to_string());
                return done(row, key, khash, keyed, RowAction::Unchanged, id, record);
            }
            // Create operations never update: a key already synced is left alone.
            (Operation::CreateCard | Operation::CreateRecord, Some(e)) => {
                let id = Some(e.id.to_string());
                return done(row, key, khash, keyed, RowAction::Unchanged, id, None);
            }
            (Operation::CreateCard | Operation::CreateRecord, None) => Plan::Create,
            (Operation::UpdateCard, e) => Plan::Update {
                id: key.clone().unwrap_or_default(),
                move_phase: mapped.phase_id.is_some()
                    && e.as_ref().is_none_or(|e| e.phase_hash != phase),
            },
            (_, Some(e)) if upsert && e.id != RecordId::Text(UNKNOWN_ID.into()) => {
                if !shared.dest.upsert.update {
                    let id = Some(e.id.to_string());
                    return done(row, key, khash, keyed, RowAction::Exists, id, None);
                }
                Plan::Update {
                    id: e.id.to_string(),
                    move_phase: mapped.phase_id.is_some() && e.phase_hash != phase,
                }
            }
            _ => {
                let may_create = shared.dest.upsert.create && known.is_none();
                if shared.dest.sync.lookup_unknown_keys || !may_create {
                    Plan::Lookup
                } else {
                    Plan::Create
                }
            }
        };
        let targets = changes.recorded();
        let mut mapped = mapped;
        if let Plan::Update { id, move_phase } = &plan {
            shared
                .mapper
                .retain_targets(&mut mapped, |i| changes.sends(i));
            if !move_phase && sends_nothing(&shared.repo, &mapped) {
                // Only targets that are not updated (or no target) changed: record the new
                // values as seen, send nothing.
                let record = known.map(|e| Entry {
                    targets,
                    ..Entry::new(e.id, hash, phase)
                });
                let id = Some(id.clone());
                return done(row, key, khash, keyed, RowAction::Unchanged, id, record);
            }
        }
        let in_ledger = known.is_some();
        let kind = ItemKind::Send {
            mapped: Box::new(mapped),
            hash,
            phase,
            targets,
            plan,
        };
        let mut item =
            WorkItem::new(row.provenance.clone(), Some(row), key, kind).identified(khash, keyed);
        item.in_ledger = in_ledger;
        item
    }
}

/// Which of a row's targets an update sends, from their fingerprints against the ledger's.
pub(super) struct TargetChanges<'a> {
    targets: &'a [Target],
    /// The row's fingerprint per target (`None`: the row leaves it alone).
    now: Vec<Option<u32>>,
    /// The ledger's fingerprint per target.
    before: Vec<Option<u32>>,
    /// The ledger's fingerprint of what Pipefy showed per target (`keep_edits`).
    shown_before: Vec<Option<u32>>,
    /// No fingerprints to compare with (a new key, a key written before targets were
    /// fingerprinted, or a full resync): every target is sent.
    all: bool,
}

impl<'a> TargetChanges<'a> {
    pub(super) fn new(
        shared: &'a RunShared,
        mapped: &MappedRow,
        known: Option<&Entry>,
        full_resync: bool,
    ) -> Self {
        let targets = shared.mapper.targets();
        let before = targets
            .iter()
            .map(|t| known.and_then(|e| e.fingerprint(t.slot)))
            .collect();
        let shown_before = targets
            .iter()
            .map(|t| {
                t.keep_edits
                    .then(|| known.and_then(|e| e.fingerprint(t.shown_slot())))
                    .flatten()
            })
            .collect();
        TargetChanges {
            targets,
            now: shared.mapper.fingerprints(mapped),
            before,
            shown_before,
            all: full_resync || known.is_none_or(|e| e.targets.is_empty()),
        }
    }

    /// Whether the target at `i` changed since its last write.
    fn changed(&self, i: usize) -> bool {
        match (self.now.get(i).copied().flatten(), self.before.get(i)) {
            (None, _) => false,
            (Some(now), Some(before)) => self.all || Some(now) != *before,
            (Some(_), None) => true,
        }
    }

    /// Whether any target's fingerprint differs from the ledger's (a new or changed
    /// mapping entry shows up here even when the row's values hash the same).
    fn any(&self) -> bool {
        !self.all && (0..self.targets.len()).any(|i| self.changed(i))
    }

    /// Whether an update sends the target at `i`: it changed, and it is not `on_create`.
    fn sends(&self, i: usize) -> bool {
        let on_create = self
            .targets
            .get(i)
            .is_some_and(|t| t.write == WritePolicy::OnCreate);
        !on_create && self.changed(i)
    }

    /// What the ledger records once the row is written: the row's fingerprint per target,
    /// or the last one written where the row leaves the target alone; and what Pipefy
    /// showed of the targets, until a read after the write replaces it.
    fn recorded(&self) -> Box<[(u64, u32)]> {
        let values = self
            .targets
            .iter()
            .zip(self.now.iter().zip(&self.before))
            .filter_map(|(t, (now, before))| now.or(*before).map(|f| (t.slot, f)));
        let shown = self
            .targets
            .iter()
            .zip(&self.shown_before)
            .filter_map(|(t, f)| f.map(|f| (t.shown_slot(), f)));
        values.chain(shown).collect()
    }
}

pub(super) fn done(
    row: Row,
    key: Option<String>,
    khash: u64,
    keyed: bool,
    action: RowAction,
    id: Option<String>,
    record: Option<Entry>,
) -> WorkItem {
    let result = RowResult::ok(&row.provenance, key.clone(), action, id);
    let kind = ItemKind::Done {
        result,
        failure: None,
        record,
    };
    WorkItem::new(row.provenance.clone(), Some(row), key, kind).identified(khash, keyed)
}
