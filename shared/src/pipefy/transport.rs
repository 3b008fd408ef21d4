//! One GraphQL HTTP request: concurrency bound, rate limit, token, 401 refresh, and the
//! classification of everything that can go wrong at the HTTP level (docs/pipefy-api.md §8).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::auth::TokenSource;
use super::error::{Failure, PipefyError};
use super::limiter::RateLimiter;
use super::stats::Counters;

/// Longest piece of a response body quoted in an error message.
const SNIPPET_CHARS: usize = 200;

/// What one request produced.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The GraphQL body, or why there is none usable.
    pub outcome: Result<Value, Failure>,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Answer {
    fn failed(f: Failure) -> Self {
        Answer {
            outcome: Err(f),
            retry_after: None,
        }
    }
}

/// What came back for one request, as an observer sees it.
#[derive(Debug, Clone, Copy)]
pub enum Exchange<'a> {
    /// Pipefy answered: the HTTP status and the body as sent.
    Answered { status: u16, body: &'a [u8] },
    /// No answer (connection refused, timeout, a body that never arrived): why.
    NoAnswer(&'a str),
}

/// Sees every GraphQL request the client sends and what came back (the CLI's run by key
/// prints them). Neither carries the token: it travels in a header, which is not shown.
pub trait RequestObserver: Send + Sync {
    fn exchanged(&self, request: &Value, exchange: Exchange<'_>);
}

pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) endpoint: String,
    pub(crate) tokens: TokenSource,
    pub(crate) limiter: RateLimiter,
    pub(crate) in_flight: Semaphore,
    pub(crate) counters: Arc<Counters>,
    pub(crate) request_timeout: Duration,
    pub(crate) observer: std::sync::OnceLock<Arc<dyn RequestObserver>>,
}

impl Transport {
    fn observe(&self, request: &Value, exchange: Exchange<'_>) {
        if let Some(o) = self.observer.get() {
            o.exchanged(request, exchange);
        }
    }

    /// Sends one GraphQL document. `Err` only for run-level failures (credentials rejected
    /// twice, credentials unavailable); everything else is an [`Answer`].
    ///
    /// A `gate` is asked once the request has its rate slot, right before it leaves:
    /// closed, nothing is sent and the answer is [`PipefyError::NotSent`].
    pub(crate) async fn post(
        &self,
        body: &Value,
        gate: Option<&dyn super::WriteGate>,
    ) -> Result<Answer, PipefyError> {
        let payload =
            Bytes::from(serde_json::to_vec(body).map_err(|e| {
                PipefyError::InvalidResponse(format!("cannot encode request: {e}"))
            })?);
        // The permit is taken before the rate slot: a slot reserved while waiting for a
        // permit would be wasted and leave a gap in the pacing.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| PipefyError::Config("the client was shut down".to_string()))?;
        let mut refreshed = false;
        loop {
            let (token, generation) = self.tokens.current().await?;
            let mut auth =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    PipefyError::Credentials(
                        "the token contains characters not allowed in an HTTP header".to_string(),
                    )
                })?;
            // Keeps the header out of reqwest's and hyper's debug output.
            auth.set_sensitive(true);
            let slot = self.limiter.acquire().await;
            if gate.is_some_and(|g| !g.may_write()) {
                return Err(PipefyError::NotSent);
            }
            Counters::add(&self.counters.requests, 1);
            let sent = self
                .http
                .post(&self.endpoint)
                .header(AUTHORIZATION, auth)
                .header(CONTENT_TYPE, "application/json")
                .body(payload.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let f = redact(self.classify_send_error(&e), &token);
                    self.observe(body, Exchange::NoAnswer(f.message()));
                    return Ok(Answer::failed(f));
                }
            };
            let status = resp.status().as_u16();
            if status == 401 {
                if refreshed {
                    let bytes = resp.bytes().await.unwrap_or_default();
                    return Err(PipefyError::Unauthorized(token.redact_in(&format!(
                        "HTTP 401 even with freshly fetched credentials: {}",
                        body_snippet(&bytes)
                    ))));
                }
                refreshed = true;
                self.tokens.refresh(generation).await?;
                continue;
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if status == 429 {
                self.observe(body, Exchange::Answered { status, body: &[] });
                Counters::add(&self.counters.throttles, 1);
                self.limiter.on_throttle(slot);
                return Ok(Answer {
                    outcome: Err(Failure::Throttled("HTTP 429 Too Many Requests".to_string())),
                    retry_after,
                });
            }
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    // Headers arrived, the body did not: the request was processed, maybe.
                    let f = redact(
                        Failure::uncertain(format!(
                            "response body could not be read: {}",
                            describe_reqwest_error(&e)
                        )),
                        &token,
                    );
                    self.observe(body, Exchange::NoAnswer(f.message()));
                    return Ok(Answer::failed(f));
                }
            };
            if self.observer.get().is_some() {
                // An answer that echoes the request's headers must not show the token either.
                let shown = token.redact_in(&String::from_utf8_lossy(&bytes));
                self.observe(
                    body,
                    Exchange::Answered {
                        status,
                        body: shown.as_bytes(),
                    },
                );
            }
            let f = classify_http_body(status, &bytes);
            if status < 500 {
                self.limiter.on_success();
            }
            return Ok(Answer {
                outcome: f.map_err(|f| redact(f, &token)),
                retry_after,
            });
        }
    }

    fn classify_send_error(&self, e: &reqwest::Error) -> Failure {
        if e.is_connect() {
            // The connection was never established: nothing reached Pipefy.
            Failure::NotSent(format!("could not connect: {}", describe_reqwest_error(e)))
        } else if e.is_timeout() {
            Failure::Uncertain {
                code: Some("TIMEOUT".to_string()),
                message: format!(
                    "no answer within {} ms: {}",
                    self.request_timeout.as_millis(),
                    describe_reqwest_error(e)
                ),
            }
        } else if e.is_builder() {
            Failure::permanent(
                None,
                format!("invalid request: {}", describe_reqwest_error(e)),
            )
        } else {
            // Reset or closed after the request may have been written.
            Failure::Uncertain {
                code: Some("CONNECTION_LOST".to_string()),
                message: format!("connection failed: {}", describe_reqwest_error(e)),
            }
        }
    }
}

/// Classifies an HTTP answer other than 401/429 by status and body.
pub(crate) fn classify_http_body(status: u16, bytes: &[u8]) -> Result<Value, Failure> {
    let http_code = Some(format!("HTTP_{status}"));
    if status >= 500 || status == 408 {
        // Pipefy's 500 page is plain text (docs/pipefy-api.md §8); either way the outcome is unknown.
        return Err(Failure::Uncertain {
            code: http_code,
            message: format!("HTTP {status}: {}", body_snippet(bytes)),
        });
    }
    let parsed = serde_json::from_slice::<Value>(bytes);
    let is_graphql = |v: &Value| v.get("data").is_some() || v.get("errors").is_some();
    if (200..300).contains(&status) {
        return match parsed {
            Ok(v) if v.is_object() => Ok(v),
            Ok(_) => Err(Failure::uncertain(format!(
                "response is JSON but not a GraphQL object: {}",
                body_snippet(bytes)
            ))),
            Err(e) => Err(Failure::uncertain(format!(
                "response body is not valid JSON ({e}): {}",
                body_snippet(bytes)
            ))),
        };
    }
    match parsed {
        // Some servers answer GraphQL validation errors with 4xx: read them as GraphQL.
        Ok(v) if is_graphql(&v) => Ok(v),
        _ => Err(Failure::Permanent {
            code: http_code,
            message: format!("HTTP {status}: {}", body_snippet(bytes)),
        }),
    }
}

fn redact(f: Failure, token: &super::secret::Secret) -> Failure {
    match f {
        Failure::NotSent(m) => Failure::NotSent(token.redact_in(&m)),
        Failure::Throttled(m) => Failure::Throttled(token.redact_in(&m)),
        Failure::Uncertain { code, message } => Failure::Uncertain {
            code,
            message: token.redact_in(&message),
        },
        Failure::Permanent { code, message } => Failure::Permanent {
            code,
            message: token.redact_in(&message),
        },
    }
}

/// A reqwest error with its causes ("connection refused", "connection reset"), which its
/// own `Display` leaves out.
pub(crate) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The start of a body, on one line, for error messages.
pub(crate) fn body_snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty body)".to_string();
    }
    let mut out: String = flat.chars().take(SNIPPET_CHARS).collect();
    if flat.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_errors_and_plain_text_500_are_uncertain() {
        let f = classify_http_body(500, b"<html>Internal Server Error</html>").unwrap_err();
        assert!(
            matches!(f, Failure::Uncertain { ref code, .. } if code.as_deref() == Some("HTTP_500"))
        );
        assert!(f.message().contains("Internal Server Error"));
        let f = classify_http_body(503, br#"{"errors":[]}"#).unwrap_err();
        assert!(matches!(f, Failure::Uncertain { .. }));
    }

    #[test]
    fn unparsable_or_truncated_200_is_uncertain() {
        for body in [
            &b"not json"[..],
            br#"{"data": {"m0": {"card""#,
            b"",
            b"[1,2]",
            b"\"str\"",
        ] {
            let f = classify_http_body(200, body).unwrap_err();
            assert!(matches!(f, Failure::Uncertain { .. }), "{body:?}");
        }
    }

    #[test]
    fn graphql_200_is_returned() {
        let v = classify_http_body(200, br#"{"data":{"a":1}}"#).unwrap();
        assert_eq!(v, json!({"data": {"a": 1}}));
    }

    #[test]
    fn client_errors_are_permanent_unless_graphql() {
        let f = classify_http_body(403, b"Forbidden").unwrap_err();
        assert_eq!(
            f,
            Failure::permanent(Some("HTTP_403".into()), "HTTP 403: Forbidden")
        );
        let v = classify_http_body(400, br#"{"errors":[{"message":"parse"}]}"#).unwrap();
        assert!(v.get("errors").is_some());
    }

    #[test]
    fn snippets_are_short_and_flat() {
        let long = "x".repeat(500);
        let s = body_snippet(long.as_bytes());
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(body_snippet(b"a\n  b"), "a b");
        assert_eq!(body_snippet(b""), "(empty body)");
        assert_eq!(body_snippet(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }
}
