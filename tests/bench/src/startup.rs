//! Part 5: start-up and size.
//!
//! Start-up: each function's release binary is started as Lambda starts a custom runtime
//! (`AWS_LAMBDA_RUNTIME_API` pointing at a fake Runtime API served here), and timed from
//! the spawn to the first `GET .../invocation/next` (initialisation done) and to the
//! `POST .../invocation/<id>/response` of the first event. AWS calls go to a minimal
//! in-memory S3 served here too (no moto: its own latency would be measured instead), and
//! Pipefy calls to the in-process emulator. The events are small and real:
//! - sync-scheduled: a dry run of a destination over a 10-row CSV table (config, listing,
//!   reading the file, schema fetch, report written);
//! - sync-upload: the S3 event of a zero-byte upload (config read, object ignored);
//! - notify: the on-success record of a clean run (state read, nothing to send).
//!
//! Size: the release arm64 zips that `make build` leaves in `target/lambda/<fn>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::gen;
use crate::results::{fmt_num, Figure, Results, Target, MIB};
use crate::setup::{self, Rate, TOKEN};

const SECTION: &str = "startup";
pub const FUNCTIONS: [&str; 3] = ["sync-scheduled", "sync-upload", "notify"];
pub(crate) const SYSTEM_BUCKET: &str = "bench-system";
pub(crate) const DATA_BUCKET: &str = "bench-data";
const STARTUP_TARGET_MS: f64 = 50.0;
const ZIP_TARGET_BYTES: f64 = 6_000_000.0;
/// Longest a function may take for its first event before the attempt counts as failed.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---- a minimal S3: path-style GET/HEAD/PUT/DELETE and ListObjectsV2, in memory ----

pub(crate) type Objects = Arc<Mutex<BTreeMap<(String, String), Bytes>>>;

pub(crate) fn lock(
    objects: &Objects,
) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Bytes>> {
    // Nothing is left half-updated under this lock, so a poisoned one is still usable.
    objects.lock().unwrap_or_else(|p| p.into_inner())
}

fn etag_of(body: &[u8]) -> String {
    format!(
        "\"{:016x}\"",
        pipefy_sync::state::key_hash(&String::from_utf8_lossy(body))
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn s3_error(status: StatusCode, code: &str, head: bool) -> Response {
    if head {
        return status.into_response();
    }
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>");
    (status, [("content-type", "application/xml")], body).into_response()
}

async fn s3_bucket(
    State(objects): State<Objects>,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let listed: Vec<(String, usize, String)> = lock(&objects)
        .iter()
        .filter(|((b, k), _)| *b == bucket && k.starts_with(&prefix))
        .map(|((_, k), v)| (k.clone(), v.len(), etag_of(v)))
        .collect();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>",
        xml_escape(&bucket),
        xml_escape(&prefix),
        listed.len()
    );
    for (key, size, etag) in listed {
        xml.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>{}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            xml_escape(&key),
            xml_escape(&etag)
        ));
    }
    xml.push_str("</ListBucketResult>");
    ([("content-type", "application/xml")], xml).into_response()
}

async fn s3_object(
    State(objects): State<Objects>,
    method: Method,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let id = (bucket, key);
    let head = method == Method::HEAD;
    match method {
        Method::GET | Method::HEAD => match lock(&objects).get(&id) {
            Some(v) => {
                let mut h = HeaderMap::new();
                if let Ok(etag) = HeaderValue::from_str(&etag_of(v)) {
                    h.insert("etag", etag);
                }
                h.insert(
                    "last-modified",
                    HeaderValue::from_static("Thu, 01 Jan 2026 00:00:00 GMT"),
                );
                h.insert(
                    "content-type",
                    HeaderValue::from_static("application/octet-stream"),
                );
                if head {
                    if let Ok(len) = HeaderValue::from_str(&v.len().to_string()) {
                        h.insert("content-length", len);
                    }
                    (StatusCode::OK, h).into_response()
                } else {
                    (StatusCode::OK, h, v.clone()).into_response()
                }
            }
            None => s3_error(StatusCode::NOT_FOUND, "NoSuchKey", head),
        },
        Method::PUT => {
            let etag = etag_of(&body);
            lock(&objects).insert(id, body);
            let mut h = HeaderMap::new();
            if let Ok(etag) = HeaderValue::from_str(&etag) {
                h.insert("etag", etag);
            }
            (StatusCode::OK, h).into_response()
        }
        Method::DELETE => {
            lock(&objects).remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => s3_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", false),
    }
}

pub(crate) struct Server {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn serve(router: Router) -> Result<Server> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(BenchError::io("binding a local port"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("reading the local port"))?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "bench server stopped");
        }
    });
    Ok(Server { addr, task })
}

/// The in-memory S3, path-style.
pub(crate) fn s3_router(objects: Objects) -> Router {
    Router::new()
        .route("/{bucket}", any(s3_bucket))
        .route("/{bucket}/", any(s3_bucket))
        .route("/{bucket}/{*key}", any(s3_object))
        .with_state(objects)
}

// ---- a fake Lambda Runtime API serving one event ----

#[derive(Default)]
struct Invocation {
    event: serde_json::Value,
    served: bool,
    first_next_at: Option<Instant>,
    /// When the answer arrived, whether it was a success, and its body.
    answered: Option<(Instant, bool, String)>,
}

type Runtime = Arc<Mutex<Invocation>>;

fn lock_rt(rt: &Runtime) -> std::sync::MutexGuard<'_, Invocation> {
    rt.lock().unwrap_or_else(|p| p.into_inner())
}

const REQUEST_ID: &str = "bench-0001";

async fn rt_next(State(rt): State<Runtime>) -> Response {
    let now = Instant::now();
    let event = {
        let mut inv = lock_rt(&rt);
        inv.first_next_at.get_or_insert(now);
        if inv.served {
            None
        } else {
            inv.served = true;
            Some(inv.event.clone())
        }
    };
    let Some(event) = event else {
        // The function is idle, waiting for its next event: it never comes, the bench
        // stops the process.
        std::future::pending::<()>().await;
        return StatusCode::NO_CONTENT.into_response();
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 900_000;
    let mut h = HeaderMap::new();
    h.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_static(REQUEST_ID),
    );
    if let Ok(v) = HeaderValue::from_str(&deadline.to_string()) {
        h.insert("lambda-runtime-deadline-ms", v);
    }
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
    );
    h.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000;Sampled=0"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, h, event.to_string()).into_response()
}

async fn rt_answer(
    State(rt): State<Runtime>,
    UrlPath((_id, kind)): UrlPath<(String, String)>,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let ok = kind == "response";
    lock_rt(&rt)
        .answered
        .get_or_insert((now, ok, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}

async fn rt_init_error(State(rt): State<Runtime>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    lock_rt(&rt).answered.get_or_insert((
        now,
        false,
        format!("init error: {}", String::from_utf8_lossy(&body)),
    ));
    StatusCode::ACCEPTED
}

fn runtime_router(rt: Runtime) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(rt_next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/{kind}",
            post(rt_answer),
        )
        .route("/2018-06-01/runtime/init/error", post(rt_init_error))
        .with_state(rt)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Attempt {
    init_ms: Option<f64>,
    first_event_ms: Option<f64>,
    ok: bool,
    answer: String,
}

/// A function's process as Lambda starts a custom runtime: only what Lambda sets (plus the
/// local endpoints), no host AWS profile or settings.
pub(crate) fn function_command(
    binary: &Path,
    function: &str,
    runtime_api: &str,
    s3: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", s3)
        .env("PIPEFY_SYNC_BUCKET", SYSTEM_BUCKET)
        .env("PIPEFY_BENCH_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn cold_start(
    binary: &Path,
    function: &str,
    event: serde_json::Value,
    s3: &str,
    log: &Path,
) -> Result<Attempt> {
    let rt: Runtime = Arc::new(Mutex::new(Invocation {
        event,
        ..Invocation::default()
    }));
    let server = serve(runtime_router(rt.clone())).await?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(BenchError::io(format!("opening {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(BenchError::io("duplicating the log file"))?;
    let mut cmd = function_command(binary, function, &server.addr.to_string(), s3);
    cmd.stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| BenchError::Startup {
        function: function.into(),
        message: format!("cannot start {}: {e}", binary.display()),
    })?;
    let deadline = started + EVENT_TIMEOUT;
    let mut exited = None;
    loop {
        if lock_rt(&rt).answered.is_some() || Instant::now() >= deadline {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Our own child, by its handle.
    let _ = child.start_kill();
    let _ = child.wait().await;
    server.task.abort();
    let inv = lock_rt(&rt);
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let (first_event_ms, ok, answer) = match &inv.answered {
        Some((t, ok, body)) => (Some(ms(*t)), *ok, body.chars().take(300).collect()),
        None => (
            None,
            false,
            match exited {
                Some(s) => format!(
                    "the process exited ({s}) before answering; see {}",
                    log.display()
                ),
                None => format!(
                    "no answer within {} s; see {}",
                    EVENT_TIMEOUT.as_secs(),
                    log.display()
                ),
            },
        ),
    };
    Ok(Attempt {
        init_ms: inv.first_next_at.map(ms),
        first_event_ms,
        ok,
        answer,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn event_for(function: &str) -> serde_json::Value {
    match function {
        "sync-scheduled" => json!({"destination": "bench-startup", "dry_run": true}),
        "sync-upload" => json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-22T06:00:00.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "bench",
                   "bucket": {"name": DATA_BUCKET, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{DATA_BUCKET}")},
                   "object": {"key": "bench/startup/empty.csv", "size": 0, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "00"}}
        }]}),
        _ => {
            let summary = json!({
                "run_id": "20261122T060000Z-bench", "destination": "bench-startup", "trigger": "schedule",
                "status": "completed", "dry_run": false, "started_at": "2026-11-22T06:00:00Z",
                "finished_at": "2026-11-22T06:00:05Z", "source_files": [],
                "counts": {"read": 10, "created": 10, "updated": 0, "unchanged": 0, "skipped_by_preflight": 0,
                           "failed": 0, "not_attempted": 0, "removed": 0, "requests": 1, "retries": 0, "throttles": 0},
                "invocations": 1
            });
            json!({
                "version": "1.0", "timestamp": "2026-11-22T06:00:05Z",
                "requestContext": {"requestId": "bench", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:sync-scheduled:$LATEST", "condition": "Success", "approximateInvokeCount": 1},
                "requestPayload": {"destination": "bench-startup"},
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
                "responsePayload": summary
            })
        }
    }
}

pub struct Params {
    pub work_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub lambda_dir: PathBuf,
    pub zip_arch: String,
    pub runs: usize,
    pub skip_build: bool,
    pub profile: String,
}

pub async fn run(p: &Params, results: &mut Results) -> Result<()> {
    zip_sizes(p, results);
    let work = p.work_dir.join("startup");
    setup::fresh_dir(&work)?;
    let emu = setup::start_emulator(setup::emulator_config(Rate::UNLIMITED, 0, 0)).await?;
    let objects: Objects = Arc::new(Mutex::new(BTreeMap::new()));
    let destination = format!(
        "name: bench-startup\npipe_id: \"301\"\noperation: create_card\nsource: {{ bucket: {DATA_BUCKET}, layer: bench, table: startup }}\nmapping:\n  title: name\n  external_id: customer_id\n  customer_name: name\ntoken: {{ env: PIPEFY_BENCH_TOKEN }}\nendpoint: {}\n",
        emu.graphql_url()
    );
    {
        let mut o = lock(&objects);
        o.insert(
            (
                SYSTEM_BUCKET.into(),
                "config/destinations/bench-startup.yaml".into(),
            ),
            Bytes::from(destination),
        );
        o.insert(
            (DATA_BUCKET.into(), "bench/startup/part-00000.csv".into()),
            Bytes::from(gen::csv_text(0..10)),
        );
    }
    let s3 = serve(s3_router(objects)).await?;
    let s3_url = format!("http://{}", s3.addr);
    let mut details = Vec::new();
    for function in FUNCTIONS {
        let binary = p.bin_dir.join(function);
        if !binary.exists() {
            results.push(Figure::missing(
                SECTION,
                format!("{function}_first_event_ms"),
                format!("{function}: start to first event handled"),
                "ms",
                format!("{} is not built", binary.display()),
            ));
            continue;
        }
        let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        let log = work.join(format!("{function}.log"));
        let mut attempts = Vec::new();
        for _ in 0..p.runs.max(1) {
            attempts.push(cold_start(&binary, function, event_for(function), &s3_url, &log).await?);
        }
        let answered: Vec<f64> = attempts
            .iter()
            .filter(|a| a.ok)
            .filter_map(|a| a.first_event_ms)
            .collect();
        let init = median(attempts.iter().filter_map(|a| a.init_ms).collect());
        match median(answered.clone()) {
            Some(ms) => {
                let min = answered.iter().copied().fold(f64::INFINITY, f64::min);
                results.push(
                    Figure::new(
                        SECTION,
                        format!("{function}_first_event_ms"),
                        format!("{function}: start to first event handled"),
                        ms,
                        "ms",
                    )
                    .display(format!(
                        "{} ms (median of {}; min {} ms; runtime ready after {} ms)",
                        fmt_num(ms),
                        answered.len(),
                        fmt_num(min),
                        init.map(fmt_num).unwrap_or_else(|| "?".into())
                    ))
                    .target(Target::at_most(STARTUP_TARGET_MS, "≤ 50 ms")),
                );
            }
            None => {
                let why = attempts
                    .first()
                    .map(|a| a.answer.clone())
                    .unwrap_or_default();
                results.push(Figure::missing(
                    SECTION,
                    format!("{function}_first_event_ms"),
                    format!("{function}: start to first event handled"),
                    "ms",
                    format!("no successful answer: {why}"),
                ));
            }
        }
        details.push(json!({
            "function": function,
            "binary": binary,
            "binary_bytes": size,
            "attempts": attempts,
        }));
    }
    s3.task.abort();
    emu.shutdown().await;
    results.note(
        SECTION,
        format!(
            "Start-up: the {} x86_64 binaries (the zips are arm64), each started {} times as Lambda starts a custom runtime, against a fake Runtime API and an in-memory S3 served by the bench and the in-process Pipefy emulator, all on 127.0.0.1; measured from the spawn to the `POST .../response` of the first event (median). sync-scheduled's first event is a dry run of a 10-row CSV table (config and table read from S3, schema fetched from Pipefy, report written); sync-upload's is a zero-byte upload (config read, object ignored); notify's is a clean run's on-success record (state read, nothing to post). Real Lambda adds the sandbox start and TLS to AWS.",
            p.profile,
            p.runs.max(1)
        ),
    );
    results.detail(SECTION, json!({ "startup": details }));
    Ok(())
}

fn zip_sizes(p: &Params, results: &mut Results) {
    let mut zips = Vec::new();
    for function in FUNCTIONS {
        let zip = p.lambda_dir.join(function).join("bootstrap.zip");
        let name = format!("{function}: release {} zip", p.zip_arch);
        match std::fs::metadata(&zip) {
            Ok(m) => {
                let bytes = m.len() as f64;
                results.push(
                    Figure::new(
                        SECTION,
                        format!("{function}_zip_mb"),
                        name,
                        bytes / 1e6,
                        "MB",
                    )
                    .display(format!("{:.2} MB ({} bytes)", bytes / 1e6, fmt_num(bytes)))
                    .target(Target::at_most(ZIP_TARGET_BYTES / 1e6, "≤ 6 MB")),
                );
                zips.push(
                    json!({"function": function, "zip": zip, "bytes": m.len(), "mib": bytes / MIB}),
                );
            }
            Err(_) => {
                let why = if p.skip_build {
                    "skipped: BENCH_SKIP_BUILD=1 and no zip from an earlier `make build`"
                        .to_string()
                } else {
                    format!(
                        "{} is missing: `make build` failed or did not run",
                        zip.display()
                    )
                };
                results.push(Figure::missing(
                    SECTION,
                    format!("{function}_zip_mb"),
                    name,
                    "MB",
                    why,
                ));
            }
        }
    }
    let note = if p.zip_arch == "arm64" {
        "Zip sizes: `target/lambda/<function>/bootstrap.zip` from `make build` (cargo lambda, release, arm64); MB = 10^6 bytes.".to_string()
    } else {
        format!("Zip sizes: the arm64 standard library is not installed on this machine (and cannot be downloaded here), so these are the same release zips built by cargo lambda for {}, in {}; arm64 zips are of about the same size. MB = 10^6 bytes.", p.zip_arch, p.lambda_dir.display())
    };
    results.note(SECTION, &note);
    results.detail("startup_zips", json!(zips));
}
