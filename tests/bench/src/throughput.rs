//! Part 1: throughput to Pipefy. A create_card run of the generated table through the real
//! engine and client against the emulator set up like Pipefy (per-request latency, a cost
//! per mutation, 500 requests per 30 s), then the peer script (one createCard per request)
//! against a fresh emulator with the same settings, twice: one call at a time, and with
//! [`PEER_IN_FLIGHT`] calls in flight, as a user who knows asyncio would write it. The
//! target is judged against the faster of the two.

use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen::{self, Format, Variant};
use crate::results::{fmt_num, Figure, Results, Target};
use crate::setup::{self, Op, Rate, MUTATIONS_PER_REQUEST, PIPE_ID, TOKEN};

const SECTION: &str = "throughput";

pub struct Params {
    pub data_dir: PathBuf,
    pub work_dir: PathBuf,
    pub rows: u64,
    pub latency_ms: u64,
    pub per_mutation_ms: u64,
    pub peer_seconds: f64,
    pub peer_cards: u64,
    pub python: PathBuf,
    pub peer_script: PathBuf,
}

/// The calls the concurrent peer keeps in flight.
pub const PEER_IN_FLIGHT: usize = 4;

/// The concurrent peer runs at least this long and may send this many cards: it reaches
/// Pipefy's request limit within one window, and only a run across windows shows the rate
/// it can keep.
const CONCURRENT_PEER_SECONDS: f64 = 60.0;
const CONCURRENT_PEER_CARDS: u64 = 1_500;

#[derive(Debug, Deserialize)]
struct PeerOutput {
    client: String,
    cards: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

/// One run of the peer script, and what the emulator saw of it.
struct PeerRun {
    out: PeerOutput,
    in_flight: usize,
    seconds: f64,
    max_cards: u64,
    rate: f64,
    emulator_requests: u64,
    emulator_429: u64,
    cards_in_pipe: usize,
}

/// Runs the peer script with `in_flight` calls at once against a fresh emulator.
async fn run_peer(
    p: &Params,
    emu_config: &pipefy_emulator::EmulatorConfig,
    csv: &std::path::Path,
    in_flight: usize,
) -> Result<PeerRun> {
    let emu = setup::start_emulator(emu_config.clone()).await?;
    let fixture_cards = cards_in_pipe(&emu);
    let (seconds, max_cards) = if in_flight > 1 {
        (
            p.peer_seconds.max(CONCURRENT_PEER_SECONDS),
            p.peer_cards.max(CONCURRENT_PEER_CARDS),
        )
    } else {
        (p.peer_seconds, p.peer_cards)
    };
    tracing::info!(seconds, max_cards, in_flight, "throughput: the peer script");
    let out = tokio::process::Command::new(&p.python)
        .arg(&p.peer_script)
        .args([
            "--base-url",
            &emu.base_url(),
            "--token",
            TOKEN,
            "--pipe-id",
            PIPE_ID,
        ])
        .arg("--csv")
        .arg(csv)
        .args([
            "--seconds",
            &seconds.to_string(),
            "--max-cards",
            &max_cards.to_string(),
            "--in-flight",
            &in_flight.to_string(),
        ])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BenchError::Peer(format!("could not start {}: {e}", p.python.display())))?;
    let in_pipe = cards_in_pipe(&emu).saturating_sub(fixture_cards);
    let stats = emu.stats();
    emu.shutdown().await;
    if !out.status.success() {
        return Err(BenchError::Peer(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let peer: PeerOutput = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| BenchError::Peer("printed nothing".into()))
        .and_then(|l| serde_json::from_str(l).map_err(|e| BenchError::Peer(format!("{e}: {l}"))))?;
    if peer.cards == 0 {
        return Err(BenchError::Peer(format!(
            "created no card: {}",
            peer.first_error.unwrap_or_default()
        )));
    }
    Ok(PeerRun {
        rate: peer.cards as f64 / peer.seconds,
        out: peer,
        in_flight,
        seconds,
        max_cards,
        emulator_requests: stats.total,
        emulator_429: stats.status_429,
        cards_in_pipe: in_pipe,
    })
}

impl PeerRun {
    fn figure(&self, key: &str) -> Figure {
        let calls = if self.in_flight == 1 {
            "one call at a time".to_string()
        } else {
            format!("{} calls in flight", self.in_flight)
        };
        Figure::new(
            SECTION,
            key,
            format!("Peer script (one createCard per request, {calls}): cards per second"),
            self.rate,
            "cards/s",
        )
        .note(format!(
            "{} cards in {:.1} s with {}, {calls}, time-bound to {} s or {} cards; {} errors, {} requests answered 429",
            self.out.cards,
            self.out.seconds,
            self.out.client,
            self.seconds,
            self.max_cards,
            self.out.errors,
            self.emulator_429
        ))
    }

    fn detail(&self) -> serde_json::Value {
        json!({
            "client": self.out.client,
            "in_flight": self.in_flight,
            "cards": self.out.cards,
            "errors": self.out.errors,
            "first_error": self.out.first_error,
            "seconds": self.out.seconds,
            "cards_per_second": self.rate,
            "emulator_requests": self.emulator_requests,
            "emulator_429": self.emulator_429,
            "cards_created_in_pipe": self.cards_in_pipe,
        })
    }
}

/// Cards per second Pipefy's limit allows: requests per second times mutations per request.
pub fn bound_cards_per_second() -> f64 {
    f64::from(setup::PIPEFY_REQUESTS_PER_WINDOW) / f64::from(setup::PIPEFY_WINDOW_SECONDS)
        * f64::from(MUTATIONS_PER_REQUEST)
}

fn cards_in_pipe(emu: &pipefy_emulator::EmulatorHandle) -> usize {
    emu.snapshot()
        .cards
        .iter()
        .filter(|c| c.pipe_id == PIPE_ID)
        .count()
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let table = gen::ensure(&p.data_dir, Format::Csv, p.rows, Variant::Base)?;
    let emu_config = setup::emulator_config(Rate::PIPEFY, p.latency_ms, p.per_mutation_ms);

    // pipefy-sync: the whole run, from the schema fetch to the last checkpoint.
    let emu = setup::start_emulator(emu_config.clone()).await?;
    let fixture_cards = cards_in_pipe(&emu);
    let dest = setup::destination(Op::CreateCard, &emu.graphql_url(), Rate::PIPEFY)?;
    let work = p.work_dir.join("throughput");
    setup::fresh_dir(&work)?;
    let ctx = setup::run_context(&table.root, &work, setup::client(&dest)?)?;
    tracing::info!(rows = p.rows, "throughput: pipefy-sync create_card run");
    let started = Instant::now();
    let summary = setup::run_sync(&ctx, &dest, false).await?;
    let engine_seconds = started.elapsed().as_secs_f64();
    let stats = emu.stats();
    let created_in_pipe = cards_in_pipe(&emu).saturating_sub(fixture_cards);
    emu.shutdown().await;
    let created = summary.counts.created;
    if created != p.rows {
        results.note(
            SECTION,
            format!(
                "pipefy-sync created {created} of {} rows ({} failed); the rate counts created cards only",
                p.rows,
                summary.counts.failed_rows()
            ),
        );
    }
    let engine_rate = created as f64 / engine_seconds;
    let bound = bound_cards_per_second();

    // The peers, each on a fresh emulator with the same settings.
    let csv = table
        .files
        .first()
        .ok_or_else(|| BenchError::Peer("the generated table has no file".into()))?;
    let serial = run_peer(p, &emu_config, csv, 1).await?;
    let concurrent = run_peer(p, &emu_config, csv, PEER_IN_FLIGHT).await?;
    // The target is judged against the better peer.
    let best = if concurrent.rate > serial.rate {
        &concurrent
    } else {
        &serial
    };
    let peer_rate = best.rate;
    let ratio = engine_rate / peer_rate;

    results.push(
        Figure::new(SECTION, "engine_cards_per_second", "pipefy-sync: cards per second", engine_rate, "cards/s")
            .note(format!(
                "{created} cards in {:.1} s ({} requests, {} answered 429), create_card with a key, 20 mutations per request, 4 in flight",
                engine_seconds, stats.total, stats.status_429
            )),
    );
    results.push(
        Figure::new(
            SECTION,
            "share_of_bound",
            "pipefy-sync: share of the bound (500/30 s × 20 = 333 cards/s)",
            engine_rate / bound * 100.0,
            "%",
        )
        .target(Target::at_least(90.0, "≥ 90 %").in_points()),
    );
    results.push(serial.figure("peer_cards_per_second"));
    results.push(concurrent.figure("peer_concurrent_cards_per_second"));
    results.push(
        Figure::new(
            SECTION,
            "ratio_to_serial_peer",
            "pipefy-sync ÷ peer, one call at a time",
            engine_rate / serial.rate,
            "×",
        )
        .display(format!("{} ×", fmt_num(engine_rate / serial.rate))),
    );
    results.push(
        Figure::new(
            SECTION,
            "ratio_to_peer",
            format!(
                "pipefy-sync ÷ the faster peer ({})",
                if best.in_flight == 1 {
                    "one call at a time".to_string()
                } else {
                    format!("{} in flight", best.in_flight)
                }
            ),
            ratio,
            "×",
        )
        .display(format!("{} ×", fmt_num(ratio)))
        .target(Target::at_least(20.0, "≥ 20 ×")),
    );
    results.push(Figure::new(
        SECTION,
        "peer_projected_seconds",
        format!(
            "The faster peer: time for the same {} rows (extrapolated)",
            fmt_num(p.rows as f64)
        ),
        p.rows as f64 / peer_rate,
        "s",
    ));
    results.note(
        SECTION,
        format!(
            "The emulator answers every request after {} ms plus {} ms per mutation and allows 500 requests per 30 s per token, as Pipefy does (docs/pipefy-api.md §9). Every run uses the same emulator settings and the same generated CSV rows.",
            p.latency_ms, p.per_mutation_ms
        ),
    );
    results.detail(
        SECTION,
        json!({
            "rows": p.rows,
            "latency_ms": p.latency_ms,
            "latency_per_mutation_ms": p.per_mutation_ms,
            "bound_cards_per_second": bound,
            "engine": {
                "seconds": engine_seconds,
                "counts": summary.counts,
                "status": summary.status,
                "emulator_requests": stats.total,
                "emulator_429": stats.status_429,
                "emulator_mutations": stats.mutations,
                "cards_created_in_pipe": created_in_pipe,
                "cards_per_second": engine_rate,
            },
            "peer": serial.detail(),
            "peer_concurrent": concurrent.detail(),
            "ratio": ratio,
        }),
    );
    Ok(())
}
