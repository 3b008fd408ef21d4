//! AWS clients, built once per process. Every client honours `AWS_ENDPOINT_URL` (and the
//! per-service `AWS_ENDPOINT_URL_<SERVICE>`) through aws-config, so the same binary runs
//! against moto server and cargo lambda locally; S3 switches to path-style addressing when
//! an endpoint is overridden, because local endpoints have no per-bucket DNS.
//!
//! Also what the functions and the CLI share to build a destination's Pipefy client: its
//! settings, the check of the hosts its token may go to, and its credentials from Secrets
//! Manager or the environment.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::sync::Mutex;

use crate::config::Destination;
use crate::pipefy::{
    AllowedHosts, ClientConfig, Credentials, CredentialsProvider, PipefyClient, PipefyError,
    Secret, StaticCredentials, DEFAULT_ENDPOINT, DEFAULT_TOKEN_URL,
};

/// The SDK's config loader with pipefy-sync's HTTP client: hyper 1 and rustls on ring, the
/// stack reqwest already brings for Pipefy (the SDK's default would add aws-lc and a second
/// TLS stack to every binary; see the workspace Cargo.toml).
pub fn config_loader() -> ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client)
}

/// Loads region, credentials and endpoint overrides from the environment.
pub async fn load_sdk_config() -> SdkConfig {
    config_loader().load().await
}

pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

pub fn secrets_client(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

pub fn lambda_client(config: &SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(config)
}

pub fn eventbridge_client(config: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(config)
}

/// Why a destination's Pipefy client could not be built. Each says which destination.
#[derive(Debug, thiserror::Error)]
pub enum TokenSetupError {
    /// `endpoint` or `token.oauth_url` is not a host the token may be sent to.
    #[error("destination '{destination}': {message}")]
    Host {
        destination: String,
        message: String,
    },
    /// `token.env` names a variable that is not set or does not hold credentials.
    #[error("destination '{destination}': {message}")]
    Env {
        destination: String,
        message: String,
    },
    #[error("destination '{0}': token needs a secret or an env")]
    NoToken(String),
    /// The caller has no Secrets Manager client to read `token.secret` with.
    #[error(
        "destination '{0}': token.secret needs AWS configuration, which this run did not load"
    )]
    NoSecretsClient(String),
    /// The client settings the destination asks for are refused (limits, endpoint).
    #[error("destination '{destination}': {source}")]
    Client {
        destination: String,
        #[source]
        source: PipefyError,
    },
}

/// The Pipefy client a destination asks for, as the functions and the CLI build it: its
/// token hosts checked first, credentials from its secret (through `secrets`) or env. A
/// caller without AWS configuration (a local CLI run) passes no `secrets`: then only an env
/// token is taken.
pub fn pipefy_client(
    dest: &Destination,
    allowed: &AllowedHosts,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
) -> Result<PipefyClient, TokenSetupError> {
    check_token_hosts(dest, allowed)?;
    let provider = credentials_provider(dest, secrets)?;
    PipefyClient::new(client_config(dest), provider).map_err(|source| TokenSetupError::Client {
        destination: dest.name.clone(),
        source,
    })
}

/// Fails a destination whose `endpoint` or `token.oauth_url` is not a host the token may go
/// to, before any request carries it.
pub fn check_token_hosts(
    dest: &Destination,
    allowed: &AllowedHosts,
) -> Result<(), TokenSetupError> {
    let endpoint = dest.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let oauth_url = dest.token.oauth_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
    allowed
        .check("endpoint", endpoint)
        .and_then(|()| allowed.check("token.oauth_url", oauth_url))
        .map_err(|message| TokenSetupError::Host {
            destination: dest.name.clone(),
            message,
        })
}

/// Where a destination's Pipefy credentials come from: its secret (read through
/// `secrets`), or an environment variable for local runs.
pub fn credentials_provider(
    dest: &Destination,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
) -> Result<Arc<dyn CredentialsProvider>, TokenSetupError> {
    let oauth_url = dest.token.oauth_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
    let env_error = |message: String| TokenSetupError::Env {
        destination: dest.name.clone(),
        message,
    };
    match (&dest.token.secret, &dest.token.env) {
        (Some(secret), _) => match secrets {
            Some(client) => Ok(Arc::new(SecretsCredentials::new(
                client.clone(),
                secret,
                Some(oauth_url),
            ))),
            None => Err(TokenSetupError::NoSecretsClient(dest.name.clone())),
        },
        (None, Some(var)) => {
            let value = std::env::var(var)
                .map_err(|_| env_error(format!("environment variable {var} is not set")))?;
            let creds = credentials_from_secret(&value, oauth_url)
                .map_err(|m| env_error(format!("{var}: {m}")))?;
            Ok(Arc::new(StaticCredentials(creds)))
        }
        (None, None) => Err(TokenSetupError::NoToken(dest.name.clone())),
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
        lookups_per_request: dest.limits.lookups_per_request.max(1) as usize,
        ..ClientConfig::default()
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

/// A secret's string value, or why there is none. The message names the secret and the
/// service's answer, never the value.
pub async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<String, SecretReadError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            SecretReadError::Unavailable(
                e.as_service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "Secrets Manager could not be reached".into()),
            )
        })?;
    out.secret_string()
        .map(str::to_string)
        .ok_or(SecretReadError::NoString)
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretReadError {
    /// Secrets Manager refused or could not be reached: its answer.
    #[error("{0}")]
    Unavailable(String),
    /// The secret holds binary, not a string.
    #[error("has no string value")]
    NoString,
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
        let text = secret_string(&self.client, &self.secret_id)
            .await
            .map_err(|e| match e {
                SecretReadError::Unavailable(detail) => {
                    PipefyError::Credentials(format!("secret '{}': {detail}", self.secret_id))
                }
                SecretReadError::NoString => PipefyError::Credentials(format!(
                    "secret '{}' has no string value",
                    self.secret_id
                )),
            })?;
        let creds = credentials_from_secret(&text, &self.oauth_url)
            .map_err(|m| PipefyError::Credentials(format!("secret '{}': {m}", self.secret_id)))?;
        *cached = Some(creds.clone());
        Ok(creds)
    }
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
                Err(e @ TokenSetupError::Host { .. }) => {
                    let m = e.to_string();
                    assert!(m.contains("destination 'd'") && m.contains("://"), "{m}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
