//! What a function builds once per container (settings, AWS clients, the catalog, one Pipefy
//! client per destination), and the [`Runner`] that runs a destination's sync with them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::config::Destination;
use crate::engine::{
    drift, new_run_id, sync, DriftRequest, HandOff, RunContext, RunEvent, RunEvents, RunRequest,
};
use crate::pipefy::PipefyClient;
use crate::report::{DriftSummary, RunSummary};
use crate::store::s3::S3Store;
use crate::store::ObjectStore;

use super::catalog::{Catalog, DestinationCatalog};
use super::error::HandlerError;
use super::hand_off::LambdaHandOff;
use super::lifecycle::EventBridgeEvents;
use super::settings::Settings;

/// Runs one destination's sync, or reports its drift.
#[async_trait]
pub trait Runner: Send + Sync {
    async fn run(&self, dest: &Destination, req: RunRequest) -> Result<RunSummary, HandlerError>;
    async fn drift(
        &self,
        dest: &Destination,
        req: DriftRequest,
    ) -> Result<DriftSummary, HandlerError>;
}

/// What the two sync handlers take: where destinations come from, what runs them, and the
/// function's settings.
#[derive(Clone, Copy)]
pub struct SyncDeps<'a> {
    pub catalog: &'a dyn Catalog,
    pub runner: &'a dyn Runner,
    pub settings: &'a Settings,
}

/// Everything a function builds once per container.
pub struct Deps {
    pub settings: Settings,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub system_store: Arc<dyn ObjectStore>,
    pub catalog: DestinationCatalog,
    /// Where runs' lifecycle events go, when the settings name a bus.
    pub run_events: Option<Arc<dyn RunEvents>>,
    clients: ClientCache,
}

/// One Pipefy client per destination, with the version (ETag) of the destination file it
/// was built from: its rate limiter and token cache outlive a run, and a changed file
/// (endpoint, limits, secret) gets a new client.
#[derive(Default)]
pub struct ClientCache(Mutex<HashMap<String, (String, PipefyClient)>>);

impl ClientCache {
    pub async fn get_or_build(
        &self,
        name: &str,
        version: &str,
        build: impl FnOnce() -> Result<PipefyClient, HandlerError>,
    ) -> Result<PipefyClient, HandlerError> {
        let mut clients = self.0.lock().await;
        if let Some((v, c)) = clients.get(name) {
            if v == version {
                return Ok(c.clone());
            }
        }
        let client = build()?;
        clients.insert(name.to_string(), (version.to_string(), client.clone()));
        Ok(client)
    }
}

impl Deps {
    /// What the sync handlers take of these.
    pub fn sync_deps(&self) -> SyncDeps<'_> {
        SyncDeps {
            catalog: &self.catalog,
            runner: self,
            settings: &self.settings,
        }
    }

    pub fn new(
        settings: Settings,
        s3: aws_sdk_s3::Client,
        secrets: aws_sdk_secretsmanager::Client,
        lambda: aws_sdk_lambda::Client,
        run_events: Option<Arc<dyn RunEvents>>,
    ) -> Self {
        let system_store: Arc<dyn ObjectStore> =
            Arc::new(S3Store::new(s3.clone(), settings.bucket.clone()));
        let catalog = DestinationCatalog::new(system_store.clone(), &settings.config_prefix);
        Deps {
            settings,
            s3,
            secrets,
            lambda,
            system_store,
            catalog,
            run_events,
            clients: ClientCache::default(),
        }
    }

    /// Builds the AWS clients from the environment (honouring AWS_ENDPOINT_URL).
    pub async fn from_env() -> Result<Deps, HandlerError> {
        let settings = Settings::from_env()?;
        let config = crate::aws::load_sdk_config().await;
        let run_events = settings.event_bus.as_ref().map(|bus| {
            Arc::new(EventBridgeEvents::new(
                crate::aws::eventbridge_client(&config),
                bus,
            )) as Arc<dyn RunEvents>
        });
        Ok(Deps::new(
            settings,
            crate::aws::s3_client(&config),
            crate::aws::secrets_client(&config),
            crate::aws::lambda_client(&config),
            run_events,
        ))
    }

    pub async fn pipefy_client(&self, dest: &Destination) -> Result<PipefyClient, HandlerError> {
        let version = self.catalog.version(&dest.name).await.unwrap_or_default();
        self.clients
            .get_or_build(&dest.name, &version, || {
                crate::aws::pipefy_client(dest, &self.settings.allowed_hosts, Some(&self.secrets))
                    .map_err(HandlerError::from)
            })
            .await
    }

    pub async fn run_context(&self, dest: &Destination) -> Result<RunContext, HandlerError> {
        let bucket = dest.source.bucket.clone().ok_or_else(|| {
            HandlerError::DestinationInvalid(format!(
                "destination '{}': source.bucket is required in Lambda (source.path is for local runs)",
                dest.name
            ))
        })?;
        let hand_off: Option<Arc<dyn HandOff>> = self.settings.function_name.as_ref().map(|f| {
            Arc::new(LambdaHandOff::new(self.lambda.clone(), f.clone())) as Arc<dyn HandOff>
        });
        Ok(RunContext {
            source_store: Arc::new(S3Store::new(self.s3.clone(), bucket)),
            attachment_buckets: Some(Arc::new(crate::store::S3Buckets(self.s3.clone()))),
            state_store: self.system_store.clone(),
            state_prefix: self.settings.state_prefix.clone(),
            report_store: self.system_store.clone(),
            reports_prefix: self.settings.reports_prefix.clone(),
            pipefy: self.pipefy_client(dest).await?,
            hand_off,
            progress: None,
            lifecycle: self.run_events.clone(),
        })
    }
}

/// The engine's run, with the S3 stores, the destination's Pipefy client and a Lambda
/// hand-off.
#[async_trait]
impl Runner for Deps {
    async fn run(&self, dest: &Destination, req: RunRequest) -> Result<RunSummary, HandlerError> {
        let ctx = match self.run_context(dest).await {
            Ok(ctx) => ctx,
            Err(e) => {
                // The engine sends the events of the runs it starts; a run that fails before
                // (no token, no secret, a destination Lambda cannot run) is reported here,
                // under an id of its own that the log names too.
                if let Some(events) = &self.run_events {
                    let run_id = req.continue_run.clone().unwrap_or_else(new_run_id);
                    tracing::error!(destination = %dest.name, run_id, error = %e, "the run could not be set up");
                    let failed = RunEvent::failed(
                        &dest.name,
                        &run_id,
                        &req.trigger,
                        req.dry_run,
                        e.to_string(),
                    );
                    events.publish(&failed).await;
                }
                return Err(e);
            }
        };
        sync(&ctx, dest, req).await.map_err(HandlerError::from)
    }

    async fn drift(
        &self,
        dest: &Destination,
        req: DriftRequest,
    ) -> Result<DriftSummary, HandlerError> {
        let ctx = self.run_context(dest).await?;
        drift(&ctx, dest, req).await.map_err(HandlerError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipefy::{ClientConfig, Credentials, Secret, StaticCredentials};

    #[tokio::test]
    async fn a_changed_destination_file_gets_a_new_client() {
        let cache = ClientCache::default();
        let build = || {
            PipefyClient::new(
                ClientConfig::default(),
                Arc::new(StaticCredentials(Credentials::PersonalToken(Secret::new(
                    "t",
                )))),
            )
            .map_err(|e| HandlerError::Setup(e.to_string()))
        };
        let first = cache.get_or_build("d", "\"v1\"", build).await.unwrap();
        let again = cache.get_or_build("d", "\"v1\"", build).await.unwrap();
        assert!(
            first.is_same_client(&again),
            "same file: the client is kept"
        );
        let changed = cache.get_or_build("d", "\"v2\"", build).await.unwrap();
        assert!(!first.is_same_client(&changed), "a new ETag: a new client");
        let refused = cache
            .get_or_build("d", "\"v3\"", || {
                Err(HandlerError::DestinationInvalid("no".into()))
            })
            .await;
        assert!(refused.is_err());
    }
}
