//! pipefy-sync: turns the rows of table files in S3 into Pipefy cards and database records.
//!
//! Everything the Lambda functions and the CLI do lives here; `functions/*/main.rs` only wire
//! clients and call into this crate.

pub mod aws;
pub mod config;
pub mod engine;
pub mod failure;
pub mod lambda;
pub mod mapping;
pub mod pipefy;
pub mod report;
pub mod source;
pub mod state;
pub mod store;
pub mod value;
