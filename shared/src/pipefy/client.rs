//! [`PipefyClient`]: batches, retries and the public operations.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;

use super::auth::{CredentialsProvider, TokenSource};
use super::batch::{
    build_document_with, interpret, is_shape_rejection, is_size_rejection, BatchOp, DocKind,
};
use super::error::{ErrorClass, Failure, OpError, OpResult, PipefyError};
use super::limiter::RateLimiter;
use super::ops::{Mutation, UpdateTableRecordInput};
use super::reads::{
    is_canonical_uuid, Card, CardPage, CardQuery, ListQuery, Listing, Lookup, PipeSchemaQuery,
    TableSchemaQuery, INVALID_RESPONSE,
};
use super::retry::Backoff;
use super::schema::{FieldDef, PipeSchema, TableSchema};
use super::stats::{ClientStats, Counters};
use super::transport::{RequestObserver, Transport};

pub const DEFAULT_ENDPOINT: &str = "https://api.pipefy.com/graphql";

/// Upper bound of `mutations_per_request`: documents are also bounded by Pipefy's query
/// complexity (docs/pipefy-api.md §9), and large batches make every failure costlier.
pub const MAX_MUTATIONS_PER_REQUEST: usize = 50;

/// Upper bound of `lookups_per_request`: a lookup or a read costs a few complexity points of
/// Pipefy's 50,000 (docs/pipefy-api.md §9), so reads are packed far fuller than writes.
pub const MAX_LOOKUPS_PER_REQUEST: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// GraphQL endpoint.
    pub endpoint: String,
    /// Requests allowed per `window`, shared by all requests of the client and its clones.
    pub requests_per_window: u32,
    pub window: Duration,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Aliased mutations per HTTP request.
    pub mutations_per_request: usize,
    /// Aliased reads per HTTP request (key lookups, card and record reads).
    pub lookups_per_request: usize,
    /// Whole-request timeout (connect, send, answer).
    pub request_timeout: Duration,
    /// Retries after the first attempt for retryable failures other than throttling.
    pub max_retries: u32,
    /// How long a request keeps being retried while Pipefy answers 429: a throttle says
    /// "wait", not "failed", so it has a time budget rather than a count (default two
    /// windows of the rate limit).
    pub throttle_patience: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            // The only published figure: 500 requests per 30 s (docs/pipefy-api.md §9).
            requests_per_window: 500,
            window: Duration::from_secs(30),
            max_in_flight: 8,
            // "About 30 per call, split into ~20" (docs/pipefy-api.md §9).
            mutations_per_request: 20,
            lookups_per_request: MAX_LOOKUPS_PER_REQUEST,
            // Pipefy stops a query after 33 s; leave room for the answer to arrive.
            request_timeout: Duration::from_secs(40),
            max_retries: 5,
            throttle_patience: Duration::from_secs(60),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl ClientConfig {
    fn validate(&self) -> Result<(), PipefyError> {
        let url = url::Url::parse(&self.endpoint)
            .map_err(|e| PipefyError::Config(format!("endpoint is not a URL: {e}")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(PipefyError::Config(format!(
                "endpoint must be http(s), got {}",
                url.scheme()
            )));
        }
        let checks = [
            (
                self.requests_per_window == 0,
                "requests_per_window must be at least 1",
            ),
            (self.window.is_zero(), "window must be positive"),
            (self.max_in_flight == 0, "max_in_flight must be at least 1"),
            (
                self.mutations_per_request == 0
                    || self.mutations_per_request > MAX_MUTATIONS_PER_REQUEST,
                "mutations_per_request must be between 1 and 50",
            ),
            (
                self.lookups_per_request == 0 || self.lookups_per_request > MAX_LOOKUPS_PER_REQUEST,
                "lookups_per_request must be between 1 and 100",
            ),
            (
                self.request_timeout.is_zero(),
                "request_timeout must be positive",
            ),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(PipefyError::Config((*msg).to_string())),
            None => Ok(()),
        }
    }
}

struct Inner {
    config: ClientConfig,
    transport: Transport,
    /// For attachment uploads: no whole-request timeout (a large file takes as long as it
    /// takes), but one on each read, and no credentials.
    upload_http: reqwest::Client,
    counters: Arc<Counters>,
    backoff: Backoff,
    /// Set once Pipefy refused a guessed shape: from then on only documented forms are
    /// sent (docs/pipefy-api.md, Unverified).
    documented_only: std::sync::atomic::AtomicBool,
    /// The most aliases a document of each kind has been accepted with: lowered when
    /// Pipefy refuses a document for its size (complexity, alias count), so that later
    /// documents are cut to fit at once.
    fits: [std::sync::atomic::AtomicUsize; 2],
}

/// The Pipefy GraphQL client. Cheap to clone; clones share the rate limiter, the
/// concurrency bound, the token and the counters.
#[derive(Clone)]
pub struct PipefyClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PipefyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipefyClient")
            .field("endpoint", &self.inner.config.endpoint)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What to do with an operation after a failed attempt.
enum Decision {
    Final(ErrorClass),
    Retry,
}

fn decide(f: &Failure, is_create: bool) -> Decision {
    match f {
        Failure::NotSent(_) | Failure::Throttled(_) => Decision::Retry,
        Failure::Uncertain { .. } if is_create => Decision::Final(ErrorClass::Ambiguous),
        Failure::Uncertain { .. } => Decision::Retry,
        Failure::Permanent { .. } => Decision::Final(ErrorClass::Permanent),
    }
}

fn op_error(class: ErrorClass, f: &Failure, attempts: u32) -> OpError {
    OpError {
        class,
        code: f.code(),
        message: f.message().to_string(),
        attempts,
    }
}

/// A query's failure as a call-level error.
/// A read's failure as the error of the call that made it.
pub(crate) fn query_error(e: OpError) -> PipefyError {
    match e.class {
        ErrorClass::Retryable | ErrorClass::Ambiguous => PipefyError::Unavailable {
            attempts: e.attempts,
            message: e.message,
        },
        ErrorClass::Permanent => match e.code.as_deref() {
            Some(INVALID_RESPONSE) => PipefyError::InvalidResponse(e.message),
            Some(c) if c.starts_with("HTTP_") => PipefyError::Http {
                status: c.trim_start_matches("HTTP_").parse().unwrap_or(0),
                message: e.message,
            },
            _ => PipefyError::Api {
                code: e.code,
                message: e.message,
            },
        },
    }
}

/// Asked right before each request that writes leaves: `false` keeps it (and every later
/// one of the call) from being sent. The engine's lease fence.
pub trait WriteGate: Send + Sync {
    fn may_write(&self) -> bool;
}

/// The code of an operation that was never sent because its [`WriteGate`] closed.
pub const NOT_SENT: &str = "NOT_SENT";

/// Codes meaning "no such object" (docs/pipefy-api.md §7).
pub(crate) fn is_not_found(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("NOT_FOUND" | "RESOURCE_NOT_FOUND" | "RECORD_NOT_FOUND")
    )
}

impl PipefyClient {
    pub fn new(
        config: ClientConfig,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> Result<Self, PipefyError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pipefy-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PipefyError::Config(format!("cannot build the HTTP client: {e}")))?;
        let upload_http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .read_timeout(config.request_timeout)
            .user_agent(concat!("pipefy-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PipefyError::Config(format!("cannot build the HTTP client: {e}")))?;
        let counters = Arc::new(Counters::default());
        let backoff = Backoff {
            max_retries: config.max_retries,
            base: config.backoff_base,
            max: config.backoff_max,
        };
        let transport = Transport {
            tokens: TokenSource::new(credentials, http.clone(), backoff, counters.clone()),
            http,
            endpoint: config.endpoint.clone(),
            limiter: RateLimiter::new(config.requests_per_window, config.window),
            in_flight: Semaphore::new(config.max_in_flight),
            counters: counters.clone(),
            request_timeout: config.request_timeout,
            observer: std::sync::OnceLock::new(),
        };
        Ok(PipefyClient {
            inner: Arc::new(Inner {
                config,
                transport,
                upload_http,
                counters,
                backoff,
                documented_only: std::sync::atomic::AtomicBool::new(false),
                fits: [
                    std::sync::atomic::AtomicUsize::new(usize::MAX),
                    std::sync::atomic::AtomicUsize::new(usize::MAX),
                ],
            }),
        })
    }

    /// Shows every request this client (and its clones) sends, and what came back, to
    /// `observer`; one observer per client, the first set stays.
    pub fn observe_requests(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.inner.transport.observer.set(observer);
    }

    /// Whether `other` is a clone of this client (one limiter and token cache).
    pub fn is_same_client(&self, other: &PipefyClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn upload_http(&self) -> &reqwest::Client {
        &self.inner.upload_http
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Counters so far (all clones together).
    pub fn stats(&self) -> ClientStats {
        self.inner
            .counters
            .snapshot(self.inner.transport.limiter.current_rate())
    }

    /// Sends the operations, `mutations_per_request` aliases per HTTP request, requests
    /// concurrently up to `max_in_flight`. One result per operation, in order.
    ///
    /// Retryable failures are retried (creates only when the request surely did not reach
    /// Pipefy: connect errors, 429); a create with an unknown outcome is returned as
    /// [`ErrorClass::Ambiguous`]. There is no ordering between operations of different
    /// requests: send dependent operations (fill fields, then move) in separate calls.
    /// `Err` only for run-level failures (credentials rejected).
    pub async fn mutate(&self, ops: Vec<Mutation>) -> Result<Vec<OpResult>, PipefyError> {
        self.mutate_gated(ops, None).await
    }

    /// [`PipefyClient::mutate`], asking `gate` before each HTTP request: operations whose
    /// request the gate stops fail with the code [`NOT_SENT`], never reaching Pipefy.
    pub async fn mutate_gated(
        &self,
        ops: Vec<Mutation>,
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<OpResult>, PipefyError> {
        let results = self.run_batch(DocKind::Mutation, &ops, gate).await?;
        if !self.documented_only() {
            return Ok(results);
        }
        // Documented forms only: a new record's due date goes through `updateTableRecord`,
        // which Pipefy's SDK shows with `due_date` (docs/pipefy-api.md §4).
        let mut follow_ups = Vec::new();
        for (op, result) in ops.iter().zip(&results) {
            if let (Mutation::CreateTableRecord(input), Ok(done)) = (op, result) {
                if let (Some(due), Some(id)) = (&input.due_date, &done.id) {
                    follow_ups.push(Mutation::UpdateTableRecord(UpdateTableRecordInput {
                        id: id.clone(),
                        due_date: Some(due.clone()),
                        ..Default::default()
                    }));
                }
                if input.label_ids.is_some() {
                    tracing::warn!(
                        table_id = %input.table_id,
                        "labels of a new table record were not set: Pipefy refused \
                         label_ids on createTableRecord and documents no other way"
                    );
                }
            }
        }
        if !follow_ups.is_empty() {
            for r in self.run_batch(DocKind::Mutation, &follow_ups, gate).await? {
                if let Err(e) = r {
                    // The record exists: failing the create would invite a duplicate.
                    tracing::warn!(error = %e, "could not set a new table record's due date");
                }
            }
        }
        Ok(results)
    }

    fn documented_only(&self) -> bool {
        self.inner
            .documented_only
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pipe's fields, phases (with fields and allowed moves), labels and members.
    pub async fn pipe_schema(&self, pipe_id: &str) -> Result<PipeSchema, PipefyError> {
        self.query_one(PipeSchemaQuery(pipe_id)).await
    }

    /// The database table's fields.
    pub async fn table_schema(&self, table_id: &str) -> Result<TableSchema, PipefyError> {
        self.query_one(TableSchemaQuery(table_id)).await
    }

    /// Card ids whose `field` equals each value (at most 2 per value: more than one is a
    /// duplicate for the caller to report). Uses `records(where: {field: uuid, eq})` when the
    /// field has a uuid, `findCards` otherwise.
    pub async fn find_cards_by_field(
        &self,
        pipe_id: &str,
        field: &FieldDef,
        values: &[String],
    ) -> Result<Vec<Result<Vec<String>, OpError>>, PipefyError> {
        let ops: Vec<Lookup<'_>> = values
            .iter()
            .map(
                |value| match field.uuid.as_deref().filter(|u| is_canonical_uuid(u)) {
                    // A slug or a non-canonical uuid would get Pipefy's generic internal
                    // error (docs/pipefy-api.md §5): those fields go through `findCards`.
                    Some(uuid) => Lookup::Records {
                        pipe_id,
                        uuid,
                        value,
                    },
                    None => Lookup::FindCards {
                        pipe_id,
                        field_id: &field.id,
                        value,
                    },
                },
            )
            .collect();
        self.run_batch(DocKind::Query, &ops, None).await
    }

    /// Table record ids whose `field` equals each value (`findRecords`), at most 2 per value.
    pub async fn find_records_by_field(
        &self,
        table_id: &str,
        field: &FieldDef,
        values: &[String],
    ) -> Result<Vec<Result<Vec<String>, OpError>>, PipefyError> {
        let ops: Vec<Lookup<'_>> = values
            .iter()
            .map(|value| Lookup::FindRecords {
                table_id,
                field_id: &field.id,
                value,
            })
            .collect();
        self.run_batch(DocKind::Query, &ops, None).await
    }

    /// One page (up to 50) of the pipe's cards, done ones included; `after` is the previous
    /// page's `end_cursor`.
    pub async fn list_cards(
        &self,
        pipe_id: &str,
        after: Option<&str>,
    ) -> Result<CardPage, PipefyError> {
        self.list_page(&Listing::Pipe(pipe_id.to_string()), after)
            .await
    }

    /// One page of a pipe's or a phase's cards, or of a table's records.
    pub async fn list_page(
        &self,
        of: &Listing,
        after: Option<&str>,
    ) -> Result<CardPage, PipefyError> {
        self.query_one(ListQuery { of, after }).await
    }

    /// A card by id; `None` when Pipefy says it does not exist. (A missing card may also
    /// come back as PERMISSION_DENIED, docs/pipefy-api.md §7; that stays an error because it may be
    /// a real permission problem.)
    pub async fn card(&self, id: &str) -> Result<Option<Card>, PipefyError> {
        match self.cards(&[id.to_string()], false).await?.pop() {
            Some(Ok(card)) => Ok(card),
            Some(Err(e)) => Err(query_error(e)),
            None => Err(PipefyError::InvalidResponse(
                "no result for the card query".into(),
            )),
        }
    }

    /// Cards (or, with `records`, table records read into the same shape) by id, many per
    /// request; `None` for one Pipefy says does not exist.
    pub async fn cards(
        &self,
        ids: &[String],
        records: bool,
    ) -> Result<Vec<Result<Option<Card>, OpError>>, PipefyError> {
        let ops: Vec<CardQuery<'_>> = ids
            .iter()
            .map(|id| CardQuery {
                id,
                record: records,
            })
            .collect();
        let results = self.run_batch(DocKind::Query, &ops, None).await?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                Err(e) if e.class == ErrorClass::Permanent && is_not_found(e.code.as_deref()) => {
                    Ok(None)
                }
                other => other,
            })
            .collect())
    }

    pub(crate) async fn query_one<O: BatchOp>(&self, op: O) -> Result<O::Output, PipefyError> {
        let mut results = self
            .run_batch(DocKind::Query, std::slice::from_ref(&op), None)
            .await?;
        match results.pop() {
            Some(r) => r.map_err(query_error),
            None => Err(PipefyError::InvalidResponse(
                "no result for the query".into(),
            )),
        }
    }

    /// How many operations of `kind` go into one document: the setting, or less once
    /// Pipefy refused a document for its size.
    fn aliases_per_document(&self, kind: DocKind) -> usize {
        let config = &self.inner.config;
        let setting = match kind {
            DocKind::Mutation => config.mutations_per_request,
            DocKind::Query => config.lookups_per_request,
        };
        setting
            .min(self.fits(kind).load(std::sync::atomic::Ordering::Relaxed))
            .max(1)
    }

    fn fits(&self, kind: DocKind) -> &std::sync::atomic::AtomicUsize {
        &self.inner.fits[usize::from(kind == DocKind::Query)]
    }

    /// Runs operations in aliased chunks, concurrently, and puts the results back in order.
    pub(crate) async fn run_batch<O: BatchOp>(
        &self,
        kind: DocKind,
        ops: &[O],
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<Result<O::Output, OpError>>, PipefyError> {
        let mut results: Vec<Option<Result<O::Output, OpError>>> =
            ops.iter().map(|_| None).collect();
        let mut to_send = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match (op.precheck(), results.get_mut(i)) {
                (Some(f), Some(slot)) => *slot = Some(Err(op_error(ErrorClass::Permanent, &f, 0))),
                _ => to_send.push(i),
            }
        }
        let chunk = self.aliases_per_document(kind);
        // Owned chunks: a closure over borrowed `&[usize]` slices makes the future's `Send`
        // bound higher-ranked, which `tokio::spawn` of a window cannot satisfy.
        let chunk_list: Vec<Vec<usize>> = to_send.chunks(chunk).map(<[usize]>::to_vec).collect();
        let mut chunks = futures::stream::iter(
            chunk_list
                .into_iter()
                .map(|c| self.run_chunk(kind, ops, c, gate)),
        )
        .buffer_unordered(self.inner.config.max_in_flight.max(1));
        while let Some(done) = chunks.next().await {
            for (i, r) in done? {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    // Unreachable by construction (every index is sent or prechecked); a
                    // defensive answer instead of a panic.
                    Err(OpError {
                        class: ErrorClass::Retryable,
                        code: None,
                        message: "operation was not processed".to_string(),
                        attempts: 0,
                    })
                })
            })
            .collect())
    }

    /// One chunk: send, sort outcomes into done / retry, back off, re-send the rest.
    async fn run_chunk<O: BatchOp>(
        &self,
        kind: DocKind,
        ops: &[O],
        indices: Vec<usize>,
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<(usize, Result<O::Output, OpError>)>, PipefyError> {
        let inner = &self.inner;
        let mut done = Vec::with_capacity(indices.len());
        let mut pending = indices;
        // Halves of a document Pipefy refused for its size, sent after this one.
        let mut parts: Vec<Vec<usize>> = Vec::new();
        let mut attempt: u32 = 0;
        // Failed rounds that were not throttles: those count against `max_retries`.
        let mut failed_rounds: u32 = 0;
        let started = std::time::Instant::now();
        let mut documented_only = self.documented_only();
        loop {
            if pending.is_empty() {
                match parts.pop() {
                    Some(part) => {
                        pending = part;
                        attempt = 0;
                        failed_rounds = 0;
                    }
                    None => return Ok(done),
                }
            }
            attempt += 1;
            let batch: Vec<(usize, &O)> = pending
                .iter()
                .filter_map(|&i| ops.get(i).map(|o| (i, o)))
                .collect();
            let doc = build_document_with(kind, &batch, documented_only);
            if kind == DocKind::Mutation {
                Counters::add(&inner.counters.mutations, batch.len() as u64);
            }
            if attempt > 1 {
                Counters::add(&inner.counters.retries, 1);
            }
            let gate = gate.filter(|_| kind == DocKind::Mutation);
            let answer = match inner.transport.post(&doc, gate).await {
                Ok(answer) => answer,
                Err(PipefyError::NotSent) => {
                    for (i, _) in batch {
                        done.push((
                            i,
                            Err(OpError {
                                class: ErrorClass::Retryable,
                                code: Some(NOT_SENT.into()),
                                message: PipefyError::NotSent.to_string(),
                                attempts: attempt - 1,
                            }),
                        ));
                    }
                    return Ok(done);
                }
                Err(e) => return Err(e),
            };
            if let Ok(body) = &answer.outcome {
                let guessed = batch.iter().any(|(_, op)| op.uses_guessed_shape());
                if !documented_only && guessed && is_shape_rejection(body) {
                    // Validation runs before anything executes: resending is safe, even
                    // for creates.
                    documented_only = true;
                    inner
                        .documented_only
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    Counters::add(&inner.counters.shape_fallbacks, 1);
                    let errors = super::error::GqlError::all_from_body(body);
                    tracing::warn!(
                        error = errors
                            .first()
                            .map(|e| e.message.as_str())
                            .unwrap_or_default(),
                        "Pipefy refused a guessed document shape; falling back to the \
                         documented form (docs/pipefy-api.md, Unverified)"
                    );
                    continue;
                }
                if batch.len() > 1 && is_size_rejection(body) {
                    // Refused for its size at validation, before anything ran: sending it
                    // again in halves is safe, creates included; later documents are cut to
                    // the half at once.
                    let half = batch.len() / 2;
                    self.fits(kind)
                        .fetch_min(half, std::sync::atomic::Ordering::Relaxed);
                    Counters::add(&inner.counters.splits, 1);
                    tracing::warn!(
                        aliases = batch.len(),
                        now = half,
                        error = super::error::GqlError::all_from_body(body)
                            .first()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                        "Pipefy refused a document for its size; sending it in halves"
                    );
                    parts.push(pending.split_off(half));
                    attempt -= 1;
                    continue;
                }
            }
            let from_body = answer.outcome.is_ok();
            let outcomes: Vec<Result<O::Output, Failure>> = match answer.outcome {
                Ok(body) => interpret(&body, &batch),
                Err(f) => batch.iter().map(|_| Err(f.clone())).collect(),
            };
            let mut retry = Vec::new();
            let mut last_failure: Option<Failure> = None;
            let mut not_only_throttled = false;
            for ((i, op), outcome) in batch.iter().zip(outcomes) {
                let f = match outcome {
                    Ok(out) => {
                        done.push((*i, Ok(out)));
                        continue;
                    }
                    Err(f) => f,
                };
                let out_of_retries = match f {
                    Failure::Throttled(_) => started.elapsed() >= inner.config.throttle_patience,
                    _ => failed_rounds >= inner.backoff.max_retries,
                };
                match decide(&f, op.is_create()) {
                    Decision::Final(class) => done.push((*i, Err(op_error(class, &f, attempt)))),
                    Decision::Retry if out_of_retries => {
                        done.push((*i, Err(op_error(ErrorClass::Retryable, &f, attempt))))
                    }
                    Decision::Retry => {
                        retry.push(*i);
                        not_only_throttled |= !matches!(f, Failure::Throttled(_));
                        last_failure = Some(f);
                    }
                }
            }
            let Some(failure) = last_failure else {
                pending = Vec::new();
                continue;
            };
            if not_only_throttled {
                failed_rounds += 1;
            }
            if from_body && matches!(failure, Failure::Throttled(_)) {
                // A throttle error code inside a 200 answer (HTTP 429s are counted on receipt).
                Counters::add(&inner.counters.throttles, 1);
            }
            let delay = inner.backoff.delay_with_hint(attempt, answer.retry_after);
            tracing::warn!(
                attempt,
                retrying = retry.len(),
                delay_ms = delay.as_millis() as u64,
                error = failure.message(),
                "Pipefy request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            pending = retry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipefy::auth::{Credentials, StaticCredentials};
    use crate::pipefy::secret::Secret;

    fn creds() -> Arc<dyn CredentialsProvider> {
        Arc::new(StaticCredentials(Credentials::PersonalToken(Secret::new(
            "t0ken-value",
        ))))
    }

    #[test]
    fn config_is_validated() {
        assert!(PipefyClient::new(ClientConfig::default(), creds()).is_ok());
        for bad in [
            ClientConfig {
                endpoint: "not a url".into(),
                ..Default::default()
            },
            ClientConfig {
                endpoint: "ftp://x/graphql".into(),
                ..Default::default()
            },
            ClientConfig {
                mutations_per_request: 0,
                ..Default::default()
            },
            ClientConfig {
                mutations_per_request: 51,
                ..Default::default()
            },
            ClientConfig {
                lookups_per_request: 0,
                ..Default::default()
            },
            ClientConfig {
                lookups_per_request: 101,
                ..Default::default()
            },
            ClientConfig {
                max_in_flight: 0,
                ..Default::default()
            },
            ClientConfig {
                requests_per_window: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                PipefyClient::new(bad, creds()),
                Err(PipefyError::Config(_))
            ));
        }
    }

    #[test]
    fn decisions_follow_the_rules() {
        let unc = Failure::uncertain("timeout");
        assert!(matches!(
            decide(&unc, true),
            Decision::Final(ErrorClass::Ambiguous)
        ));
        assert!(matches!(decide(&unc, false), Decision::Retry));
        assert!(matches!(
            decide(&Failure::NotSent("refused".into()), true),
            Decision::Retry
        ));
        assert!(matches!(
            decide(&Failure::Throttled("429".into()), true),
            Decision::Retry
        ));
        assert!(matches!(
            decide(&Failure::permanent(None, "no"), false),
            Decision::Final(ErrorClass::Permanent)
        ));
    }

    #[test]
    fn query_errors_keep_their_kind() {
        let e = |class, code: Option<&str>| OpError {
            class,
            code: code.map(str::to_string),
            message: "m".into(),
            attempts: 3,
        };
        assert_eq!(
            query_error(e(ErrorClass::Retryable, None)),
            PipefyError::Unavailable {
                attempts: 3,
                message: "m".into()
            }
        );
        assert_eq!(
            query_error(e(ErrorClass::Permanent, Some("HTTP_403"))),
            PipefyError::Http {
                status: 403,
                message: "m".into()
            }
        );
        assert!(matches!(
            query_error(e(ErrorClass::Permanent, Some(INVALID_RESPONSE))),
            PipefyError::InvalidResponse(_)
        ));
        assert!(matches!(
            query_error(e(ErrorClass::Permanent, Some("PERMISSION_DENIED"))),
            PipefyError::Api { .. }
        ));
    }

    #[tokio::test]
    async fn connect_errors_are_retried_then_reported_as_retryable() {
        // Nothing listens on this port: every attempt is a connect error.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = PipefyClient::new(
            ClientConfig {
                endpoint: format!("http://127.0.0.1:{port}/graphql"),
                max_retries: 2,
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(5),
                request_timeout: Duration::from_millis(500),
                ..Default::default()
            },
            creds(),
        )
        .unwrap();
        let r = client
            .mutate(vec![Mutation::CreateCard(Default::default())])
            .await
            .unwrap();
        let err = r[0].as_ref().unwrap_err();
        // Even a create: the request never left, so it is retryable, not ambiguous.
        assert_eq!(err.class, ErrorClass::Retryable);
        assert_eq!(err.attempts, 3);
        assert!(!err.message.contains("t0ken-value"));
        let s = client.stats();
        assert_eq!(s.requests, 3);
        assert_eq!(s.retries, 2);
        assert_eq!(s.mutations, 3);
        assert!(!format!("{client:?}").contains("t0ken-value"));
        // Queries fail as Unavailable.
        let e = client.pipe_schema("1").await.unwrap_err();
        assert!(
            matches!(e, PipefyError::Unavailable { attempts: 3, .. }),
            "{e}"
        );
    }

    #[tokio::test]
    async fn prechecked_ops_fail_without_a_request() {
        let client = PipefyClient::new(ClientConfig::default(), creds()).unwrap();
        let r = client
            .mutate(vec![Mutation::UpdateFieldsValues {
                node_id: "1".into(),
                values: vec![],
            }])
            .await
            .unwrap();
        let e = r[0].as_ref().unwrap_err();
        assert_eq!((e.class, e.attempts), (ErrorClass::Permanent, 0));
        assert_eq!(client.stats().requests, 0);
    }
}
