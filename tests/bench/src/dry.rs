//! Part 2: processing speed and memory. Dry runs over the generated tables, each in a child
//! process that reports its own wall time, CPU time and peak resident memory.
//!
//! Two modes:
//! - `pipeline`: the engine's pieces and nothing else: the table listing, the streaming
//!   reader (`open_rows`: a reader thread feeding a bounded channel), `Mapper::map`, the
//!   key hash and duplicate check, `canonical_hash`, the ledger lookup and the create
//!   preflight, as the engine's planner does them per row.
//! - `engine`: `engine::sync` with `dry_run: true`, end to end (schema fetch from the
//!   in-process emulator, windows, the per-row report of what would be created, written to
//!   a local folder): what `pipefy-sync run --dry-run` costs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pipefy_sync::mapping::{canonical_hash, Mapper};
use pipefy_sync::source::{list_table_files, open_rows, Row};
use pipefy_sync::state::{key_hash, phase_hash, Ledger, SeenKeys};
use pipefy_sync::store::{LocalStore, ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen::{self, Format, Variant};
use crate::procfs;
use crate::results::{fmt_num, Figure, Results, Target, MIB};
use crate::setup::{self, Op, Rate};

const SECTION: &str = "dry_run";

/// Targets of the issue.
const ROWS_PER_CPU_SECOND_TARGET: f64 = 500_000.0;
const PEAK_MIB_TARGET: f64 = 64.0;
/// "Flat": the peak at ten times the rows is at most this much above the smaller run's.
const FLAT_GROWTH_PCT_TARGET: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Pipeline,
    Engine,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Pipeline, Mode::Engine];

    fn label(self) -> &'static str {
        match self {
            Mode::Pipeline => "read + map + plan",
            Mode::Engine => "`sync` dry run",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::Pipeline => "pipeline",
            Mode::Engine => "engine",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub table_root: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[arg(long)]
    pub work: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildOutput {
    pub rows_read: u64,
    pub would_create: u64,
    pub would_update: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// Resident memory when the measured work started (runtime, emulator, mapper).
    pub rss_before_bytes: u64,
}

/// What the planner decides for one row (the engine's `Planner::plan`, without keeping
/// the row for the window).
enum Planned {
    Create,
    Update,
    Unchanged,
    Failed(String),
}

fn plan(
    mapper: &Mapper,
    ledger: &Ledger,
    seen: &mut SeenKeys,
    file: &ObjectMeta,
    row: &Row,
) -> Planned {
    let mapped = match mapper.map(row) {
        Ok(m) => m,
        Err(f) => return Planned::Failed(f.to_string()),
    };
    let identity = match &mapped.key {
        Some(k) => k.clone(),
        None => format!("{}\u{0}{}\u{0}{}", file.key, file.etag, row.provenance.line),
    };
    let khash = key_hash(&identity);
    if !seen.insert(khash) {
        return Planned::Failed(format!("duplicate key {identity}"));
    }
    let hash = canonical_hash(&mapped);
    let phase = phase_hash(mapped.phase_id.as_deref());
    match ledger.get(khash) {
        Some(e) if e.value_hash == hash && e.phase_hash == phase => Planned::Unchanged,
        Some(_) => Planned::Update,
        None => match mapper.check_create(&mapped) {
            Ok(()) => Planned::Create,
            Err(f) => Planned::Failed(f.to_string()),
        },
    }
}

/// The child: one dry run, measured from the listing of the table to the last row.
pub async fn child(args: ChildArgs) -> Result<ChildOutput> {
    let emu = setup::start_emulator(setup::emulator_config(Rate::UNLIMITED, 0, 0)).await?;
    let dest = setup::destination(Op::CreateCard, &emu.graphql_url(), Rate::UNLIMITED)?;
    let client = setup::client(&dest)?;
    let mut out = ChildOutput {
        rows_read: 0,
        would_create: 0,
        would_update: 0,
        unchanged: 0,
        failed: 0,
        first_failure: None,
        seconds: 0.0,
        cpu_seconds: 0.0,
        peak_rss_bytes: 0,
        rss_before_bytes: 0,
    };
    match args.mode {
        Mode::Pipeline => {
            let mapper = setup::mapper(&dest, &client).await?;
            let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&args.table_root));
            let before = procfs::self_usage();
            let started = Instant::now();
            let files = list_table_files(store.as_ref(), &dest.source)
                .await
                .map_err(|e| BenchError::Engine(format!("listing the table: {e}")))?;
            let ledger = Arc::new(Ledger::new());
            let mut seen = SeenKeys::new(ledger.clone());
            for meta in &files {
                let mut rows = open_rows(store.clone(), meta, &dest.source, 0).await;
                while let Some(next) = rows.next().await {
                    out.rows_read += 1;
                    let planned = match next {
                        Ok(row) => plan(&mapper, &ledger, &mut seen, meta, &row),
                        Err(e) => Planned::Failed(e.to_string()),
                    };
                    match planned {
                        Planned::Create => out.would_create += 1,
                        Planned::Update => out.would_update += 1,
                        Planned::Unchanged => out.unchanged += 1,
                        Planned::Failed(why) => {
                            out.failed += 1;
                            out.first_failure.get_or_insert(why);
                        }
                    }
                }
            }
            out.seconds = started.elapsed().as_secs_f64();
            let after = procfs::self_usage();
            out.cpu_seconds = after.cpu_seconds - before.cpu_seconds;
            out.peak_rss_bytes = after.peak_rss_bytes;
            out.rss_before_bytes = before.rss_bytes;
        }
        Mode::Engine => {
            setup::fresh_dir(&args.work)?;
            let ctx = setup::run_context(&args.table_root, &args.work, client)?;
            let before = procfs::self_usage();
            let started = Instant::now();
            let summary = setup::run_sync(&ctx, &dest, true).await?;
            out.seconds = started.elapsed().as_secs_f64();
            let after = procfs::self_usage();
            out.cpu_seconds = after.cpu_seconds - before.cpu_seconds;
            out.peak_rss_bytes = after.peak_rss_bytes;
            out.rss_before_bytes = before.rss_bytes;
            let c = summary.counts;
            out.rows_read = c.read;
            out.would_create = c.created;
            out.would_update = c.updated;
            out.unchanged = c.unchanged;
            out.failed = c.failed_rows();
            if out.failed > 0 {
                out.first_failure = Some(format!(
                    "see the failed rows under {}",
                    args.work.join("reports").display()
                ));
            } else {
                // The per-row report of a 10 M-row dry run is gigabytes: not kept.
                let _ = std::fs::remove_dir_all(&args.work);
            }
        }
    }
    emu.shutdown().await;
    Ok(out)
}

pub struct Params {
    pub data_dir: PathBuf,
    pub work_dir: PathBuf,
    pub sizes: Vec<u64>,
    pub modes: Vec<Mode>,
}

struct Measured {
    format: Format,
    rows: u64,
    mode: Mode,
    bytes: u64,
    out: ChildOutput,
}

fn verdict_cell(value: f64, target: Option<&Target>, text: String) -> String {
    match target {
        Some(t) => {
            let v = t.judge(value);
            if v.met {
                format!("{text} ✓")
            } else {
                format!("{text} ✗ ({:+.0} %)", v.margin_pct)
            }
        }
        None => text,
    }
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let mut measured: Vec<Measured> = Vec::new();
    for &rows in &p.sizes {
        for format in Format::ALL {
            let table = gen::ensure(&p.data_dir, format, rows, Variant::Base)?;
            for &mode in &p.modes {
                let work = p
                    .work_dir
                    .join(format!("dry-{}-{rows}-{}", format.ext(), mode.arg()));
                tracing::info!(format = format.ext(), rows, mode = mode.arg(), "dry run");
                let args = vec![
                    "child-dry".to_string(),
                    "--table-root".into(),
                    table.root.display().to_string(),
                    "--format".into(),
                    format.ext().into(),
                    "--mode".into(),
                    mode.arg().into(),
                    "--work".into(),
                    work.display().to_string(),
                ];
                let what = format!("dry run {} {rows} {}", format.ext(), mode.arg());
                let out: ChildOutput = crate::child::run(&what, &args).await?;
                if out.rows_read != rows || out.failed > 0 {
                    results.note(
                        SECTION,
                        format!(
                            "{what}: read {} of {rows} rows, {} failed ({})",
                            out.rows_read,
                            out.failed,
                            out.first_failure.clone().unwrap_or_default()
                        ),
                    );
                }
                measured.push(Measured {
                    format,
                    rows,
                    mode,
                    bytes: table.bytes,
                    out,
                });
            }
        }
    }

    let mut table = String::from(
        "| Format | Rows | What | Rows/s | Rows/s per CPU second | MiB/s | Peak memory |\n|---|---:|---|---:|---:|---:|---:|\n",
    );
    for m in &measured {
        let o = &m.out;
        let rows_per_s = o.rows_read as f64 / o.seconds;
        let per_cpu = o.rows_read as f64 / o.cpu_seconds.max(0.01);
        let mib_s = m.bytes as f64 / MIB / o.seconds;
        let peak_mib = o.peak_rss_bytes as f64 / MIB;
        let id = format!("{}_{}_{}", m.format.ext(), m.rows, m.mode.arg());
        let cpu_target = matches!(m.format, Format::Csv | Format::Parquet)
            .then(|| Target::at_least(ROWS_PER_CPU_SECOND_TARGET, "≥ 500,000 rows/s per core"));
        let mem_target = Target::at_most(PEAK_MIB_TARGET, "≤ 64 MiB");
        let name = format!(
            "{} {} rows, {}",
            m.format.label(),
            fmt_num(m.rows as f64),
            m.mode.label()
        );
        let _ = std::fmt::Write::write_fmt(
            &mut table,
            format_args!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                m.format.label(),
                fmt_num(m.rows as f64),
                m.mode.label(),
                fmt_num(rows_per_s),
                verdict_cell(per_cpu, cpu_target.as_ref(), fmt_num(per_cpu)),
                fmt_num(mib_s),
                verdict_cell(
                    peak_mib,
                    Some(&mem_target),
                    format!("{} MiB", fmt_num(peak_mib))
                ),
            ),
        );
        results.push(
            Figure::new(
                SECTION,
                format!("{id}_rows_per_second"),
                format!("{name}: rows per second"),
                rows_per_s,
                "rows/s",
            )
            .hidden(),
        );
        let mut f = Figure::new(
            SECTION,
            format!("{id}_rows_per_cpu_second"),
            format!("{name}: rows per CPU second"),
            per_cpu,
            "rows/s",
        )
        .hidden();
        if let Some(t) = cpu_target {
            f = f.target(t);
        }
        results.push(f);
        results.push(
            Figure::new(
                SECTION,
                format!("{id}_mib_per_second"),
                format!("{name}: MiB per second"),
                mib_s,
                "MiB/s",
            )
            .hidden(),
        );
        results.push(
            Figure::new(
                SECTION,
                format!("{id}_peak_mib"),
                format!("{name}: peak resident memory"),
                peak_mib,
                "MiB",
            )
            .target(mem_target)
            .hidden(),
        );
    }
    results.table(SECTION, table);

    // Flat memory: the peak at the largest size against the smallest, per format and mode.
    if let (Some(&small), Some(&large)) = (p.sizes.iter().min(), p.sizes.iter().max()) {
        if large > small {
            for format in Format::ALL {
                for &mode in &p.modes {
                    let peak = |rows: u64| {
                        measured
                            .iter()
                            .find(|m| m.format == format && m.mode == mode && m.rows == rows)
                            .map(|m| m.out.peak_rss_bytes as f64)
                    };
                    if let (Some(a), Some(b)) = (peak(small), peak(large)) {
                        let growth = (b - a) / a * 100.0;
                        results.push(
                            Figure::new(
                                SECTION,
                                format!("{}_{}_memory_growth", format.ext(), mode.arg()),
                                format!(
                                    "Peak memory growth {} → {} rows, {}, {}",
                                    fmt_num(small as f64),
                                    fmt_num(large as f64),
                                    format.label(),
                                    mode.label()
                                ),
                                growth,
                                "%",
                            )
                            .display(format!(
                                "{:+.1} % ({} → {} MiB)",
                                growth,
                                fmt_num(a / MIB),
                                fmt_num(b / MIB)
                            ))
                            .target(
                                Target::at_most(FLAT_GROWTH_PCT_TARGET, "≤ +10 % (flat)")
                                    .in_points(),
                            ),
                        );
                    }
                }
            }
        }
    }
    results.note(
        SECTION,
        "Rows/s is wall-clock; \"per CPU second\" divides the rows by the user + system CPU time of the whole process (the reader thread and the async side together), which is the per-core figure. MiB/s is the size of the input files over the wall time. Peak memory is the child process's VmHWM, including the tokio runtime and the in-process emulator that serves the schema (a few MiB).",
    );
    results.note(
        SECTION,
        "read + map + plan: the table listing, the streaming reader, `Mapper::map`, the key hash and duplicate-key set, `canonical_hash`, the ledger lookup (empty ledger: a first run) and the create preflight, per row, as the engine's planner does them. `sync` dry run: `engine::sync` with `dry_run: true` end to end, including windows and the per-row report of what would be created (written to a local folder). Tables: 12 columns, plain (uncompressed) CSV and JSON Lines, Snappy Parquet with 1 Mi-row row groups, in parts of 1 M rows; files are in the page cache (generated just before or read by the previous run).",
    );
    results.detail(
        SECTION,
        json!(measured
            .iter()
            .map(|m| json!({
                "format": m.format,
                "rows": m.rows,
                "mode": m.mode,
                "input_bytes": m.bytes,
                "result": m.out,
            }))
            .collect::<Vec<_>>()),
    );
    Ok(())
}
