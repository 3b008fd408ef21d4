//! The drift report: per key, whether the card or record in Pipefy still holds what
//! pipefy-sync last wrote.
//!
//! ```text
//! reports/<destination>/<YYYY-MM-DD>/<run-id>/summary.json        DriftSummary
//! reports/<destination>/<YYYY-MM-DD>/<run-id>/drift/part-00001.jsonl  one DriftLine per key
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::KeptEdit;

/// What drift found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Every target with a recorded baseline shows what pipefy-sync last wrote.
    InSync,
    /// A person changed at least one target since pipefy-sync last wrote it.
    EditedInPipefy,
    /// The ledger knows the key's card or record; Pipefy no longer has it.
    DeletedInPipefy,
    /// In Pipefy, but not written by pipefy-sync for this destination (or forgotten by it).
    UnknownToLedger,
    /// Moved to the removal phase by an earlier run (its row left the table).
    Removed,
    /// In Pipefy and in the ledger, but no baseline of what Pipefy showed was recorded for
    /// it, so edits cannot be told (turn on `sync.track_edits` or `keep_edits`).
    Untracked,
}

/// One line of a drift report.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftLine {
    pub state: DriftState,
    /// The key (from the table's row; else the key field as Pipefy shows it).
    pub key: Option<String>,
    /// The card or record id (the one the ledger knows, for a deleted one).
    pub id: String,
    /// Where the key's row is in the table, when the table still has it.
    pub file: Option<String>,
    pub line: Option<u64>,
    /// The targets a person changed: the value in Pipefy and the value the table has now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<KeptEdit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriftCounts {
    /// Keys the ledger knows with an id.
    pub keys_in_ledger: u64,
    /// Cards or records Pipefy listed.
    pub read_in_pipefy: u64,
    pub in_sync: u64,
    pub edited_in_pipefy: u64,
    /// Targets changed by people, over all edited keys.
    pub edited_fields: u64,
    pub deleted_in_pipefy: u64,
    pub unknown_to_ledger: u64,
    pub removed: u64,
    pub untracked: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttles: u64,
}

impl DriftCounts {
    pub fn add(&mut self, line: &DriftLine) {
        match line.state {
            DriftState::InSync => self.in_sync += 1,
            DriftState::EditedInPipefy => {
                self.edited_in_pipefy += 1;
                self.edited_fields += line.edits.len() as u64;
            }
            DriftState::DeletedInPipefy => self.deleted_in_pipefy += 1,
            DriftState::UnknownToLedger => self.unknown_to_ledger += 1,
            DriftState::Removed => self.removed += 1,
            DriftState::Untracked => self.untracked += 1,
        }
    }
}

/// The summary of a drift report. Drift writes nothing to Pipefy and no state.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Always `drift`, telling this summary from a run's.
    pub kind: String,
    pub run_id: String,
    pub destination: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub counts: DriftCounts,
    /// The targets whose edits drift can tell (a baseline is recorded for them).
    pub tracked_targets: Vec<String>,
    pub report_location: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_lines() {
        let mut c = DriftCounts::default();
        let line = |state, edits: usize| DriftLine {
            state,
            key: None,
            id: "1".into(),
            file: None,
            line: None,
            edits: (0..edits)
                .map(|i| KeptEdit {
                    field: format!("f{i}"),
                    in_pipefy: "a".into(),
                    in_table: "b".into(),
                })
                .collect(),
        };
        c.add(&line(DriftState::EditedInPipefy, 2));
        c.add(&line(DriftState::InSync, 0));
        c.add(&line(DriftState::DeletedInPipefy, 0));
        c.add(&line(DriftState::UnknownToLedger, 0));
        assert_eq!(
            (
                c.edited_in_pipefy,
                c.edited_fields,
                c.in_sync,
                c.deleted_in_pipefy,
                c.unknown_to_ledger,
                c.untracked
            ),
            (1, 2, 1, 1, 1, 0)
        );
        let json = serde_json::to_value(line(DriftState::UnknownToLedger, 0)).unwrap();
        assert_eq!(json["state"], "unknown_to_ledger");
        assert!(json.get("edits").is_none(), "no edits, no list: {json}");
    }
}
