//! HTTP around the GraphQL schema: auth, rate limit, faults, error shaping, OAuth token
//! endpoint and the `/_emulator/...` inspection routes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{
    EmptySubscription, ErrorExtensionValues, Request, Schema, ServerError, ValidationResult,
    Variables,
};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as AxJson, Router};
use regex::Regex;
use serde_json::{json, Value as Json};

use crate::conn::ConnHandle;
use crate::faults::{FaultEngine, Faults, RateLimiter, RequestFault, Stats};
use crate::schema::{Caller, Mutation, PipefySchema, Query};
use crate::state::{Catalog, Rules, StateSnapshot, Store};
use crate::uploads::{self, UploadInfo, Uploads};
use crate::validation::{self, TypeTable};

/// Page size caps per listing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageMax {
    pub cards: usize,
    pub records: usize,
    pub table_records: usize,
}

struct IssuedToken {
    user_id: String,
    expires_at: Instant,
}

/// Everything a request can touch.
pub(crate) struct Inner {
    pub cat: Arc<Catalog>,
    pub rules: Rules,
    pub page_max: PageMax,
    pub max_aliases: Option<usize>,
    pub retry_after_secs: Option<u64>,
    initial: Store,
    store: Mutex<Store>,
    faults: Mutex<FaultEngine>,
    stats: Mutex<Stats>,
    limiter: Mutex<RateLimiter>,
    issued: Mutex<HashMap<String, IssuedToken>>,
    token_counter: AtomicU64,
    uploads: Mutex<Uploads>,
    /// `http://host:port` once bound (upload URLs are minted on it).
    base_url: OnceLock<String>,
}

/// Locks a mutex; a panic elsewhere while holding it must not take the emulator down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cat: Arc<Catalog>,
        rules: Rules,
        page_max: PageMax,
        initial: Store,
        faults: Faults,
        limiter: RateLimiter,
        max_aliases: Option<usize>,
        retry_after_secs: Option<u64>,
        uploads: Uploads,
    ) -> Inner {
        Inner {
            cat,
            rules,
            page_max,
            max_aliases,
            retry_after_secs,
            store: Mutex::new(initial.clone()),
            initial,
            faults: Mutex::new(FaultEngine::new(faults)),
            stats: Mutex::new(Stats::default()),
            limiter: Mutex::new(limiter),
            issued: Mutex::new(HashMap::new()),
            token_counter: AtomicU64::new(1),
            uploads: Mutex::new(uploads),
            base_url: OnceLock::new(),
        }
    }

    pub fn uploads(&self) -> MutexGuard<'_, Uploads> {
        lock(&self.uploads)
    }
    pub fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url);
    }
    /// `http://host:port` (empty before the server is bound).
    pub fn base_url(&self) -> &str {
        self.base_url.get().map(String::as_str).unwrap_or_default()
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
    pub fn faults(&self) -> MutexGuard<'_, FaultEngine> {
        lock(&self.faults)
    }
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }
    pub fn count_query(&self, name: &str) {
        *self.stats().queries.entry(name.to_string()).or_default() += 1;
    }
    pub fn count_mutation(&self, name: &str) {
        *self.stats().mutations.entry(name.to_string()).or_default() += 1;
    }
    pub fn snapshot(&self) -> StateSnapshot {
        self.store().snapshot()
    }
    pub fn set_faults(&self, f: Faults) {
        self.faults().set(f);
    }
    pub fn current_faults(&self) -> Faults {
        self.faults().faults.clone()
    }
    pub fn stats_copy(&self) -> Stats {
        self.stats().clone()
    }
    pub fn reset_stats(&self) {
        *self.stats() = Stats::default();
    }
    /// Back to the fixture: cards, records, id counters, stats and rate-limit windows.
    /// Faults and issued tokens are kept.
    pub fn reset(&self) {
        *self.store() = self.initial.clone();
        self.uploads().clear();
        self.reset_stats();
        lock(&self.limiter).clear();
    }
    /// Makes every issued service-account token expired (tests of token refresh).
    pub fn expire_tokens(&self) {
        let past = Instant::now();
        for t in lock(&self.issued).values_mut() {
            t.expires_at = past;
        }
    }
}

// ---------------------------------------------------------------- limits extension

/// Complexity and depth limits with graphql-ruby style messages carrying the numbers.
pub(crate) struct Limits {
    pub max_complexity: u64,
    pub max_depth: usize,
}

struct LimitsExt {
    max_complexity: u64,
    max_depth: usize,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExt {
            max_complexity: self.max_complexity,
            max_depth: self.max_depth,
        })
    }
}

fn coded_error(message: String, code: &str) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code);
    e.extensions = Some(ext);
    e
}

#[async_graphql::async_trait::async_trait]
impl Extension for LimitsExt {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        if ctx.data_opt::<ValidateOnly>().is_some() {
            // Only async-graphql's own rules' errors are wanted; nothing runs.
            return Err(next.run(ctx).await.err().unwrap_or_default());
        }
        let r = next.run(ctx).await?;
        if r.complexity as u64 > self.max_complexity {
            return Err(vec![coded_error(
                format!(
                    "Query has complexity of {}, which exceeds max complexity of {}",
                    r.complexity, self.max_complexity
                ),
                "MAX_COMPLEXITY_EXCEEDED",
            )]);
        }
        if r.depth > self.max_depth {
            return Err(vec![coded_error(
                format!(
                    "Query has depth of {}, which exceeds max depth of {}",
                    r.depth, self.max_depth
                ),
                "MAX_DEPTH_EXCEEDED",
            )]);
        }
        Ok(r)
    }
}

/// Request data of a run that only collects async-graphql's validation errors.
struct ValidateOnly;

/// Selection-set nesting (fragments included) async-graphql is allowed to walk; deeper
/// documents are refused by [`execute`] first (the parser stops each definition at 64).
const MAX_NESTING: usize = 64;

/// Inlined fields up to which async-graphql may validate a document; beyond it inlining
/// fragments costs too much, and the document is far over any complexity limit anyway.
const MAX_EXPANDED_FIELDS: u64 = 250_000;

pub(crate) fn build_schema(inner: Arc<Inner>, limits: Limits) -> PipefySchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(inner)
        .extension(limits)
        .limit_recursive_depth(MAX_NESTING)
        .finish()
}

// ---------------------------------------------------------------- router

#[derive(Clone)]
pub(crate) struct App {
    pub inner: Arc<Inner>,
    pub schema: PipefySchema,
    /// The schema's types as the variable validation reads them.
    pub types: Arc<TypeTable>,
    pub max_complexity: u64,
    pub max_depth: usize,
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/graphql", post(graphql_handler))
        .route("/queries", post(graphql_handler))
        .route("/oauth/token", post(oauth_handler))
        .route("/_emulator/state", get(state_handler))
        .route("/_emulator/stats", get(stats_handler))
        .route("/_emulator/stats/reset", post(stats_reset_handler))
        .route("/_emulator/reset", post(reset_handler))
        .route(
            "/_emulator/faults",
            get(get_faults_handler).post(set_faults_handler),
        )
        .route("/_emulator/expire-tokens", post(expire_tokens_handler))
        .route("/_emulator/uploads", get(uploads_list_handler))
        .route("/orgs/{*rest}", get(download_handler).put(upload_handler))
        .with_state(app)
}

async fn state_handler(State(app): State<App>) -> AxJson<StateSnapshot> {
    AxJson(app.inner.snapshot())
}

async fn stats_handler(State(app): State<App>) -> AxJson<Stats> {
    AxJson(app.inner.stats_copy())
}

async fn stats_reset_handler(State(app): State<App>) -> AxJson<Json> {
    app.inner.reset_stats();
    AxJson(json!({"ok": true}))
}

async fn uploads_list_handler(State(app): State<App>) -> AxJson<Vec<UploadInfo>> {
    AxJson(app.inner.uploads().list())
}

fn s3_error(e: &uploads::S3Error, key: &str) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        )],
        e.xml(key),
    )
        .into_response()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| uploads::decode_path(v))
    })
}

/// `PUT /orgs/...`: the presigned upload (S3 stand-in).
async fn upload_handler(
    State(app): State<App>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let key = uploads::decode_path(uri.path());
    let max = app.inner.uploads().max_bytes;
    let limit = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let e = uploads::S3Error {
                status: 400,
                code: "EntityTooLarge",
                message: "Your proposed upload exceeds the maximum allowed size".into(),
            };
            return s3_error(&e, &key);
        }
    };
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let sig = query_param(uri.query(), "X-Amz-Signature");
    let res = app.inner.uploads().put(
        &key,
        sig.as_deref(),
        text(header::CONTENT_LENGTH),
        text(header::CONTENT_TYPE),
        &bytes,
    );
    match res {
        Ok(()) => (
            StatusCode::OK,
            [(header::ETAG, HeaderValue::from_static("\"emulator\""))],
        )
            .into_response(),
        Err(e) => s3_error(&e, &key),
    }
}

/// `GET /orgs/...`: the bytes of an uploaded path (the download URL).
async fn download_handler(State(app): State<App>, uri: axum::http::Uri) -> Response {
    let key = uploads::decode_path(uri.path());
    let got = app.inner.uploads().get(&key);
    match got {
        Ok((bytes, ct)) => {
            let ct = ct
                .and_then(|c| HeaderValue::from_str(&c).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => s3_error(&e, &key),
    }
}

async fn reset_handler(State(app): State<App>) -> AxJson<Json> {
    app.inner.reset();
    AxJson(json!({"ok": true}))
}

async fn expire_tokens_handler(State(app): State<App>) -> AxJson<Json> {
    app.inner.expire_tokens();
    AxJson(json!({"ok": true}))
}

async fn get_faults_handler(State(app): State<App>) -> AxJson<Faults> {
    AxJson(app.inner.current_faults())
}

async fn set_faults_handler(State(app): State<App>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            app.inner.set_faults(f.clone());
            AxJson(f).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            AxJson(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- auth

enum AuthFail {
    /// Header missing, empty, or without the `Bearer ` prefix.
    Missing,
    Invalid,
    Expired,
}

fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<(String, String), AuthFail> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(AuthFail::Missing),
    };
    if token.is_empty() {
        return Err(AuthFail::Missing);
    }
    if let Some(user) = inner.cat.tokens.get(token) {
        return Ok((token.to_string(), user.clone()));
    }
    match lock(&inner.issued).get(token) {
        Some(t) if t.expires_at > Instant::now() => Ok((token.to_string(), t.user_id.clone())),
        Some(_) => Err(AuthFail::Expired),
        None => Err(AuthFail::Invalid),
    }
}

fn unauthorized(fail: AuthFail) -> Response {
    let (body, www) = match fail {
        AuthFail::Missing => (
            json!({"errors": [{"title": "Unauthorized", "detail": "Missing or malformed Authorization header; expected 'Bearer <token>'", "status": "401"}]}),
            "Bearer realm=\"Pipefy\"",
        ),
        AuthFail::Invalid => (
            json!({"error": "invalid_token", "error_description": "The access token is invalid", "state": "unauthorized"}),
            "Bearer realm=\"Pipefy\", error=\"invalid_token\", error_description=\"The access token is invalid\"",
        ),
        AuthFail::Expired => (
            json!({"error": "invalid_token", "error_description": "The access token expired", "state": "unauthorized"}),
            "Bearer realm=\"Pipefy\", error=\"invalid_token\", error_description=\"The access token expired\"",
        ),
    };
    let mut r = (StatusCode::UNAUTHORIZED, AxJson(body)).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(www));
    r
}

fn too_many(inner: &Inner) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        AxJson(json!({"errors": [{"message": "Too many requests", "extensions": {"code": "TOO_MANY_REQUESTS"}}]})),
    )
        .into_response();
    if let Some(s) = inner.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

// ---------------------------------------------------------------- oauth

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..n {
            out.push(((acc >> (16 - 8 * i)) & 0xff) as u8);
        }
    }
    Some(out)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        AxJson(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn oauth_handler(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let inner = &app.inner;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut params: HashMap<String, String> = HashMap::new();
    if ctype.contains("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&body) {
            params.insert(k.into_owned(), v.into_owned());
        }
    } else {
        match serde_json::from_slice::<Json>(&body) {
            Ok(Json::Object(m)) => {
                for (k, v) in m {
                    if let Some(s) = v.as_str() {
                        params.insert(k, s.to_string());
                    }
                }
            }
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The request body must be JSON or form encoded.",
                )
            }
        }
    }
    // Go's clientcredentials flow may send the client in a Basic header instead.
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(decode_base64)
        .and_then(|b| String::from_utf8(b).ok())
    {
        if let Some((id, secret)) = basic.split_once(':') {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            params.entry("client_id".into()).or_insert_with(|| dec(id));
            params
                .entry("client_secret".into())
                .or_insert_with(|| dec(secret));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: grant_type.",
            )
        }
    }
    let id = params.get("client_id").cloned().unwrap_or_default();
    let secret = params.get("client_secret").cloned().unwrap_or_default();
    let Some(sa) = inner
        .cat
        .fixture
        .service_accounts
        .iter()
        .find(|s| s.client_id == id && s.client_secret == secret)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
        );
    };
    let n = inner.token_counter.fetch_add(1, Ordering::Relaxed);
    let token = format!("sa-{}-{:x}", uuid::Uuid::new_v4().simple(), n);
    lock(&inner.issued).insert(
        token.clone(),
        IssuedToken {
            user_id: sa.user_id.clone(),
            expires_at: Instant::now() + Duration::from_secs(sa.expires_in),
        },
    );
    inner.stats().oauth_tokens_issued += 1;
    AxJson(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": sa.expires_in,
        "created_at": chrono::Utc::now().timestamp(),
    }))
    .into_response()
}

// ---------------------------------------------------------------- graphql

async fn graphql_handler(
    State(app): State<App>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = app.inner.clone();
    inner.stats().total += 1;
    let (token, user_id) = match authenticate(&inner, &headers) {
        Ok(x) => x,
        Err(fail) => {
            inner.stats().status_401 += 1;
            return unauthorized(fail);
        }
    };
    if !lock(&inner.limiter).allow(&token, Instant::now()) {
        let mut s = inner.stats();
        s.status_429 += 1;
        s.rate_limited += 1;
        drop(s);
        return too_many(&inner);
    }
    if inner.faults().take_throttle() {
        let mut s = inner.stats();
        s.status_429 += 1;
        s.faults.throttled += 1;
        drop(s);
        return too_many(&inner);
    }
    let Ok(body) = serde_json::from_slice::<Json>(&body) else {
        // docs/pipefy-api.md §8: a body that is not JSON gets a plain-text 500 page.
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        );
    };
    let latency = inner.faults().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let fault = inner.faults().draw_request();
    match fault {
        RequestFault::None => {}
        RequestFault::Error5xx(code) => {
            inner.stats().faults.error_5xx += 1;
            return match code {
                502 => plain(StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
                503 => plain(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable"),
                _ => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error",
                ),
            };
        }
        RequestFault::Reset => {
            inner.stats().faults.resets += 1;
            conn.kill();
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "");
        }
        RequestFault::Timeout { applied } => {
            let hold = {
                let mut s = inner.stats();
                s.faults.timeouts += 1;
                if applied {
                    s.faults.timeouts_applied += 1;
                }
                drop(s);
                inner.faults().faults.timeout_hold_ms
            };
            if applied {
                let _ = execute(&app, &body, user_id).await;
            }
            tokio::time::sleep(Duration::from_millis(hold)).await;
            return plain(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout");
        }
    }
    let out = execute(&app, &body, user_id).await;
    (StatusCode::OK, AxJson(out)).into_response()
}

fn request_error(message: &str, code: &str, correlation_id: &str) -> Json {
    json!({"errors": [{"message": message, "extensions": {"code": code, "correlation_id": correlation_id}}]})
}

fn count_aliases_in(set: &SelectionSet, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some())
                    + count_aliases_in(&f.node.selection_set.node, depth + 1)
            }
            Selection::InlineFragment(i) => count_aliases_in(&i.node.selection_set.node, depth + 1),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Aliased fields anywhere in the document (operations and fragments).
fn count_aliases(doc: &ExecutableDocument) -> usize {
    let ops: usize = doc
        .operations
        .iter()
        .map(|(_, op)| count_aliases_in(&op.node.selection_set.node, 0))
        .sum();
    let frags: usize = doc
        .fragments
        .values()
        .map(|f| count_aliases_in(&f.node.selection_set.node, 0))
        .sum();
    ops + frags
}

async fn execute(app: &App, body: &Json, user_id: String) -> Json {
    let inner = &app.inner;
    let corr = uuid::Uuid::new_v4().simple().to_string();
    let Some(query) = body.get("query").and_then(Json::as_str) else {
        return request_error("No query string was present", "GRAPHQL_PARSE_FAILED", &corr);
    };
    let vars_json = match body.get("variables") {
        None | Some(Json::Null) => json!({}),
        Some(v @ Json::Object(_)) => v.clone(),
        Some(Json::String(s)) if s.trim().is_empty() => json!({}),
        // Some clients send variables as a JSON string.
        Some(Json::String(s)) => match serde_json::from_str::<Json>(s) {
            Ok(v @ Json::Object(_)) => v,
            _ => {
                return request_error(
                    "Variables must be a JSON object",
                    "GRAPHQL_VALIDATION_FAILED",
                    &corr,
                )
            }
        },
        Some(_) => {
            return request_error(
                "Variables must be a JSON object",
                "GRAPHQL_VALIDATION_FAILED",
                &corr,
            )
        }
    };
    let variables = Variables::from_json(vars_json.clone());
    let op_name = body
        .get("operationName")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    // The parser recurses per nesting level: very deep texts are answered without it.
    let nest = validation::nesting(query);
    if nest.total > validation::MAX_TEXT_NESTING {
        return too_deep_text(app, nest, &corr);
    }
    let mut req = Request::new(query)
        .variables(variables)
        .data(Caller { user_id });
    if let Some(n) = &op_name {
        req = req.operation_name(n.clone());
    }
    let (aliases, stat_name, keys, var_errors, doc_shape, value_errors) = match req.parsed_query() {
        Ok(doc) => {
            let name = op_name.clone().unwrap_or_else(|| match &doc.operations {
                DocumentOperations::Multiple(m) if m.len() == 1 => {
                    m.keys().next().map(|k| k.to_string()).unwrap_or_default()
                }
                _ => "<anonymous>".to_string(),
            });
            (
                count_aliases(doc),
                name,
                root_keys(doc, op_name.as_deref()),
                validation::validate_variables(doc, &app.types),
                validation::shape(doc),
                validation::validate_values(doc, op_name.as_deref(), &vars_json, &app.types),
            )
        }
        Err(e) => {
            if e.message.starts_with("recursion limit exceeded") {
                return too_deep_text(app, nest, &corr);
            }
            let mut e = e;
            let mut ext = ErrorExtensionValues::default();
            ext.set("code", "GRAPHQL_PARSE_FAILED");
            e.extensions = Some(ext);
            return shape(async_graphql::Response::from_errors(vec![e]), &corr, &[]);
        }
    };
    *inner.stats().by_operation.entry(stat_name).or_default() += 1;
    let walkable =
        doc_shape.nesting <= MAX_NESTING && doc_shape.total_fields <= MAX_EXPANDED_FIELDS;
    if !var_errors.is_empty() {
        // graphql-ruby reports every static error of the document together, and nothing
        // runs: add async-graphql's other rules' errors (unknown fields, bad literals...)
        // when the document is small enough for it to walk.
        let theirs = if walkable {
            other_validation_errors(app, query, op_name.as_deref(), &var_errors, &corr).await
        } else {
            Vec::new()
        };
        let mut errors = with_correlation(var_errors, &corr);
        errors.extend(theirs);
        return json!({ "errors": errors });
    }
    if !value_errors.is_empty() {
        // graphql-ruby checks variable values once the document is valid, before analysis.
        return json!({ "errors": with_correlation(value_errors, &corr) });
    }
    if !walkable {
        // Far over the limits; answered as the analysis would, without walking it.
        return if doc_shape.depth > app.max_depth {
            depth_error(doc_shape.depth, app.max_depth, &corr)
        } else if doc_shape.fields > app.max_complexity {
            request_error(
                &format!(
                    "Query has complexity of {}, which exceeds max complexity of {}",
                    doc_shape.fields, app.max_complexity
                ),
                "MAX_COMPLEXITY_EXCEEDED",
                &corr,
            )
        } else if doc_shape.nesting > MAX_NESTING {
            request_error(
                &format!(
                    "Query nests selections more than {MAX_NESTING} levels deep through fragments"
                ),
                "GRAPHQL_VALIDATION_FAILED",
                &corr,
            )
        } else {
            request_error(
                &format!(
                    "Query is too large: its operations have {} fields with fragments inlined, at most {MAX_EXPANDED_FIELDS} are validated",
                    doc_shape.total_fields
                ),
                "GRAPHQL_VALIDATION_FAILED",
                &corr,
            )
        };
    }
    if let Some(max) = inner.max_aliases {
        if aliases > max {
            return request_error(
                &format!("Too many aliases in document: {aliases}, the maximum is {max}"),
                "MAX_ALIASES_EXCEEDED",
                &corr,
            );
        }
    }
    let resp = app.schema.execute(req).await;
    shape(resp, &corr, &keys)
}

fn with_correlation(errors: Vec<Json>, corr: &str) -> Vec<Json> {
    errors
        .into_iter()
        .map(|mut e| {
            if let Some(ext) = e.get_mut("extensions").and_then(Json::as_object_mut) {
                ext.insert("correlation_id".into(), Json::String(corr.to_string()));
            }
            e
        })
        .collect()
}

fn depth_error(depth: usize, max: usize, corr: &str) -> Json {
    request_error(
        &format!("Query has depth of {depth}, which exceeds max depth of {max}"),
        "MAX_DEPTH_EXCEEDED",
        corr,
    )
}

/// A text nested too deeply for the parser: a depth error when its selection sets alone
/// are over the depth limit (what Pipefy's analysis would say), else a parse error.
fn too_deep_text(app: &App, nest: validation::Nesting, corr: &str) -> Json {
    if nest.selections > app.max_depth {
        depth_error(nest.selections, app.max_depth, corr)
    } else {
        request_error(
            &format!(
                "Parse error: the document nests more than {} levels deep",
                validation::MAX_TEXT_NESTING.min(nest.total)
            ),
            "GRAPHQL_PARSE_FAILED",
            corr,
        )
    }
}

/// async-graphql's validation errors for the document (without variable values, so only
/// literals are checked, as graphql-ruby checks variable values only for a valid
/// document), minus those about variables, which [`validation`] has reported in
/// graphql-ruby's words.
async fn other_validation_errors(
    app: &App,
    query: &str,
    op_name: Option<&str>,
    ours: &[Json],
    corr: &str,
) -> Vec<Json> {
    let mut req = Request::new(query).data(ValidateOnly);
    if let Some(n) = op_name {
        req = req.operation_name(n.to_string());
    }
    let resp = app.schema.execute(req).await;
    let undefined_types: Vec<String> = ours
        .iter()
        .filter(|e| e["extensions"]["code"] == "variableRequiresValidType")
        .filter_map(|e| e["extensions"]["typeName"].as_str())
        .map(|t| format!("Unknown type \"{t}\""))
        .collect();
    let mut v = shape(resp, corr, &[]);
    let errors = v
        .get_mut("errors")
        .and_then(Json::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    errors
        .into_iter()
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            let code = e["extensions"]["code"].as_str().unwrap_or_default();
            !matches!(
                code,
                "variableMismatch" | "variableNotDefined" | "variableNotUsed"
            ) && !m.starts_with("Variable \"")
                && !undefined_types.iter().any(|t| m.starts_with(t.as_str()))
        })
        .collect()
}

/// Gives every error an `extensions.code` and `correlation_id` (docs/pipefy-api.md §7), rewrites
/// validation messages into graphql-ruby's wording (Pipefy runs graphql-ruby), puts `null`
/// where a field failed (async-graphql leaves the key out; the spec and Pipefy answer
/// `"alias": null`), and drops `data` for request-level errors (parse/validation).
fn shape(resp: async_graphql::Response, corr: &str, root_keys: &[String]) -> Json {
    let mut v = serde_json::to_value(&resp)
        .unwrap_or_else(|_| request_error("Something went wrong", "INTERNAL_SERVER_ERROR", corr));
    let mut paths: Vec<Vec<Json>> = Vec::new();
    if let Some(errors) = v.get_mut("errors").and_then(Json::as_array_mut) {
        for e in errors.iter_mut() {
            if let Some(p) = e.get("path").and_then(Json::as_array) {
                paths.push(p.clone());
            }
            fix_error(e, corr);
        }
    }
    let has_errors = v
        .get("errors")
        .and_then(Json::as_array)
        .is_some_and(|e| !e.is_empty());
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if paths.is_empty() {
        if has_errors && obj.get("data").is_some_and(Json::is_null) {
            obj.remove("data");
        }
        return v;
    }
    let data = obj.entry("data").or_insert(Json::Null);
    if data.is_null() {
        *data = json!({});
    }
    for p in &paths {
        insert_null(data, p);
    }
    if let Some(m) = data.as_object_mut() {
        let mut ordered = serde_json::Map::new();
        for k in root_keys {
            if let Some(x) = m.remove(k) {
                ordered.insert(k.clone(), x);
            }
        }
        ordered.extend(std::mem::take(m));
        *m = ordered;
    }
    v
}

/// Sets `null` at `path` when its parent exists and the key is missing.
fn insert_null(data: &mut Json, path: &[Json]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = data;
    for seg in parents {
        let next = match (seg, cur) {
            (Json::String(k), Json::Object(m)) => m.get_mut(k),
            (Json::Number(n), Json::Array(a)) => n.as_u64().and_then(|i| a.get_mut(i as usize)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let (Json::String(k), Json::Object(m)) = (last, cur) {
        m.entry(k.clone()).or_insert(Json::Null);
    }
}

/// Response keys (alias or name) of the executed operation's root fields, in order.
fn root_keys(doc: &ExecutableDocument, op_name: Option<&str>) -> Vec<String> {
    let op = match (&doc.operations, op_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(m), Some(n)) => m.get(n),
        (DocumentOperations::Multiple(m), None) if m.len() == 1 => m.values().next(),
        _ => None,
    };
    let mut keys = Vec::new();
    if let Some(op) = op {
        let mut seen = HashSet::new();
        collect_keys(&op.node.selection_set.node, doc, &mut keys, &mut seen, 0);
    }
    keys
}

fn collect_keys(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    keys: &mut Vec<String>,
    seen: &mut HashSet<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    for s in &set.items {
        match &s.node {
            Selection::Field(f) => {
                let k = f.node.response_key().node.to_string();
                if seen.insert(k.clone()) {
                    keys.push(k);
                }
            }
            Selection::InlineFragment(i) => {
                collect_keys(&i.node.selection_set.node, doc, keys, seen, depth + 1)
            }
            Selection::FragmentSpread(sp) => {
                // A fragment adds the same keys each time: walk it once.
                let name = &sp.node.fragment_name.node;
                if let Some(fr) = doc.fragments.get(name) {
                    if seen.insert(format!("...{name}")) {
                        collect_keys(&fr.node.selection_set.node, doc, keys, seen, depth + 1);
                    }
                }
            }
        }
    }
}

struct Rewrite {
    re: Regex,
    code: &'static str,
    to: Option<&'static str>,
}

static REWRITES: LazyLock<Vec<Rewrite>> = LazyLock::new(|| {
    let r = |re: &str, code, to| Regex::new(re).ok().map(|re| Rewrite { re, code, to });
    [
        r(r#"^Unknown field "(\w+)" on type "(UpdatedNode)"\."#, "selectionMismatch", Some("Selections can't be made directly on unions (see selections on $2)")),
        r(r#"^Unknown field "(\w+)" on type "(\w+)"\."#, "undefinedField", Some("Field '$1' doesn't exist on type '$2'")),
        r(r#"^Unknown argument "(\w+)" on field "(\w+)" of type "(\w+)"\."#, "argumentNotAccepted", Some("Field '$2' doesn't accept argument '$1'")),
        r(r#"^Field "(\w+)" argument "(\w+)" of type "(.+)" is required but not provided"#, "missingRequiredArguments", Some("Field '$1' is missing required arguments: $2")),
        r(r#"^Invalid value for argument "[^"]+", field "(\w+)" of type "(.+)" is required but not provided"#, "missingRequiredInputObjectAttribute", Some("Argument '$1' on InputObject is required. Expected type $2")),
        r(r#"^Invalid value for argument "[^"]+", unknown field "(\w+)" of type "(\w+)""#, "argumentNotAccepted", Some("InputObject '$2' doesn't accept argument '$1'")),
        r(r#"^Invalid value for argument"#, "argumentLiteralsIncompatible", None),
        r(r#"^Variable "\$?(\w+)" of type "(.+)" used in position expecting type "(.+)""#, "variableMismatch", Some("Type mismatch on variable $$$1 and argument ($2 / $3)")),
        r(r#"^Variable "\$?\w+" is not defined"#, "variableNotDefined", None),
        r(r#"^Variable "\$?\w+" is not used"#, "variableNotUsed", None),
        r(r#"^Unknown type"#, "undefinedType", None),
        r(r#"^Unknown fragment"#, "undefinedFragment", None),
        r(r#"^Failed to parse"#, "INVALID_INPUT", None),
    ]
    .into_iter()
    .flatten()
    .collect()
});

fn fix_error(e: &mut Json, corr: &str) {
    let Some(obj) = e.as_object_mut() else { return };
    let message = obj
        .get("message")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let has_path = obj.get("path").is_some();
    let has_code = obj.get("extensions").and_then(|x| x.get("code")).is_some();
    let mut new_message = None;
    let mut code = None;
    if !has_code {
        match REWRITES.iter().find(|r| r.re.is_match(&message)) {
            Some(rw) => {
                code = Some(rw.code);
                // Expanding (not replacing) drops async-graphql's "Did you mean" tail.
                new_message = match (rw.to, rw.re.captures(&message)) {
                    (Some(to), Some(caps)) => {
                        let mut out = String::new();
                        caps.expand(to, &mut out);
                        Some(out)
                    }
                    _ => None,
                };
            }
            None if has_path => code = Some("INTERNAL_SERVER_ERROR"),
            None => code = Some("GRAPHQL_VALIDATION_FAILED"),
        }
    }
    if let Some(m) = new_message {
        obj.insert("message".into(), Json::String(m));
    }
    let ext = obj.entry("extensions").or_insert_with(|| json!({}));
    if let Some(ext) = ext.as_object_mut() {
        if let Some(c) = code {
            ext.insert("code".into(), Json::String(c.to_string()));
        }
        ext.insert("correlation_id".into(), Json::String(corr.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aWQ6c2VjcmV0").unwrap(), b"id:secret");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("*").is_none());
    }

    #[test]
    fn errors_get_codes_and_ruby_wording() {
        let mut e =
            json!({"message": "Unknown field \"nope\" on type \"Card\". Did you mean \"id\"?"});
        fix_error(&mut e, "abc");
        assert_eq!(e["message"], "Field 'nope' doesn't exist on type 'Card'");
        assert_eq!(e["extensions"]["code"], "undefinedField");
        assert_eq!(e["extensions"]["correlation_id"], "abc");
        let mut e = json!({"message": "Unknown field \"id\" on type \"UpdatedNode\"."});
        fix_error(&mut e, "abc");
        assert_eq!(
            e["message"],
            "Selections can't be made directly on unions (see selections on UpdatedNode)"
        );
        let mut e = json!({"message": "Variable \"$v\" of type \"String!\" used in position expecting type \"[UndefinedInput]\""});
        fix_error(&mut e, "abc");
        assert_eq!(e["extensions"]["code"], "variableMismatch");
        assert_eq!(
            e["message"],
            "Type mismatch on variable $v and argument (String! / [UndefinedInput])"
        );
    }
}
