//! Drift: per key, whether what Pipefy holds now is still what pipefy-sync last wrote.
//! Writes nothing to Pipefy and no state (so it takes no lease and can run beside a sync);
//! its report goes where run reports go.
//!
//! ```text
//!   ledger (read only)      the ids pipefy-sync wrote, by key; what Pipefy showed after
//!     │                     each tracked write (the baselines, `keep_edits` / `track_edits`)
//!   Pipefy, paged           each card (phase by phase, phases side by side) or record:
//!     │                     in sync | edited | untracked | removed | unknown to the ledger
//!   ledger ids not listed   deleted in Pipefy
//!     │
//!   the table, read once    (only when something was edited or deleted) the key, file:line
//!     │                     and the table's value of each edited target
//!   report                  drift/part-NNNNN.jsonl and summary.json
//! ```
//!
//! A person's edit is told by the baseline: the fingerprint of what Pipefy showed right after
//! pipefy-sync wrote the target. Comparing with the table's value instead would call every
//! date or currency Pipefy formats its own way an edit.

use std::collections::{HashMap, HashSet};

use chrono::Utc;

use crate::config::{Destination, Operation};
use futures::StreamExt;

use crate::mapping::{Mapper, Schema, Target};
use crate::pipefy::{query_error, Card, ErrorClass, FieldDef, Listing};
use crate::report::{
    push_line, DriftCounts, DriftLine, DriftState, DriftSummary, KeptEdit, ReportWriter,
};
use crate::source::{list_table_files, open_rows};
use crate::state::{Entry, Ledger, RecordId, StateStore};

use super::plan::{identity_hash, UNKNOWN_ID};
use super::removed::RemovalOp;
use super::run::mapper_for;
use super::send::is_missing;
use super::{new_run_id, repo_of, EngineError, PipefyApi, Repo, RunContext, REPORT_PART_BYTES};

/// What a drift report is asked with.
#[derive(Debug, Clone, Default)]
pub struct DriftRequest {
    /// `cli`, `manual`...
    pub trigger: String,
}

/// Reads the destination's cards or records back and reports, per key, how they stand
/// against the ledger.
pub async fn drift(
    ctx: &RunContext,
    dest: &Destination,
    req: DriftRequest,
) -> Result<DriftSummary, EngineError> {
    let started_at = Utc::now();
    let api: &dyn PipefyApi = &ctx.pipefy;
    let stats_at_start = api.stats();
    let repo = repo_of(dest)?;
    let state = StateStore::new(ctx.state_store.clone(), &ctx.state_prefix, &dest.name);
    let loaded = state.load_manifest().await?;
    let ledger = state.load_ledger(&loaded.manifest).await?;
    let (mapper, key_field, schema) = mapper_for(api, dest, &repo).await?;
    // update_card rows are mapped for their card id, which needs their files' versions as
    // in a run (nothing is uploaded); other rows are not mapped here.
    if dest.operation == Operation::UpdateCard {
        super::attachments::prepare(ctx, dest, api, &schema, &mapper, &state, true).await?;
    }
    let removal_phase = match RemovalOp::of(&dest.sync.removed_rows, |p| mapper.phase_id_by_name(p))
    {
        Some(RemovalOp::MoveToPhase { phase_id }) => Some(phase_id),
        _ => None,
    };

    let run_id = new_run_id();
    let report = ReportWriter::new(
        ctx.report_store.clone(),
        &ctx.reports_prefix,
        &dest.name,
        started_at,
        &run_id,
    );
    let mut out = DriftOutput {
        report,
        buffered: Vec::new(),
        parts: 0,
        counts: DriftCounts::default(),
    };
    let mut by_id: HashMap<RecordId, (u64, Entry)> = HashMap::new();
    for (key, entry) in ledger.iter() {
        if entry.id != RecordId::parse(UNKNOWN_ID) {
            by_id.insert(entry.id.clone(), (key, entry));
        }
    }
    out.counts.keys_in_ledger = by_id.len() as u64;

    let judge = Judge {
        mapper: &mapper,
        ledger: &ledger,
        key_field: key_field.as_ref(),
        update_card: dest.operation == Operation::UpdateCard,
        removal_phase: removal_phase.as_deref(),
    };
    // Lines that the table pass completes (key, file:line, the table's values), by key.
    let mut pending: HashMap<u64, DriftLine> = HashMap::new();
    let listings = listings(&repo, &schema);
    let in_flight = dest.limits.concurrency.max(1) as usize;
    let mut pages = std::pin::pin!(futures::stream::iter(listings)
        .map(|of| Box::pin(pages_of(api, of)))
        .flatten_unordered(in_flight));
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(page) = pages.next().await {
        let cards = page?;
        out.counts.read_in_pipefy += cards.len() as u64;
        for card in &cards {
            if !listed.insert(card.id.clone()) {
                // Listed twice: moved to a phase that was paged after it.
                continue;
            }
            let known = by_id.remove(&RecordId::parse(&card.id));
            let line = judge.card(card, known.as_ref().map(|(_, e)| e));
            match (line.state, known) {
                (DriftState::EditedInPipefy, Some((key, _))) => {
                    pending.insert(key, line);
                }
                _ => out.line(line).await?,
            }
        }
    }
    // Not listed: deleted, or moved between phases while they were listed. Read by id, so
    // that only a card Pipefy says does not exist is reported deleted.
    let unlisted: Vec<(u64, Entry)> = by_id.into_values().collect();
    let ids: Vec<String> = unlisted.iter().map(|(_, e)| e.id.to_string()).collect();
    let found = if ids.is_empty() {
        Vec::new()
    } else {
        api.current(&repo, &ids).await?
    };
    for ((key, entry), now) in unlisted.into_iter().zip(found) {
        let line = match now {
            Ok(Some(card)) => {
                out.counts.read_in_pipefy += 1;
                judge.card(&card, Some(&entry))
            }
            // A card that cannot be read back for another reason is not called deleted: the
            // report fails.
            Err(e) if !(e.class == ErrorClass::Permanent && is_missing(e.code.as_deref())) => {
                return Err(query_error(e).into())
            }
            // Not found, or PERMISSION_DENIED, which Pipefy answers for an id that does not
            // exist (or that this token no longer sees).
            Ok(None) | Err(_) => DriftLine {
                state: DriftState::DeletedInPipefy,
                key: None,
                id: entry.id.to_string(),
                file: None,
                line: None,
                edits: Vec::new(),
            },
        };
        if matches!(
            line.state,
            DriftState::DeletedInPipefy | DriftState::EditedInPipefy
        ) {
            pending.insert(key, line);
        } else {
            out.line(line).await?;
        }
    }
    if !pending.is_empty() {
        complete_from_table(ctx, dest, &mapper, &mut pending).await?;
    }
    let mut rest: Vec<DriftLine> = pending.into_values().collect();
    rest.sort_by(|a, b| (&a.file, a.line, &a.id).cmp(&(&b.file, b.line, &b.id)));
    for line in rest {
        out.line(line).await?;
    }
    out.flush().await?;

    let stats = api.stats();
    out.counts.requests = stats.requests.saturating_sub(stats_at_start.requests);
    out.counts.retries = stats.retries.saturating_sub(stats_at_start.retries);
    out.counts.throttles = stats.throttles.saturating_sub(stats_at_start.throttles);
    let summary = DriftSummary {
        kind: "drift".into(),
        run_id,
        destination: dest.name.clone(),
        trigger: req.trigger,
        started_at,
        finished_at: Utc::now(),
        counts: out.counts,
        tracked_targets: mapper
            .targets()
            .iter()
            .filter(|t| t.tracks_shown)
            .map(|t| t.name.to_string())
            .collect(),
        report_location: Some(out.report.location()),
    };
    out.report.write_summary(&summary).await?;
    tracing::info!(destination = %dest.name, run_id = %summary.run_id, counts = ?summary.counts, "drift report written");
    Ok(summary)
}

/// What to page through: a table's records; a pipe's cards phase by phase (the phases are
/// paged side by side, where one pipe listing would be one page at a time), or the whole
/// pipe when its schema names no phase.
fn listings(repo: &Repo, schema: &Schema) -> Vec<Listing> {
    match (repo, schema) {
        (Repo::Table(t), _) => vec![Listing::Table(t.clone())],
        (Repo::Pipe(_), Schema::Pipe(p)) if !p.phases.is_empty() => p
            .phases
            .iter()
            .map(|ph| Listing::Phase(ph.id.clone()))
            .collect(),
        (Repo::Pipe(p), _) => vec![Listing::Pipe(p.clone())],
    }
}

/// The pages of one listing, in order, each page's cards.
fn pages_of(
    api: &dyn PipefyApi,
    of: Listing,
) -> impl futures::Stream<Item = Result<Vec<Card>, EngineError>> + '_ {
    // `Some(cursor)`: the next page to ask for (`Some(None)`: the first); `None`: done.
    futures::stream::unfold(Some(None::<String>), move |next| {
        let of = of.clone();
        async move {
            let after = next?;
            match api.page(&of, after.as_deref()).await {
                Ok(page) => {
                    let next = match (page.has_next_page, page.end_cursor) {
                        (true, Some(cursor)) => Some(Some(cursor)),
                        _ => None,
                    };
                    Some((Ok(page.cards), next))
                }
                // An error ends the listing; the report fails with it.
                Err(e) => Some((Err(EngineError::from(e)), None)),
            }
        }
    })
}

/// Classifies one card or record against the ledger.
struct Judge<'a> {
    mapper: &'a Mapper,
    ledger: &'a Ledger,
    key_field: Option<&'a FieldDef>,
    update_card: bool,
    removal_phase: Option<&'a str>,
}

impl Judge<'_> {
    /// The key as Pipefy shows it: the key field's value (the id, for `update_card`).
    fn key_of(&self, card: &Card) -> Option<String> {
        if self.update_card {
            return Some(card.id.clone());
        }
        let field = self.key_field?;
        card.field(&field.id)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    }

    /// `known`: the ledger's entry for the card's id, if any.
    fn card(&self, card: &Card, known: Option<&Entry>) -> DriftLine {
        let key = self.key_of(card);
        let line = |state, edits| DriftLine {
            state,
            key: key.clone(),
            id: card.id.clone(),
            file: None,
            line: None,
            edits,
        };
        let Some(entry) = known else {
            // Written by pipefy-sync without its id recorded (skip_initial_backfill): known
            // by key, untracked.
            let by_key = key
                .as_deref()
                .and_then(|k| self.ledger.get(crate::state::key_hash(k)));
            if by_key.is_some_and(|e| e.id == RecordId::parse(UNKNOWN_ID)) {
                return line(DriftState::Untracked, Vec::new());
            }
            let removed = self
                .removal_phase
                .is_some_and(|phase| card.current_phase.as_ref().is_some_and(|p| p.id == phase));
            let state = if removed {
                DriftState::Removed
            } else {
                DriftState::UnknownToLedger
            };
            return line(state, Vec::new());
        };
        let (compared, edits) = edits_in(self.mapper.targets(), entry, card);
        match (compared, edits.is_empty()) {
            (0, _) => line(DriftState::Untracked, Vec::new()),
            (_, true) => line(DriftState::InSync, Vec::new()),
            (_, false) => line(DriftState::EditedInPipefy, edits),
        }
    }
}

/// The targets of `card` that no longer show what Pipefy showed after pipefy-sync's last
/// write, and how many targets had such a baseline. `in_table` is left for the table pass.
fn edits_in(targets: &[Target], entry: &Entry, card: &Card) -> (usize, Vec<KeptEdit>) {
    let mut compared = 0;
    let mut edits = Vec::new();
    for t in targets {
        let Some(baseline) = entry.fingerprint(t.shown_slot()) else {
            continue;
        };
        compared += 1;
        let shown = t.shown(card);
        if Target::shown_fingerprint(&shown) != baseline {
            edits.push(KeptEdit {
                field: t.name.to_string(),
                in_pipefy: shown,
                in_table: String::new(),
            });
        }
    }
    (compared, edits)
}

/// Reads the table once and fills in, for the pending lines, the key, where the row is and
/// the table's value of each edited target. A row that does not read or map leaves its
/// line as it is.
async fn complete_from_table(
    ctx: &RunContext,
    dest: &Destination,
    mapper: &Mapper,
    pending: &mut HashMap<u64, DriftLine>,
) -> Result<(), EngineError> {
    let files = list_table_files(ctx.source_store.as_ref(), &dest.source).await?;
    for meta in &files {
        let mut rows = open_rows(ctx.source_store.clone(), meta, &dest.source, 0).await;
        while let Some(next) = rows.next().await {
            let Ok(row) = next else { continue };
            let Ok(key) = mapper.key(&row) else { continue };
            let mapped = if dest.operation == Operation::UpdateCard {
                // The key of an update_card row is the card id it maps.
                match mapper.map_with_key(&row, key.clone()) {
                    Ok(m) => Some(m),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let key = match &mapped {
                Some(m) => m.id.clone(),
                None => key,
            };
            let hash = identity_hash(meta, row.provenance.line, key.as_deref());
            let Some(line) = pending.get_mut(&hash) else {
                continue;
            };
            line.key = key.clone();
            line.file = Some(row.provenance.file.to_string());
            line.line = Some(row.provenance.line);
            if line.edits.is_empty() {
                continue;
            }
            let mapped = match mapped {
                Some(m) => m,
                None => match mapper.map_with_key(&row, key) {
                    Ok(m) => m,
                    Err(_) => continue,
                },
            };
            for edit in &mut line.edits {
                if let Some(t) = mapper.targets().iter().find(|t| *t.name == edit.field) {
                    edit.in_table = t.table_text(&mapped);
                }
            }
        }
    }
    Ok(())
}

/// The report's lines, written in parts as they fill, and their counts.
struct DriftOutput {
    report: ReportWriter,
    buffered: Vec<u8>,
    parts: u32,
    counts: DriftCounts,
}

impl DriftOutput {
    async fn line(&mut self, line: DriftLine) -> Result<(), EngineError> {
        self.counts.add(&line);
        push_line(&mut self.buffered, &line);
        if self.buffered.len() >= REPORT_PART_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), EngineError> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        self.parts += 1;
        let body = std::mem::take(&mut self.buffered);
        self.report.put_part("drift", self.parts, body).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_destination;
    use crate::engine::tests::pipe;
    use crate::pipefy::{CardField, PhaseRef};

    fn mapper() -> Mapper {
        let dest = parse_destination(
            "d.yaml",
            "name: d\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\nsync: { track_edits: true }\ntoken: { env: T }\nsource: { path: x, layer: raw, table: t }\nmapping:\n  title: name\n  customer_name: name\n",
        )
        .unwrap();
        Mapper::new(&dest, &Schema::Pipe(pipe())).unwrap()
    }

    fn card(id: &str, title: &str, name: &str) -> Card {
        Card {
            id: id.into(),
            title: Some(title.into()),
            done: false,
            due_date: None,
            current_phase: Some(PhaseRef {
                id: "10".into(),
                name: "Inbox".into(),
            }),
            labels: Vec::new(),
            assignees: Vec::new(),
            fields: [("external_id", "K1"), ("customer_name", name)]
                .into_iter()
                .map(|(f, v)| CardField {
                    field_id: f.into(),
                    name: f.into(),
                    value: Some(v.into()),
                })
                .collect(),
        }
    }

    /// The ledger entry of a card written as `written`, with its baselines.
    fn entry(m: &Mapper, written: &Card) -> Entry {
        let mut e = Entry::new(RecordId::parse(&written.id), 1, 0);
        e.targets = m
            .targets()
            .iter()
            .map(|t| (t.shown_slot(), Target::shown_fingerprint(&t.shown(written))))
            .collect();
        e
    }

    #[test]
    fn a_card_is_judged_by_its_baselines() {
        let m = mapper();
        let ledger = Ledger::new();
        let key_field = pipe().field("external_id").cloned();
        let judge = Judge {
            mapper: &m,
            ledger: &ledger,
            key_field: key_field.as_ref(),
            update_card: false,
            removal_phase: Some("99"),
        };
        let written = card("5", "Acme", "Acme");
        let e = entry(&m, &written);

        let same = judge.card(&written, Some(&e));
        assert_eq!(same.state, DriftState::InSync);
        assert_eq!(same.key.as_deref(), Some("K1"));

        let edited = judge.card(&card("5", "Acme", "ACME Corp"), Some(&e));
        assert_eq!(edited.state, DriftState::EditedInPipefy);
        assert_eq!(edited.edits.len(), 1);
        assert_eq!(edited.edits[0].field, "customer_name");
        assert_eq!(edited.edits[0].in_pipefy, "ACME Corp");

        let no_baseline = Entry::new(RecordId::parse("5"), 1, 0);
        assert_eq!(
            judge.card(&written, Some(&no_baseline)).state,
            DriftState::Untracked
        );
        assert_eq!(
            judge.card(&written, None).state,
            DriftState::UnknownToLedger
        );
        let mut archived = written.clone();
        archived.current_phase = Some(PhaseRef {
            id: "99".into(),
            name: "Archived".into(),
        });
        assert_eq!(judge.card(&archived, None).state, DriftState::Removed);
    }
}
