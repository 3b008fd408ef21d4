//! Why a row did not make it to Pipefy, in a form a person can act on.
//! Every failed row carries its provenance (file and line), the target field when one is to
//! blame, and a stable code that reports and alerts can group by.

use serde::{Deserialize, Serialize};

use crate::source::{Provenance, RowError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    /// The file or record could not be read (malformed CSV/JSON, bad encoding, bad Parquet).
    ReadError,
    /// A value could not be converted to what the Pipefy field accepts.
    InvalidValue,
    /// A required start-form field (or the key, or the card id) has no value.
    MissingRequired,
    /// A select/radio/checklist value outside the field's options.
    NotAnOption,
    /// A label, assignee, phase or connected card/record that does not exist.
    UnknownReference,
    /// The same key appears more than once in one run; the first occurrence wins.
    DuplicateKey,
    /// A value exceeds a limit (text length, list size).
    TooLarge,
    /// Pipefy rejected the row (validation, permission, not found).
    PipefyRejected,
    /// Pipefy kept failing with retryable errors until retries ran out.
    PipefyUnavailable,
    /// The create's outcome is unknown and could not be resolved by a lookup; not retried, so
    /// it can never become a duplicate. The next run resolves it again.
    AmbiguousCreate,
    /// Pipefy refused to move the card to the phase.
    MoveRefused,
    /// Partial success is off and an earlier row failed: this row was never attempted.
    NotAttempted,
    /// An update-only upsert (`upsert: {create: false}`): no card or record holds the key.
    NotFound,
    /// The card or record the ledger knows for the row is no longer in Pipefy (deleted by a
    /// person) and the operation may not create it again (`update_card`, update-only upserts).
    DeletedInPipefy,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{}:{}: {}{message}", provenance.file, provenance.line, field.as_deref().map(|f| format!("field '{f}': ")).unwrap_or_default())]
pub struct RowFailure {
    pub provenance: Provenance,
    pub code: FailureCode,
    /// The Pipefy target (attribute or field slug) concerned, if any.
    pub field: Option<String>,
    /// The source column concerned, if any.
    pub column: Option<String>,
    pub message: String,
}

impl RowFailure {
    pub fn new(provenance: Provenance, code: FailureCode, message: impl Into<String>) -> Self {
        RowFailure {
            provenance,
            code,
            field: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl From<RowError> for RowFailure {
    fn from(e: RowError) -> Self {
        RowFailure {
            provenance: e.provenance,
            code: FailureCode::ReadError,
            field: None,
            column: e.column,
            message: e.message,
        }
    }
}
