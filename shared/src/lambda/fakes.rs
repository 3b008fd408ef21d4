//! In-memory stand-ins for the handlers' traits, for unit tests without AWS or cargo lambda.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::{parse_destination, Destination, DestinationSet};
use crate::engine::{DriftRequest, RunRequest};
use crate::report::{Counts, DriftCounts, DriftSummary, RunStatus, RunSummary};

use super::catalog::Catalog;
use super::deps::{Runner, SyncDeps};
use super::error::{HandlerError, NotifyError};
use super::notify::Notifier;
use super::settings::Settings;

/// A destination `name` syncing `s3://lake/refined/<table>/`; `extra` is appended YAML.
pub fn destination(name: &str, table: &str, extra: &str) -> Destination {
    let yaml = format!(
        "name: {name}\npipe_id: \"1\"\noperation: create_card\nsource: {{ bucket: lake, layer: refined, table: {table} }}\nmapping:\n  title: name\ntoken: {{ secret: s }}\n{extra}"
    );
    match parse_destination(&format!("{name}.yaml"), &yaml) {
        Ok(d) => d,
        Err(e) => panic!("test destination {name}: {e}"),
    }
}

/// A fixed set of destinations; counts how often it was reloaded.
#[derive(Default)]
pub struct FakeCatalog {
    pub destinations: DestinationSet,
    pub refreshes: Mutex<u32>,
}

impl FakeCatalog {
    pub fn of(destinations: impl IntoIterator<Item = Destination>) -> Self {
        FakeCatalog {
            destinations: destinations
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            refreshes: Mutex::new(0),
        }
    }

    pub fn refreshes(&self) -> u32 {
        self.refreshes.lock().map(|n| *n).unwrap_or(0)
    }
}

#[async_trait]
impl Catalog for FakeCatalog {
    async fn get(&self, name: &str) -> Result<Destination, HandlerError> {
        self.destinations
            .get(name)
            .cloned()
            .ok_or_else(|| HandlerError::UnknownDestination {
                name: name.to_string(),
                known: self
                    .destinations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    async fn version(&self, _name: &str) -> Option<String> {
        Some("\"v1\"".into())
    }

    async fn all(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        Ok(Arc::new(self.destinations.clone()))
    }

    async fn refreshed(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        if let Ok(mut n) = self.refreshes.lock() {
            *n += 1;
        }
        self.all().await
    }
}

/// Records each run it is asked for and answers a completed summary, or a Pipefy error for
/// the destinations in `failing`.
#[derive(Default)]
pub struct FakeRunner {
    pub runs: Mutex<Vec<(String, RunRequest)>>,
    /// The destinations drift was reported for.
    pub drifts: Mutex<Vec<String>>,
    pub failing: Vec<String>,
}

impl FakeRunner {
    /// A sync handler's dependencies: this runner, `catalog` and `settings`.
    pub fn deps<'a>(&'a self, catalog: &'a FakeCatalog, settings: &'a Settings) -> SyncDeps<'a> {
        SyncDeps {
            catalog,
            runner: self,
            settings,
        }
    }

    pub fn runs(&self) -> Vec<(String, RunRequest)> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn drifts(&self) -> Vec<String> {
        self.drifts.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Runner for FakeRunner {
    async fn run(&self, dest: &Destination, req: RunRequest) -> Result<RunSummary, HandlerError> {
        if let Ok(mut runs) = self.runs.lock() {
            runs.push((dest.name.clone(), req.clone()));
        }
        if self.failing.contains(&dest.name) {
            return Err(HandlerError::Pipefy(format!("{} is down", dest.name)));
        }
        Ok(summary(&dest.name, &req.trigger, RunStatus::Completed))
    }

    async fn drift(
        &self,
        dest: &Destination,
        req: DriftRequest,
    ) -> Result<DriftSummary, HandlerError> {
        if let Ok(mut drifts) = self.drifts.lock() {
            drifts.push(dest.name.clone());
        }
        Ok(DriftSummary {
            kind: "drift".into(),
            run_id: format!("drift-{}", dest.name),
            destination: dest.name.clone(),
            trigger: req.trigger,
            started_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: chrono::DateTime::UNIX_EPOCH,
            counts: DriftCounts::default(),
            tracked_targets: Vec::new(),
            report_location: None,
        })
    }
}

/// A run summary with no rows.
pub fn summary(destination: &str, trigger: &str, status: RunStatus) -> RunSummary {
    RunSummary {
        run_id: format!("run-{destination}"),
        destination: destination.to_string(),
        trigger: trigger.to_string(),
        status,
        dry_run: false,
        started_at: chrono::DateTime::UNIX_EPOCH,
        finished_at: None,
        source_files: Vec::new(),
        counts: Counts::default(),
        invocations: 1,
        report_location: Some(format!("s3://b/reports/{destination}/")),
        report_page: None,
        requests_avoided: 0,
        error: None,
        stopped_at: None,
        removal_skipped: None,
        keys: Vec::new(),
        keys_not_found: Vec::new(),
    }
}

/// Keeps the messages it is given; refuses them all when `down`.
#[derive(Default)]
pub struct FakeNotifier {
    pub posts: Mutex<Vec<String>>,
    pub down: bool,
}

impl FakeNotifier {
    pub fn posts(&self) -> Vec<String> {
        self.posts.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Notifier for FakeNotifier {
    async fn post(&self, text: &str) -> Result<(), HandlerError> {
        if self.down {
            return Err(NotifyError::Rejected(503).into());
        }
        if let Ok(mut posts) = self.posts.lock() {
            posts.push(text.to_string());
        }
        Ok(())
    }
}

/// Keys of a run request's scope, for assertions.
pub fn files(req: &RunRequest) -> Option<Vec<String>> {
    match &req.scope {
        crate::state::RunScope::Files(f) => Some(f.clone()),
        crate::state::RunScope::WholeTable => None,
    }
}
