//! Removed rows: the cards or records of keys that left the table, on a whole-table run.
//!
//! Removal acts only on knowledge. A key counts as present when any row carried it, whether
//! or not the row mapped; a run in which a file could not be read, or a row's key could not
//! be computed, removes nothing. A table that read no rows removes nothing, and a pass that
//! would touch more than `removed_rows.max_fraction` of the destination's keys does not run
//! unless the run allows mass removal (`REMOVAL_GUARD`). Only keys of this destination's
//! ledger are ever removed, and the removals go through the same windows as every other
//! write: batched, checkpointed, deadline-aware, continued across hand-offs, and previewed
//! by dry runs as `would_remove`.

use std::sync::Arc;

use crate::config::{RemovalAction, RemovedRows};
use crate::pipefy::Mutation;
use crate::source::Provenance;
use crate::state::{Ledger, RecordId, SeenKeys};

use super::plan::UNKNOWN_ID;
use super::requests::Repo;

/// The provenance of removal rows in the results: no row of the table stands for them.
pub(crate) const REMOVED_FILE: &str = "(removed from the table)";

/// What a removed key's card or record gets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RemovalOp {
    Delete,
    MoveToPhase { phase_id: String },
}

impl RemovalOp {
    /// The op a destination's `removed_rows` asks for; `None`: removals are off.
    pub fn of(policy: &RemovedRows, phase_id: impl FnOnce(&str) -> Option<String>) -> Option<Self> {
        match &policy.action {
            RemovalAction::Ignore => None,
            RemovalAction::Delete => Some(RemovalOp::Delete),
            RemovalAction::MoveToPhase { phase } => {
                phase_id(phase).map(|phase_id| RemovalOp::MoveToPhase { phase_id })
            }
        }
    }

    pub fn mutation(&self, repo: &Repo, id: &str) -> Mutation {
        match (self, repo) {
            (RemovalOp::MoveToPhase { phase_id }, _) => Mutation::MoveCardToPhase {
                card_id: id.to_string(),
                phase_id: phase_id.clone(),
            },
            (RemovalOp::Delete, Repo::Pipe(_)) => Mutation::DeleteCard { id: id.to_string() },
            (RemovalOp::Delete, Repo::Table(_)) => {
                Mutation::DeleteTableRecord { id: id.to_string() }
            }
        }
    }

    pub fn is_move(&self) -> bool {
        matches!(self, RemovalOp::MoveToPhase { .. })
    }
}

/// What the removal pass of a whole-table run does.
#[derive(Debug, PartialEq)]
pub(crate) enum RemovalDecision {
    /// Nothing is removed, and the summary says why.
    Skip(String),
    /// Remove these `(key hash, id)`, in key order.
    Remove(Vec<(u64, String)>),
}

/// What the decision is made from.
pub(crate) struct RemovalInputs<'a> {
    pub ledger: &'a Ledger,
    pub seen: &'a SeenKeys,
    /// Why this run must not remove: a file or a row's key that could not be read.
    pub blocked: Option<&'a str>,
    /// Rows read by the whole run, all invocations.
    pub rows_read: u64,
    pub max_fraction: f64,
    pub allow_mass_removal: bool,
}

pub(crate) fn decide(inputs: RemovalInputs<'_>) -> RemovalDecision {
    if let Some(why) = inputs.blocked {
        return RemovalDecision::Skip(format!("nothing was removed: {why}"));
    }
    if inputs.rows_read == 0 {
        return RemovalDecision::Skip(
            "nothing was removed: the table read 0 rows (an empty or header-only table is taken for an upstream problem, not for every row removed)".into(),
        );
    }
    let gone: Vec<(u64, String)> = inputs
        .ledger
        .iter()
        .filter(|(k, _)| !inputs.seen.contains(*k))
        // A key recorded without its id (skip_initial_backfill) has nothing to remove by.
        .filter(|(_, e)| e.id != RecordId::Text(UNKNOWN_ID.into()))
        .map(|(k, e)| (k, e.id.to_string()))
        .collect();
    let total = inputs.ledger.len();
    if gone.is_empty() {
        return RemovalDecision::Remove(gone);
    }
    let share = gone.len() as f64 / total.max(1) as f64;
    if share > inputs.max_fraction && !inputs.allow_mass_removal {
        return RemovalDecision::Skip(format!(
            "REMOVAL_GUARD: {} of the destination's {total} keys ({:.1} %) left the table, more than removed_rows.max_fraction ({:.1} %); nothing was removed. If the table is right, run once with allow_mass_removal (the payload's \"allow_mass_removal\": true, or the CLI's --allow-mass-removal)",
            gone.len(),
            share * 100.0,
            inputs.max_fraction * 100.0
        ));
    }
    RemovalDecision::Remove(gone)
}

/// Where the `n`-th removal of a run is reported.
pub(crate) fn provenance(n: u64) -> Provenance {
    Provenance {
        file: Arc::from(REMOVED_FILE),
        line: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{key_hash, Entry};

    fn ledger(n: u64) -> Arc<Ledger> {
        let mut l = Ledger::new();
        for i in 0..n {
            l.insert(
                key_hash(&format!("k{i}")),
                Entry::new(RecordId::Num(1000 + i), i, 0),
            );
        }
        l.compact();
        Arc::new(l)
    }

    fn seen(ledger: &Arc<Ledger>, keys: impl IntoIterator<Item = u64>) -> SeenKeys {
        let mut s = SeenKeys::new(ledger.clone());
        for i in keys {
            s.insert(key_hash(&format!("k{i}")));
        }
        s
    }

    fn inputs<'a>(ledger: &'a Ledger, seen: &'a SeenKeys, rows_read: u64) -> RemovalInputs<'a> {
        RemovalInputs {
            ledger,
            seen,
            blocked: None,
            rows_read,
            max_fraction: 0.2,
            allow_mass_removal: false,
        }
    }

    #[test]
    fn removes_the_keys_no_row_carried() {
        let l = ledger(10);
        let s = seen(&l, (0..9).chain([42]));
        match decide(inputs(&l, &s, 10)) {
            RemovalDecision::Remove(gone) => {
                assert_eq!(gone, vec![(key_hash("k9"), "1009".to_string())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_blocked_run_removes_nothing_and_says_why() {
        let l = ledger(10);
        let s = seen(&l, 0..5);
        let d = decide(RemovalInputs {
            blocked: Some("refined/t/a.csv.gz could not be read"),
            ..inputs(&l, &s, 5)
        });
        assert_eq!(
            d,
            RemovalDecision::Skip(
                "nothing was removed: refined/t/a.csv.gz could not be read".into()
            )
        );
    }

    #[test]
    fn an_empty_table_removes_nothing() {
        let l = ledger(10);
        let s = seen(&l, []);
        let RemovalDecision::Skip(why) = decide(inputs(&l, &s, 0)) else {
            panic!("an empty table must not remove");
        };
        assert!(why.contains("0 rows"), "{why}");
    }

    #[test]
    fn the_guard_stops_a_mass_removal_unless_allowed() {
        let l = ledger(10);
        let s = seen(&l, 0..5);
        let RemovalDecision::Skip(why) = decide(inputs(&l, &s, 5)) else {
            panic!("half the keys gone must trip the guard");
        };
        assert!(
            why.starts_with("REMOVAL_GUARD: 5 of the destination's 10 keys (50.0 %)"),
            "{why}"
        );
        let allowed = decide(RemovalInputs {
            allow_mass_removal: true,
            ..inputs(&l, &s, 5)
        });
        assert!(matches!(allowed, RemovalDecision::Remove(g) if g.len() == 5));
        // Exactly at the fraction is allowed: 2 of 10 with max 0.2.
        let s = seen(&l, 0..8);
        assert!(matches!(decide(inputs(&l, &s, 8)), RemovalDecision::Remove(g) if g.len() == 2));
    }

    #[test]
    fn removal_ops_follow_the_repo() {
        let pipe = Repo::Pipe("1".into());
        let table = Repo::Table("t".into());
        assert_eq!(
            RemovalOp::Delete.mutation(&table, "r1"),
            Mutation::DeleteTableRecord { id: "r1".into() }
        );
        assert_eq!(
            RemovalOp::Delete.mutation(&pipe, "c1"),
            Mutation::DeleteCard { id: "c1".into() }
        );
        let policy = RemovedRows {
            action: RemovalAction::MoveToPhase {
                phase: "Archived".into(),
            },
            max_fraction: 0.2,
        };
        let op = RemovalOp::of(&policy, |name| {
            (name == "Archived").then(|| "9".to_string())
        });
        assert_eq!(
            op,
            Some(RemovalOp::MoveToPhase {
                phase_id: "9".into()
            })
        );
        assert_eq!(RemovalOp::of(&RemovedRows::default(), |_| None), None);
    }
}
