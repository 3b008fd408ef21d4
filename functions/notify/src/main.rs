//! `notify`: The sync functions' on-success and on-failure destination.
//! Builds the AWS clients once per container and hands every event to the library.

#[global_allocator]
static GLOBAL: pipefy_sync::Allocator = pipefy_sync::ALLOCATOR;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use pipefy_sync::lambda::{init_logging, Deps};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let deps = Deps::from_env().await.map_err(|e| {
        tracing::error!(error_type = e.error_type(), error = %e, "function setup failed");
        lambda_runtime::Error::from(e.to_string())
    })?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        pipefy_sync::lambda::notify::handle(deps, event.payload)
            .await
            .map_err(Diagnostic::from)
    }))
    .await
}
