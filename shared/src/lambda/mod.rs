//! What the three Lambda functions do, kept here so `functions/*/main.rs` only build the
//! clients once and hand events over.
//!
//! - [`scheduled::handle`]: EventBridge Scheduler, manual runs, hand-off continuations.
//! - [`upload::handle`]: S3 ObjectCreated notifications.
//! - [`notify::handle`]: Lambda's asynchronous invocation records (on-success/on-failure).

pub mod events;
pub mod metrics;
pub mod notify;
pub mod scheduled;
pub mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::config::{parse_destination, Destination, DestinationSet};
use crate::engine::{EngineError, HandOff, RunContext};
use crate::pipefy::{
    AllowedHosts, ClientConfig, Credentials, CredentialsProvider, PipefyClient, PipefyError,
    Secret, DEFAULT_ENDPOINT, DEFAULT_TOKEN_URL,
};
use crate::state::StateError;
use crate::store::s3::S3Store;
use crate::store::{ObjectStore, StoreError};

/// Settings from the environment (see docs/DESIGN.md, "Environment variables").
#[derive(Debug, Clone)]
pub struct Settings {
    /// Holds `config/`, `state/` and `reports/`.
    pub bucket: String,
    pub config_prefix: String,
    pub state_prefix: String,
    pub reports_prefix: String,
    /// Hand off after this long, whatever the deadline says.
    pub time_budget: Option<Duration>,
    pub slack_webhook_secret: Option<String>,
    pub metrics_namespace: String,
    /// This function's name, for hand-off invocations.
    pub function_name: Option<String>,
    /// Hosts besides Pipefy's own that may receive the token (single-tenant domains).
    pub allowed_hosts: AllowedHosts,
}

/// Without a usable deadline (cargo lambda watch sends a fake one), a run hands off after
/// this long: Lambda's 15-minute limit less a margin for the checkpoint and the hand-off.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(13 * 60);
/// Time kept back before the deadline for the last window, the checkpoint and the hand-off.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

impl Settings {
    pub fn from_env() -> Result<Settings, HandlerError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let bucket = var("PIPEFY_SYNC_BUCKET").ok_or_else(|| {
            HandlerError::Setup(
                "PIPEFY_SYNC_BUCKET is not set: the bucket holding config/, state/ and reports/"
                    .into(),
            )
        })?;
        let time_budget = var("PIPEFY_SYNC_TIME_BUDGET_SECONDS")
            .map(|v| parse_time_budget(&v))
            .transpose()?;
        Ok(Settings {
            bucket,
            config_prefix: var("PIPEFY_SYNC_CONFIG_PREFIX")
                .unwrap_or_else(|| "config/destinations/".into()),
            state_prefix: "state/".into(),
            reports_prefix: "reports/".into(),
            time_budget,
            slack_webhook_secret: var("PIPEFY_SYNC_SLACK_WEBHOOK_SECRET"),
            metrics_namespace: var("PIPEFY_SYNC_METRICS_NAMESPACE")
                .unwrap_or_else(|| metrics::DEFAULT_NAMESPACE.into()),
            function_name: var("AWS_LAMBDA_FUNCTION_NAME"),
            allowed_hosts: AllowedHosts::from_env(),
        })
    }

    /// When this invocation must stop and hand off. `deadline_ms` is the invocation
    /// context's deadline (ms since the epoch); one in the past or further than Lambda's
    /// 15 minutes away is not a real deadline and is ignored.
    pub fn run_deadline(&self, deadline_ms: u64) -> Instant {
        let now = Instant::now();
        let budget = self.time_budget.unwrap_or(DEFAULT_TIME_BUDGET);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        let believable = deadline_ms > now_ms && remaining <= Duration::from_secs(15 * 60);
        let by_deadline = believable.then(|| remaining.saturating_sub(DEADLINE_MARGIN));
        now + by_deadline.map_or(budget, |d| d.min(budget))
    }
}

/// `PIPEFY_SYNC_TIME_BUDGET_SECONDS`: seconds, more than 0 and at most Lambda's 900.
fn parse_time_budget(v: &str) -> Result<Duration, HandlerError> {
    let bad = |why: &str| {
        HandlerError::Setup(format!(
            "PIPEFY_SYNC_TIME_BUDGET_SECONDS is '{v}': {why}; give the seconds a run may take before it hands off, more than 0 and at most 900 (Lambda's limit)"
        ))
    };
    let secs: f64 = v.trim().parse().map_err(|_| bad("not a number"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 900.0 {
        return Err(bad("out of range"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
}

/// What a function answers when it fails: the error type says which kind of failure it is,
/// so `aws lambda invoke`, the on-failure destination and alarms can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("malformed event: {0}")]
    InvalidEvent(String),
    #[error("unknown destination '{name}': known destinations are {known}")]
    UnknownDestination { name: String, known: String },
    #[error("{0}")]
    DestinationInvalid(String),
    #[error("{0}")]
    Secret(String),
    #[error("{0}")]
    PipefyUnauthorized(String),
    #[error("{0}")]
    Pipefy(String),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    HandOff(String),
    #[error("function setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Internal(String),
}

impl HandlerError {
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::UnknownDestination { .. } => "UnknownDestination",
            HandlerError::DestinationInvalid(_) => "DestinationInvalid",
            HandlerError::Secret(_) => "SecretUnavailable",
            HandlerError::PipefyUnauthorized(_) => "PipefyUnauthorized",
            HandlerError::Pipefy(_) => "PipefyError",
            HandlerError::State(_) => "StateError",
            HandlerError::Storage(_) => "StorageError",
            HandlerError::HandOff(_) => "HandOffFailed",
            HandlerError::Setup(_) => "SetupError",
            HandlerError::Internal(_) => "InternalError",
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

impl From<EngineError> for HandlerError {
    fn from(e: EngineError) -> Self {
        let text = e.to_string();
        match e {
            EngineError::Mapping { .. } | EngineError::NoTarget(_) => {
                HandlerError::DestinationInvalid(text)
            }
            EngineError::Pipefy(PipefyError::Unauthorized(_)) => {
                HandlerError::PipefyUnauthorized(text)
            }
            EngineError::Pipefy(PipefyError::Credentials(_)) => HandlerError::Secret(text),
            EngineError::Pipefy(_) => HandlerError::Pipefy(text),
            EngineError::State(StateError::Store(_)) | EngineError::Store(_) => {
                HandlerError::Storage(text)
            }
            EngineError::State(_) | EngineError::Continuation { .. } => HandlerError::State(text),
            EngineError::HandOff(_) => HandlerError::HandOff(text),
            EngineError::Internal(_) => HandlerError::Internal(text),
        }
    }
}

/// Initialises tracing for a Lambda function: JSON unless `AWS_LAMBDA_LOG_FORMAT=Text`, at
/// `AWS_LAMBDA_LOG_LEVEL` (default INFO).
pub fn init_logging() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "TRACE" => "trace",
            "DEBUG" => "debug",
            "WARN" => "warn",
            "ERROR" | "FATAL" => "error",
            _ => "info",
        })
        .unwrap_or("info");
    // Our crates at the chosen level; the AWS SDK's chatter one notch quieter.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},aws_config=warn,aws_smithy_runtime=warn,hyper=warn"
    ));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|f| f.eq_ignore_ascii_case("text"))
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr);
    let result = if text {
        builder.try_init()
    } else {
        builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init()
    };
    if result.is_err() {
        // Already initialised (tests): keep the existing subscriber.
    }
}

/// Reads the Pipefy token (or service-account credentials) from Secrets Manager, caches it,
/// and reads it again when Pipefy rejected the cached one (a rotated token).
pub struct SecretsCredentials {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    oauth_url: String,
    cached: Mutex<Option<Credentials>>,
}

impl SecretsCredentials {
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        secret_id: &str,
        oauth_url: Option<&str>,
    ) -> Self {
        SecretsCredentials {
            client,
            secret_id: secret_id.to_string(),
            oauth_url: oauth_url.unwrap_or(DEFAULT_TOKEN_URL).to_string(),
            cached: Mutex::new(None),
        }
    }
}

/// A secret's text as credentials: a bare token, `{"token": "..."}`, or
/// `{"client_id": "...", "client_secret": "..."}` for a service account.
pub fn credentials_from_secret(text: &str, oauth_url: &str) -> Result<Credentials, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the secret is empty".into());
    }
    if !trimmed.starts_with('{') {
        return Ok(Credentials::PersonalToken(Secret::new(trimmed)));
    }
    let v: serde_json::Value = serde_json::from_str(trimmed)
        // The parser's message could quote the secret: do not pass it on.
        .map_err(|_| "the secret looks like JSON but does not parse".to_string())?;
    if let Some(token) = v.get("token").and_then(|t| t.as_str()) {
        return Ok(Credentials::PersonalToken(Secret::new(token)));
    }
    match (
        v.get("client_id").and_then(|t| t.as_str()),
        v.get("client_secret").and_then(|t| t.as_str()),
    ) {
        (Some(id), Some(secret)) => Ok(Credentials::ServiceAccount {
            client_id: id.to_string(),
            client_secret: Secret::new(secret),
            token_url: v
                .get("token_url")
                .and_then(|t| t.as_str())
                .unwrap_or(oauth_url)
                .to_string(),
        }),
        _ => Err(
            "the secret JSON has neither \"token\" nor \"client_id\" and \"client_secret\"".into(),
        ),
    }
}

#[async_trait]
impl CredentialsProvider for SecretsCredentials {
    async fn credentials(&self, refresh: bool) -> Result<Credentials, PipefyError> {
        let mut cached = self.cached.lock().await;
        if let (Some(c), false) = (cached.as_ref(), refresh) {
            return Ok(c.clone());
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                let detail = e
                    .as_service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "Secrets Manager could not be reached".into());
                PipefyError::Credentials(format!("secret '{}': {detail}", self.secret_id))
            })?;
        let text = out.secret_string().ok_or_else(|| {
            PipefyError::Credentials(format!("secret '{}' has no string value", self.secret_id))
        })?;
        let creds = credentials_from_secret(text, &self.oauth_url)
            .map_err(|m| PipefyError::Credentials(format!("secret '{}': {m}", self.secret_id)))?;
        *cached = Some(creds.clone());
        Ok(creds)
    }
}

/// Destination files under the config prefix, loaded once per container and refreshed after
/// a few minutes so a `terraform apply` reaches warm containers.
pub struct DestinationCatalog {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cache: Mutex<Option<(Instant, Arc<DestinationSet>)>>,
    /// Files that did not parse at the last load, with why: one bad file must not stop the
    /// other destinations, but its error is what a run of it reports.
    invalid: Mutex<Vec<String>>,
    /// Destination name -> the ETag of its file at the last load.
    versions: Mutex<HashMap<String, String>>,
}

const CATALOG_TTL: Duration = Duration::from_secs(300);

impl DestinationCatalog {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        DestinationCatalog {
            store,
            prefix: prefix.to_string(),
            cache: Mutex::new(None),
            invalid: Mutex::new(Vec::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The version (ETag) of the file a destination was loaded from.
    pub async fn version(&self, name: &str) -> Option<String> {
        self.versions.lock().await.get(name).cloned()
    }

    pub async fn all(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        self.load(CATALOG_TTL).await
    }

    /// The catalog, reloaded when the cached copy is older than `max_age`.
    pub async fn load(&self, max_age: Duration) -> Result<Arc<DestinationSet>, HandlerError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, set)) = cache.as_ref() {
            if at.elapsed() < max_age {
                return Ok(set.clone());
            }
        }
        let mut set = DestinationSet::new();
        let mut invalid = Vec::new();
        let mut versions = HashMap::new();
        let listed = self.store.list(&self.prefix).await.map_err(|e| {
            HandlerError::Storage(format!(
                "listing destination files under {}: {e}",
                self.prefix
            ))
        })?;
        for meta in listed {
            if !(meta.key.ends_with(".yaml") || meta.key.ends_with(".yml")) {
                continue;
            }
            let (_, bytes) = self
                .store
                .get_bytes(&meta.key)
                .await
                .map_err(|e| HandlerError::Storage(format!("reading {}: {e}", meta.key)))?;
            let file = format!("{}/{}", self.store.describe(), meta.key);
            let text = String::from_utf8_lossy(&bytes);
            match parse_destination(&file, &text) {
                Ok(dest) => {
                    versions.insert(dest.name.clone(), meta.etag.clone());
                    set.insert(dest.name.clone(), dest);
                }
                Err(e) => {
                    tracing::error!(file = %file, error = %e, "destination file is invalid; skipped");
                    invalid.push(e.to_string());
                }
            }
        }
        *self.invalid.lock().await = invalid;
        *self.versions.lock().await = versions;
        let set = Arc::new(set);
        *cache = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// Reloads the catalog now; used when a name or an uploaded object is not found in the
    /// cached copy, so a destination deployed a moment ago is found without waiting for the
    /// TTL. A miss is rare (a new destination, or a wrong name), so it costs little.
    pub async fn refreshed(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        self.load(Duration::ZERO).await
    }

    pub async fn get(&self, name: &str) -> Result<Destination, HandlerError> {
        let mut all = self.all().await?;
        if !all.contains_key(name) {
            all = self.refreshed().await?;
        }
        if let Some(d) = all.get(name) {
            return Ok(d.clone());
        }
        let invalid = self.invalid.lock().await;
        if let Some(bad) = invalid.iter().find(|e| e.contains(&format!("{name}.y"))) {
            return Err(HandlerError::DestinationInvalid(bad.clone()));
        }
        let mut known = if all.is_empty() {
            format!(
                "none (no destination files under {}/{})",
                self.store.describe(),
                self.prefix
            )
        } else {
            all.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        if !invalid.is_empty() {
            known.push_str(&format!(
                "; files that do not parse: {}",
                invalid.join(" | ")
            ));
        }
        Err(HandlerError::UnknownDestination {
            name: name.to_string(),
            known,
        })
    }
}

/// Everything a function builds once per container.
pub struct Deps {
    pub settings: Settings,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub system_store: Arc<dyn ObjectStore>,
    pub catalog: DestinationCatalog,
    clients: ClientCache,
}

/// One Pipefy client per destination, with the version (ETag) of the destination file it
/// was built from: its rate limiter and token cache outlive a run, and a changed file
/// (endpoint, limits, secret) gets a new client.
#[derive(Default)]
pub struct ClientCache(Mutex<HashMap<String, (String, PipefyClient)>>);

impl ClientCache {
    pub async fn get_or_build(
        &self,
        name: &str,
        version: &str,
        build: impl FnOnce() -> Result<PipefyClient, HandlerError>,
    ) -> Result<PipefyClient, HandlerError> {
        let mut clients = self.0.lock().await;
        if let Some((v, c)) = clients.get(name) {
            if v == version {
                return Ok(c.clone());
            }
        }
        let client = build()?;
        clients.insert(name.to_string(), (version.to_string(), client.clone()));
        Ok(client)
    }
}

impl Deps {
    pub fn new(
        settings: Settings,
        s3: aws_sdk_s3::Client,
        secrets: aws_sdk_secretsmanager::Client,
        lambda: aws_sdk_lambda::Client,
    ) -> Self {
        let system_store: Arc<dyn ObjectStore> =
            Arc::new(S3Store::new(s3.clone(), settings.bucket.clone()));
        let catalog = DestinationCatalog::new(system_store.clone(), &settings.config_prefix);
        Deps {
            settings,
            s3,
            secrets,
            lambda,
            system_store,
            catalog,
            clients: ClientCache::default(),
        }
    }

    /// Builds the AWS clients from the environment (honouring AWS_ENDPOINT_URL).
    pub async fn from_env() -> Result<Deps, HandlerError> {
        let settings = Settings::from_env()?;
        let config = crate::aws::load_sdk_config().await;
        Ok(Deps::new(
            settings,
            crate::aws::s3_client(&config),
            crate::aws::secrets_client(&config),
            crate::aws::lambda_client(&config),
        ))
    }

    pub async fn pipefy_client(&self, dest: &Destination) -> Result<PipefyClient, HandlerError> {
        let version = self.catalog.version(&dest.name).await.unwrap_or_default();
        self.clients
            .get_or_build(&dest.name, &version, || {
                check_token_hosts(dest, &self.settings.allowed_hosts)?;
                let provider = credentials_provider(dest, &self.secrets)?;
                PipefyClient::new(client_config(dest), provider).map_err(|e| {
                    HandlerError::DestinationInvalid(format!("destination '{}': {e}", dest.name))
                })
            })
            .await
    }

    pub async fn run_context(&self, dest: &Destination) -> Result<RunContext, HandlerError> {
        let bucket = dest.source.bucket.clone().ok_or_else(|| {
            HandlerError::DestinationInvalid(format!(
                "destination '{}': source.bucket is required in Lambda (source.path is for local runs)",
                dest.name
            ))
        })?;
        let hand_off: Option<Arc<dyn HandOff>> = self.settings.function_name.as_ref().map(|f| {
            Arc::new(LambdaHandOff {
                client: self.lambda.clone(),
                function_name: f.clone(),
            }) as Arc<dyn HandOff>
        });
        Ok(RunContext {
            source_store: Arc::new(S3Store::new(self.s3.clone(), bucket)),
            state_store: self.system_store.clone(),
            state_prefix: self.settings.state_prefix.clone(),
            report_store: self.system_store.clone(),
            reports_prefix: self.settings.reports_prefix.clone(),
            pipefy: self.pipefy_client(dest).await?,
            hand_off,
            progress: None,
        })
    }
}

/// Fails a destination whose `endpoint` or `token.oauth_url` is not a host the token may go
/// to, before any request carries it.
pub fn check_token_hosts(dest: &Destination, allowed: &AllowedHosts) -> Result<(), HandlerError> {
    let endpoint = dest.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let oauth_url = dest.token.oauth_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
    allowed
        .check("endpoint", endpoint)
        .and_then(|()| allowed.check("token.oauth_url", oauth_url))
        .map_err(|m| HandlerError::DestinationInvalid(format!("destination '{}': {m}", dest.name)))
}

/// Where a destination's Pipefy credentials come from: its secret (read through
/// `secrets`), or an environment variable for local runs.
pub fn credentials_provider(
    dest: &Destination,
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<Arc<dyn CredentialsProvider>, HandlerError> {
    let oauth_url = dest.token.oauth_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
    match (&dest.token.secret, &dest.token.env) {
        (Some(secret), _) => Ok(Arc::new(SecretsCredentials::new(
            secrets.clone(),
            secret,
            Some(oauth_url),
        ))),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| {
                HandlerError::Secret(format!(
                    "destination '{}': environment variable {var} is not set",
                    dest.name
                ))
            })?;
            let creds = credentials_from_secret(&value, oauth_url).map_err(|m| {
                HandlerError::Secret(format!("destination '{}': {var}: {m}", dest.name))
            })?;
            Ok(Arc::new(crate::pipefy::StaticCredentials(creds)))
        }
        (None, None) => Err(HandlerError::DestinationInvalid(format!(
            "destination '{}': token needs a secret or an env",
            dest.name
        ))),
    }
}

/// The Pipefy client settings a destination asks for.
pub fn client_config(dest: &Destination) -> ClientConfig {
    let window = Duration::from_secs(u64::from(dest.limits.window_seconds.max(1)));
    ClientConfig {
        endpoint: dest
            .endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        requests_per_window: dest.limits.requests_per_window,
        window,
        // A token throttled for two whole windows is not coming back soon.
        throttle_patience: window * 2,
        max_in_flight: dest.limits.concurrency.max(1) as usize,
        mutations_per_request: dest.limits.mutations_per_request.max(1) as usize,
        ..ClientConfig::default()
    }
}

/// Continues a run in a new asynchronous invocation of this function.
struct LambdaHandOff {
    client: aws_sdk_lambda::Client,
    function_name: String,
}

#[async_trait]
impl HandOff for LambdaHandOff {
    async fn continue_run(&self, destination: &str, run_id: &str) -> Result<(), String> {
        let event = events::ScheduledEvent {
            destination: destination.to_string(),
            continue_run: Some(run_id.to_string()),
            ..Default::default()
        };
        let payload = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        self.client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_smithy_types::Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "invoking {} for run {run_id}: {}",
                    self.function_name,
                    e.as_service_error()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("{e:?}"))
                )
            })?;
        tracing::info!(destination, run_id, function = %self.function_name, "run handed over to a new invocation");
        Ok(())
    }
}

pub(crate) fn storage_error(context: &str, e: StoreError) -> HandlerError {
    HandlerError::Storage(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_without_echoing_themselves() {
        assert!(matches!(
            credentials_from_secret("  tok-123 \n", DEFAULT_TOKEN_URL),
            Ok(Credentials::PersonalToken(_))
        ));
        assert!(matches!(
            credentials_from_secret(
                r#"{"client_id":"a","client_secret":"b"}"#,
                DEFAULT_TOKEN_URL
            ),
            Ok(Credentials::ServiceAccount { .. })
        ));
        let err =
            credentials_from_secret(r#"{"tok": "s3cr3t-value"#, DEFAULT_TOKEN_URL).unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(credentials_from_secret("", DEFAULT_TOKEN_URL).is_err());
    }

    #[tokio::test]
    async fn a_changed_destination_file_gets_a_new_client() {
        let cache = ClientCache::default();
        let build = || {
            PipefyClient::new(
                ClientConfig::default(),
                Arc::new(crate::pipefy::StaticCredentials(
                    Credentials::PersonalToken(Secret::new("t")),
                )),
            )
            .map_err(|e| HandlerError::Setup(e.to_string()))
        };
        let first = cache.get_or_build("d", "\"v1\"", build).await.unwrap();
        let again = cache.get_or_build("d", "\"v1\"", build).await.unwrap();
        assert!(
            first.is_same_client(&again),
            "same file: the client is kept"
        );
        let changed = cache.get_or_build("d", "\"v2\"", build).await.unwrap();
        assert!(!first.is_same_client(&changed), "a new ETag: a new client");
        let refused = cache
            .get_or_build("d", "\"v3\"", || {
                Err(HandlerError::DestinationInvalid("no".into()))
            })
            .await;
        assert!(refused.is_err());
    }

    #[test]
    fn destinations_that_would_send_the_token_elsewhere_are_refused() {
        let dest = |extra: &str| {
            crate::config::parse_destination(
                "d.yaml",
                &format!("name: d\npipe_id: \"1\"\noperation: create_card\nsource: {{ bucket: my-bucket, layer: l, table: t }}\nmapping:\n  title: name\ntoken: {{ secret: s }}\n{extra}"),
            )
            .unwrap()
        };
        let allowed = AllowedHosts::new(["pipefy.example.com".to_string()]);
        assert!(check_token_hosts(&dest(""), &allowed).is_ok());
        assert!(check_token_hosts(
            &dest("endpoint: https://pipefy.example.com/graphql"),
            &allowed
        )
        .is_ok());
        let mut to_collector = dest("");
        to_collector.token.oauth_url = Some("https://collector.example.net/oauth/token".into());
        for bad in [
            dest("endpoint: https://collector.example.net/graphql"),
            dest("endpoint: http://api.pipefy.com/graphql"),
            to_collector,
        ] {
            match check_token_hosts(&bad, &allowed) {
                Err(HandlerError::DestinationInvalid(m)) => {
                    assert!(m.contains("destination 'd'") && m.contains("://"), "{m}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn time_budgets_out_of_range_are_setup_errors() {
        for bad in ["-1", "inf", "NaN", "1e20", "0", "901", "ten", ""] {
            match parse_time_budget(bad) {
                Err(HandlerError::Setup(m)) => {
                    assert!(m.contains("PIPEFY_SYNC_TIME_BUDGET_SECONDS"), "{m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            parse_time_budget(" 0.4 ").unwrap(),
            Duration::from_millis(400)
        );
        assert_eq!(parse_time_budget("900").unwrap(), Duration::from_secs(900));
    }

    #[test]
    fn fake_deadlines_fall_back_to_the_budget() {
        let settings = Settings {
            bucket: "b".into(),
            config_prefix: "config/destinations/".into(),
            state_prefix: "state/".into(),
            reports_prefix: "reports/".into(),
            time_budget: Some(Duration::from_secs(5)),
            slack_webhook_secret: None,
            metrics_namespace: "x".into(),
            function_name: None,
            allowed_hosts: AllowedHosts::default(),
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for fake in [0, now_ms - 1000, now_ms + 3_600_000] {
            let left = settings
                .run_deadline(fake)
                .saturating_duration_since(Instant::now());
            assert!(
                left <= Duration::from_secs(5) && left > Duration::from_secs(4),
                "{left:?}"
            );
        }
        // A real deadline 10 minutes away, with a budget bigger than that: the deadline wins.
        let generous = Settings {
            time_budget: Some(Duration::from_secs(3600)),
            ..settings
        };
        let left = generous
            .run_deadline(now_ms + 600_000)
            .saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(540) && left > Duration::from_secs(530),
            "{left:?}"
        );
    }
}
