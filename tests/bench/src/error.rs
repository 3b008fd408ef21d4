//! The bench's failures, by kind. A failed part is recorded in the results and the other
//! parts still run, so one broken measurement does not hide the rest.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating {path}: {message}")]
    Generate { path: PathBuf, message: String },
    #[error("the bench destination does not parse or map: {0}")]
    Destination(String),
    #[error("the Pipefy emulator: {0}")]
    Emulator(String),
    #[error("the engine: {0}")]
    Engine(String),
    #[error("state: {0}")]
    State(String),
    #[error("child process {what}: {message}")]
    Child { what: String, message: String },
    #[error("the peer script: {0}")]
    Peer(String),
    #[error("start-up of {function}: {message}")]
    Startup { function: String, message: String },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
