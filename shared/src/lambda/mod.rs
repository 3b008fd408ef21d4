//! What the three Lambda functions do, kept here so `functions/*/main.rs` only call
//! [`serve`] with their [`Handler`].
//!
//! - [`scheduled::handle`]: EventBridge Scheduler, manual runs, hand-off continuations.
//! - [`upload::handle`]: S3 ObjectCreated notifications.
//! - [`notify::handle`]: Lambda's asynchronous invocation records (on-success/on-failure).
//!
//! The handlers take small traits, not the AWS clients: a [`Catalog`] of destinations, a
//! [`Runner`] that runs a destination's sync, a [`notify::Notifier`], and an object store for
//! notify's state. [`Deps`] (built once per container) is the real implementation, on the
//! AWS SDK and the engine; the unit tests use in-memory fakes.
//!
//! - [`settings`]: the environment, and the deadline a run works to.
//! - [`error`]: [`HandlerError`], whose `errorType` names the kind of failure.
//! - [`catalog`]: the destination files under the config prefix.
//! - [`deps`]: the clients built once per container, and the engine's [`Runner`].
//! - [`hand_off`]: continuing a long run in a new invocation.
//! - [`events`]: the payloads, parsed strictly; [`metrics`]: one EMF line per run.
//! - [`lifecycle`]: runs' lifecycle events on the user's EventBridge bus.
//! - [`serve`](mod@serve): the runtime loop and the logging the three binaries share.

pub mod catalog;
pub mod deps;
pub mod error;
pub mod events;
pub mod hand_off;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod scheduled;
pub mod serve;
pub mod settings;
pub mod upload;

#[cfg(test)]
pub(crate) mod fakes;

pub use catalog::{Catalog, DestinationCatalog};
pub use deps::{ClientCache, Deps, Runner};
pub use error::{HandlerError, NotifyError};
pub use serve::{init_logging, serve, Handler};
pub use settings::{Settings, DEFAULT_TIME_BUDGET};
