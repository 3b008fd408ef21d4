//! Credentials and the access token sent with every request (docs/pipefy-api.md §2).
//!
//! Personal tokens are used as they are; service accounts exchange their client credentials
//! for an access token at the OAuth endpoint, refreshed before it expires. On a 401 the
//! client asks the provider for fresh credentials once (a Lambda re-reads Secrets Manager),
//! so a rotated secret does not fail the run.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error::PipefyError;
use super::retry::Backoff;
use super::secret::Secret;
use super::stats::Counters;
use super::transport::describe_reqwest_error;

/// Pipefy's service-account token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://app.pipefy.com/oauth/token";

/// Refresh a service-account token this long before it expires (at most a fifth of its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    PersonalToken(Secret),
    ServiceAccount {
        client_id: String,
        client_secret: Secret,
        token_url: String,
    },
}

/// Where the client gets its credentials. `refresh: true` means the last ones were rejected:
/// read them again from their source instead of a cache.
#[async_trait]
pub trait CredentialsProvider: Send + Sync {
    async fn credentials(&self, refresh: bool) -> Result<Credentials, PipefyError>;
}

/// Fixed credentials (CLI, tests).
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub Credentials);

#[async_trait]
impl CredentialsProvider for StaticCredentials {
    async fn credentials(&self, _refresh: bool) -> Result<Credentials, PipefyError> {
        Ok(self.0.clone())
    }
}

/// Credentials from a closure called with the `refresh` flag: for callers that read them
/// synchronously (environment, a file) or tests, without implementing the async trait.
pub struct CredentialsFn<F>(pub F);

#[async_trait]
impl<F> CredentialsProvider for CredentialsFn<F>
where
    F: Fn(bool) -> Result<Credentials, PipefyError> + Send + Sync,
{
    async fn credentials(&self, refresh: bool) -> Result<Credentials, PipefyError> {
        (self.0)(refresh)
    }
}

#[derive(Debug, Clone)]
struct CachedToken {
    value: Secret,
    /// When to fetch a new one before use (service accounts with `expires_in`).
    refresh_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct TokenState {
    token: Option<CachedToken>,
    /// Bumped at each new token, so concurrent 401s trigger a single refresh.
    generation: u64,
}

/// The access token of a client, shared by its clones.
pub(crate) struct TokenSource {
    provider: Arc<dyn CredentialsProvider>,
    http: reqwest::Client,
    backoff: Backoff,
    counters: Arc<Counters>,
    // An async mutex: the holder fetches a token while others wait for it (single flight).
    state: tokio::sync::Mutex<TokenState>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(
        provider: Arc<dyn CredentialsProvider>,
        http: reqwest::Client,
        backoff: Backoff,
        counters: Arc<Counters>,
    ) -> Self {
        TokenSource {
            provider,
            http,
            backoff,
            counters,
            state: tokio::sync::Mutex::new(TokenState::default()),
        }
    }

    /// The token to send and its generation (pass it to [`TokenSource::refresh`] on a 401).
    pub(crate) async fn current(&self) -> Result<(Secret, u64), PipefyError> {
        let mut st = self.state.lock().await;
        if let Some(t) = &st.token {
            if t.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok((t.value.clone(), st.generation));
            }
            tracing::debug!("service-account token about to expire; fetching a new one");
        }
        let token = self.obtain(false).await?;
        st.generation += 1;
        let value = token.value.clone();
        st.token = Some(token);
        Ok((value, st.generation))
    }

    /// The token of generation `used` was rejected (401): fetch fresh credentials, unless
    /// another request already did since.
    pub(crate) async fn refresh(&self, used: u64) -> Result<(), PipefyError> {
        let mut st = self.state.lock().await;
        if st.generation != used {
            return Ok(());
        }
        tracing::info!("Pipefy answered 401; fetching fresh credentials");
        let token = self.obtain(true).await?;
        st.generation += 1;
        st.token = Some(token);
        Ok(())
    }

    async fn obtain(&self, refresh: bool) -> Result<CachedToken, PipefyError> {
        match self.provider.credentials(refresh).await? {
            Credentials::PersonalToken(value) => {
                if value.is_empty() {
                    return Err(PipefyError::Credentials(
                        "the personal access token is empty".to_string(),
                    ));
                }
                Ok(CachedToken {
                    value,
                    refresh_at: None,
                })
            }
            Credentials::ServiceAccount {
                client_id,
                client_secret,
                token_url,
            } => {
                self.fetch_service_account_token(&client_id, &client_secret, &token_url)
                    .await
            }
        }
    }

    async fn fetch_service_account_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
        token_url: &str,
    ) -> Result<CachedToken, PipefyError> {
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret.expose(),
        });
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            Counters::add(&self.counters.token_requests, 1);
            let started = Instant::now();
            let failure = match self.http.post(token_url).json(&body).send().await {
                Err(e) => describe_reqwest_error(&e),
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Err(e) => describe_reqwest_error(&e),
                        Ok(bytes) if status.is_success() => {
                            return parse_token_response(&bytes, started).map_err(|m| {
                                PipefyError::InvalidResponse(client_secret.redact_in(&m))
                            });
                        }
                        Ok(bytes)
                            if status.as_u16() == 429
                                || status.as_u16() == 408
                                || status.is_server_error() =>
                        {
                            format!(
                                "token endpoint answered HTTP {}{}",
                                status.as_u16(),
                                oauth_error_detail(&bytes)
                            )
                        }
                        Ok(bytes) => {
                            let detail = oauth_error_detail(&bytes);
                            return Err(PipefyError::Unauthorized(client_secret.redact_in(&format!(
                                "the token endpoint refused the service-account credentials (HTTP {}){detail}",
                                status.as_u16()
                            ))));
                        }
                    }
                }
            };
            let failure = client_secret.redact_in(&failure);
            if attempt > self.backoff.max_retries {
                return Err(PipefyError::Unavailable {
                    attempts: attempt,
                    message: failure,
                });
            }
            tracing::warn!(attempt, error = %failure, "service-account token request failed; retrying");
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }
}

/// `access_token` and `expires_in` of a token response. A token response is never quoted,
/// whole or in part, in an error: a malformed one may still hold the token.
fn parse_token_response(bytes: &[u8], issued: Instant) -> Result<CachedToken, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "the token response ({} bytes, not shown) is not JSON: {e}",
            bytes.len()
        )
    })?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "token response has no access_token".to_string())?;
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let refresh_at = expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|secs| {
            let life = Duration::from_secs_f64(secs.min(1.0e9));
            issued + life.saturating_sub(REFRESH_MARGIN.min(life / 5))
        });
    Ok(CachedToken {
        value: Secret::new(token),
        refresh_at,
    })
}

/// The `error` / `error_description` of an OAuth error body, if any, for the message.
fn oauth_error_detail(bytes: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return String::new();
    };
    let parts: Vec<&str> = ["error", "error_description", "message"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_responses() {
        let now = Instant::now();
        let t = parse_token_response(
            br#"{"access_token":"abc","token_type":"Bearer","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.value.expose(), "abc");
        assert_eq!(t.refresh_at, Some(now + Duration::from_secs(3540)));
        // Short-lived: refresh at 80% of its life.
        let t = parse_token_response(br#"{"access_token":"abc","expires_in":"10"}"#, now).unwrap();
        assert_eq!(t.refresh_at, Some(now + Duration::from_secs(8)));
        let t = parse_token_response(br#"{"access_token":"abc"}"#, now).unwrap();
        assert_eq!(t.refresh_at, None);
        assert!(parse_token_response(b"<html>", now).is_err());
        assert!(parse_token_response(br#"{"access_token":""}"#, now).is_err());
        // A truncated or malformed answer is described, never quoted.
        for bad in [
            &br#"{"access_token":"tok-SECRET-1","expires_in":"#[..],
            br#"access_token=tok-SECRET-1&expires_in=3600"#,
            br#"{"access_token":"tok-SECRET-1","expires_in":3600}}"#,
        ] {
            let Err(m) = parse_token_response(bad, now) else {
                panic!("malformed token response accepted");
            };
            assert!(!m.contains("SECRET"), "{m}");
            assert!(m.contains("not JSON"), "{m}");
        }
        assert!(!oauth_error_detail(br#"{"access_token":"tok-SECRET-1""#).contains("SECRET"));
        assert!(parse_token_response(br#"[1]"#, now).is_err());
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials::ServiceAccount {
            client_id: "id-1".into(),
            client_secret: Secret::new("very-secret"),
            token_url: DEFAULT_TOKEN_URL.into(),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("very-secret"));
        assert!(d.contains("id-1"));
        let p = format!(
            "{:?}",
            Credentials::PersonalToken(Secret::new("pat-secret"))
        );
        assert!(!p.contains("pat-secret"));
    }

    #[test]
    fn oauth_error_detail_reads_known_keys() {
        assert_eq!(
            oauth_error_detail(br#"{"error":"invalid_client","error_description":"bad"}"#),
            ": invalid_client: bad"
        );
        assert_eq!(oauth_error_detail(b"nope"), "");
    }
}
