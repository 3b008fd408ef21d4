//! The Pipefy GraphQL client (the facts it relies on: docs/pipefy-api.md).
//!
//! - [`PipefyClient::mutate`] sends typed [`Mutation`]s as aliased batches (one HTTP request
//!   carries up to `mutations_per_request` of them, each with its own variable) and maps every
//!   alias's result back to its operation.
//! - Every failure is classified ([`ErrorClass`]): retryable ones are retried with backoff,
//!   permanent ones reported with Pipefy's code and message, and a create whose outcome is
//!   unknown comes back as `Ambiguous` so the caller looks the key up before creating again.
//! - One rate limiter (paced, AIMD on 429) and one concurrency bound are shared by all
//!   clones of a client.
//! - Tokens: personal tokens or service-account client credentials, refreshed on 401; the
//!   token is a [`Secret`] and never printed.

mod auth;
mod batch;
pub(crate) mod client;
pub mod endpoint;
mod error;
mod limiter;
mod ops;
mod reads;
mod retry;
pub mod schema;
mod secret;
mod stats;
mod transport;
pub mod uploads;

pub use auth::{
    Credentials, CredentialsFn, CredentialsProvider, StaticCredentials, DEFAULT_TOKEN_URL,
};
pub(crate) use client::query_error;
pub use client::{
    ClientConfig, PipefyClient, WriteGate, DEFAULT_ENDPOINT, MAX_MUTATIONS_PER_REQUEST, NOT_SENT,
};
pub use endpoint::AllowedHosts;
pub use error::{ErrorClass, OpError, OpResult, OpSuccess, PipefyError};
pub use ops::{
    CreateCardInput, CreateTableRecordInput, FieldOperation, FieldValueInput, Mutation,
    NodeFieldValue, UpdateCardInput, UpdateTableRecordInput, MAX_VALUES_PER_UPDATE,
};
pub use reads::{Card, CardField, CardPage, Listing, PhaseRef, UserRef, CARDS_PAGE_SIZE};
pub use schema::{FieldDef, FieldType, LabelDef, MemberDef, PhaseDef, PipeSchema, TableSchema};
pub use secret::Secret;
pub use stats::ClientStats;
pub use transport::{Exchange, RequestObserver};
pub use uploads::{PresignedUrl, UploadBody, UploadError, UploadRequest, PRESIGNED_URL_LIFETIME};
