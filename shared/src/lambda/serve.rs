//! The Lambda runtime loop the three functions share: logging set up, clients built once per
//! container, then every event handed to its function's handler.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

use super::deps::Deps;
use super::error::HandlerError;
use super::{notify, scheduled, upload};

/// Which function a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `sync-scheduled`: EventBridge Scheduler, manual runs, hand-off continuations.
    Scheduled,
    /// `sync-upload`: S3 ObjectCreated notifications (and its own hand-offs).
    Upload,
    /// `notify`: the sync functions' asynchronous invocation records.
    Notify,
}

impl Handler {
    /// One event, with the real catalog, runner, state store and notifier.
    pub async fn handle(
        self,
        deps: &Deps,
        event: LambdaEvent<Value>,
    ) -> Result<Value, HandlerError> {
        let (payload, deadline_ms) = (event.payload, event.context.deadline);
        match self {
            Handler::Scheduled => scheduled::handle(deps.sync_deps(), payload, deadline_ms).await,
            Handler::Upload => upload::handle(deps.sync_deps(), payload, deadline_ms).await,
            Handler::Notify => {
                let slack = deps.slack_notifier();
                let links = deps.page_links();
                let deps = notify::NotifyDeps {
                    catalog: &deps.catalog,
                    store: deps.system_store.as_ref(),
                    notifier: slack.as_ref().map(|n| n as &dyn notify::Notifier),
                    links: Some(&links),
                    state_prefix: &deps.settings.state_prefix,
                };
                notify::handle(deps, payload).await
            }
        }
    }
}

/// Runs a function: logs set up, [`Deps`] built from the environment (a failure there is
/// logged and ends the process, so Lambda reports an init error), then events until Lambda
/// stops the container.
pub async fn serve(handler: Handler) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let deps = Deps::from_env().await.map_err(|e| {
        tracing::error!(error_type = e.error_type(), error = %e, "function setup failed");
        lambda_runtime::Error::from(e.to_string())
    })?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(deps, event).await.map_err(Diagnostic::from)
    }))
    .await
}

/// Initialises tracing for a Lambda function: JSON unless `AWS_LAMBDA_LOG_FORMAT=Text`, at
/// `AWS_LAMBDA_LOG_LEVEL` (default INFO). Never with ANSI colours: CloudWatch shows the
/// escape codes as text.
pub fn init_logging() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "TRACE" => "trace",
            "DEBUG" => "debug",
            "WARN" => "warn",
            "ERROR" | "FATAL" => "error",
            _ => "info",
        })
        .unwrap_or("info");
    // Our crates at the chosen level; the AWS SDK's chatter one notch quieter.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},aws_config=warn,aws_smithy_runtime=warn,hyper=warn"
    ));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|f| f.eq_ignore_ascii_case("text"))
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_writer(std::io::stderr);
    let result = if text {
        builder.try_init()
    } else {
        builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init()
    };
    if result.is_err() {
        // Already initialised (tests): keep the existing subscriber.
    }
}
