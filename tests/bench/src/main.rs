//! `pipefy-sync-bench`: the measurements behind `make bench` (scripts/bench.sh builds this
//! binary in release and runs it). Six parts, side by side in one run:
//! 1. throughput to the Pipefy emulator set up like Pipefy, against a peer script;
//! 2. dry-run speed and peak memory over generated CSV, JSON Lines and Parquet tables;
//! 3. the steady state: a second run with 1 % of rows changed (`overwrite`, `keep_edits`);
//! 4. the ledger's size, save and load times;
//! 5. the functions' start-up time and zip sizes;
//! 6. drift: a pipe of 100 k cards read back against the ledger, at the rate limit;
//! 7. a large attachment uploaded from S3 by sync-scheduled under `cargo lambda watch`.
//!
//! Results go to `<out>/results.json` and `<out>/results.md`. Every figure names its
//! target and whether it was met; nothing here fails because a target was missed (tests
//! do not assert timings). A part that cannot run is reported as such and the others go on.

#[global_allocator]
static GLOBAL: pipefy_sync::Allocator = pipefy_sync::ALLOCATOR;

mod child;
mod drift;
mod dry;
mod error;
mod gen;
mod ledger;
mod procfs;
mod results;
mod setup;
mod startup;
mod steady;
mod throughput;
mod upload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::error::Result;
use crate::results::Results;

#[derive(Parser, Debug)]
#[command(
    name = "pipefy-sync-bench",
    about = "Measures pipefy-sync; writes results.json and results.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bench (the default).
    Run(Box<RunArgs>),
    /// Internal: one dry run, in its own process.
    #[command(hide = true)]
    ChildDry(dry::ChildArgs),
    /// Internal: the steady-state run, in its own process.
    #[command(hide = true)]
    ChildSteady(steady::ChildArgs),
    /// Internal: a ledger load, in its own process.
    #[command(hide = true)]
    ChildLedger(ledger::ChildArgs),
}

#[derive(Parser, Debug)]
struct DefaultRun {
    #[command(flatten)]
    args: RunArgs,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Output folder: results files, `data/` (generated tables, kept) and `work/`.
    #[arg(long, env = "BENCH_OUT", default_value = "bench/out")]
    out: PathBuf,
    /// Rows of the dry-run and steady-state tables and keys of the ledger ("1 M").
    #[arg(long, env = "BENCH_ROWS", default_value_t = 1_000_000)]
    rows: u64,
    /// The larger size, to show memory stays flat ("10 M"); default 10 × rows; 0 skips it.
    #[arg(long, env = "BENCH_BIG_ROWS")]
    big_rows: Option<u64>,
    /// Rows of the throughput run.
    #[arg(long, env = "BENCH_THROUGHPUT_ROWS", default_value_t = 5_000)]
    throughput_rows: u64,
    /// Emulator latency per request, ms.
    #[arg(long, env = "BENCH_LATENCY_MS", default_value_t = 150)]
    latency_ms: u64,
    /// Emulator latency per mutation, ms.
    #[arg(long, env = "BENCH_LATENCY_PER_MUTATION_MS", default_value_t = 2)]
    latency_per_mutation_ms: u64,
    /// The peer script stops after this many seconds...
    #[arg(long, env = "BENCH_PEER_SECONDS", default_value_t = 60.0)]
    peer_seconds: f64,
    /// ...or this many cards, whichever comes first.
    #[arg(long, env = "BENCH_PEER_CARDS", default_value_t = 300)]
    peer_cards: u64,
    /// Python that runs the peer script (the project's virtualenv has the `pipefy` client).
    #[arg(long, env = "BENCH_PYTHON", default_value = ".venv/bin/python")]
    python: PathBuf,
    #[arg(
        long,
        env = "BENCH_PEER_SCRIPT",
        default_value = "scripts/bench_peer.py"
    )]
    peer_script: PathBuf,
    /// Cards of the drift part.
    #[arg(long, env = "BENCH_DRIFT_CARDS", default_value_t = 100_000)]
    drift_cards: u64,
    /// Rows of the steady-state table; default: --rows.
    #[arg(long, env = "BENCH_STEADY_ROWS")]
    steady_rows: Option<u64>,
    /// Where the functions' binaries are (start-up).
    #[arg(long, env = "BENCH_BIN_DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where `make build` leaves the zips.
    #[arg(long, env = "BENCH_LAMBDA_DIR", default_value = "target/lambda")]
    lambda_dir: PathBuf,
    /// The architecture the zips were built for (`arm64`, or `x86_64` where the arm64
    /// standard library is not installed).
    #[arg(long, env = "BENCH_ZIP_ARCH", default_value = "arm64")]
    zip_arch: String,
    /// Size of the attachment uploaded by the uploads part, MiB.
    #[arg(long, env = "BENCH_UPLOAD_MIB", default_value_t = 200)]
    upload_mib: u64,
    /// cargo-lambda, for the uploads part.
    #[arg(
        long,
        env = "BENCH_CARGO_LAMBDA",
        default_value = ".venv/bin/cargo-lambda"
    )]
    cargo_lambda: PathBuf,
    /// Cold starts per function.
    #[arg(long, env = "BENCH_STARTUP_RUNS", default_value_t = 5)]
    startup_runs: usize,
    /// The zips were not built on purpose (said in the results).
    #[arg(long, env = "BENCH_SKIP_BUILD", default_value = "0")]
    skip_build: String,
    /// Build profile of the measured binaries, for the results header.
    #[arg(long, env = "BENCH_PROFILE", default_value = "release")]
    profile: String,
    /// Only these parts (comma-separated: throughput,dry,steady,ledger,startup,drift).
    #[arg(
        long,
        env = "BENCH_ONLY",
        default_value = "throughput,dry,steady,ledger,startup,drift,uploads"
    )]
    only: String,
    /// Dry-run modes (comma-separated: pipeline,engine).
    #[arg(long, env = "BENCH_DRY_MODES", default_value = "pipeline,engine")]
    dry_modes: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(error::BenchError::io("starting the async runtime"))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,pipefy_sync_bench=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::ChildDry(a)) => runtime()
            .and_then(|rt| rt.block_on(dry::child(a)))
            .and_then(|o| child::print(&o)),
        Some(Command::ChildSteady(a)) => runtime()
            .and_then(|rt| rt.block_on(steady::child(a)))
            .and_then(|o| child::print(&o)),
        Some(Command::ChildLedger(a)) => runtime()
            .and_then(|rt| rt.block_on(ledger::child(a)))
            .and_then(|o| child::print(&o)),
        Some(Command::Run(a)) => runtime().and_then(|rt| rt.block_on(run(*a))),
        // No subcommand: `run` with its defaults and the BENCH_* environment.
        None => runtime()
            .and_then(|rt| rt.block_on(run(DefaultRun::parse_from(["pipefy-sync-bench"]).args))),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipefy-sync-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let out = a.out.clone();
    let data_dir = out.join("data");
    let work_dir = out.join("work");
    for d in [&data_dir, &work_dir] {
        std::fs::create_dir_all(d)
            .map_err(error::BenchError::io(format!("creating {}", d.display())))?;
    }
    let big = a.big_rows.unwrap_or(a.rows.saturating_mul(10));
    let sizes: Vec<u64> = if big > a.rows {
        vec![a.rows, big]
    } else {
        vec![a.rows]
    };
    let steady_rows = a.steady_rows.unwrap_or(a.rows);
    let only: Vec<String> = a.only.split(',').map(|s| s.trim().to_string()).collect();
    let wants = |part: &str| only.iter().any(|o| o == part);
    let modes: Vec<dry::Mode> = dry::Mode::ALL
        .into_iter()
        .filter(|m| {
            a.dry_modes
                .split(',')
                .any(|s| s.trim() == format!("{m:?}").to_lowercase())
        })
        .collect();
    let skip_build = matches!(a.skip_build.trim(), "1" | "true" | "yes");

    let mut results = Results {
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        environment: json!({
            "cpus": procfs::cpus(),
            "cpu_model": procfs::cpu_model(),
            "kernel": procfs::kernel(),
            "profile": a.profile,
        }),
        parameters: json!({
            "rows": a.rows,
            "big_rows": big,
            "throughput_rows": a.throughput_rows,
            "latency_ms": a.latency_ms,
            "latency_per_mutation_ms": a.latency_per_mutation_ms,
            "peer_seconds": a.peer_seconds,
            "peer_cards": a.peer_cards,
            "steady_rows": steady_rows,
            "drift_cards": a.drift_cards,
            "startup_runs": a.startup_runs,
            "upload_mib": a.upload_mib,
            "skip_build": skip_build,
            "parts": only,
            "dry_modes": modes,
        }),
        ..Results::default()
    };

    if wants("throughput") {
        let p = throughput::Params {
            data_dir: data_dir.clone(),
            work_dir: work_dir.clone(),
            rows: a.throughput_rows,
            latency_ms: a.latency_ms,
            per_mutation_ms: a.latency_per_mutation_ms,
            peer_seconds: a.peer_seconds,
            peer_cards: a.peer_cards,
            python: a.python.clone(),
            peer_script: a.peer_script.clone(),
        };
        if let Err(e) = throughput::run(&p, &mut results).await {
            results.error("throughput", &e);
        }
        results.write(&out)?;
    }
    if wants("dry") {
        let p = dry::Params {
            data_dir: data_dir.clone(),
            work_dir: work_dir.clone(),
            sizes: sizes.clone(),
            modes,
        };
        if let Err(e) = dry::run(&p, &mut results).await {
            results.error("dry_run", &e);
        }
        results.write(&out)?;
    }
    if wants("steady") {
        let p = steady::Params {
            data_dir: data_dir.clone(),
            work_dir: work_dir.clone(),
            rows: steady_rows,
        };
        if let Err(e) = steady::run(&p, &mut results).await {
            results.error("steady_state", &e);
        }
        results.write(&out)?;
    }
    if wants("ledger") {
        let p = ledger::Params {
            work_dir: work_dir.clone(),
            sizes: sizes.clone(),
        };
        if let Err(e) = ledger::run(&p, &mut results).await {
            results.error("state", &e);
        }
        results.write(&out)?;
    }
    if wants("drift") {
        let p = drift::Params {
            data_dir: data_dir.clone(),
            work_dir: work_dir.clone(),
            cards: a.drift_cards,
            latency_ms: a.latency_ms,
        };
        if let Err(e) = drift::run(&p, &mut results).await {
            results.error("drift", &e);
        }
        results.write(&out)?;
    }
    if wants("uploads") {
        let p = upload::Params {
            work_dir: work_dir.clone(),
            bin_dir: a.bin_dir.clone(),
            cargo_lambda: a.cargo_lambda.clone(),
            mib: a.upload_mib,
        };
        if let Err(e) = upload::run(&p, &mut results).await {
            results.error("uploads", &e);
        }
        results.write(&out)?;
    }
    if wants("startup") {
        let p = startup::Params {
            work_dir: work_dir.clone(),
            bin_dir: a.bin_dir.clone(),
            lambda_dir: a.lambda_dir.clone(),
            zip_arch: a.zip_arch.clone(),
            runs: a.startup_runs,
            skip_build,
            profile: a.profile.clone(),
        };
        if let Err(e) = startup::run(&p, &mut results).await {
            results.error("startup", &e);
        }
    }
    results.write(&out)?;
    println!("{}", results.markdown());
    eprintln!(
        "pipefy-sync-bench: wrote {} and {}",
        out.join("results.json").display(),
        out.join("results.md").display()
    );
    Ok(())
}
