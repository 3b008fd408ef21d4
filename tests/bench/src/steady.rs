//! Part 3: steady state. The second run of an upsert_card destination over a table where
//! 1 % of the rows changed since the first run.
//!
//! The first run is not replayed through the emulator (a million creates would take the
//! emulator minutes and gigabytes). Instead the state it leaves is seeded: the ledger gets
//! exactly the entries the first run records (key hash, card id, hash of the mapped
//! values, phase hash), computed with the same reader and mapper from the original table,
//! and the emulator holds the cards the second run will update. Unchanged rows never
//! reach the emulator, so the cards behind them need not exist there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pipefy_emulator::{Card, EmulatorConfig, Fixture};
use pipefy_sync::config::{CsvOptions, FileFormat};
use pipefy_sync::mapping::{canonical_hash, Target};
use pipefy_sync::pipefy::CardField;
use pipefy_sync::report::Counts;
use pipefy_sync::source::read_local_file;
use pipefy_sync::state::ledger::encode_delta;
use pipefy_sync::state::{key_hash, phase_hash, Entry, RecordId, StateStore};
use pipefy_sync::store::{LocalStore, ObjectStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen::{self, Format, Variant};
use crate::procfs;
use crate::results::{fmt_num, Figure, Results, Target as Goal, MIB};
use crate::setup::{self, Op, Rate, PIPE_ID};

const SECTION: &str = "steady_state";
/// Card ids of the seeded first run: `CARD_ID_BASE + row index`.
const CARD_ID_BASE: u64 = 800_000_000;
const SENT_PER_CHANGED_TARGET: f64 = 1.1;

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The changed table.
    #[arg(long)]
    pub table_root: PathBuf,
    /// Holds `state/` (seeded) and `reports/`.
    #[arg(long)]
    pub work: PathBuf,
    #[arg(long)]
    pub rows: u64,
    /// The destination's `sync.on_conflict`.
    #[arg(long, default_value = "overwrite")]
    pub on_conflict: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildOutput {
    pub counts: Counts,
    pub status: String,
    pub http_requests: u64,
    pub mutations: std::collections::BTreeMap<String, u64>,
    pub by_operation: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

fn changed_rows(rows: u64) -> u64 {
    (0..rows).filter(|&i| gen::is_changed(i)).count() as u64
}

/// The card the seeded first run left for row `i`, as the emulator holds it.
pub fn seeded_card(i: u64) -> Card {
    let r = gen::row(i, Variant::Base);
    let mut card = Card {
        id: (CARD_ID_BASE + i).to_string(),
        pipe_id: PIPE_ID.into(),
        title: format!("{} ({})", r.name, r.plan),
        ..Card::default()
    };
    card.fields
        .insert("external_id".into(), json!(r.customer_id));
    card.fields.insert("customer_name".into(), json!(r.name));
    card
}

/// [`seeded_card`] as the client reads it back: what the first run's baselines record.
fn shown_card(i: u64) -> pipefy_sync::pipefy::Card {
    let card = seeded_card(i);
    pipefy_sync::pipefy::Card {
        id: card.id,
        title: Some(card.title),
        done: false,
        due_date: None,
        current_phase: None,
        labels: Vec::new(),
        assignees: Vec::new(),
        fields: card
            .fields
            .iter()
            .map(|(slug, v)| CardField {
                field_id: slug.clone(),
                name: slug.clone(),
                value: v.as_str().map(str::to_string),
            })
            .collect(),
    }
}

/// The child: the emulator holding the cards of the changed rows, then the second run.
pub async fn child(args: ChildArgs) -> Result<ChildOutput> {
    let mut fixture = Fixture::demo();
    for i in (0..args.rows).filter(|&i| gen::is_changed(i)) {
        fixture.cards.push(seeded_card(i));
    }
    let emu = setup::start_emulator(EmulatorConfig {
        fixture,
        ..setup::emulator_config(Rate::UNLIMITED, 0, 0)
    })
    .await?;
    let dest = setup::destination_with(
        Op::UpsertCard,
        &emu.graphql_url(),
        Rate::UNLIMITED,
        &format!("on_conflict: {}", args.on_conflict),
    )?;
    let ctx = setup::run_context(&args.table_root, &args.work, setup::client(&dest)?)?;
    let before = procfs::self_usage();
    let started = Instant::now();
    let summary = setup::run_sync(&ctx, &dest, false).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = procfs::self_usage();
    let stats = emu.stats();
    emu.shutdown().await;
    Ok(ChildOutput {
        counts: summary.counts,
        status: format!("{:?}", summary.status).to_lowercase(),
        http_requests: stats.total,
        mutations: stats.mutations,
        by_operation: stats.by_operation,
        seconds,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        peak_rss_bytes: after.peak_rss_bytes,
    })
}

pub struct Params {
    pub data_dir: PathBuf,
    pub work_dir: PathBuf,
    pub rows: u64,
}

/// Writes the ledger the first run over the original table would have left: with
/// `baselines`, also what Pipefy showed of each target after the write (a destination that
/// tracks edits records it).
pub async fn seed_state(
    rows: u64,
    base: &gen::Table,
    work: &std::path::Path,
    baselines: bool,
) -> Result<u64> {
    let emu = setup::start_emulator(setup::emulator_config(Rate::UNLIMITED, 0, 0)).await?;
    let dest = setup::destination(Op::UpsertCard, &emu.graphql_url(), Rate::UNLIMITED)?;
    let mapper = setup::mapper(&dest, &setup::client(&dest)?).await?;
    emu.shutdown().await;
    let now_min = u32::try_from(chrono::Utc::now().timestamp() / 60).unwrap_or(0);
    let files = base.files.clone();
    let writes =
        tokio::task::spawn_blocking(move || -> Result<Vec<(u64, Option<Entry>)>> {
            let mut writes = Vec::new();
            let mut index = 0u64;
            for f in &files {
                let rows = read_local_file(
                    f,
                    Arc::from(f.display().to_string()),
                    FileFormat::Csv,
                    pipefy_sync::config::Compression::None,
                    &CsvOptions::default(),
                );
                for row in rows {
                    let row = row.map_err(|e| {
                        BenchError::State(format!("reading the original table: {e}"))
                    })?;
                    let mapped = mapper.map(&row).map_err(|e| {
                        BenchError::State(format!("mapping the original table: {e}"))
                    })?;
                    let key = mapped.key.clone().unwrap_or_default();
                    let mut targets: Vec<(u64, u32)> = mapper
                        .targets()
                        .iter()
                        .zip(mapper.fingerprints(&mapped))
                        .filter_map(|(t, f)| f.map(|f| (t.slot, f)))
                        .collect();
                    if baselines {
                        let shown = shown_card(index);
                        targets.extend(mapper.targets().iter().map(|t| {
                            (t.shown_slot(), Target::shown_fingerprint(&t.shown(&shown)))
                        }));
                    }
                    writes.push((
                        key_hash(&key),
                        Some(Entry {
                            written_at_min: now_min,
                            targets: targets.into_boxed_slice(),
                            ..Entry::new(
                                RecordId::Num(CARD_ID_BASE + index),
                                canonical_hash(&mapped),
                                phase_hash(mapped.phase_id.as_deref()),
                            )
                        }),
                    ));
                    index += 1;
                }
            }
            Ok(writes)
        })
        .await
        .map_err(|e| BenchError::State(format!("seeding task: {e}")))??;
    let seeded = writes.len() as u64;
    if seeded != rows {
        return Err(BenchError::State(format!(
            "seeded {seeded} ledger entries for {rows} rows"
        )));
    }
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(work.join("state")));
    let state = StateStore::new(store, "", &dest.name);
    let mut loaded = state
        .load_manifest()
        .await
        .map_err(|e| BenchError::State(e.to_string()))?;
    setup::save_segment(&state, &mut loaded, encode_delta(writes)).await?;
    Ok(seeded)
}

/// The second run over the changed table, in a child process.
async fn second_run(
    changed_table: &gen::Table,
    work: &std::path::Path,
    rows: u64,
    on_conflict: &str,
) -> Result<ChildOutput> {
    let args = vec![
        "child-steady".to_string(),
        "--table-root".into(),
        changed_table.root.display().to_string(),
        "--work".into(),
        work.display().to_string(),
        "--rows".into(),
        rows.to_string(),
        "--on-conflict".into(),
        on_conflict.to_string(),
    ];
    crate::child::run("steady-state run", &args).await
}

/// Requests at Pipefy's 500 per 30 s, in seconds.
pub fn seconds_at_limit(requests: u64) -> f64 {
    requests as f64
        / (f64::from(setup::PIPEFY_REQUESTS_PER_WINDOW) / f64::from(setup::PIPEFY_WINDOW_SECONDS))
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let base = gen::ensure(&p.data_dir, Format::Csv, p.rows, Variant::Base)?;
    let changed_table = gen::ensure(&p.data_dir, Format::Csv, p.rows, Variant::Changed)?;
    let work = p.work_dir.join("steady");
    setup::fresh_dir(&work)?;
    tracing::info!(
        rows = p.rows,
        "steady state: seeding the first run's ledger"
    );
    let seed_started = Instant::now();
    seed_state(p.rows, &base, &work, false).await?;
    let seed_seconds = seed_started.elapsed().as_secs_f64();
    tracing::info!(rows = p.rows, "steady state: the second run");
    let out = second_run(&changed_table, &work, p.rows, "overwrite").await?;
    let changed = changed_rows(p.rows);
    let c = out.counts;
    let sent_rows = c.created + c.updated;
    let mutations: u64 = out.mutations.values().sum();
    let at_pipefy_limit = seconds_at_limit(out.http_requests);

    results.push(Figure::new(
        SECTION,
        "rows",
        "Rows in the table",
        p.rows as f64,
        "rows",
    ));
    results.push(Figure::new(
        SECTION,
        "changed_rows",
        "Rows changed since the first run",
        changed as f64,
        "rows",
    ));
    results.push(
        Figure::new(
            SECTION,
            "sent_per_changed",
            "Rows sent ÷ rows changed",
            sent_rows as f64 / changed.max(1) as f64,
            "×",
        )
        .display(format!(
            "{:.2} × ({} rows sent: {} updated, {} created)",
            sent_rows as f64 / changed.max(1) as f64,
            fmt_num(sent_rows as f64),
            c.updated,
            c.created
        ))
        .target(Goal::at_most(SENT_PER_CHANGED_TARGET, "≤ 1.1 ×")),
    );
    results.push(
        Figure::new(
            SECTION,
            "http_requests",
            "HTTP requests sent",
            out.http_requests as f64,
            "requests",
        )
        .note(format!(
            "including the schema fetch; {} mutations in all ({})",
            fmt_num(mutations as f64),
            out.mutations
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    results.push(Figure::new(
        SECTION,
        "seconds",
        "Wall time of the second run (no latency, no rate limit)",
        out.seconds,
        "s",
    ));
    results.push(
        Figure::new(
            SECTION,
            "seconds_at_pipefy_limit",
            "Wall time at Pipefy's 500 requests / 30 s (projected)",
            out.seconds.max(at_pipefy_limit),
            "s",
        )
        .note("the larger of the measured time and the requests sent at 16.7 requests per second"),
    );
    results.push(Figure::new(
        SECTION,
        "peak_mib",
        "Peak memory of the run (ledger loaded)",
        out.peak_rss_bytes as f64 / MIB,
        "MiB",
    ));
    if c.failed_rows() > 0 || c.unchanged + sent_rows != p.rows {
        results.note(
            SECTION,
            format!(
                "the run read {} rows: {} unchanged, {} sent, {} failed",
                c.read,
                c.unchanged,
                sent_rows,
                c.failed_rows()
            ),
        );
    }
    results.note(
        SECTION,
        format!(
            "upsert_card over a {}-row CSV table where every hundredth row has a new `seats` value. The first run is seeded, not replayed: the ledger holds what it would have recorded (computed with the same reader and mapper from the original table, {:.1} s), and the emulator holds the cards of the changed rows; the second run is the real engine (`engine::sync`), measured in a child process, against the emulator without latency or rate limit. Its peak memory includes the in-process emulator.",
            fmt_num(p.rows as f64),
            seed_seconds
        ),
    );
    let keep = keep_edits_run(p, &base, &changed_table, changed, &out, results).await?;
    results.detail(
        SECTION,
        json!({
            "rows": p.rows,
            "changed_rows": changed,
            "seed_seconds": seed_seconds,
            "run": out,
            "keep_edits_run": keep,
        }),
    );
    Ok(())
}

/// The same second run with `on_conflict: keep_edits` (its ledger seeded with baselines):
/// what reading the changed cards before and after their update costs against `overwrite`.
async fn keep_edits_run(
    p: &Params,
    base: &gen::Table,
    changed_table: &gen::Table,
    changed: u64,
    overwrite: &ChildOutput,
    results: &mut Results,
) -> Result<ChildOutput> {
    let work = p.work_dir.join("steady-keep-edits");
    setup::fresh_dir(&work)?;
    tracing::info!(rows = p.rows, "steady state: seeding a keep_edits ledger");
    seed_state(p.rows, base, &work, true).await?;
    tracing::info!(
        rows = p.rows,
        "steady state: the second run with keep_edits"
    );
    let out = second_run(changed_table, &work, p.rows, "keep_edits").await?;
    let c = out.counts;
    let extra = out.http_requests.saturating_sub(overwrite.http_requests);
    results.push(
        Figure::new(
            SECTION,
            "keep_edits_http_requests",
            "keep_edits: HTTP requests sent",
            out.http_requests as f64,
            "requests",
        )
        .note(format!(
            "{} cards read ({} per changed row: before the update and after it, for the new baseline), {} edits kept, {} rows updated",
            fmt_num(c.current_value_reads as f64),
            fmt_num(c.current_value_reads as f64 / changed.max(1) as f64),
            c.kept_edits,
            c.updated
        )),
    );
    results.push(Figure::new(
        SECTION,
        "keep_edits_extra_requests_per_changed",
        "keep_edits: extra read requests per changed row, against overwrite",
        extra as f64 / changed.max(1) as f64,
        "requests",
    ));
    results.push(
        Figure::new(
            SECTION,
            "keep_edits_seconds_at_pipefy_limit",
            "keep_edits: wall time at Pipefy's 500 requests / 30 s (projected)",
            out.seconds.max(seconds_at_limit(out.http_requests)),
            "s",
        )
        .note(format!(
            "overwrite: {:.1} s; measured without latency or limit: {:.2} s",
            overwrite
                .seconds
                .max(seconds_at_limit(overwrite.http_requests)),
            out.seconds
        )),
    );
    if c.kept_edits > 0 || c.updated != overwrite.counts.updated {
        results.note(
            SECTION,
            format!(
                "the keep_edits run updated {} rows and kept {} edits (overwrite updated {}): no person edited these cards, so both should update the same rows",
                c.updated, c.kept_edits, overwrite.counts.updated
            ),
        );
    }
    Ok(out)
}
