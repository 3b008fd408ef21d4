//! Windows: a run of consecutive rows planned together, sent together, committed together.
//!
//! Planning is pure (mapping, ledger lookups); processing talks to Pipefy: key lookups for
//! upserts, connection lookups, intents, the batched mutations, and the resolution of
//! ambiguous creates by key, never by blind repetition.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::Operation;
use crate::failure::{FailureCode, RowFailure};
use crate::mapping::{canonical_hash, ConnectionRef, FieldValue, MappedRow};
use crate::pipefy::client::is_not_found;
use crate::pipefy::{ErrorClass, FieldDef, FieldType, OpError, OpResult, NOT_SENT};
use crate::report::{RowAction, RowResult};
use crate::source::{Provenance, Row, RowError};
use crate::state::{key_hash, phase_hash, Entry, Intent, Ledger, RecordId, SeenKeys};
use crate::store::ObjectMeta;

use super::removed::RemovalOp;
use super::requests::{create_op, update_ops, ConnectionIds, OpRole, Repo};
use super::{EngineError, RunShared};

/// The id recorded for rows marked synced without sending (skip_initial_backfill): the card
/// exists but its id is not known; an update looks the key up first.
pub(crate) const UNKNOWN_ID: &str = "?";

/// How many times an ambiguous create is looked up and, if absent, sent again.
const AMBIGUOUS_ROUNDS: usize = 3;

/// Why a row of a run that lost its lease was not sent.
const LEASE_LOST: &str = "not sent: this run lost its lease on the destination; the run that holds it now syncs this row";

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
        mapped: Box<MappedRow>,
        hash: u64,
        phase: u32,
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
    pub kind: ItemKind,
}

impl WorkItem {
    pub fn read_failure(e: RowError) -> Self {
        let raw = e.raw.clone();
        let failure = RowFailure::from(e);
        WorkItem {
            provenance: failure.provenance.clone(),
            row: None,
            raw,
            key: None,
            key_hash: 0,
            keyed: false,
            kind: ItemKind::Done {
                result: RowResult::failed(&failure, None, RowAction::Skipped),
                failure: Some(failure),
                record: None,
            },
        }
    }

    pub fn not_attempted(row: Row) -> Self {
        let provenance = row.provenance.clone();
        Self::not_sent(
            provenance,
            Some(row),
            None,
            "not attempted: partial success is off and an earlier row failed",
        )
    }

    /// A row that is not sent, reported as `NOT_ATTEMPTED` with why.
    fn not_sent(provenance: Provenance, row: Option<Row>, key: Option<String>, why: &str) -> Self {
        let failure = RowFailure::new(provenance.clone(), FailureCode::NotAttempted, why);
        WorkItem {
            provenance,
            row,
            raw: None,
            key: key.clone(),
            key_hash: 0,
            keyed: false,
            kind: ItemKind::Done {
                result: RowResult::failed(&failure, key, RowAction::NotAttempted),
                failure: Some(failure),
                record: None,
            },
        }
    }

    /// The move or delete of a removed key's card or record.
    pub fn removal(key_hash: u64, id: String, n: u64) -> Self {
        WorkItem {
            provenance: super::removed::provenance(n),
            row: None,
            raw: None,
            key: None,
            key_hash,
            keyed: false,
            kind: ItemKind::Send {
                mapped: Box::default(),
                hash: 0,
                phase: 0,
                plan: Plan::Remove { id },
            },
        }
    }

    fn preflight_failure(row: Row, key: Option<String>, failure: RowFailure) -> Self {
        WorkItem {
            provenance: row.provenance.clone(),
            row: Some(row),
            raw: None,
            key: key.clone(),
            key_hash: 0,
            keyed: false,
            kind: ItemKind::Done {
                result: RowResult::failed(&failure, key, RowAction::Skipped),
                failure: Some(failure),
                record: None,
            },
        }
    }

    /// Partial success is off and an earlier row failed: a row that would be sent is not.
    pub fn stop_if_sending(self) -> WorkItem {
        self.not_sent_if_sending("not attempted: partial success is off and an earlier row failed")
    }

    /// A row that would be sent is reported `NOT_ATTEMPTED` with `why` instead.
    fn not_sent_if_sending(self, why: &str) -> WorkItem {
        match self.kind {
            ItemKind::Send { .. } => WorkItem::not_sent(self.provenance, self.row, self.key, why),
            ItemKind::Done { .. } => self,
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

pub(crate) struct Window {
    pub items: Vec<WorkItem>,
    pub file_index: usize,
    pub sends: usize,
    pub end_of_file: bool,
}

impl Window {
    pub fn new(file_index: usize) -> Self {
        Window {
            items: Vec::new(),
            file_index,
            sends: 0,
            end_of_file: false,
        }
    }

    pub fn push(&mut self, item: WorkItem) {
        if matches!(item.kind, ItemKind::Send { .. }) {
            self.sends += 1;
        }
        self.items.push(item);
    }

    fn end_line(&self) -> u64 {
        self.items
            .iter()
            .map(|i| i.provenance.line)
            .max()
            .unwrap_or(0)
    }
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

/// Decides per row, from the mapping and the ledger as it was when the run started.
pub(crate) struct Planner {
    ledger: Arc<Ledger>,
    unresolvable: Arc<HashSet<u64>>,
    full_resync: bool,
    backfill_only: bool,
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
        }
    }

    /// The ledger as the run loaded it.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
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
        let identity = match &key {
            Some(k) => k.clone(),
            None => format!(
                "{}\u{0}{}\u{0}{}",
                file.key,
                file.version_id.as_deref().unwrap_or(&file.etag),
                row.provenance.line
            ),
        };
        let khash = key_hash(&identity);
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

    fn plan_mapped(
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
        let known = self.ledger.get(khash);
        let unchanged = |e: &Entry| e.value_hash == hash && e.phase_hash == phase;

        if self.backfill_only {
            let record = Entry {
                id: known
                    .map(|e| e.id)
                    .unwrap_or(RecordId::Text(UNKNOWN_ID.into())),
                value_hash: hash,
                phase_hash: phase,
                written_at_min: 0,
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
        let plan = match (op, &known) {
            (_, Some(e)) if unchanged(e) && !self.full_resync => {
                let id = e.id.to_string();
                return done(row, key, khash, keyed, RowAction::Unchanged, Some(id), None);
            }
            // Create operations never update: a key already synced is left alone.
            (Operation::CreateCard | Operation::CreateRecord, Some(e)) => {
                let id = e.id.to_string();
                return done(row, key, khash, keyed, RowAction::Unchanged, Some(id), None);
            }
            (Operation::CreateCard | Operation::CreateRecord, None) => Plan::Create,
            (Operation::UpdateCard, e) => Plan::Update {
                id: key.clone().unwrap_or_default(),
                move_phase: mapped.phase_id.is_some()
                    && e.as_ref().is_none_or(|e| e.phase_hash != phase),
            },
            (Operation::UpsertCard | Operation::UpsertRecord, Some(e))
                if e.id != RecordId::Text(UNKNOWN_ID.into()) =>
            {
                Plan::Update {
                    id: e.id.to_string(),
                    move_phase: mapped.phase_id.is_some() && e.phase_hash != phase,
                }
            }
            (Operation::UpsertCard | Operation::UpsertRecord, _) => {
                if shared.dest.sync.lookup_unknown_keys || known.is_some() {
                    Plan::Lookup
                } else {
                    Plan::Create
                }
            }
        };
        WorkItem {
            provenance: row.provenance.clone(),
            row: Some(row),
            raw: None,
            key,
            key_hash: khash,
            keyed,
            kind: ItemKind::Send {
                mapped: Box::new(mapped),
                hash,
                phase,
                plan,
            },
        }
    }
}

fn done(
    row: Row,
    key: Option<String>,
    khash: u64,
    keyed: bool,
    action: RowAction,
    id: Option<String>,
    record: Option<Entry>,
) -> WorkItem {
    let result = RowResult::ok(&row.provenance, key.clone(), action, id);
    WorkItem {
        provenance: row.provenance.clone(),
        row: Some(row),
        raw: None,
        key,
        key_hash: khash,
        keyed,
        kind: ItemKind::Done {
            result,
            failure: None,
            record,
        },
    }
}

/// Connection references resolved for one window.
struct ResolvedConnections(HashMap<(String, String, String), String>);

impl ConnectionIds for ResolvedConnections {
    fn ids(&self, refs: &[ConnectionRef]) -> Vec<String> {
        refs.iter()
            .filter_map(|r| match r {
                ConnectionRef::Id(id) => Some(id.clone()),
                ConnectionRef::Key {
                    repo,
                    key_field,
                    key,
                } => self
                    .0
                    .get(&(repo.clone(), key_field.clone(), key.clone()))
                    .cloned(),
            })
            .collect()
    }
}

/// Per-item state while a window is processed.
struct Slot {
    item: WorkItem,
    /// Final outcome once known.
    outcome: Option<Outcome>,
}

enum Outcome {
    Written {
        action: RowAction,
        id: String,
    },
    Failed {
        failure: RowFailure,
        clear_intent: bool,
    },
    Planned(RowAction),
}

fn failure_for(item: &WorkItem, code: FailureCode, message: String) -> RowFailure {
    RowFailure::new(item.provenance.clone(), code, message)
}

fn op_failure(item: &WorkItem, e: &OpError, what: &str) -> RowFailure {
    let code = match e.class {
        ErrorClass::Permanent => FailureCode::PipefyRejected,
        ErrorClass::Retryable => FailureCode::PipefyUnavailable,
        ErrorClass::Ambiguous => FailureCode::AmbiguousCreate,
    };
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

/// Looks keys up in the destination's pipe/table. Per key: the ids found, or the error.
async fn lookup_keys(
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
    Ok(match &shared.repo {
        Repo::Pipe(p) => shared.client.find_cards_by_field(p, field, keys).await?,
        Repo::Table(t) => shared.client.find_records_by_field(t, field, keys).await?,
    })
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
        })
        .collect();

    resolve_lookups(shared, &mut slots).await?;
    let conns = resolve_connections(shared, &mut slots).await?;
    check_creates(shared, &mut slots);

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
        record_intents(shared, &slots).await?;
        send(shared, &mut slots, &conns).await?;
    }
    Ok(WindowOutcome {
        file_index,
        end_line,
        end_of_file,
        items: slots.into_iter().map(finish_slot).collect(),
    })
}

/// Upserts of keys the ledger does not know: one batched lookup, then create or update.
async fn resolve_lookups(shared: &RunShared, slots: &mut [Slot]) -> Result<(), EngineError> {
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
            Ok(ids) if ids.is_empty() => Plan::Create,
            Ok(ids) if ids.len() == 1 => Plan::Update {
                id: ids.into_iter().next().unwrap_or_default(),
                move_phase: true,
            },
            Ok(ids) => {
                slot.outcome = Some(Outcome::Failed {
                    failure: failure_for(
                        &slot.item,
                        FailureCode::DuplicateKey,
                        format!(
                            "{} {}s in Pipefy already hold key '{key}' (ids {}); fix the duplicates in Pipefy, then rerun",
                            ids.len(),
                            super::noun(shared.dest.operation),
                            ids.join(", ")
                        ),
                    ),
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
            // A found card only moves when the row names a phase.
            *plan = match new_plan {
                Plan::Update { id, .. } => Plan::Update {
                    id,
                    move_phase: mapped.phase_id.is_some(),
                },
                other => other,
            };
        }
    }
    Ok(())
}

fn connection_refs(mapped: &MappedRow) -> Vec<(String, &ConnectionRef)> {
    let mut refs = Vec::new();
    if let Some(parents) = &mapped.parent_ids {
        refs.extend(parents.iter().map(|r| ("parent_ids".to_string(), r)));
    }
    for f in &mapped.fields {
        if let FieldValue::Connect(list) = &f.value {
            refs.extend(list.iter().map(|r| (f.field_id.clone(), r)));
        }
    }
    refs
}

/// Connections by key: looked up once per run (cached), batched per connected pipe/table.
async fn resolve_connections(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<ResolvedConnections, EngineError> {
    let mut wanted: HashMap<(String, String), HashSet<String>> = HashMap::new();
    {
        let cache = shared.connections.lock().await;
        for slot in slots.iter().filter(|s| s.outcome.is_none()) {
            let ItemKind::Send { mapped, .. } = &slot.item.kind else {
                continue;
            };
            for (_, r) in connection_refs(mapped) {
                if let ConnectionRef::Key {
                    repo,
                    key_field,
                    key,
                } = r
                {
                    if !cache.contains_key(&(repo.clone(), key_field.clone(), key.clone())) {
                        wanted
                            .entry((repo.clone(), key_field.clone()))
                            .or_default()
                            .insert(key.clone());
                    }
                }
            }
        }
    }
    for ((repo, key_field), keys) in wanted {
        let keys: Vec<String> = keys.into_iter().collect();
        let field = FieldDef {
            id: key_field.clone(),
            uuid: None,
            internal_id: None,
            label: key_field.clone(),
            field_type: FieldType::ShortText,
            required: false,
            options: Vec::new(),
        };
        let results = if let Some(pipe) = repo.strip_prefix("pipe:") {
            shared
                .client
                .find_cards_by_field(pipe, &field, &keys)
                .await?
        } else {
            let table = repo.strip_prefix("table:").unwrap_or(&repo);
            shared
                .client
                .find_records_by_field(table, &field, &keys)
                .await?
        };
        let mut cache = shared.connections.lock().await;
        for (key, result) in keys.into_iter().zip(results) {
            let resolved = match result {
                Ok(ids) if ids.len() == 1 => Ok(ids.into_iter().next().unwrap_or_default()),
                Ok(ids) if ids.is_empty() => {
                    Err(format!("nothing in {repo} has {key_field} = '{key}'"))
                }
                Ok(ids) => Err(format!(
                    "{} items in {repo} have {key_field} = '{key}'",
                    ids.len()
                )),
                Err(e) => Err(format!(
                    "looking up {key_field} = '{key}' in {repo}: {}",
                    e.message
                )),
            };
            cache.insert((repo.clone(), key_field.clone(), key), resolved);
        }
    }
    let cache = shared.connections.lock().await;
    let mut resolved = HashMap::new();
    for slot in slots.iter_mut().filter(|s| s.outcome.is_none()) {
        let ItemKind::Send { mapped, .. } = &slot.item.kind else {
            continue;
        };
        let mut problem = None;
        for (field, r) in connection_refs(mapped) {
            if let ConnectionRef::Key {
                repo,
                key_field,
                key,
            } = r
            {
                let k = (repo.clone(), key_field.clone(), key.clone());
                match cache.get(&k) {
                    Some(Ok(id)) => {
                        resolved.insert(k, id.clone());
                    }
                    Some(Err(reason)) => {
                        problem = Some((field, reason.clone()));
                        break;
                    }
                    None => {
                        problem = Some((
                            field,
                            format!("{key_field} = '{key}' in {repo} was not looked up"),
                        ));
                        break;
                    }
                }
            }
        }
        if let Some((field, reason)) = problem {
            let mut failure = failure_for(
                &slot.item,
                FailureCode::UnknownReference,
                format!("cannot connect: {reason}"),
            );
            if let Some(column) = shared.mapper.column_of(&field) {
                failure = failure.with_column(column);
            }
            slot.outcome = Some(Outcome::Failed {
                failure: failure.with_field(field),
                clear_intent: false,
            });
        }
    }
    Ok(ResolvedConnections(resolved))
}

fn check_creates(shared: &RunShared, slots: &mut [Slot]) {
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

fn is_create(slot: &Slot) -> bool {
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
async fn record_intents(shared: &RunShared, slots: &[Slot]) -> Result<(), EngineError> {
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
    writer.add_intents(intents).await?;
    Ok(())
}

async fn send(
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
                let row_ops = update_ops(&shared.repo, id, mapped, *move_phase, conns);
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
    let results = shared.client.mutate_gated(ops, shared.gate()).await?;
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

/// Sets the slot's outcome from its ops' results; `true` when it is an ambiguous create,
/// left without an outcome for [`resolve_ambiguous`].
fn fold_results(shared: &RunShared, slot: &mut Slot, results: Vec<(OpRole, OpResult)>) -> bool {
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
fn removal_outcome(shared: &RunShared, item: &WorkItem, result: OpResult) -> Outcome {
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

/// Resolves creates whose outcome is unknown: wait for Pipefy to settle, look the key up,
/// and only send the create again when the key is certainly absent.
async fn resolve_ambiguous(
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
                        failure: failure_for(
                            &slot.item,
                            FailureCode::DuplicateKey,
                            format!(
                                "{} items in Pipefy hold this key (ids {})",
                                ids.len(),
                                ids.join(", ")
                            ),
                        ),
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
        let results = shared.client.mutate_gated(ops, shared.gate()).await?;
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

fn finish_slot(slot: Slot) -> DoneItem {
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
            hash, phase, plan, ..
        } => {
            let was_create = matches!(plan, Plan::Create);
            let was_removal = matches!(plan, Plan::Remove { .. });
            match slot.outcome {
                Some(Outcome::Written { action, id }) => DoneItem {
                    result: RowResult::ok(
                        &item.provenance,
                        item.key.clone(),
                        action,
                        Some(id.clone()),
                    ),
                    failure: None,
                    row: None,
                    raw: None,
                    // A removed key is forgotten, so a moved card is not moved again every
                    // run; if its row comes back, it is looked up by key.
                    ledger_write: Some((
                        item.key_hash,
                        (!was_removal).then(|| Entry {
                            id: RecordId::parse(&id),
                            value_hash: hash,
                            phase_hash: phase,
                            written_at_min: 0,
                        }),
                    )),
                    intent_done: was_create.then_some(item.key_hash),
                },
                Some(Outcome::Planned(action)) => DoneItem {
                    result: RowResult::ok(
                        &item.provenance,
                        item.key.clone(),
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
                }) => DoneItem {
                    result: RowResult::failed(
                        &failure,
                        item.key.clone(),
                        if failure.code == FailureCode::NotAttempted {
                            RowAction::NotAttempted
                        } else {
                            RowAction::Failed
                        },
                    ),
                    failure: Some(failure),
                    row: item.row,
                    raw: item.raw,
                    ledger_write: None,
                    intent_done: (was_create && clear_intent).then_some(item.key_hash),
                },
                None => {
                    // Every path above sets an outcome; a row without one is reported, not lost.
                    let failure = RowFailure::new(
                        item.provenance.clone(),
                        FailureCode::PipefyUnavailable,
                        "internal: the row's outcome was not determined; the next run retries it",
                    );
                    DoneItem {
                        result: RowResult::failed(&failure, item.key.clone(), RowAction::Failed),
                        failure: Some(failure),
                        row: item.row,
                        raw: item.raw,
                        ledger_write: None,
                        intent_done: None,
                    }
                }
            }
        }
    }
}
