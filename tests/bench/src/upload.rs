//! Part 7: a large attachment through sync-scheduled.
//!
//! The release `sync-scheduled` binary runs under `cargo lambda watch` (its Runtime API and
//! Invoke API), as in `make demo`, and is invoked once with `cargo lambda invoke`. Its
//! destination creates one card whose attachment column names one object of `--upload-mib`
//! MiB (default 200) in the bench's in-memory S3; the file is uploaded to the in-process
//! Pipefy emulator's presigned URL. Measured: the function process's peak resident memory
//! (`VmHWM`, read while it still runs, after it answered) against the file's size and the
//! function's memory setting, and the upload's throughput (file bytes over the invocation's
//! wall time, which also holds the run's set-up and the card's create).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::procfs;
use crate::results::{fmt_num, Figure, Results, Target, MIB};
use crate::setup::{self, Rate};
use crate::startup::{self, DATA_BUCKET, SYSTEM_BUCKET};

const SECTION: &str = "uploads";
const FUNCTION: &str = "sync-scheduled";
/// The functions' memory in Terraform (`sync_memory_size`, default 1024 MB).
const FUNCTION_MEMORY_MB: f64 = 1024.0;
const INVOKE_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Params {
    pub work_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cargo_lambda: PathBuf,
    pub mib: u64,
}

/// A free local port (bound, then released for `cargo lambda watch` to take).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(BenchError::io("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(BenchError::io("reading a local port"))?
        .port())
}

async fn wait_for_port(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn failed(message: impl Into<String>) -> BenchError {
    BenchError::Startup {
        function: FUNCTION.into(),
        message: message.into(),
    }
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    let binary = p.bin_dir.join(FUNCTION);
    if !binary.exists() || !p.cargo_lambda.exists() {
        results.push(Figure::missing(
            SECTION,
            "upload_peak_rss_bytes",
            "sync-scheduled: peak memory while uploading",
            "MiB",
            format!(
                "needs {} and {} (scripts/setup-tools.sh)",
                binary.display(),
                p.cargo_lambda.display()
            ),
        ));
        return Ok(());
    }
    let work = p.work_dir.join("upload");
    setup::fresh_dir(&work)?;
    let mut config = setup::emulator_config(Rate::UNLIMITED, 0, 0);
    config.fixture = pipefy_emulator::Fixture::demo_with_attachments();
    let emu = setup::start_emulator(config).await?;

    let size = p.mib * 1024 * 1024;
    // ASCII, so that the in-memory S3's ETag (a hash of the text) reads it in place.
    let line = b"pipefy-sync bench attachment, streamed from S3 to Pipefy\n";
    let mut file = Vec::with_capacity(size as usize);
    while (file.len() as u64) < size {
        let n = line.len().min(size as usize - file.len());
        file.extend_from_slice(&line[..n]);
    }
    let objects: startup::Objects = Arc::new(Mutex::new(Default::default()));
    let destination = format!(
        "name: bench-upload\npipe_id: \"301\"\noperation: create_card\nkey: {{ columns: [customer_id], field: external_id }}\nsource: {{ bucket: {DATA_BUCKET}, layer: bench, table: upload }}\nmapping:\n  title: name\n  customer_name: name\n  documents: {{ column: file, attach: {{ prefix: documents }} }}\ntoken: {{ env: PIPEFY_BENCH_TOKEN }}\nendpoint: {}\n",
        emu.graphql_url()
    );
    {
        let mut o = startup::lock(&objects);
        o.insert(
            (
                SYSTEM_BUCKET.into(),
                "config/destinations/bench-upload.yaml".into(),
            ),
            Bytes::from(destination),
        );
        o.insert(
            (DATA_BUCKET.into(), "bench/upload/part-00000.csv".into()),
            Bytes::from_static(b"customer_id,name,file\nU1,Large file,contract.bin\n"),
        );
        o.insert(
            (DATA_BUCKET.into(), "documents/contract.bin".into()),
            Bytes::from(file),
        );
    }
    let s3 = startup::serve(startup::s3_router(objects)).await?;
    let s3_url = format!("http://{}", s3.addr);

    let port = free_port()?;
    let log = work.join("lambda.log");
    let log_file = std::fs::File::create(&log)
        .map_err(BenchError::io(format!("creating {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(BenchError::io("duplicating the log file"))?;
    let mut watch = tokio::process::Command::new(&p.cargo_lambda)
        .args([
            "lambda",
            "watch",
            "-q",
            "--only-lambda-apis",
            "--ignore-changes",
        ])
        .args(["-P", &port.to_string(), "-A", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start cargo lambda watch: {e}")))?;
    if !wait_for_port(port, Duration::from_secs(30)).await {
        let _ = watch.start_kill();
        return Err(failed("cargo lambda watch did not listen within 30 s"));
    }
    let fn_log = work.join(format!("{FUNCTION}.log"));
    let fn_out = std::fs::File::create(&fn_log)
        .map_err(BenchError::io(format!("creating {}", fn_log.display())))?;
    let fn_err = fn_out
        .try_clone()
        .map_err(BenchError::io("duplicating the log file"))?;
    let runtime_api = format!("http://127.0.0.1:{port}/.rt/{FUNCTION}");
    let mut function = startup::function_command(&binary, FUNCTION, &runtime_api, &s3_url);
    function
        .stdout(Stdio::from(fn_out))
        .stderr(Stdio::from(fn_err));
    let mut child = function
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", binary.display())))?;
    let pid = child.id().map(|p| p.to_string()).unwrap_or_default();

    let event = work.join("event.json");
    std::fs::write(&event, json!({"destination": "bench-upload"}).to_string())
        .map_err(BenchError::io("writing the event"))?;
    let started = Instant::now();
    let invoked = tokio::time::timeout(
        INVOKE_TIMEOUT,
        tokio::process::Command::new(&p.cargo_lambda)
            .args([
                "lambda",
                "invoke",
                FUNCTION,
                "-P",
                &port.to_string(),
                "-A",
                "127.0.0.1",
            ])
            .arg("--data-file")
            .arg(&event)
            .args(["--output-format", "json"])
            .stdin(Stdio::null())
            .output(),
    )
    .await;
    let wall = started.elapsed().as_secs_f64();
    // Read while the function still runs: its own peak, nothing of the bench's.
    let usage = procfs::usage_of(&pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = watch.start_kill();
    let _ = watch.wait().await;
    s3.task.abort();
    let uploads = emu.uploads();
    emu.shutdown().await;

    let output = match invoked {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(failed(format!("cargo lambda invoke: {e}"))),
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                INVOKE_TIMEOUT.as_secs()
            )))
        }
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    let uploaded = answer["summary"]["counts"]["bytes_uploaded"]
        .as_u64()
        .or_else(|| answer["counts"]["bytes_uploaded"].as_u64())
        .unwrap_or(0);
    let stored = uploads.iter().filter_map(|u| u.size).max().unwrap_or(0);
    if !output.status.success() || uploaded != size || stored != size {
        return Err(failed(format!(
            "the upload did not complete (uploaded {uploaded} bytes, Pipefy holds {stored} of {size}); the function answered: {}; see {}",
            String::from_utf8_lossy(&output.stdout).chars().take(400).collect::<String>(),
            fn_log.display()
        )));
    }
    let peak_mib = usage.peak_rss_bytes as f64 / MIB;
    results.push(
        Figure::new(
            SECTION,
            "upload_peak_rss_bytes",
            format!(
                "sync-scheduled: peak memory while uploading a {} MiB file",
                p.mib
            ),
            peak_mib,
            "MiB",
        )
        .display(format!(
            "{} MiB ({}% of the file; the function has {} MB)",
            fmt_num(peak_mib),
            fmt_num(100.0 * usage.peak_rss_bytes as f64 / size as f64),
            fmt_num(FUNCTION_MEMORY_MB)
        ))
        .target(Target::at_most(
            FUNCTION_MEMORY_MB / 4.0,
            "≤ a quarter of the function's 1024 MB, whatever the file's size",
        )),
    );
    let throughput = size as f64 / MIB / wall.max(1e-9);
    results.push(
        Figure::new(
            SECTION,
            "upload_throughput_mib_s",
            "upload throughput (file bytes over the invocation's wall time)",
            throughput,
            "MiB/s",
        )
        .display(format!(
            "{} MiB/s ({} s for the invocation)",
            fmt_num(throughput),
            fmt_num(wall)
        )),
    );
    results.note(
        SECTION,
        format!(
            "One card with one {} MiB attachment: the release sync-scheduled binary under `cargo lambda watch --only-lambda-apis`, invoked with `cargo lambda invoke`; S3 is the bench's in-memory server and Pipefy the in-process emulator (its presigned PUT checks length and type), all on 127.0.0.1. Peak memory is the function process's VmHWM after it answered. The file is streamed from the S3 GET into the PUT, never held whole.",
            p.mib
        ),
    );
    results.detail(
        SECTION,
        json!({"file_bytes": size, "wall_seconds": wall, "usage": usage, "answer": answer}),
    );
    Ok(())
}
