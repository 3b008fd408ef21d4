//! What every part builds the same way: the bench destination (a realistic mapping of the
//! generated customer table onto the demo fixture's pipe 301), the Pipefy client the
//! functions would build for it, the in-process emulator, and a run context on local
//! folders.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pipefy_emulator::{EmulatorConfig, EmulatorHandle, Faults};
use pipefy_sync::config::{parse_destination, Destination};
use pipefy_sync::engine::{RunContext, RunRequest};
use pipefy_sync::mapping::{Mapper, Schema};
use pipefy_sync::pipefy::{Credentials, PipefyClient, Secret, StaticCredentials};
use pipefy_sync::report::RunSummary;
use pipefy_sync::state::{LoadedManifest, StateStore};
use pipefy_sync::store::LocalStore;

use crate::error::{BenchError, Result};
use crate::gen::{LAYER, TABLE};

/// The demo fixture's personal token.
pub const TOKEN: &str = "demo-token";
/// The demo fixture's "Customer onboarding" pipe.
pub const PIPE_ID: &str = "301";

/// Pipefy's published limit (docs/pipefy-api.md §9) and the batch size the engine uses by default.
pub const PIPEFY_REQUESTS_PER_WINDOW: u32 = 500;
pub const PIPEFY_WINDOW_SECONDS: u32 = 30;
pub const MUTATIONS_PER_REQUEST: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateCard,
    UpsertCard,
}

/// Rate settings of a destination: Pipefy's, or unlimited for parts that measure the
/// engine rather than the limit.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub requests_per_window: u32,
    pub window_seconds: u32,
    pub concurrency: u32,
}

impl Rate {
    pub const PIPEFY: Rate = Rate {
        requests_per_window: PIPEFY_REQUESTS_PER_WINDOW,
        window_seconds: PIPEFY_WINDOW_SECONDS,
        concurrency: 4,
    };
    pub const UNLIMITED: Rate = Rate {
        requests_per_window: 1_000_000,
        window_seconds: 1,
        concurrency: 4,
    };
}

/// The bench destination. Every column is mapped the way the demo destination maps it
/// (templates, transforms, select options, dates, a checklist, assignees by email, labels
/// and the phase by name); connections are left out because they need lookups.
pub fn destination(op: Op, endpoint: &str, rate: Rate) -> Result<Destination> {
    destination_with(op, endpoint, rate, "")
}

/// The bench destination with `sync` options (YAML flow mapping members, such as
/// `on_conflict: keep_edits`).
pub fn destination_with(op: Op, endpoint: &str, rate: Rate, sync: &str) -> Result<Destination> {
    let operation = match op {
        Op::CreateCard => "create_card",
        Op::UpsertCard => "upsert_card",
    };
    let yaml = format!(
        r#"name: bench-customers
pipe_id: "{PIPE_ID}"
operation: {operation}
key:
  columns: [customer_id]
  field: external_id
source:
  path: .
  layer: {LAYER}
  table: {TABLE}
mapping:
  title: {{ template: "{{name}} ({{plan}})" }}
  external_id: customer_id
  customer_name: {{ column: name, transforms: [trim] }}
  email: {{ column: email, transforms: [trim, lowercase] }}
  plan: plan
  seats: seats
  mrr: mrr
  signup_date: signup
  renewal_at: renewal
  tasks: {{ column: tasks, transforms: [{{ split: {{ separator: ";" }} }}] }}
  assignee_ids: owner_email
  label_ids: {{ column: tags, transforms: [{{ split: {{ separator: "," }} }}] }}
  phase_id: stage
partial_success: true
sync: {{ {sync} }}
limits:
  requests_per_window: {}
  window_seconds: {}
  mutations_per_request: {MUTATIONS_PER_REQUEST}
  concurrency: {}
token: {{ env: PIPEFY_BENCH_TOKEN }}
endpoint: {endpoint}
"#,
        rate.requests_per_window, rate.window_seconds, rate.concurrency
    );
    parse_destination("bench-customers.yaml", &yaml)
        .map_err(|e| BenchError::Destination(e.to_string()))
}

/// The client the functions build for `dest` (same settings), with the fixture's token.
pub fn client(dest: &Destination) -> Result<PipefyClient> {
    PipefyClient::new(
        pipefy_sync::aws::client_config(dest),
        Arc::new(StaticCredentials(Credentials::PersonalToken(Secret::new(
            TOKEN,
        )))),
    )
    .map_err(|e| BenchError::Destination(e.to_string()))
}

/// Emulator settings: the demo fixture, Pipefy's rate limit or none, and latency.
pub fn emulator_config(rate: Rate, latency_ms: u64, per_mutation_ms: u64) -> EmulatorConfig {
    EmulatorConfig {
        rate_limit_requests: rate.requests_per_window,
        rate_limit_window: Duration::from_secs(u64::from(rate.window_seconds)),
        faults: Faults {
            latency_ms,
            latency_per_mutation_ms: per_mutation_ms,
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    }
}

pub async fn start_emulator(config: EmulatorConfig) -> Result<EmulatorHandle> {
    pipefy_emulator::start(config)
        .await
        .map_err(|e| BenchError::Emulator(format!("{e:#}")))
}

/// The pipe's schema from the emulator, compiled into the destination's mapper: what a
/// run does before it reads the first row.
pub async fn mapper(dest: &Destination, client: &PipefyClient) -> Result<Mapper> {
    let schema = client
        .pipe_schema(PIPE_ID)
        .await
        .map_err(|e| BenchError::Emulator(format!("fetching the schema of pipe {PIPE_ID}: {e}")))?;
    Mapper::new(dest, &Schema::Pipe(schema)).map_err(|issues| {
        BenchError::Destination(
            issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A run context on local folders: the table's folder as the source, `work/state` and
/// `work/reports` for state and reports.
pub fn run_context(table_root: &Path, work: &Path, client: PipefyClient) -> Result<RunContext> {
    for dir in ["state", "reports"] {
        let p = work.join(dir);
        std::fs::create_dir_all(&p).map_err(BenchError::io(format!("creating {}", p.display())))?;
    }
    Ok(RunContext {
        source_store: Arc::new(LocalStore::new(table_root)),
        attachment_buckets: None,
        state_store: Arc::new(LocalStore::new(work.join("state"))),
        state_prefix: String::new(),
        report_store: Arc::new(LocalStore::new(work.join("reports"))),
        reports_prefix: String::new(),
        pipefy: client,
        hand_off: None,
        progress: None,
        lifecycle: None,
    })
}

/// One `engine::sync` run as the bench triggers it (`dry_run`: plan and report only).
pub async fn run_sync(ctx: &RunContext, dest: &Destination, dry_run: bool) -> Result<RunSummary> {
    pipefy_sync::engine::sync(
        ctx,
        dest,
        RunRequest {
            trigger: "bench".into(),
            dry_run,
            ..RunRequest::default()
        },
    )
    .await
    .map_err(|e| BenchError::Engine(e.to_string()))
}

/// Writes one ledger segment and lists it in the manifest, as a run's checkpoint does.
pub async fn save_segment(
    state: &StateStore,
    loaded: &mut LoadedManifest,
    bytes: Vec<u8>,
) -> Result<()> {
    let key = state
        .write_segment(&mut loaded.manifest, bytes)
        .await
        .map_err(|e| BenchError::State(e.to_string()))?;
    loaded.manifest.segments.push(key);
    state
        .save_manifest(loaded)
        .await
        .map_err(|e| BenchError::State(e.to_string()))
}

/// A fresh, empty work folder.
pub fn fresh_dir(path: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).map_err(BenchError::io(format!("creating {}", path.display())))
}
