//! `sync-scheduled`: EventBridge Scheduler, manual runs from the AWS CLI, and hand-off continuations.
//! Everything is in the library: [`pipefy_sync::lambda::serve`] builds the AWS clients once per
//! container and hands every event to this function's handler.

#[global_allocator]
static GLOBAL: pipefy_sync::Allocator = pipefy_sync::ALLOCATOR;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pipefy_sync::lambda::serve(pipefy_sync::lambda::Handler::Scheduled).await
}
