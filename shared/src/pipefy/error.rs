//! Errors of the Pipefy client and the classification of every failure (docs/pipefy-api.md §7-§9).
//!
//! Two levels:
//! - [`PipefyError`]: the run cannot go on (credentials rejected, bad configuration) or a
//!   query failed for good.
//! - [`OpError`]: one operation of a batch failed; its [`ErrorClass`] tells the caller what
//!   to do with the row (report it, or look the key up before creating again).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A failure that ends the call (for `mutate`, the whole run). Messages never carry secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipefyError {
    /// Pipefy rejected the credentials even after fetching fresh ones.
    #[error("Pipefy rejected the credentials: {0}")]
    Unauthorized(String),
    /// The credentials provider could not produce credentials.
    #[error("could not obtain Pipefy credentials: {0}")]
    Credentials(String),
    /// The client configuration is unusable.
    #[error("invalid Pipefy client configuration: {0}")]
    Config(String),
    /// Pipefy could not be reached or kept failing with retryable errors (transport errors,
    /// 429, 5xx) until the retries ran out.
    #[error("Pipefy unavailable after {attempts} attempts: {message}")]
    Unavailable { attempts: u32, message: String },
    /// An HTTP status that is not a GraphQL answer (e.g. 403, 404 without a GraphQL body).
    #[error("Pipefy answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// Pipefy answered something this client cannot read (not JSON, unexpected shape).
    #[error("unexpected response from Pipefy: {0}")]
    InvalidResponse(String),
    /// Pipefy answered with a GraphQL error for a query (permission, not found, validation).
    #[error("Pipefy error{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Api {
        code: Option<String>,
        message: String,
    },
    /// A write was not sent: its write gate closed while it waited for a rate slot.
    #[error("not sent: the run may no longer write to this destination")]
    NotSent,
}

/// What a failed operation means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Retryable failures (429, 5xx, timeouts) persisted until the retries ran out. The
    /// operation was not applied, or is idempotent; a later run may try again.
    Retryable,
    /// Pipefy refused the operation (validation, permission, not found): retrying is useless.
    Permanent,
    /// A create whose outcome is unknown (timeout, reset, 5xx, internal error after sending).
    /// Never retried by the client: look the key up first.
    Ambiguous,
}

/// One operation's failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{class:?}{}: {message} (after {attempts} attempt(s))", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
pub struct OpError {
    pub class: ErrorClass,
    /// Pipefy's error code (`extensions.code`, or the old `type`/`code`), or the HTTP status
    /// as `HTTP_<n>`, when there is one.
    pub code: Option<String>,
    pub message: String,
    /// How many HTTP requests carried this operation (0: rejected before sending).
    pub attempts: u32,
}

/// A successful operation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpSuccess {
    /// The created or updated card/record id, when Pipefy returned it.
    pub id: Option<String>,
}

pub type OpResult = Result<OpSuccess, OpError>;

/// How one attempt of one operation failed; decides retry vs. final error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The request never reached Pipefy (connect error): safe to resend anything.
    NotSent(String),
    /// Rate limited (HTTP 429 or a throttle code): nothing was applied.
    Throttled(String),
    /// The outcome is unknown (timeout or reset after sending, 5xx, unreadable body,
    /// INTERNAL_SERVER_ERROR): creates become ambiguous, idempotent operations are retried.
    Uncertain {
        code: Option<String>,
        message: String,
    },
    /// Pipefy refused: never retried.
    Permanent {
        code: Option<String>,
        message: String,
    },
}

impl Failure {
    pub(crate) fn uncertain(message: impl Into<String>) -> Self {
        Failure::Uncertain {
            code: None,
            message: message.into(),
        }
    }

    pub(crate) fn permanent(code: Option<String>, message: impl Into<String>) -> Self {
        Failure::Permanent {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::NotSent(m) | Failure::Throttled(m) => m,
            Failure::Uncertain { message, .. } | Failure::Permanent { message, .. } => message,
        }
    }

    pub(crate) fn code(&self) -> Option<String> {
        match self {
            Failure::NotSent(_) => None,
            Failure::Throttled(_) => Some("THROTTLED".to_string()),
            Failure::Uncertain { code, .. } | Failure::Permanent { code, .. } => code.clone(),
        }
    }
}

/// The kind of a GraphQL error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeKind {
    /// Pipefy failed internally; the operation may or may not have been applied.
    Server,
    /// Rate limited; nothing applied.
    Throttle,
    /// Validation, permission, not found, unknown: a final answer.
    Permanent,
}

/// One entry of a GraphQL `errors` array, read leniently (docs/pipefy-api.md §7).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GqlError {
    pub message: String,
    pub code: Option<String>,
    /// First element of `path`: the alias of the root field the error belongs to.
    pub root: Option<String>,
}

impl GqlError {
    /// Reads one error object. `extensions.code` first; the older form carries a numeric
    /// top-level `code` and a `type` such as `ResourceNotFoundError`.
    pub(crate) fn from_value(v: &Value) -> GqlError {
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| v.get("title").and_then(Value::as_str))
            .unwrap_or("Pipefy returned an error without a message")
            .to_string();
        let code = v
            .get("extensions")
            .and_then(|e| e.get("code"))
            .and_then(value_to_code)
            .or_else(|| v.get("type").and_then(Value::as_str).map(type_name_to_code))
            .or_else(|| v.get("code").and_then(value_to_code));
        let root = v
            .get("path")
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        GqlError {
            message,
            code,
            root,
        }
    }

    /// All errors of a response body (`errors` missing or not a list: none).
    pub(crate) fn all_from_body(body: &Value) -> Vec<GqlError> {
        body.get("errors")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(GqlError::from_value).collect())
            .unwrap_or_default()
    }

    pub(crate) fn kind(&self) -> CodeKind {
        classify_code(self.code.as_deref(), &self.message)
    }
}

fn value_to_code(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `ResourceNotFoundError` -> `RESOURCE_NOT_FOUND`, `InternalServerError` ->
/// `INTERNAL_SERVER_ERROR`, so old-form errors classify like new ones.
fn type_name_to_code(type_name: &str) -> String {
    let mut out = String::with_capacity(type_name.len() + 4);
    let mut prev_lower = false;
    for ch in type_name.chars() {
        if ch.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        out.push(ch.to_ascii_uppercase());
    }
    if out != "INTERNAL_SERVER_ERROR" {
        if let Some(stripped) = out.strip_suffix("_ERROR") {
            return stripped.to_string();
        }
    }
    out
}

/// Decides what a Pipefy error code means. Unknown codes are permanent: retrying an error we
/// do not understand risks duplicates and rarely helps.
pub(crate) fn classify_code(code: Option<&str>, message: &str) -> CodeKind {
    let Some(code) = code else {
        // Pipefy's internal error text, seen without a code in some responses.
        return if message.trim().eq_ignore_ascii_case("Something went wrong") {
            CodeKind::Server
        } else {
            CodeKind::Permanent
        };
    };
    match code.to_ascii_uppercase().as_str() {
        "INTERNAL_SERVER_ERROR" | "INTERNAL_ERROR" | "SERVICE_UNAVAILABLE" | "TIMEOUT" => {
            CodeKind::Server
        }
        "TOO_MANY_REQUESTS" | "RATE_LIMITED" | "RATE_LIMIT_EXCEEDED" | "THROTTLED" => {
            CodeKind::Throttle
        }
        _ => CodeKind::Permanent,
    }
}

/// Joins the messages of several errors into one, keeping the first code.
pub(crate) fn combine(errors: &[&GqlError]) -> (Option<String>, String) {
    let code = errors.iter().find_map(|e| e.code.clone());
    let message = errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    (code, message)
}

/// The failure a set of errors stands for: throttle beats server beats permanent, because
/// the stronger reason to wait wins.
pub(crate) fn failure_from_errors(errors: &[&GqlError]) -> Failure {
    let (code, message) = combine(errors);
    if errors.iter().any(|e| e.kind() == CodeKind::Throttle) {
        Failure::Throttled(message)
    } else if errors.iter().any(|e| e.kind() == CodeKind::Server) {
        Failure::Uncertain { code, message }
    } else {
        Failure::Permanent { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_extensions_code_first() {
        let e = GqlError::from_value(&json!({
            "message": "Card not found with id: 0",
            "path": ["m3"],
            "code": 30003,
            "extensions": {"code": "RESOURCE_NOT_FOUND"}
        }));
        assert_eq!(e.code.as_deref(), Some("RESOURCE_NOT_FOUND"));
        assert_eq!(e.root.as_deref(), Some("m3"));
        assert_eq!(e.kind(), CodeKind::Permanent);
    }

    #[test]
    fn tolerates_the_old_top_level_form() {
        let e = GqlError::from_value(&json!({
            "message": "Card not found", "code": 30003, "type": "ResourceNotFoundError"
        }));
        assert_eq!(e.code.as_deref(), Some("RESOURCE_NOT_FOUND"));
        let e = GqlError::from_value(&json!({"message": "x", "type": "InternalServerError"}));
        assert_eq!(e.code.as_deref(), Some("INTERNAL_SERVER_ERROR"));
        assert_eq!(e.kind(), CodeKind::Server);
        let e = GqlError::from_value(&json!({"message": "x", "code": 30003}));
        assert_eq!(e.code.as_deref(), Some("30003"));
        assert_eq!(e.kind(), CodeKind::Permanent);
    }

    #[test]
    fn odd_error_objects_do_not_panic() {
        for v in [
            json!(null),
            json!("text"),
            json!(42),
            json!({"path": "notalist"}),
            json!({"path": [1, 2], "extensions": {"code": null}}),
            json!({"title": "Unauthorized"}),
        ] {
            let e = GqlError::from_value(&v);
            assert!(!e.message.is_empty());
            assert!(e.root.is_none());
        }
        assert!(GqlError::all_from_body(&json!({"errors": {"a": 1}})).is_empty());
    }

    #[test]
    fn classifies_codes() {
        for c in [
            "PERMISSION_DENIED",
            "RESOURCE_NOT_FOUND",
            "RECORD_NOT_FOUND",
            "NOT_FOUND",
            "INVALID_INPUT",
            "RECORD_INVALID",
            "undefinedField",
            "SOMETHING_NEW",
        ] {
            assert_eq!(classify_code(Some(c), "m"), CodeKind::Permanent, "{c}");
        }
        assert_eq!(
            classify_code(Some("INTERNAL_SERVER_ERROR"), "m"),
            CodeKind::Server
        );
        assert_eq!(
            classify_code(Some("TOO_MANY_REQUESTS"), "m"),
            CodeKind::Throttle
        );
        assert_eq!(
            classify_code(None, "Something went wrong"),
            CodeKind::Server
        );
        assert_eq!(classify_code(None, "Invalid value"), CodeKind::Permanent);
    }

    #[test]
    fn failure_from_errors_prefers_the_stronger_reason() {
        let p = GqlError::from_value(
            &json!({"message": "denied", "extensions": {"code": "PERMISSION_DENIED"}}),
        );
        let s = GqlError::from_value(
            &json!({"message": "boom", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}),
        );
        assert_eq!(
            failure_from_errors(&[&p]),
            Failure::permanent(Some("PERMISSION_DENIED".into()), "denied")
        );
        assert!(matches!(
            failure_from_errors(&[&p, &s]),
            Failure::Uncertain { .. }
        ));
    }

    #[test]
    fn op_error_display_has_class_code_and_message() {
        let e = OpError {
            class: ErrorClass::Permanent,
            code: Some("PERMISSION_DENIED".into()),
            message: "Permission denied".into(),
            attempts: 1,
        };
        assert_eq!(
            e.to_string(),
            "Permanent PERMISSION_DENIED: Permission denied (after 1 attempt(s))"
        );
    }
}
