//! What a function answers when it fails. The `errorType` of the Lambda error says which
//! kind of failure it is, so `aws lambda invoke`, the on-failure destination (`notify`) and
//! alarms can tell them apart without reading the message.

use crate::aws::TokenSetupError;
use crate::engine::EngineError;
use crate::pipefy::PipefyError;
use crate::state::StateError;
use crate::store::StoreError;

/// One variant per kind of failure; [`HandlerError::error_type`] names it for Lambda.
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
    /// The state, config or report bucket failed; `source` keeps the store's own kind
    /// (not found, precondition, access denied, other) for callers that must tell a
    /// transient failure from a permanent one.
    #[error("{context}: {source}")]
    Storage {
        context: String,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    HandOff(String),
    /// The Slack webhook could not be posted to (the message was not delivered).
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("function setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Internal(String),
}

/// Why a notification did not reach Slack. The webhook URL is a credential: neither
/// variant carries it.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("posting to the Slack webhook failed: {0}")]
    Unreachable(String),
    #[error("the Slack webhook answered HTTP {0}")]
    Rejected(u16),
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
            HandlerError::Storage { .. } => "StorageError",
            HandlerError::HandOff(_) => "HandOffFailed",
            HandlerError::Notify(_) => "NotifyFailed",
            HandlerError::Setup(_) => "SetupError",
            HandlerError::Internal(_) => "InternalError",
        }
    }

    /// A storage failure with what was being done when it happened.
    pub fn storage(context: impl Into<String>, source: StoreError) -> HandlerError {
        HandlerError::Storage {
            context: context.into(),
            source,
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

impl From<TokenSetupError> for HandlerError {
    fn from(e: TokenSetupError) -> Self {
        let text = e.to_string();
        match e {
            TokenSetupError::Env { .. } | TokenSetupError::NoSecretsClient(_) => {
                HandlerError::Secret(text)
            }
            TokenSetupError::Host { .. }
            | TokenSetupError::NoToken(_)
            | TokenSetupError::Client { .. } => HandlerError::DestinationInvalid(text),
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
            // The same messages as the engine's ("state storage: ...", "storage: ..."), with
            // the store's error kept.
            EngineError::State(StateError::Store(source)) => {
                HandlerError::storage("state storage", source)
            }
            EngineError::Store(source) => HandlerError::storage("storage", source),
            EngineError::State(_) => HandlerError::State(text),
            EngineError::HandOff(_) => HandlerError::HandOff(text),
            EngineError::Request(_) => HandlerError::InvalidEvent(text),
            EngineError::Internal(_) => HandlerError::Internal(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_the_store_kind_and_the_engine_message() {
        let engine = EngineError::State(StateError::Store(StoreError::AccessDenied("k".into())));
        let text = engine.to_string();
        let e = HandlerError::from(engine);
        assert_eq!(e.to_string(), text);
        assert_eq!(e.error_type(), "StorageError");
        assert!(matches!(
            e,
            HandlerError::Storage {
                source: StoreError::AccessDenied(_),
                ..
            }
        ));
        let plain = EngineError::Store(StoreError::NotFound("k".into()));
        let text = plain.to_string();
        assert_eq!(HandlerError::from(plain).to_string(), text);
    }

    #[test]
    fn a_slack_failure_is_not_a_pipefy_error() {
        let e = HandlerError::from(NotifyError::Rejected(500));
        assert_eq!(e.error_type(), "NotifyFailed");
        assert_eq!(e.to_string(), "the Slack webhook answered HTTP 500");
    }
}
