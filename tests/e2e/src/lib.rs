//! Shared helpers for the integration tests: the real parts they run against.
//!
//! - [`moto::Moto`]: a moto server (S3, Secrets Manager) on a free port, one per test binary.
//! - [`sync::Harness`]: the Pipefy emulator, a local table, state and reports, and the engine.
//! - [`browser`]: headless Chromium for the HTML pages.
//! - Paths to the pinned tools installed by `scripts/setup-tools.sh`.

pub mod browser;
pub mod lambda;
pub mod moto;
pub mod sync;
pub mod tools;
