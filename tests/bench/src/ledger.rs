//! Part 4: the ledger. Its size on disk and the time to save and load it at 1 M and 10 M
//! keys, through the real state code (`StateStore` on a local folder): save is
//! `encode_full` plus the segment and manifest writes; load, in a child process so its
//! memory is measured alone, is the manifest read plus `load_ledger`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pipefy_sync::state::ledger::encode_delta;
use pipefy_sync::state::{key_hash, phase_hash, Entry, Ledger, RecordId, StateStore};
use pipefy_sync::store::{LocalStore, ObjectStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen;
use crate::procfs;
use crate::results::{fmt_num, Figure, Results, MIB};
use crate::setup;

const SECTION: &str = "state";
const DESTINATION: &str = "bench-ledger";

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The folder holding the destination's state.
    #[arg(long)]
    pub state: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildOutput {
    pub keys: u64,
    pub load_seconds: f64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub peak_rss_bytes: u64,
}

fn state_store(dir: &Path) -> StateStore {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir));
    StateStore::new(store, "", DESTINATION)
}

/// The child: loads the ledger as a run does first thing.
pub async fn child(args: ChildArgs) -> Result<ChildOutput> {
    let state = state_store(&args.state);
    let before = procfs::self_usage();
    let started = Instant::now();
    let loaded = state
        .load_manifest()
        .await
        .map_err(|e| BenchError::State(e.to_string()))?;
    let ledger = state
        .load_ledger(&loaded.manifest)
        .await
        .map_err(|e| BenchError::State(e.to_string()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let after = procfs::self_usage();
    Ok(ChildOutput {
        keys: ledger.len() as u64,
        load_seconds,
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes,
        peak_rss_bytes: after.peak_rss_bytes,
    })
}

/// Mapped targets of the bench destination (`setup::destination`: 13 entries, less the
/// phase): each key carries one fingerprint per target.
const TARGETS: u64 = 12;
/// Of those, the targets with few distinct values (plan, dates, tags, owner...).
const LOW_CARDINALITY_TARGETS: u64 = 6;

/// A ledger like a real destination's after `n` creates: keys are hashes of the generated
/// customer ids, card ids were handed out in creation order (so they are scattered in key
/// order, as in Pipefy), values hashes are random, two phases, written over a day, and a
/// fingerprint per target: unique for half the targets, one of a few for the others.
fn build(n: u64) -> Result<Ledger> {
    let base_min = u32::try_from(chrono::Utc::now().timestamp() / 60).unwrap_or(0);
    let phases = [phase_hash(Some("3011")), phase_hash(Some("3012"))];
    let writes: Vec<(u64, Option<Entry>)> = (0..n)
        .map(|i| {
            (
                key_hash(&gen::customer_id(i)),
                Some(Entry {
                    written_at_min: base_min.saturating_sub((i % 1440) as u32),
                    targets: (0..TARGETS)
                        .map(|slot| {
                            let value = if slot < LOW_CARDINALITY_TARGETS {
                                i % 4
                            } else {
                                i
                            };
                            let f = key_hash(&format!("{slot}:{value}")) as u32 | 1;
                            (key_hash(&format!("target {slot}")), f)
                        })
                        .collect(),
                    ..Entry::new(
                        RecordId::Num(300_000_000 + i),
                        key_hash(&format!("values of row {i}")),
                        phases[(i % 2) as usize],
                    )
                }),
            )
        })
        .collect();
    let mut ledger = Ledger::new();
    ledger
        .apply_segment(&encode_delta(writes))
        .map_err(|e| BenchError::State(e.to_string()))?;
    Ok(ledger)
}

pub struct Params {
    pub work_dir: PathBuf,
    pub sizes: Vec<u64>,
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let mut details = Vec::new();
    for &n in &p.sizes {
        let dir = p.work_dir.join(format!("ledger-{n}"));
        setup_dir(&dir)?;
        tracing::info!(keys = n, "ledger: building");
        let ledger = tokio::task::spawn_blocking(move || build(n))
            .await
            .map_err(|e| BenchError::State(format!("building task: {e}")))??;
        if ledger.len() as u64 != n {
            return Err(BenchError::State(format!(
                "built {} keys instead of {n}",
                ledger.len()
            )));
        }
        // Save: what a run's finish does when it folds its deltas into a new base.
        let state = state_store(&dir);
        let mut loaded = state
            .load_manifest()
            .await
            .map_err(|e| BenchError::State(e.to_string()))?;
        let started = Instant::now();
        let bytes = ledger.encode_full();
        let encode_seconds = started.elapsed().as_secs_f64();
        let segment_bytes = bytes.len() as u64;
        drop(ledger);
        setup::save_segment(&state, &mut loaded, bytes).await?;
        let save_seconds = started.elapsed().as_secs_f64();

        tracing::info!(keys = n, "ledger: loading in a child process");
        let out: ChildOutput = crate::child::run(
            &format!("ledger load of {n} keys"),
            &[
                "child-ledger".to_string(),
                "--state".into(),
                dir.display().to_string(),
            ],
        )
        .await?;
        if out.keys != n {
            return Err(BenchError::State(format!(
                "loaded {} keys instead of {n}",
                out.keys
            )));
        }
        let label = fmt_num(n as f64);
        let resident = out.rss_after_bytes.saturating_sub(out.rss_before_bytes);
        results.push(
            Figure::new(
                SECTION,
                format!("size_{n}"),
                format!("Ledger size at {label} keys"),
                segment_bytes as f64 / MIB,
                "MiB",
            )
            .display(format!(
                "{} MiB ({:.1} bytes per key)",
                fmt_num(segment_bytes as f64 / MIB),
                segment_bytes as f64 / n as f64
            )),
        );
        results.push(
            Figure::new(
                SECTION,
                format!("save_ms_{n}"),
                format!("Save at {label} keys (encode + write)"),
                save_seconds * 1000.0,
                "ms",
            )
            .display(format!(
                "{} ms (encode {} ms)",
                fmt_num(save_seconds * 1000.0),
                fmt_num(encode_seconds * 1000.0)
            )),
        );
        results.push(Figure::new(
            SECTION,
            format!("load_ms_{n}"),
            format!("Load at {label} keys (read + decode)"),
            out.load_seconds * 1000.0,
            "ms",
        ));
        results.push(
            Figure::new(
                SECTION,
                format!("memory_{n}"),
                format!("Memory of the loaded ledger at {label} keys"),
                resident as f64 / MIB,
                "MiB",
            )
            .display(format!(
                "{} MiB ({:.1} bytes per key; peak while loading {} MiB)",
                fmt_num(resident as f64 / MIB),
                resident as f64 / n as f64,
                fmt_num(out.peak_rss_bytes as f64 / MIB)
            )),
        );
        details.push(json!({
            "keys": n,
            "segment_bytes": segment_bytes,
            "bytes_per_key": segment_bytes as f64 / n as f64,
            "encode_seconds": encode_seconds,
            "save_seconds": save_seconds,
            "load": out,
        }));
        let _ = std::fs::remove_dir_all(&dir);
    }
    results.note(
        SECTION,
        "Keys are 64-bit hashes of the row keys; the segment is zstd-compressed columns (see shared/src/state/ledger.rs). Save and load go through `StateStore` on a local folder (page cache, no network): on S3 add the transfer time of the segment. Memory of the loaded ledger is the resident-set growth of a child process across the load; the peak includes the compressed segment and decoding buffers held during the load.",
    );
    results.detail(SECTION, json!(details));
    Ok(())
}

fn setup_dir(dir: &Path) -> Result<()> {
    crate::setup::fresh_dir(dir)
}
