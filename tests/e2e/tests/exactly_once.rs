//! Exactly-once delivery under the failures every trigger brings: a process killed at random
//! points, and Pipefy answering 5xx, timing out, throttling, or applying a create while
//! reporting it failed. Afterwards the emulator must hold exactly one card per key, and every
//! row must be either in Pipefy or in a run's failed rows. Also change detection: a rerun
//! with 1 % of rows changed sends those rows and no others.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipefy_emulator::{EmulatorConfig, Faults};
use pipefy_sync::engine::RunRequest;
use pipefy_sync::pipefy::ClientConfig;
use pipefy_sync::report::{RowAction, RunStatus};
use pipefy_sync_tests::moto::{new_bucket, Moto};
use pipefy_sync_tests::sync::{
    assert_counts_add_up, fast_emulator_config, field_text, Harness, DEMO_TOKEN,
};
use pipefy_sync_tests::tools::cli_binary;
use rand::{Rng, SeedableRng};

const ROWS: usize = 5_000;
const PIPE: &str = "301";

fn key(i: usize) -> String {
    format!("K{i:05}")
}

/// A table of `ROWS` customers; `changed` rows get another name.
fn table(changed: &dyn Fn(usize) -> bool) -> String {
    let mut csv = String::from("cid,name,plan\n");
    for i in 0..ROWS {
        let name = if changed(i) {
            format!("Customer {i} (renamed)")
        } else {
            format!("Customer {i}")
        };
        csv.push_str(&format!("{},{name},Pro\n", key(i)));
    }
    csv
}

const MAPPING: &str = "mapping:\n  title: name\n  customer_name: name\n  plan: plan\n";

/// How many cards of the pipe hold each external_id.
fn cards_per_key(h: &Harness) -> HashMap<String, usize> {
    let mut per_key = HashMap::new();
    for c in h.snapshot().cards.into_iter().filter(|c| c.pipe_id == PIPE) {
        let k = field_text(c.fields.get("external_id"));
        if k.starts_with('K') {
            *per_key.entry(k).or_insert(0) += 1;
        }
    }
    per_key
}

fn assert_one_card_per_key(h: &Harness, context: &str) {
    let per_key = cards_per_key(h);
    let doubled: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{context}: duplicate cards: {doubled:?}"
    );
    let missing: Vec<String> = (0..ROWS)
        .map(key)
        .filter(|k| !per_key.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{context}: {} keys have no card, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

/// Creates that a run found in Pipefy by key, left unconfirmed by a killed run: the
/// `recovered` lines the CLI logs.
fn recovered_in(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("creates left unconfirmed by an earlier run"))
        .filter_map(|l| l.split("recovered=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// Kills `pipefy-sync run` with SIGKILL at random points of a 5,000-row upsert, at least 50
/// times, with state and reports in S3 (moto), then reruns it until it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_at_random_points_never_duplicate_or_lose_a_row() {
    // Pipefy-like pacing (a few ms a request, a small cost per mutation), so a run lasts
    // long enough to be killed in every phase: schema, lookups, intents, creates, checkpoints.
    let h = Harness::with_config(EmulatorConfig {
        faults: Faults {
            latency_ms: 30,
            latency_per_mutation_ms: 2,
            ..Faults::default()
        },
        ..fast_emulator_config()
    })
    .await;
    let cli = cli_binary();
    let moto = Moto::shared();
    let bucket = new_bucket(&moto.s3().await, "crash-state").await;
    h.write_file("refined/customers/part-0001.csv", table(&|_| false));
    let dest_file = h.dir.path().join("crash.yaml");
    // The limits only pace the requests; the state is the destination's (by name) whatever
    // they are, so the rerun after the kills may go faster.
    let write_destination = |limits: &str| {
        std::fs::write(
            &dest_file,
            format!(
                "name: crash-test\npipe_id: \"{PIPE}\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n\
                 source: {{ path: {}, layer: refined, table: customers }}\n{MAPPING}\
                 limits: {{ {limits}, requests_per_window: 1000000 }}\n\
                 sync: {{ lease_seconds: 1, ambiguous_settle_seconds: 0 }}\n\
                 token: {{ env: CRASH_TEST_PIPEFY_TOKEN }}\nendpoint: {}\n",
                h.data_root().display(),
                h.emulator.graphql_url()
            ),
        )
        .unwrap()
    };
    write_destination("mutations_per_request: 5, concurrency: 1");
    let run_cli = || {
        let mut cmd = Command::new(&cli);
        cmd.arg("run")
            .arg(&dest_file)
            .args([
                "--state",
                &format!("s3://{bucket}/state"),
                "--reports",
                &format!("s3://{bucket}/reports"),
            ])
            .env("CRASH_TEST_PIPEFY_TOKEN", DEMO_TOKEN)
            .envs(moto.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut kills = 0;
    // Kills of a run that had written cards since the previous kill.
    let mut kills_while_writing = 0;
    let mut cards_at_last_kill = 0;
    // Leftover intents that a later run resolved by finding the key in Pipefy.
    let mut recovered = 0;
    let mutations_seen = || h.emulator.stats().mutations.values().sum::<u64>();
    while kills < 50 {
        // Each kill lands after a random number of mutations reached the emulator since the
        // run started, whatever the machine's speed: in the middle of a window, between a
        // window and its checkpoint, or just after a checkpoint.
        let at_mutation = mutations_seen() + rng.gen_range(1..=60);
        let mut child = run_cli().spawn().expect("start pipefy-sync");
        let started = Instant::now();
        while mutations_seen() < at_mutation && child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "kill {}: the run made no progress in 120 s",
                kills + 1
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run ended before kill {} (too fast for this test):\n{}\n{}",
                kills + 1,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        recovered += recovered_in(&String::from_utf8_lossy(&out.stderr));
        kills += 1;
        let per_key = cards_per_key(&h);
        // No key may ever hold two cards, whatever the moment of the kill.
        let doubled: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "duplicates after kill {kills}: {doubled:?}"
        );
        if per_key.len() > cards_at_last_kill {
            kills_while_writing += 1;
        }
        cards_at_last_kill = per_key.len();
    }
    eprintln!("{kills} kills, {kills_while_writing} of them while writing; {cards_at_last_kill} of {ROWS} cards before the rerun");
    assert!(
        kills_while_writing >= 20 && cards_at_last_kill < ROWS,
        "{kills_while_writing} of {kills} kills landed while cards were being written ({cards_at_last_kill} cards)"
    );
    // Full speed for the rest.
    h.emulator.set_faults(Faults::default());
    write_destination("mutations_per_request: 20, concurrency: 4");

    // Rerun until it completes.
    let mut finished = None;
    for _ in 0..10 {
        let out = run_cli().output().expect("run pipefy-sync");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            finished = Some(stdout);
            break;
        }
        eprintln!(
            "rerun did not complete:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = finished.expect("the run completes after the crashes");
    let recovered_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("recovered creates"))
        .unwrap_or_default();
    recovered += recovered_line
        .split_whitespace()
        .last()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!("{recovered} creates of killed runs were found by key and recorded, not sent again");
    assert!(
        recovered > 0,
        "no leftover intent was ever resolved by a lookup: the recovery path was not exercised"
    );
    assert!(stdout.contains("Completed"), "{stdout}");
    assert_one_card_per_key(&h, &format!("after {kills} kills"));
    let total = h
        .snapshot()
        .cards
        .iter()
        .filter(|c| c.pipe_id == PIPE)
        .count();
    // The fixture's own card plus one per row.
    assert_eq!(total, ROWS + 1);

    // A run after that finds nothing to do: every row is in the ledger with its values.
    let out = run_cli().output().expect("run pipefy-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let unchanged_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("unchanged"))
        .unwrap_or_default();
    assert!(unchanged_line.ends_with(&ROWS.to_string()), "{stdout}");
    assert_eq!(
        total,
        h.snapshot()
            .cards
            .iter()
            .filter(|c| c.pipe_id == PIPE)
            .count()
    );
}

fn upsert_destination(h: &Harness) -> pipefy_sync::config::Destination {
    h.destination(&format!(
        "name: faults\npipe_id: \"{PIPE}\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n\
         source: {{ path: ${{DATA}}, layer: refined, table: customers }}\n{MAPPING}\
         limits: {{ mutations_per_request: 20, concurrency: 4 }}\n\
         sync: {{ ambiguous_settle_seconds: 0 }}\n"
    ))
}

/// 10 % 5xx, 5 % timeouts, 5 % applied-but-reported-failed and recurring bursts of 429:
/// no duplicates, every row created or reported failed; a rerun without faults finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipefy_faults_make_no_duplicates_and_lose_no_row() {
    let h = Harness::new().await;
    h.write_file("refined/customers/part-0001.csv", table(&|_| false));
    let dest = upsert_destination(&h);
    let faults = |seed: u64| Faults {
        seed,
        error_5xx_rate: 0.10,
        timeout_rate: 0.05,
        timeout_hold_ms: 400,
        timeout_applied_share: 0.5,
        applied_but_failed_rate: 0.05,
        throttle_burst: 8,
        ..Faults::default()
    };
    h.emulator.set_faults(faults(1));
    // A new burst of 429s every second while the run goes, through the inspection endpoint.
    let faults_url = format!("{}/_emulator/faults", h.emulator.base_url());
    let bursts = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for seed in 2.. {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let _ = http.post(&faults_url).json(&faults(seed)).send().await;
        }
    });
    let client = h.client_with(ClientConfig {
        request_timeout: Duration::from_millis(250),
        max_retries: 4,
        ..h.client_config()
    });
    let ctx = h.context_with(client);
    let req = RunRequest {
        trigger: "faults".into(),
        ..RunRequest::default()
    };
    let s = pipefy_sync::engine::sync(&ctx, &dest, req.clone())
        .await
        .expect("run with faults");
    bursts.abort();
    let stats = h.emulator.stats();
    h.emulator.set_faults(Faults::default());

    eprintln!(
        "faults run: {:?}; emulator: {} requests, {:?}, {} answers 429",
        s.counts, stats.total, stats.faults, stats.status_429
    );
    assert_eq!(s.status, RunStatus::Completed, "{s:#?}");
    assert_counts_add_up(&s);
    assert_eq!(s.counts.read, ROWS as u64);
    assert!(
        stats.faults.applied_but_failed > 0 && stats.status_429 > 0,
        "faults were injected: {stats:#?}"
    );
    assert!(s.counts.retries > 0 && s.counts.throttles > 0, "{s:#?}");
    // No key holds two cards; every row is a card or in the failed rows.
    let per_key = cards_per_key(&h);
    assert!(per_key.values().all(|n| *n == 1), "duplicates under faults");
    let failed = h.failed_rows(&s);
    assert_eq!(failed.len() as u64, s.counts.failed_rows());
    let failed_keys: Vec<String> = failed
        .iter()
        .map(|f| f["cid"].as_str().unwrap_or_default().to_string())
        .collect();
    for i in 0..ROWS {
        let k = key(i);
        assert!(
            per_key.contains_key(&k) || failed_keys.contains(&k),
            "row {k} is neither in Pipefy nor in the failed rows"
        );
    }
    // Each failed row says why, and where.
    for r in h
        .results(&s)
        .iter()
        .filter(|r| r.action == RowAction::Failed)
    {
        assert!(
            r.line >= 2 && r.error_code.is_some() && r.error_message.is_some(),
            "{r:#?}"
        );
    }

    // Without faults, the next run sends what failed and nothing twice.
    let s2 = pipefy_sync::engine::sync(&h.context(), &dest, req)
        .await
        .expect("rerun");
    assert_eq!(s2.status, RunStatus::Completed, "{s2:#?}");
    assert_eq!(s2.counts.failed_rows(), 0, "{s2:#?}");
    assert_one_card_per_key(&h, "after the rerun");
}

/// A second scheduled run with 1 % of the rows changed writes exactly those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_one_percent_changed_sends_only_those_rows() {
    let h = Harness::new().await;
    h.write_file("refined/customers/part-0001.csv", table(&|_| false));
    let dest = upsert_destination(&h);
    let req = RunRequest {
        trigger: "schedule".into(),
        ..RunRequest::default()
    };
    let first = h.run_with(&dest, req.clone()).await;
    assert_eq!(
        (first.counts.created, first.counts.failed_rows()),
        (ROWS as u64, 0),
        "{first:#?}"
    );
    let before = h.snapshot();

    let changed = |i: usize| i % 100 == 7;
    h.write_file("refined/customers/part-0001.csv", table(&changed));
    h.emulator.reset_stats();
    let second = h.run_with(&dest, req).await;
    let n_changed = (0..ROWS).filter(|i| changed(*i)).count() as u64;
    assert_eq!(n_changed, 50);
    assert_eq!(
        (
            second.counts.updated,
            second.counts.unchanged,
            second.counts.created,
            second.counts.failed_rows()
        ),
        (n_changed, ROWS as u64 - n_changed, 0, 0),
        "{second:#?}"
    );
    // Pipefy saw writes for the changed cards only: each changed row is one updateCard (the
    // title) plus one updateFieldsValues (customer_name), and no other card moved.
    let stats = h.emulator.stats();
    let writes: u64 = stats.mutations.values().sum();
    assert!(
        writes <= 2 * n_changed,
        "{writes} mutations for {n_changed} changed rows: {:?}",
        stats.mutations
    );
    assert!(
        !stats.mutations.contains_key("createCard"),
        "{:?}",
        stats.mutations
    );
    let after = h.snapshot();
    let mut touched = Vec::new();
    for card in after.cards.iter().filter(|c| c.pipe_id == PIPE) {
        let old = before.card(&card.id).expect("no card is new");
        if old != card {
            touched.push(field_text(card.fields.get("external_id")));
        }
    }
    touched.sort();
    let expected: Vec<String> = (0..ROWS).filter(|i| changed(*i)).map(key).collect();
    assert_eq!(touched, expected);
    assert!(
        second.counts.requests < 2 * n_changed,
        "requests: {}",
        second.counts.requests
    );
}

/// The moment a crash makes dangerous, made on purpose: creates were sent (their intents
/// are in the manifest) but the run died before recording the card ids in the ledger. The
/// next run looks every intent's key up: a create that was applied is recorded as synced
/// (no second card, and no needless update), one that never arrived is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_left_by_a_crash_are_resolved_by_key_before_anything_is_sent() {
    use pipefy_sync::source::Provenance;
    use pipefy_sync::state::{key_hash, Intent, StateStore};

    let h = Harness::new().await;
    let file = "refined/customers/part-0001.csv";
    h.write_file(
        file,
        "cid,name,plan\nK00001,One,Pro\nK00002,Two,Pro\nK00003,Three,Pro\n",
    );
    let dest = upsert_destination(&h);
    let first = h.run(&dest).await;
    assert_eq!(first.counts.created, 3, "{first:#?}");

    // Turn the recorded creates back into intents, as if the run had died after sending.
    let state = StateStore::new(h.local_store(&h.state_root()), "", &dest.name);
    let mut loaded = state.load_manifest().await.unwrap();
    let ledger = state.load_ledger(&loaded.manifest).await.unwrap();
    let mut intents = Vec::new();
    for (line, k) in [(2, "K00001"), (3, "K00002"), (4, "K00003")] {
        let entry = ledger.get(key_hash(k)).expect("in the ledger");
        intents.push(Intent {
            key_hash: key_hash(k),
            key: Some(k.to_string()),
            provenance: Provenance {
                file: file.into(),
                line,
            },
            run_id: first.run_id.clone(),
            value_hash: entry.value_hash,
            phase_hash: entry.phase_hash,
        });
    }
    // And one create that never reached Pipefy.
    h.write_file(
        file,
        "cid,name,plan\nK00001,One,Pro\nK00002,Two,Pro\nK00003,Three,Pro\nK00004,Four,Pro\n",
    );
    intents.push(Intent {
        key_hash: key_hash("K00004"),
        key: Some("K00004".into()),
        provenance: Provenance {
            file: file.into(),
            line: 5,
        },
        run_id: first.run_id.clone(),
        value_hash: 1,
        phase_hash: 0,
    });
    loaded.manifest.segments.clear();
    loaded.manifest.intents = intents;
    state.save_manifest(&mut loaded).await.unwrap();

    h.emulator.reset_stats();
    let second = h.run(&dest).await;
    assert_eq!(second.status, RunStatus::Completed, "{second:#?}");
    assert_eq!(
        (
            second.counts.created,
            second.counts.unchanged,
            second.counts.updated,
            second.counts.failed_rows()
        ),
        (1, 3, 0, 0),
        "{second:#?}"
    );
    let mutations = h.emulator.stats().mutations;
    assert_eq!(mutations.get("createCard"), Some(&1), "{mutations:?}");
    assert_eq!(mutations.values().sum::<u64>(), 1, "{mutations:?}");
    for k in ["K00001", "K00002", "K00003", "K00004"] {
        assert_eq!(h.cards_with(PIPE, "external_id", k).len(), 1, "{k}");
    }
    let after = state.load_manifest().await.unwrap();
    assert!(
        after.manifest.intents.is_empty(),
        "{:?}",
        after.manifest.intents
    );

    // What the lookups found is in the ledger for good: the next run sends nothing at all.
    h.emulator.reset_stats();
    let third = h.run(&dest).await;
    assert_eq!(third.counts.unchanged, 4, "{third:#?}");
    let stats = h.emulator.stats();
    assert!(stats.mutations.is_empty(), "{:?}", stats.mutations);
    // Only the schema was read: no key had to be looked up again.
    assert_eq!(
        stats.queries.keys().collect::<Vec<_>>(),
        vec!["pipe"],
        "{:?}",
        stats.queries
    );
}
