//! A harness for engine tests: the Pipefy emulator over HTTP, a table in a temporary folder,
//! local state and reports, and the real client and engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pipefy_emulator::{EmulatorConfig, EmulatorHandle, StateSnapshot};
use pipefy_sync::config::{parse_destination, Destination};
use pipefy_sync::engine::{sync, HandOff, HandOffError, RunContext, RunRequest};
use pipefy_sync::pipefy::{ClientConfig, Credentials, PipefyClient, Secret, StaticCredentials};
use pipefy_sync::report::{RowResult, RunStatus, RunSummary};
use pipefy_sync::store::local::LocalStore;
use pipefy_sync::store::ObjectStore;

pub const DEMO_TOKEN: &str = "demo-token";

pub struct Harness {
    pub emulator: EmulatorHandle,
    pub dir: tempfile::TempDir,
}

/// Emulator settings for fast tests: the demo fixture, a rate limit that does not slow the
/// suite down (tests of the limiter set their own).
pub fn fast_emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        rate_limit_requests: 1_000_000,
        ..EmulatorConfig::default()
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_config(fast_emulator_config()).await
    }

    pub async fn with_config(config: EmulatorConfig) -> Harness {
        let emulator = pipefy_emulator::start(config)
            .await
            .expect("start emulator");
        Harness {
            emulator,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Root of the local "bucket" holding `<layer>/<table>/` folders.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn state_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn reports_root(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    /// Writes a data file at `<data>/<rel>`; returns its key.
    pub fn write_file(&self, rel: &str, content: impl AsRef<[u8]>) -> String {
        let path = self.data_root().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write data file");
        rel.to_string()
    }

    /// A destination from YAML with `source.path`, `endpoint` and `token` filled in:
    /// the fragment gives everything else (operation, pipe/table, key, source layer/table,
    /// mapping...).
    pub fn destination(&self, fragment: &str) -> Destination {
        let yaml = format!(
            "{fragment}\ntoken: {{ env: PIPEFY_SYNC_TEST_UNUSED }}\nendpoint: {}\n",
            self.emulator.graphql_url()
        );
        let yaml = yaml.replace("${DATA}", &self.data_root().display().to_string());
        parse_destination("test-destination.yaml", &yaml).expect("test destination parses")
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            endpoint: self.emulator.graphql_url(),
            requests_per_window: 1_000_000,
            window: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
            ..ClientConfig::default()
        }
    }

    pub fn client(&self) -> PipefyClient {
        self.client_with(self.client_config())
    }

    pub fn client_with(&self, config: ClientConfig) -> PipefyClient {
        PipefyClient::new(
            config,
            Arc::new(StaticCredentials(Credentials::PersonalToken(Secret::new(
                DEMO_TOKEN,
            )))),
        )
        .expect("client")
    }

    pub fn context(&self) -> RunContext {
        self.context_with(self.client())
    }

    pub fn context_with(&self, client: PipefyClient) -> RunContext {
        std::fs::create_dir_all(self.data_root()).expect("mkdir data");
        std::fs::create_dir_all(self.state_root()).expect("mkdir state");
        std::fs::create_dir_all(self.reports_root()).expect("mkdir reports");
        RunContext {
            source_store: Arc::new(LocalStore::new(self.data_root())),
            attachment_buckets: None,
            state_store: Arc::new(LocalStore::new(self.state_root())),
            state_prefix: String::new(),
            report_store: Arc::new(LocalStore::new(self.reports_root())),
            reports_prefix: String::new(),
            pipefy: client,
            hand_off: None,
            progress: None,
            lifecycle: None,
        }
    }

    pub async fn run(&self, dest: &Destination) -> RunSummary {
        self.run_with(
            dest,
            RunRequest {
                trigger: "test".into(),
                ..RunRequest::default()
            },
        )
        .await
    }

    pub async fn run_with(&self, dest: &Destination, req: RunRequest) -> RunSummary {
        sync(&self.context(), dest, req)
            .await
            .expect("run succeeds")
    }

    pub fn snapshot(&self) -> StateSnapshot {
        self.emulator.snapshot()
    }

    /// How many of mutation `name` the emulator executed (each alias counts once).
    pub fn mutations(&self, name: &str) -> u64 {
        self.emulator
            .stats()
            .mutations
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Every mutation the emulator executed.
    pub fn all_mutations(&self) -> u64 {
        self.emulator.stats().mutations.values().sum()
    }

    /// Cards of a pipe whose field `field` holds `value` (as text).
    pub fn cards_with(&self, pipe: &str, field: &str, value: &str) -> Vec<pipefy_emulator::Card> {
        self.snapshot()
            .cards
            .into_iter()
            .filter(|c| c.pipe_id == pipe && field_text(c.fields.get(field)) == value)
            .collect()
    }

    /// Another run takes the destination's lease for `ttl` (the lease must be free); the
    /// destination's state, to look at its pending work.
    pub async fn hold_lease(
        &self,
        destination: &str,
        ttl: Duration,
    ) -> pipefy_sync::state::StateStore {
        let state = pipefy_sync::state::StateStore::new(
            Arc::new(LocalStore::new(self.state_root())),
            "",
            destination,
        );
        state
            .try_acquire_lease("another-run", ttl)
            .await
            .expect("the lease can be read")
            .expect("the lease is free");
        state
    }

    /// The keys (`external_id`) of the demo pipe's cards that start with `prefix`, sorted.
    pub fn card_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .snapshot()
            .cards
            .into_iter()
            .filter(|c| c.pipe_id == "301")
            .map(|c| field_text(c.fields.get("external_id")))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        keys
    }

    /// Per-row results of a run (every part, in order).
    pub fn results(&self, summary: &RunSummary) -> Vec<RowResult> {
        self.result_parts(summary)
            .iter()
            .flat_map(|part| read_jsonl_file(part))
            .map(|v| serde_json::from_value(v).expect("row result"))
            .collect()
    }

    /// Failed-rows lines of a run.
    pub fn failed_rows(&self, summary: &RunSummary) -> Vec<serde_json::Value> {
        read_jsonl(&self.report_dir(summary).join("failed"))
    }

    /// The files of a run's result parts (`<destination>/results/<date>/<run-id>-part-*`), in
    /// order.
    pub fn result_parts(&self, summary: &RunSummary) -> Vec<PathBuf> {
        let day = self
            .reports_root()
            .join(&summary.destination)
            .join("results")
            .join(summary.started_at.format("%Y-%m-%d").to_string());
        let start = format!("{}-part-", summary.run_id);
        let mut parts: Vec<PathBuf> = std::fs::read_dir(day)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&start))
                    })
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        parts
    }

    pub fn report_dir(&self, summary: &RunSummary) -> PathBuf {
        self.reports_root()
            .join(&summary.destination)
            .join(summary.started_at.format("%Y-%m-%d").to_string())
            .join(&summary.run_id)
    }

    pub fn summary_file(&self, summary: &RunSummary) -> RunSummary {
        let text = std::fs::read_to_string(self.report_dir(summary).join("summary.json"))
            .expect("summary.json written");
        serde_json::from_str(&text).expect("summary parses")
    }

    pub fn local_store(&self, root: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalStore::new(root))
    }
}

/// Every row read has exactly one outcome in the counts.
pub fn assert_counts_add_up(s: &RunSummary) {
    let c = &s.counts;
    assert_eq!(
        c.read,
        c.created
            + c.updated
            + c.unchanged
            + c.exists
            + c.skipped_by_preflight
            + c.failed
            + c.not_attempted,
        "read must equal created+updated+unchanged+exists+skipped+failed+not_attempted: {c:#?}"
    );
}

/// A stored field value as comparable text (strings as is, numbers and arrays as JSON).
pub fn field_text(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn read_jsonl(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files.iter().flat_map(|f| read_jsonl_file(f)).collect()
}

/// The lines of one JSON Lines file.
pub fn read_jsonl_file(file: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(file).expect("read part");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

/// The failure of the row at `file:line` in a run's results.
pub fn result_at<'a>(results: &'a [RowResult], file: &str, line: u64) -> &'a RowResult {
    results
        .iter()
        .find(|r| r.file == file && r.line == line)
        .unwrap_or_else(|| panic!("no result for {file}:{line} in {results:#?}"))
}

/// Records the hand-offs a run asks for; the test plays the new invocations.
#[derive(Default)]
pub struct Continuations(std::sync::Mutex<Vec<String>>);

impl Continuations {
    /// The run ids handed off so far, oldest first.
    pub fn taken(&self) -> Vec<String> {
        self.0.lock().expect("continuations lock").clone()
    }
}

#[async_trait::async_trait]
impl HandOff for Continuations {
    async fn continue_run(&self, _destination: &str, run_id: &str) -> Result<(), HandOffError> {
        self.0
            .lock()
            .expect("continuations lock")
            .push(run_id.to_string());
        Ok(())
    }
}

/// Runs `req` until its first hand-off, then plays a late continuation: the run's lease
/// (`sync.lease_seconds: 1`) lapses, another run holds the destination for half a second,
/// and the continuation hands its work over and then does it. The continuation's summary.
pub async fn continue_late(h: &Harness, d: &Destination, req: RunRequest) -> RunSummary {
    let handoffs = Arc::new(Continuations::default());
    let ctx = RunContext {
        hand_off: Some(handoffs.clone()),
        ..h.context()
    };
    let first = sync(
        &ctx,
        d,
        RunRequest {
            deadline: Some(std::time::Instant::now()),
            ..req
        },
    )
    .await
    .expect("first invocation");
    assert_eq!(first.status, RunStatus::HandedOff, "{first:#?}");
    let run_id = handoffs.taken().pop().expect("a hand-off");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.hold_lease(&d.name, Duration::from_millis(500)).await;
    sync(
        &h.context(),
        d,
        RunRequest {
            trigger: "hand-off".into(),
            continue_run: Some(run_id),
            lease_wait: Duration::ZERO,
            ..RunRequest::default()
        },
    )
    .await
    .expect("continuation")
}

/// Runs `req` with `ctx` (its hand-off replaced) and every continuation it hands off to,
/// each with its deadline already past (a hand-off after every file and every window of
/// removals); the last summary and the number of invocations.
pub async fn run_across_hand_offs(
    ctx: RunContext,
    d: &Destination,
    req: RunRequest,
) -> (RunSummary, usize) {
    let handoffs = Arc::new(Continuations::default());
    let ctx = RunContext {
        hand_off: Some(handoffs.clone()),
        ..ctx
    };
    let past = || Some(std::time::Instant::now());
    let mut invocations = 1;
    let mut summary = sync(
        &ctx,
        d,
        RunRequest {
            deadline: past(),
            ..req
        },
    )
    .await
    .expect("first invocation");
    while summary.status == RunStatus::HandedOff {
        assert!(invocations < 40, "the run never ends: {summary:#?}");
        let run_id = handoffs
            .0
            .lock()
            .expect("continuations lock")
            .pop()
            .expect("a hand-off was asked for");
        summary = sync(
            &ctx,
            d,
            RunRequest {
                trigger: "hand-off".into(),
                continue_run: Some(run_id),
                deadline: past(),
                ..RunRequest::default()
            },
        )
        .await
        .expect("continuation");
        invocations += 1;
    }
    (summary, invocations)
}
