//! Part 6: drift. `engine::drift` over a pipe holding the cards a first run wrote for a
//! table, at Pipefy's rate limit and with the emulator's latency: 1 % of the cards edited by
//! a person, 0.1 % deleted, and 0.1 % more cards made by hand.
//!
//! As in the steady-state part, the first run is seeded rather than replayed: the ledger gets
//! the entries (with baselines) a tracking destination records, and the emulator holds the
//! cards, spread over the pipe's phases.

use std::path::PathBuf;
use std::time::Instant;

use pipefy_emulator::{Card, EmulatorConfig, Fixture};
use pipefy_sync::engine::{drift, DriftRequest};
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen::{self, Format, Variant};
use crate::results::{fmt_num, Figure, Results};
use crate::setup::{self, Op, Rate, PIPE_ID};
use crate::steady::{seconds_at_limit, seed_state, seeded_card};

const SECTION: &str = "drift";
/// The phases of the demo pipe the cards are spread over.
const PHASES: [&str; 4] = ["3011", "3012", "3013", "3014"];
/// Ids of the cards made by hand.
const BY_HAND_ID_BASE: u64 = 700_000_000;

fn is_edited(i: u64) -> bool {
    i % 100 == 11
}

fn is_deleted(i: u64) -> bool {
    i % 1000 == 3
}

pub struct Params {
    pub data_dir: PathBuf,
    pub work_dir: PathBuf,
    pub cards: u64,
    pub latency_ms: u64,
}

/// The pipe as people left it after the first run.
fn fixture(cards: u64) -> Fixture {
    let mut fixture = Fixture::demo();
    for i in (0..cards).filter(|&i| !is_deleted(i)) {
        let mut card = seeded_card(i);
        card.phase_id = PHASES[(i % PHASES.len() as u64) as usize].into();
        if is_edited(i) {
            card.fields.insert(
                "customer_name".into(),
                json!(format!("Customer {i} (edited)")),
            );
        }
        fixture.cards.push(card);
    }
    for n in 0..cards / 1000 {
        let mut card = Card {
            id: (BY_HAND_ID_BASE + n).to_string(),
            pipe_id: PIPE_ID.into(),
            title: format!("Made by hand {n}"),
            ..Card::default()
        };
        card.fields
            .insert("external_id".into(), json!(format!("H{n:09}")));
        fixture.cards.push(card);
    }
    fixture
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let base = gen::ensure(&p.data_dir, Format::Csv, p.cards, Variant::Base)?;
    let work = p.work_dir.join("drift");
    setup::fresh_dir(&work)?;
    tracing::info!(cards = p.cards, "drift: seeding the ledger");
    seed_state(p.cards, &base, &work, true).await?;
    let fixture = fixture(p.cards);
    let in_pipe = fixture
        .cards
        .iter()
        .filter(|c| c.pipe_id == PIPE_ID)
        .count() as u64;
    let emu = setup::start_emulator(EmulatorConfig {
        fixture,
        ..setup::emulator_config(Rate::PIPEFY, p.latency_ms, 0)
    })
    .await?;
    let dest = setup::destination_with(
        Op::UpsertCard,
        &emu.graphql_url(),
        Rate::PIPEFY,
        "track_edits: true",
    )?;
    let ctx = setup::run_context(&base.root, &work, setup::client(&dest)?)?;
    tracing::info!(cards = p.cards, "drift: reading the pipe back");
    let started = Instant::now();
    let summary = drift(
        &ctx,
        &dest,
        DriftRequest {
            trigger: "bench".into(),
        },
    )
    .await
    .map_err(|e| BenchError::Engine(e.to_string()));
    let seconds = started.elapsed().as_secs_f64();
    let stats = emu.stats();
    emu.shutdown().await;
    let summary = summary?;
    let c = summary.counts;
    let mutations: u64 = stats.mutations.values().sum();

    results.push(Figure::new(
        SECTION,
        "cards",
        "Cards in the pipe",
        in_pipe as f64,
        "cards",
    ));
    results.push(
        Figure::new(
            SECTION,
            "http_requests",
            "HTTP requests sent",
            stats.total as f64,
            "requests",
        )
        .note(format!(
            "{} cards per page, the pipe's {} phases paged side by side; {} mutations",
            pipefy_sync::pipefy::CARDS_PAGE_SIZE,
            PHASES.len(),
            mutations
        )),
    );
    results.push(
        Figure::new(
            SECTION,
            "seconds",
            "Wall time at Pipefy's 500 requests / 30 s, with latency",
            seconds,
            "s",
        )
        .note(format!(
            "measured; the rate limit alone bounds it at {:.1} s",
            seconds_at_limit(stats.total)
        )),
    );
    results.push(
        Figure::new(
            SECTION,
            "found",
            "Found: edited / deleted / unknown / in sync",
            c.edited_in_pipefy as f64,
            "keys",
        )
        .display(format!(
            "{} edited, {} deleted, {} unknown, {} in sync",
            fmt_num(c.edited_in_pipefy as f64),
            fmt_num(c.deleted_in_pipefy as f64),
            fmt_num(c.unknown_to_ledger as f64),
            fmt_num(c.in_sync as f64)
        )),
    );
    let edited = (0..p.cards)
        .filter(|&i| is_edited(i) && !is_deleted(i))
        .count() as u64;
    let deleted = (0..p.cards).filter(|&i| is_deleted(i)).count() as u64;
    if c.edited_in_pipefy != edited || c.deleted_in_pipefy != deleted || mutations != 0 {
        results.note(
            SECTION,
            format!(
                "expected {edited} edited and {deleted} deleted and no mutation; drift found {} edited, {} deleted, and the emulator counted {mutations} mutations",
                c.edited_in_pipefy, c.deleted_in_pipefy
            ),
        );
    }
    results.note(
        SECTION,
        format!(
            "`engine::drift` over {} cards written by a seeded first run of the bench destination with `track_edits`, spread over four phases; 1 % edited by hand, 0.1 % deleted, {} more made by hand. The emulator limits requests as Pipefy does and answers after {} ms (plus its own work).",
            fmt_num(p.cards as f64),
            fmt_num((p.cards / 1000) as f64),
            p.latency_ms
        ),
    );
    results.detail(
        SECTION,
        json!({"cards": p.cards, "seconds": seconds, "summary": summary, "requests": stats.total}),
    );
    Ok(())
}
