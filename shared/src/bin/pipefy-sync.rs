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
    destination_prefix, outcome_words, record_runs, report_prefix, Counts, DriftLine, DriftState,
    DriftSummary, HistoryEntry, ReportWriter, RowResult, RunStatus, RunSummary,
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
            full_resync,
            allow_mass_removal,
            storage,
        } => {
            let dest = load(&destination)?;
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let progress: Arc<dyn Progress> = Arc::new(Bar(bar.clone()));
            let ctx = context(&dest, &destination, &storage, Some(progress)).await?;
            let req = RunRequest {
                trigger: "cli".into(),
                scope: resolve_files(&files),
                full_resync,
                allow_mass_removal,
                lease_wait: Duration::from_secs(10),
                ..RunRequest::default()
            };
            let result = sync(&ctx, &dest, req).await;
            bar.finish_and_clear();
            let summary = result.map_err(|e| e.to_string())?;
            print_summary(&summary);
            Ok(match summary.status {
                RunStatus::Completed if summary.counts.failed_rows() == 0 => ExitCode::SUCCESS,
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
    })
}

async fn print_plan(ctx: &RunContext, summary: &RunSummary, limit: usize) {
    let Some(location) = &summary.report_location else {
        return;
    };
    let dir = report_prefix(
        &ctx.reports_prefix,
        &summary.destination,
        summary.started_at,
        &summary.run_id,
    ) + "results/";
    let Ok(parts) = ctx.report_store.list(&dir).await else {
        return;
    };
    let mut shown = 0;
    for part in parts {
        let Ok((_, bytes)) = ctx.report_store.get_bytes(&part.key).await else {
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
