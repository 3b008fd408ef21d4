//! A local Pipefy GraphQL API emulator for tests and the demo, faithful to the team's
//! Pipefy API notes (see `tests/emulator/README.md` for every behaviour and its knobs).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let emu = pipefy_emulator::start(pipefy_emulator::EmulatorConfig::default()).await?;
//! println!("{}", emu.graphql_url()); // http://127.0.0.1:PORT/graphql, token "demo-token"
//! # Ok(()) }
//! ```

mod conn;
pub mod faults;
pub mod fixture;
mod schema;
mod server;
pub mod state;
mod uploads;
mod validation;
pub mod values;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultCounts, Faults, Stats};
pub use fixture::{
    FieldDef, Fixture, FixtureError, LabelDef, MemberDef, OrganizationDef, PersonalToken, PhaseDef,
    PipeDef, ServiceAccount, TableDef, User,
};
pub use state::{Card, MissingIdCode, MoveRequiredCheck, Record, StateSnapshot};
pub use uploads::UploadInfo;
pub use values::{FieldType, ValueFormat};

/// Everything the emulator can be told at start.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub fixture: Fixture,
    /// Requests allowed per token per window (default 500).
    pub rate_limit_requests: u32,
    /// Sliding window of the rate limit (default 30 s).
    pub rate_limit_window: Duration,
    /// `Retry-After` seconds on 429 answers (default none: docs/pipefy-api.md found no such header).
    pub retry_after_secs: Option<u64>,
    /// Cap on aliased fields per document (default: none).
    pub max_aliases: Option<usize>,
    /// Complexity limit (default 50,000).
    pub max_complexity: u64,
    /// Depth limit (default 15).
    pub max_depth: usize,
    pub faults: Faults,
    /// Error for nonexistent pipe/card/table/record/phase ids (default PERMISSION_DENIED).
    pub nonexistent_id_code: MissingIdCode,
    /// Read format of `fields[].value` (default pt-BR, as recorded in docs/pipefy-api.md §6).
    pub value_format: ValueFormat,
    /// Which phase's required fields block a move (default: the destination's).
    pub move_required_check: MoveRequiredCheck,
    /// Pipe/table roles allowed to write (default `["admin"]`: docs/pipefy-api.md §2 says API writes
    /// need a company or pipe admin); organisation admins always may.
    pub write_roles: Vec<String>,
    /// Maximum values per `updateFieldsValues` (default 30).
    pub max_field_values: usize,
    /// Page cap of `cards`/`findCards` (default 50).
    pub cards_page_max: usize,
    /// Page cap of `records` (default 50).
    pub records_page_max: usize,
    /// Page cap of `table_records`/`findRecords` (default 200).
    pub table_records_page_max: usize,
    /// Whether `cards(...)` lists cards in done phases when `search.include_done` is not
    /// given (default false, as Pipefy's `include_done` defaults).
    pub cards_include_done_default: bool,
    /// Refuse the input members no Pipefy-owned source shows (`label_ids` and `due_date`
    /// of `CreateTableRecordInput`), as a document-level validation error, to test that a
    /// client falls back to the documented form (default false: accepted).
    pub reject_unverified_shapes: bool,
    /// Largest attachment a presigned upload accepts, bytes (default 512 MiB: docs/pipefy-api.md
    /// "attachments <= 512 MB each").
    pub upload_max_bytes: u64,
    /// Lifetime of a `createPresignedUrl` upload URL (default 300 s).
    pub presigned_url_ttl: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            fixture: Fixture::demo(),
            rate_limit_requests: 500,
            rate_limit_window: Duration::from_secs(30),
            retry_after_secs: None,
            max_aliases: None,
            max_complexity: 50_000,
            max_depth: 15,
            faults: Faults::default(),
            nonexistent_id_code: MissingIdCode::PermissionDenied,
            value_format: ValueFormat::PtBr,
            move_required_check: MoveRequiredCheck::Destination,
            write_roles: vec!["admin".to_string()],
            max_field_values: 30,
            cards_page_max: 50,
            records_page_max: 50,
            table_records_page_max: 200,
            cards_include_done_default: false,
            reject_unverified_shapes: false,
            upload_max_bytes: 512 * 1024 * 1024,
            presigned_url_ttl: Duration::from_secs(300),
        }
    }
}

impl EmulatorConfig {
    /// Default settings over another fixture.
    pub fn with_fixture(fixture: Fixture) -> Self {
        EmulatorConfig {
            fixture,
            ..EmulatorConfig::default()
        }
    }
}

/// Input members that only a guess supports, by input type.
const UNVERIFIED_MEMBERS: &[(&str, &[&str])] =
    &[("CreateTableRecordInput", &["label_ids", "due_date"])];

/// The SDL the variable validator checks against, without [`UNVERIFIED_MEMBERS`]: a
/// variable value that uses one then fails validation ("Field is not defined on ...").
fn without_unverified_members(sdl: &str) -> String {
    let mut out = String::with_capacity(sdl.len());
    let mut current: Option<&[&str]> = None;
    for line in sdl.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("input ") {
            let name = rest.split([' ', '{']).next().unwrap_or_default();
            current = UNVERIFIED_MEMBERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, m)| *m);
        } else if t.starts_with('}') {
            current = None;
        } else if let Some(members) = current {
            let member = t.split(':').next().unwrap_or_default().trim();
            if members.contains(&member) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A running emulator. The server stops when the handle is dropped.
pub struct EmulatorHandle {
    inner: Arc<server::Inner>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts the emulator on `127.0.0.1:0` (a free port).
pub async fn start(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the emulator on the given address.
pub async fn start_on(config: EmulatorConfig, addr: SocketAddr) -> anyhow::Result<EmulatorHandle> {
    let rules = state::Rules {
        missing_id_code: config.nonexistent_id_code,
        value_format: config.value_format,
        move_required_check: config.move_required_check,
        write_roles: config.write_roles.clone(),
        max_field_values: config.max_field_values,
        cards_include_done_default: config.cards_include_done_default,
    };
    let cat = Arc::new(state::Catalog::new(config.fixture.clone()).context("loading the fixture")?);
    let store =
        state::Store::load(&cat, &rules).context("loading the fixture's cards and records")?;
    let inner = Arc::new(server::Inner::new(
        cat,
        rules,
        server::PageMax {
            cards: config.cards_page_max,
            records: config.records_page_max,
            table_records: config.table_records_page_max,
        },
        store,
        config.faults.clone(),
        faults::RateLimiter::new(config.rate_limit_requests, config.rate_limit_window),
        config.max_aliases,
        config.retry_after_secs,
        uploads::Uploads::new(config.upload_max_bytes, config.presigned_url_ttl),
    ));
    let schema = server::build_schema(
        inner.clone(),
        server::Limits {
            max_complexity: config.max_complexity,
            max_depth: config.max_depth,
        },
    );
    let sdl = schema.sdl();
    let sdl = if config.reject_unverified_shapes {
        without_unverified_members(&sdl)
    } else {
        sdl
    };
    let types = Arc::new(validation::TypeTable::from_sdl(&sdl));
    let app = server::router(server::App {
        inner: inner.clone(),
        schema,
        types,
        max_complexity: config.max_complexity,
        max_depth: config.max_depth,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let listener = conn::KillableListener::new(listener);
    let local = listener.local_socket_addr()?;
    let shown = if local.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    };
    inner.set_base_url(format!("http://{shown}"));
    let (tx, rx) = oneshot::channel::<()>();
    let service = app.into_make_service_with_connect_info::<conn::ConnHandle>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "emulator server stopped");
        }
    });
    tracing::info!(%local, "pipefy emulator listening");
    Ok(EmulatorHandle {
        inner,
        addr: local,
        shutdown: Some(tx),
        task: Some(task),
    })
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/graphql`
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base_url())
    }

    /// `http://127.0.0.1:PORT/oauth/token`
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault settings (and reseeds their generator).
    pub fn set_faults(&self, faults: Faults) {
        self.inner.set_faults(faults);
    }

    /// The current fault settings.
    pub fn faults(&self) -> Faults {
        self.inner.current_faults()
    }

    /// A copy of all cards and records.
    pub fn snapshot(&self) -> StateSnapshot {
        self.inner.snapshot()
    }

    /// The presigned uploads minted so far (also `GET /_emulator/uploads`).
    pub fn uploads(&self) -> Vec<UploadInfo> {
        self.inner.uploads().list()
    }

    /// Request statistics since start or the last reset.
    pub fn stats(&self) -> Stats {
        self.inner.stats_copy()
    }

    /// Zeroes the statistics only.
    pub fn reset_stats(&self) {
        self.inner.reset_stats();
    }

    /// Back to the fixture (cards, records, id counters), zeroes the statistics and the
    /// rate-limit windows. Faults and issued service-account tokens stay.
    pub fn reset(&self) {
        self.inner.reset();
    }

    /// Expires every issued service-account token now.
    pub fn expire_tokens(&self) {
        self.inner.expire_tokens();
    }

    /// Stops the server and waits for it (open connections are closed gracefully).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("emulator did not stop within 5 s");
            }
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
