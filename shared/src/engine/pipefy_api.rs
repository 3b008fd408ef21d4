//! What the engine needs of Pipefy, as a small trait: the schema, lookups by a field's value,
//! writes, card reads and listings. [`PipefyClient`] implements it over HTTP; unit tests of the
//! planner, the unknown-outcome resolution and the removals use a fake.

use async_trait::async_trait;

use crate::mapping::Schema;
use crate::pipefy::{
    Card, CardPage, ClientStats, FieldDef, Listing, Mutation, OpError, OpResult, PipefyClient,
    PipefyError, PresignedUrl, UploadBody, UploadError, UploadRequest, WriteGate,
};

use super::Repo;

/// The ids found for each value of a lookup (or why that value could not be looked up).
pub type LookupResults = Vec<Result<Vec<String>, OpError>>;

/// Per id: the card or record (`None`: it does not exist), or why it could not be read.
pub type CurrentResults = Vec<Result<Option<Card>, OpError>>;

#[async_trait]
pub trait PipefyApi: Send + Sync {
    /// The pipe's or table's fields, phases, labels and members.
    async fn schema(&self, repo: &Repo) -> Result<Schema, PipefyError>;
    /// Ids of the cards or records whose `field` holds each value (at most 2 per value).
    async fn find_by_field(
        &self,
        repo: &Repo,
        field: &FieldDef,
        values: &[String],
    ) -> Result<LookupResults, PipefyError>;
    /// Sends the writes, asking `gate` before each request; one result per operation.
    async fn mutate(
        &self,
        ops: Vec<Mutation>,
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<OpResult>, PipefyError>;
    /// A card as Pipefy holds it now (`None`: it does not exist).
    async fn card(&self, id: &str) -> Result<Option<Card>, PipefyError>;
    /// The destination's cards or records by id, as Pipefy holds them now, batched.
    async fn current(&self, repo: &Repo, ids: &[String]) -> Result<CurrentResults, PipefyError>;
    /// One page of a pipe's or phase's cards or a table's records; `after` is the previous
    /// page's `end_cursor`.
    async fn page(&self, of: &Listing, after: Option<&str>) -> Result<CardPage, PipefyError>;
    /// The organization holding the table, if the token sees it (a pipe's is in its schema).
    async fn table_organization(&self, table_id: &str) -> Result<Option<String>, PipefyError>;
    /// An upload URL per file (`createPresignedUrl`), batched.
    async fn presigned_urls(
        &self,
        requests: &[UploadRequest],
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<Result<PresignedUrl, OpError>>, PipefyError>;
    /// Streams a file to its upload URL.
    async fn put_upload(
        &self,
        target: &PresignedUrl,
        file: UploadBody<'_>,
    ) -> Result<(), UploadError>;
    /// Requests, retries and throttles so far.
    fn stats(&self) -> ClientStats;
}

#[async_trait]
impl PipefyApi for PipefyClient {
    async fn schema(&self, repo: &Repo) -> Result<Schema, PipefyError> {
        Ok(match repo {
            Repo::Pipe(id) => Schema::Pipe(self.pipe_schema(id).await?),
            Repo::Table(id) => Schema::Table(self.table_schema(id).await?),
        })
    }

    async fn find_by_field(
        &self,
        repo: &Repo,
        field: &FieldDef,
        values: &[String],
    ) -> Result<LookupResults, PipefyError> {
        match repo {
            Repo::Pipe(p) => self.find_cards_by_field(p, field, values).await,
            Repo::Table(t) => self.find_records_by_field(t, field, values).await,
        }
    }

    async fn mutate(
        &self,
        ops: Vec<Mutation>,
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<OpResult>, PipefyError> {
        self.mutate_gated(ops, gate).await
    }

    async fn card(&self, id: &str) -> Result<Option<Card>, PipefyError> {
        PipefyClient::card(self, id).await
    }

    async fn current(&self, repo: &Repo, ids: &[String]) -> Result<CurrentResults, PipefyError> {
        self.cards(ids, matches!(repo, Repo::Table(_))).await
    }

    async fn page(&self, of: &Listing, after: Option<&str>) -> Result<CardPage, PipefyError> {
        self.list_page(of, after).await
    }

    async fn table_organization(&self, table_id: &str) -> Result<Option<String>, PipefyError> {
        PipefyClient::table_organization(self, table_id).await
    }

    async fn presigned_urls(
        &self,
        requests: &[UploadRequest],
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<Result<PresignedUrl, OpError>>, PipefyError> {
        PipefyClient::presigned_urls(self, requests, gate).await
    }

    async fn put_upload(
        &self,
        target: &PresignedUrl,
        file: UploadBody<'_>,
    ) -> Result<(), UploadError> {
        PipefyClient::put_upload(self, target, file).await
    }

    fn stats(&self) -> ClientStats {
        PipefyClient::stats(self)
    }
}
