//! pipefy-sync: turns the rows of table files in S3 into Pipefy cards and database records.
//!
//! Everything the Lambda functions and the CLI do lives here; `functions/*/main.rs` only wire
//! clients and call into this crate.

pub mod aws;
pub mod config;
pub mod engine;
pub mod failure;
pub mod init;
pub mod lambda;
pub mod mapping;
pub mod pipefy;
pub mod report;
pub mod source;
pub mod state;
pub mod store;
pub mod value;

/// The allocator every pipefy-sync binary declares (`#[global_allocator]`). A run allocates
/// a dozen small strings per row on the reader thread and frees them on the async side;
/// glibc's malloc spent a third of a dry run's CPU on that, much of it waiting on arena
/// locks, where mimalloc's thread-local free lists do not contend.
pub type Allocator = mimalloc::MiMalloc;
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;
