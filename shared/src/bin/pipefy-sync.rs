//! `pipefy-sync`: the local command line. Validates destination files, plans a run without
//! writing anything, runs a sync from local files or S3 with a progress bar, reports drift, and
//! renders the run pages and history of a destination's reports.

#[global_allocator]
static GLOBAL: pipefy_sync::Allocator = pipefy_sync::ALLOCATOR;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pipefy_sync::config::{load_destination_file, Destination};
use pipefy_sync::engine::{drift, sync, DriftRequest, Progress, RunContext, RunRequest, RunScope};
use pipefy_sync::mapping::{Mapper, Schema};
use pipefy_sync::pipefy::{AllowedHosts, PipefyClient};
use pipefy_sync::report::{
    destination_prefix, outcome_words, record_runs, report_prefix, result_part_keys, Counts,
    DriftLine, DriftState, DriftSummary, HistoryEntry, ReportPaths, ReportWriter, RowResult,
    RunStatus, RunSummary,
};
use pipefy_sync::state::StateStore;
use pipefy_sync::store::local::LocalStore;
use pipefy_sync::store::s3::S3Store;
use pipefy_sync::store::ObjectStore;

#[derive(Parser)]
#[command(
    name = "pipefy-sync",
    version,
    about = "Sync table files (CSV, JSON Lines, JSON, Parquet) into Pipefy cards and records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Storage {
    /// Where run state lives: a folder or s3://bucket/prefix.
    #[arg(long, default_value = ".pipefy-sync/state")]
    state: String,
    /// Where reports are written: a folder or s3://bucket/prefix.
    #[arg(long, default_value = ".pipefy-sync/reports")]
    reports: String,
}

#[derive(Subcommand)]
enum Command {
    /// Validate destination files; with the destination's token available, also check the
    /// mapping against the live pipe or table schema.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Only parse and validate the files; do not contact Pipefy.
        #[arg(long)]
        offline: bool,
    },
    /// Dry run: print what each row would become, and why rows would fail. Writes nothing to
    /// Pipefy and no state.
    Plan {
        destination: PathBuf,
        /// Only these files (local paths or s3://bucket/key) instead of the whole table.
        #[arg(long = "file")]
        files: Vec<String>,
        #[command(flatten)]
        storage: Storage,
        /// Only the rows with this key (repeat for more).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Print at most this many rows.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Preview removals even when they are more than `removed_rows.max_fraction` of the
        /// destination's keys.
        #[arg(long)]
        allow_mass_removal: bool,
    },
    /// Sync the table (or the given files) and write the report.
    Run {
        destination: PathBuf,
        #[arg(long = "file")]
        files: Vec<String>,
        /// Send only the rows with this key (repeat for more), even when unchanged, and print
        /// each request and Pipefy's answer. Nothing is removed and no other row is touched.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Send every row again, even unchanged ones.
        #[arg(long)]
        full_resync: bool,
        /// Let this run remove more than `removed_rows.max_fraction` of the destination's
        /// keys (after checking that the table really lost those rows).
        #[arg(long)]
        allow_mass_removal: bool,
        #[command(flatten)]
        storage: Storage,
    },
    /// Read the destination's cards or records back and report, per key, whether they still
    /// hold what pipefy-sync last wrote: in sync, edited in Pipefy (which fields, both
    /// values), deleted in Pipefy, or unknown to the ledger. Writes nothing to Pipefy.
    Drift {
        destination: PathBuf,
        #[command(flatten)]
        storage: Storage,
        /// Print at most this many keys that are not in sync.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Render the run pages (`report.html`) and the history page (`index.html`) of a
    /// destination's runs in a reports folder (or s3://bucket/prefix), and print where they
    /// are.
    Report {
        destination: PathBuf,
        /// Where the reports are: a folder or s3://bucket/prefix.
        #[arg(long, default_value = ".pipefy-sync/reports")]
        reports: String,
        /// Open the history page in the browser (local reports only).
        #[arg(long)]
        open: bool,
    },
    /// Write a first destination file: read the pipe's (or table's) schema and a sample of
    /// the table, match columns to fields by id and label, suggest a key, check the
    /// required fields, and comment every guess.
    Init(InitArgs),
    /// Forget creates whose outcome is unknown (after checking the pipe by hand), so the
    /// next run may create those rows.
    ForgetIntents {
        destination: PathBuf,
        #[command(flatten)]
        storage: Storage,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Check { files, offline } => check(&files, offline).await,
        Command::Plan {
            destination,
            files,
            keys,
            storage,
            limit,
            allow_mass_removal,
        } => {
            let dest = load(&destination)?;
            let ctx = context(&dest, &destination, &storage, None).await?;
            let req = RunRequest {
                trigger: "cli-plan".into(),
                scope: resolve_files(&files),
                dry_run: true,
                report_unchanged: true,
                allow_mass_removal,
                keys: pipefy_sync::engine::checked_keys(&keys)
                    .map_err(|e| format!("--key: {e}"))?,
                ..RunRequest::default()
            };
            let summary = sync(&ctx, &dest, req).await.map_err(|e| e.to_string())?;
            print_plan(&ctx, &summary, limit).await;
            print_summary(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            destination,
            files,
            keys,
            full_resync,
            allow_mass_removal,
            storage,
        } => {
            let dest = load(&destination)?;
            let keys =
                pipefy_sync::engine::checked_keys(&keys).map_err(|e| format!("--key: {e}"))?;
            // A run by key prints its requests and answers instead of a progress bar.
            let by_key = !keys.is_empty();
            let bar = (!by_key).then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
            let progress = bar.clone().map(|b| Arc::new(Bar(b)) as Arc<dyn Progress>);
            let ctx = context(&dest, &destination, &storage, progress).await?;
            if by_key {
                ctx.pipefy
                    .observe_requests(Arc::new(PrintExchanges::default()));
            }
            let req = RunRequest {
                trigger: if by_key { "cli-key" } else { "cli" }.into(),
                scope: resolve_files(&files),
                full_resync,
                allow_mass_removal,
                lease_wait: Duration::from_secs(10),
                keys,
                ..RunRequest::default()
            };
            let result = sync(&ctx, &dest, req).await;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let summary = result.map_err(|e| e.to_string())?;
            if by_key {
                println!();
                print_plan(&ctx, &summary, usize::MAX).await;
            }
            print_summary(&summary);
            let all_done = summary.counts.failed_rows() == 0 && summary.keys_not_found.is_empty();
            Ok(match summary.status {
                RunStatus::Completed if all_done => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
        Command::Drift {
            destination,
            storage,
            limit,
        } => {
            let dest = load(&destination)?;
            let ctx = context(&dest, &destination, &storage, None).await?;
            let req = DriftRequest {
                trigger: "cli".into(),
            };
            let summary = drift(&ctx, &dest, req).await.map_err(|e| e.to_string())?;
            print_drift(&ctx, &summary, limit).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            destination,
            reports,
            open,
        } => {
            let dest = load(&destination)?;
            report_pages(&dest.name, &reports, open).await
        }
        Command::Init(args) => init(args).await,
        Command::ForgetIntents {
            destination,
            storage,
        } => {
            let dest = load(&destination)?;
            let (state_store, state_prefix) = store_for(&storage.state).await?;
            let state = StateStore::new(state_store, &state_prefix, &dest.name);
            let mut loaded = state.load_manifest().await.map_err(|e| e.to_string())?;
            let n = loaded.manifest.intents.len();
            for i in &loaded.manifest.intents {
                println!(
                    "forgetting {}:{} key {:?}",
                    i.provenance.file, i.provenance.line, i.key
                );
            }
            loaded.manifest.intents.clear();
            state
                .save_manifest(&mut loaded)
                .await
                .map_err(|e| e.to_string())?;
            println!("{n} intent(s) forgotten");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(clap::Args)]
struct InitArgs {
    /// The pipe whose cards the rows become.
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pipe: Option<String>,
    /// The database table whose records the rows become.
    #[arg(long)]
    table: Option<String>,
    /// A file of the table, in its folder `<layer>/<table>/`: a local path or
    /// s3://bucket/key.
    #[arg(long)]
    sample: String,
    /// Rows of the sample to read.
    #[arg(long, default_value_t = 500)]
    rows: usize,
    /// The destination's name (default: the table folder's).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the file (default: `<name>.yaml` here; `-` prints it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The environment variable that holds the token (local runs).
    #[arg(long, default_value = "PIPEFY_TOKEN")]
    token_env: String,
    /// The Secrets Manager secret that holds the token (Lambda runs); instead of
    /// --token-env.
    #[arg(long)]
    token_secret: Option<String>,
    /// Pipefy's GraphQL endpoint, when it is not Pipefy's own.
    #[arg(long)]
    endpoint: Option<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

/// Where the sample sits: the store holding it, its key, and the `source:` lines of a
/// destination that reads its folder (relative to the folder the file is written to).
struct SampleAt {
    store: Arc<dyn ObjectStore>,
    key: String,
    table: String,
    source: Vec<String>,
}

async fn sample_at(sample: &str, out_dir: &Path) -> Result<SampleAt, String> {
    let layout = "the sample must sit in its table's folder, <layer>/<table>/<file>, as pipefy-sync reads tables";
    if let Some(rest) = sample.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{sample}: give s3://bucket/<layer>/<table>/<file>"))?;
        let parts: Vec<&str> = key.split('/').collect();
        let [layer @ .., table, _file] = parts.as_slice() else {
            return Err(format!("{sample}: {layout}"));
        };
        if layer.is_empty() {
            return Err(format!("{sample}: {layout}"));
        }
        return Ok(SampleAt {
            store: Arc::new(S3Store::new(
                pipefy_sync::aws::s3_client(aws().await),
                bucket,
            )),
            key: key.to_string(),
            table: table.to_string(),
            source: vec![
                format!("  bucket: {bucket}"),
                format!("  layer: {}", layer.join("/")),
                format!("  table: {table}"),
            ],
        });
    }
    let file = std::fs::canonicalize(sample).map_err(|e| format!("{sample}: {e}"))?;
    let name_of = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string)
    };
    let table_dir = file.parent();
    let layer_dir = table_dir.and_then(Path::parent);
    let root = layer_dir.and_then(Path::parent);
    let (Some(table), Some(layer), Some(root)) = (name_of(table_dir), name_of(layer_dir), root)
    else {
        return Err(format!("{sample}: {layout}"));
    };
    let out_dir =
        std::fs::canonicalize(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let file_name = name_of(Some(&file)).unwrap_or_default();
    Ok(SampleAt {
        store: Arc::new(LocalStore::new(file.parent().unwrap_or(Path::new(".")))),
        key: file_name,
        table: table.clone(),
        source: vec![
            format!("  path: {}", relative_to(root, &out_dir).display()),
            format!("  layer: {layer}"),
            format!("  table: {table}"),
        ],
    })
}

/// `path` as seen from `from` (both absolute).
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let a: Vec<_> = path.components().collect();
    let b: Vec<_> = from.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &a[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

async fn init(args: InitArgs) -> Result<ExitCode, String> {
    use pipefy_sync::init::{draft, render, Setting};
    let out_dir = match &args.out {
        Some(p) if p.as_os_str() != "-" => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        _ => PathBuf::from("."),
    };
    let at = sample_at(&args.sample, &out_dir).await?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| at.table.replace('_', "-"));
    let token = match &args.token_secret {
        Some(secret) => format!("{{ secret: {secret} }}"),
        None => format!("{{ env: {} }}", args.token_env),
    };
    let target = match (&args.pipe, &args.table) {
        (Some(p), _) => format!("pipe_id: \"{p}\"\noperation: create_card"),
        (None, Some(t)) => format!("table_id: \"{t}\"\noperation: create_record"),
        (None, None) => return Err("give --pipe or --table".into()),
    };
    // A destination with the same token and endpoint, to read the schema with.
    let probe = format!(
        "name: {name}\n{target}\nsource: {{ path: ., layer: l, table: t }}\nmapping: {{ title: t }}\ntoken: {token}\n{}",
        args.endpoint
            .as_deref()
            .map(|e| format!("endpoint: {e}\n"))
            .unwrap_or_default()
    );
    let probe = pipefy_sync::config::parse_destination("pipefy-sync init", &probe)
        .map_err(|e| e.to_string())?;
    let client = pipefy_client(&probe).await?;
    let schema = match (&args.pipe, &args.table) {
        (Some(p), _) => Schema::Pipe(client.pipe_schema(p).await.map_err(|e| e.to_string())?),
        (_, Some(t)) => Schema::Table(client.table_schema(t).await.map_err(|e| e.to_string())?),
        _ => return Err("give --pipe or --table".into()),
    };
    let sample = read_sample(&at, &args.sample, args.rows).await?;
    let guessed = draft(&schema, &sample);
    let file = render(
        &guessed,
        &schema,
        &sample,
        &Setting {
            name: name.clone(),
            source: at.source.clone(),
            token,
            endpoint: args.endpoint.clone(),
        },
    );
    match &args.out {
        Some(p) if p.as_os_str() == "-" => print!("{file}"),
        out => {
            let path = out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
            if path.exists() && !args.force {
                return Err(format!(
                    "{} exists; pass --force to replace it",
                    path.display()
                ));
            }
            std::fs::write(&path, &file).map_err(|e| format!("{}: {e}", path.display()))?;
            let active = guessed.entries.iter().filter(|e| e.active).count();
            println!(
                "wrote {}: {} of {} columns matched{}",
                path.display(),
                sample.columns.len() - guessed.unmatched_columns.len(),
                sample.columns.len(),
                match &guessed.key {
                    Some(k) => format!(", key {} -> {}", k.column, k.field),
                    None => ", no key".to_string(),
                }
            );
            println!("  {active} mapping entries; every guess is commented in the file");
            for c in &guessed.unmatched_columns {
                println!("  column {c}: no field matched");
            }
            for (id, label) in &guessed.required_missing {
                println!("  required field {id} (\"{label}\"): no column fills it");
            }
            println!(
                "next: pipefy-sync check {p} && pipefy-sync plan {p}",
                p = path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first `rows` rows of the sample, each cell as text.
async fn read_sample(
    at: &SampleAt,
    shown: &str,
    rows: usize,
) -> Result<pipefy_sync::init::Sample, String> {
    let meta = at
        .store
        .head(&at.key)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let source: pipefy_sync::config::SourceConfig =
        serde_json::from_value(serde_json::json!({"layer": "", "table": ""}))
            .map_err(|e| e.to_string())?;
    let mut stream = pipefy_sync::source::open_rows(at.store.clone(), &meta, &source, 0).await;
    let mut sample = pipefy_sync::init::Sample {
        file: shown.to_string(),
        ..Default::default()
    };
    while sample.rows.len() < rows {
        let Some(next) = stream.next().await else {
            break;
        };
        let row = next
            .map_err(|e| format!("{}:{}: {}", e.provenance.file, e.provenance.line, e.message))?;
        let mut cells = vec![None; sample.columns.len()];
        for (column, value) in &row.values {
            let i = match sample.columns.iter().position(|c| c == column.as_ref()) {
                Some(i) => i,
                None => {
                    sample.columns.push(column.to_string());
                    cells.push(None);
                    sample.columns.len() - 1
                }
            };
            if i >= cells.len() {
                cells.resize(i + 1, None);
            }
            cells[i] = (!value.is_blank()).then(|| value.to_string());
        }
        sample.rows.push(cells);
    }
    for r in &mut sample.rows {
        r.resize(sample.columns.len(), None);
    }
    Ok(sample)
}

/// Prints each GraphQL request and Pipefy's answer (a run by key).
#[derive(Default)]
struct PrintExchanges(std::sync::atomic::AtomicU64);

impl pipefy_sync::pipefy::RequestObserver for PrintExchanges {
    fn exchanged(&self, request: &serde_json::Value, exchange: pipefy_sync::pipefy::Exchange<'_>) {
        use pipefy_sync::pipefy::Exchange;
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        println!("── request {n} ──");
        if let Some(query) = request.get("query").and_then(|q| q.as_str()) {
            println!("{}", query.trim());
        }
        if let Some(vars) = request.get("variables").filter(|v| !v.is_null()) {
            println!(
                "variables: {}",
                serde_json::to_string_pretty(vars).unwrap_or_default()
            );
        }
        match exchange {
            Exchange::Answered { status, body } => {
                let shown = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
                println!("── answer {n}: HTTP {status} ──\n{shown}");
            }
            Exchange::NoAnswer(why) => println!("── no answer to request {n}: {why} ──"),
        }
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn update(&self, c: &Counts, file: &str) {
        self.0.set_message(format!(
            "{file}: read {} created {} updated {} unchanged {} failed {}",
            c.read,
            c.created,
            c.updated,
            c.unchanged,
            c.failed_rows()
        ));
    }
}

fn load(path: &Path) -> Result<Destination, String> {
    load_destination_file(path).map_err(|e| e.to_string())
}

async fn check(files: &[PathBuf], offline: bool) -> Result<ExitCode, String> {
    let mut bad = 0;
    for file in files {
        match load_destination_file(file) {
            Err(e) => {
                bad += 1;
                println!("✗ {e}");
            }
            Ok(dest) if offline => {
                println!("✓ {}: destination '{}' is valid", file.display(), dest.name)
            }
            Ok(dest) => match check_live(&dest).await {
                Ok(()) => println!(
                    "✓ {}: destination '{}' is valid and matches the Pipefy schema",
                    file.display(),
                    dest.name
                ),
                Err(e) => {
                    bad += 1;
                    println!("✗ {}: {e}", file.display());
                }
            },
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn check_live(dest: &Destination) -> Result<(), String> {
    let client = pipefy_client(dest).await?;
    let schema = match (&dest.pipe_id, &dest.table_id) {
        (Some(p), _) if dest.operation.is_card() => {
            Schema::Pipe(client.pipe_schema(p).await.map_err(|e| e.to_string())?)
        }
        (_, Some(t)) => Schema::Table(client.table_schema(t).await.map_err(|e| e.to_string())?),
        _ => return Err("no pipe_id or table_id for the operation".into()),
    };
    Mapper::new(dest, &schema).map(|_| ()).map_err(|issues| {
        issues
            .iter()
            .map(|i| format!("\n  - {i}"))
            .collect::<String>()
    })
}

/// AWS configuration, loaded the first time a run needs it (an `s3://` location, a source
/// bucket, `token.secret`) and never for a run on local folders with an env token.
async fn aws() -> &'static aws_config::SdkConfig {
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> =
        tokio::sync::OnceCell::const_new();
    CONFIG.get_or_init(pipefy_sync::aws::load_sdk_config).await
}

async fn pipefy_client(dest: &Destination) -> Result<PipefyClient, String> {
    let secrets = match dest.token.secret {
        Some(_) => Some(pipefy_sync::aws::secrets_client(aws().await)),
        None => None,
    };
    pipefy_sync::aws::pipefy_client(dest, &AllowedHosts::from_env(), secrets.as_ref())
        .map_err(|e| e.to_string())
}

/// A folder or `s3://bucket/prefix` as a store and a key prefix.
async fn store_for(location: &str) -> Result<(Arc<dyn ObjectStore>, String), String> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((
            Arc::new(S3Store::new(
                pipefy_sync::aws::s3_client(aws().await),
                bucket,
            )),
            prefix.to_string(),
        ))
    } else {
        std::fs::create_dir_all(location).map_err(|e| format!("cannot create {location}: {e}"))?;
        Ok((Arc::new(LocalStore::new(location)), String::new()))
    }
}

/// `--file` arguments as object keys: `s3://bucket/key` keeps the key; a local path stays as
/// given (relative to the destination's local source folder).
fn resolve_files(files: &[String]) -> RunScope {
    if files.is_empty() {
        return RunScope::WholeTable;
    }
    RunScope::Files(
        files
            .iter()
            .map(|f| match f.strip_prefix("s3://") {
                Some(rest) => rest
                    .split_once('/')
                    .map(|(_, k)| k.to_string())
                    .unwrap_or_default(),
                None => f.clone(),
            })
            .collect(),
    )
}

/// Whether a mapping entry reads attachments from a bucket of its own.
fn attaches_elsewhere(dest: &Destination) -> bool {
    dest.mapping
        .values()
        .filter_map(|m| m.attach.as_ref())
        .any(|a| a.bucket.is_some() && a.bucket != dest.source.bucket)
}

async fn context(
    dest: &Destination,
    dest_file: &Path,
    storage: &Storage,
    progress: Option<Arc<dyn Progress>>,
) -> Result<RunContext, String> {
    let source_store: Arc<dyn ObjectStore> = match (&dest.source.bucket, &dest.source.path) {
        (Some(bucket), _) => Arc::new(S3Store::new(
            pipefy_sync::aws::s3_client(aws().await),
            bucket,
        )),
        (None, Some(path)) => {
            // Relative to the destination file, so examples work from any directory.
            let base = dest_file.parent().unwrap_or(Path::new("."));
            Arc::new(LocalStore::new(base.join(path)))
        }
        (None, None) => {
            return Err(format!(
                "destination '{}': source needs a bucket or a path",
                dest.name
            ))
        }
    };
    let (state_store, state_prefix) = store_for(&storage.state).await?;
    let (report_store, reports_prefix) = store_for(&storage.reports).await?;
    // Attachments in other buckets than the source's are read with the same AWS setup.
    let attachment_buckets: Option<Arc<dyn pipefy_sync::store::BucketStores>> =
        if attaches_elsewhere(dest) {
            Some(Arc::new(pipefy_sync::store::S3Buckets(
                pipefy_sync::aws::s3_client(aws().await),
            )))
        } else {
            None
        };
    Ok(RunContext {
        source_store,
        attachment_buckets,
        state_store,
        state_prefix,
        report_store,
        reports_prefix,
        pipefy: pipefy_client(dest).await?,
        hand_off: None,
        progress,
        lifecycle: None,
    })
}

async fn print_plan(ctx: &RunContext, summary: &RunSummary, limit: usize) {
    let Some(location) = &summary.report_location else {
        return;
    };
    let paths = ReportPaths::new(
        &ctx.reports_prefix,
        &summary.destination,
        summary.started_at,
        &summary.run_id,
    );
    let Ok(parts) = result_part_keys(&*ctx.report_store, &paths).await else {
        return;
    };
    let mut shown = 0;
    for part in parts {
        let Ok((_, bytes)) = ctx.report_store.get_bytes(&part).await else {
            continue;
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            if shown >= limit {
                println!("… (more rows in {location})");
                return;
            }
            if let Ok(r) = serde_json::from_str::<RowResult>(line) {
                let what = serde_json::to_value(r.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let detail = match (&r.error_code, &r.error_message) {
                    (Some(code), Some(msg)) => format!(
                        "{code}: {}{msg}",
                        r.field
                            .as_deref()
                            .map(|f| format!("field '{f}': "))
                            .unwrap_or_default()
                    ),
                    _ => {
                        r.id.clone()
                            .map(|id| format!("id {id}"))
                            .unwrap_or_default()
                    }
                };
                println!(
                    "{}:{}  {:<13} {:<20} {detail}",
                    r.file,
                    r.line,
                    what,
                    r.key.as_deref().unwrap_or("-")
                );
                shown += 1;
            }
        }
    }
}

fn print_summary(s: &RunSummary) {
    let c = &s.counts;
    println!();
    println!(
        "run {} of '{}' ({}): {:?}",
        s.run_id, s.destination, s.trigger, s.status
    );
    println!("  files            {}", s.source_files.len());
    // A dry run sent nothing: its counts are what a run would do.
    let (created, updated, removed) = outcome_words(s.dry_run);
    for (label, n) in [
        ("read", c.read),
        (created, c.created),
        (updated, c.updated),
        ("unchanged", c.unchanged),
        ("recreated", c.recreated),
        ("exists (left alone)", c.exists),
        ("kept people's edits", c.kept_edits),
        ("failed rows", c.failed_rows()),
        (removed, c.removed),
        ("recovered creates", c.recovered_creates),
        ("read before update", c.current_value_reads),
        ("files uploaded", c.files_uploaded),
        ("bytes uploaded", c.bytes_uploaded),
        ("API requests", c.requests),
        ("retries", c.retries),
        ("throttles", c.throttles),
    ] {
        println!("  {label:<20} {n}");
    }
    if c.failed_rows() > 0 {
        println!(
            "  (failed rows: {} at preflight, never sent; {} refused by Pipefy; {} not attempted; each row's code says which)",
            c.skipped_by_preflight, c.failed, c.not_attempted
        );
    }
    if let Some(why) = &s.removal_skipped {
        println!("  removal skipped  {why}");
    }
    if !s.keys.is_empty() {
        println!("  keys asked for   {}", s.keys.join(", "));
    }
    for key in &s.keys_not_found {
        println!("  key {key}: no row of the table has it; nothing was sent for it");
    }
    if let Some(error) = &s.error {
        println!("  error            {error}");
    }
    if let Some(stop) = &s.stopped_at {
        println!(
            "  stopped at {}:{}: {}",
            stop.file,
            stop.line,
            stop.error_message.as_deref().unwrap_or("")
        );
    }
    if let Some(loc) = &s.report_location {
        println!("  report           {loc}");
    }
    if let Some(page) = &s.report_page {
        println!("  run page         {page}");
    }
}

/// Renders every run page of the destination's reports and its history page again (runs
/// written before the pages existed gain theirs), then prints where they are.
async fn report_pages(destination: &str, reports: &str, open: bool) -> Result<ExitCode, String> {
    let (store, prefix) = store_for(reports).await?;
    let dir = destination_prefix(&prefix, destination);
    let objects = store.list(&dir).await.map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for meta in objects.iter().filter(|m| m.key.ends_with("/summary.json")) {
        let Ok((_, bytes)) = store.get_bytes(&meta.key).await else {
            continue;
        };
        // Drift reports have summaries of their own kind: they have no run page.
        let Ok(mut summary) = serde_json::from_slice::<RunSummary>(&bytes) else {
            continue;
        };
        if summary.status == RunStatus::HandedOff {
            continue;
        }
        let writer = ReportWriter::new(
            store.clone(),
            &prefix,
            &summary.destination,
            summary.started_at,
            &summary.run_id,
        );
        let page = writer
            .write_page(&summary)
            .await
            .map_err(|e| e.to_string())?;
        summary.report_page = Some(page.clone());
        println!(
            "{}  {:<10} {}",
            summary.started_at.format("%Y-%m-%d %H:%M"),
            summary.status.name(),
            page
        );
        entries.push(HistoryEntry::of(&summary));
    }
    if entries.is_empty() {
        return Err(format!(
            "no runs of '{destination}' in {reports}: run `pipefy-sync run` first, or pass --reports"
        ));
    }
    let index = record_runs(&*store, &prefix, destination, entries)
        .await
        .map_err(|e| e.to_string())?;
    let index_location = format!("{}/{index}", store.describe().trim_end_matches('/'));
    println!("history page: {index_location}");
    if open {
        let Some(path) = store.local_path(&index) else {
            return Err("--open needs a local reports folder".into());
        };
        open_in_browser(&path)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a file with the desktop's handler (`xdg-open`, `open` on macOS).
fn open_in_browser(path: &Path) -> Result<(), String> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    // The opener hands the file to the browser and returns.
    match std::process::Command::new(opener).arg(path).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "{opener} could not open {} ({status})",
            path.display()
        )),
        Err(e) => Err(format!(
            "could not open {} with {opener}: {e}",
            path.display()
        )),
    }
}

/// The keys that are not in sync (at most `limit`), then the counts.
async fn print_drift(ctx: &RunContext, s: &DriftSummary, limit: usize) {
    let dir =
        report_prefix(&ctx.reports_prefix, &s.destination, s.started_at, &s.run_id) + "drift/";
    let mut shown = 0;
    for part in ctx.report_store.list(&dir).await.unwrap_or_default() {
        let Ok((_, bytes)) = ctx.report_store.get_bytes(&part.key).await else {
            continue;
        };
        for text in String::from_utf8_lossy(&bytes).lines() {
            let Ok(line) = serde_json::from_str::<DriftLine>(text) else {
                continue;
            };
            if matches!(line.state, DriftState::InSync | DriftState::Untracked) {
                continue;
            }
            if shown >= limit {
                println!("… (more keys in the report)");
                break;
            }
            shown += 1;
            let state = serde_json::to_value(line.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let at = match (&line.file, line.line) {
                (Some(f), Some(l)) => format!("  ({f}:{l})"),
                _ => String::new(),
            };
            println!(
                "{:<18} {:<20} id {}{at}",
                state,
                line.key.as_deref().unwrap_or("-"),
                line.id
            );
            for e in &line.edits {
                println!(
                    "    {}: Pipefy has {:?}, the table has {:?}",
                    e.field, e.in_pipefy, e.in_table
                );
            }
        }
    }
    let c = &s.counts;
    println!();
    println!("drift {} of '{}'", s.run_id, s.destination);
    for (label, n) in [
        ("keys in the ledger", c.keys_in_ledger),
        ("read in Pipefy", c.read_in_pipefy),
        ("in sync", c.in_sync),
        ("edited in Pipefy", c.edited_in_pipefy),
        ("  fields edited", c.edited_fields),
        ("deleted in Pipefy", c.deleted_in_pipefy),
        ("unknown to ledger", c.unknown_to_ledger),
        ("removed (phase)", c.removed),
        ("untracked", c.untracked),
        ("API requests", c.requests),
        ("throttles", c.throttles),
    ] {
        println!("  {label:<20} {n}");
    }
    if c.untracked > 0 {
        println!("  untracked: no baseline of what Pipefy showed was recorded for these keys; turn on sync.track_edits (or keep_edits) to tell edits there");
    }
    if let Some(loc) = &s.report_location {
        println!("  report               {loc}");
    }
}
