//! The three functions end to end: `cargo lambda watch` (the Runtime API) runs the real
//! binaries, `cargo lambda invoke --data-file` sends the events, moto serves S3 and Secrets
//! Manager, and the Pipefy emulator plays Pipefy.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use pipefy_emulator::{EmulatorConfig, EmulatorHandle, Faults};
use pipefy_sync_tests::lambda::LambdaWatch;
use pipefy_sync_tests::moto::{unique, Moto};
use pipefy_sync_tests::sync::{fast_emulator_config, field_text};
use serde_json::json;

const DEMO_TABLE: &str = include_str!("../../fixtures/demo/data/refined/customers/part-0001.csv");
const UPLOAD_TABLE: &str = include_str!("../../fixtures/demo/data/refined/customers/part 1+ü.csv");
const S3_EVENT: &str = include_str!("../../fixtures/demo/events/s3-upload.json");
const DRIFT_EVENT: &str = include_str!("../../fixtures/demo/events/drift.json");
const WEBHOOK_SECRET: &str = "pipefy-sync/slack-webhook";

/// What every test of this file shares: moto, the system and data buckets, a webhook
/// receiver, and one `cargo lambda watch`.
struct Env {
    moto: &'static Moto,
    system_bucket: String,
    data_bucket: String,
    webhook: Arc<Mutex<Vec<String>>>,
    /// The EventBridge bus the functions put runs' lifecycle events on.
    event_bus: String,
    watch: LambdaWatch,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn env() -> &'static Env {
    // Set up on a plain thread: tests call this from inside their tokio runtime, where a
    // nested runtime cannot block.
    ENV.get_or_init(|| {
        std::thread::spawn(setup)
            .join()
            .expect("test environment set up")
    })
}

fn setup() -> Env {
    {
        let moto = Moto::shared();
        let system_bucket = unique("pipefy-sync-sys");
        let data_bucket = unique("data-lake");
        let webhook = Arc::new(Mutex::new(Vec::new()));
        let receiver = webhook.clone();
        // A thread of its own with its own runtime: the receiver outlives every test's runtime.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |body: String| {
                        let receiver = receiver.clone();
                        async move {
                            receiver.lock().unwrap().push(body);
                            "ok"
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let hook_addr = rx.recv().unwrap();
        let event_bus = unique("pipefy-sync-runs");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s3 = moto.s3().await;
            for b in [&system_bucket, &data_bucket] {
                s3.create_bucket().bucket(b).send().await.unwrap();
            }
            let sm = moto.secrets().await;
            sm.create_secret()
                .name(WEBHOOK_SECRET)
                .secret_string(format!("http://{hook_addr}/hook"))
                .send()
                .await
                .unwrap();
            moto.eventbridge()
                .await
                .create_event_bus()
                .name(&event_bus)
                .send()
                .await
                .unwrap();
        });
        let mut fn_env = moto.env();
        fn_env.push(("PIPEFY_SYNC_BUCKET".into(), system_bucket.clone()));
        fn_env.push((
            "PIPEFY_SYNC_SLACK_WEBHOOK_SECRET".into(),
            WEBHOOK_SECRET.into(),
        ));
        fn_env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "Text".into()));
        fn_env.push(("PIPEFY_SYNC_EVENT_BUS".into(), event_bus.clone()));
        let watch = LambdaWatch::start(&fn_env);
        Env {
            moto,
            system_bucket,
            data_bucket,
            webhook,
            event_bus,
            watch,
        }
    }
}

/// A destination of its own for each test: its table folder, its token secret, its file.
struct Dest {
    name: String,
    table: String,
}

async fn emulator() -> EmulatorHandle {
    pipefy_emulator::start(fast_emulator_config())
        .await
        .unwrap()
}

async fn put(bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    let s3 = env().moto.s3().await;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap();
}

async fn get(bucket: &str, key: &str) -> Option<String> {
    let s3 = env().moto.s3().await;
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = out.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).to_string())
}

async fn list(bucket: &str, prefix: &str) -> Vec<String> {
    let s3 = env().moto.s3().await;
    let out = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// Writes the destination file (and, unless `token` is None, its token secret).
async fn destination(emu: &EmulatorHandle, token: Option<&str>, extra: &str) -> Dest {
    let e = env();
    let name = unique("fn")
        .replace('_', "-")
        .chars()
        .take(24)
        .collect::<String>();
    let table = format!("customers-{name}");
    let secret = format!("pipefy-sync/{name}");
    if let Some(token) = token {
        e.moto
            .secrets()
            .await
            .create_secret()
            .name(&secret)
            .secret_string(token)
            .send()
            .await
            .unwrap();
    }
    let yaml = format!(
        r#"name: {name}
pipe_id: "301"
operation: upsert_card
key: {{ columns: [customer_id], field: external_id }}
source: {{ bucket: {bucket}, layer: refined, table: {table} }}
mapping:
  title: {{ template: "{{name}} ({{plan}})" }}
  customer_name: name
  plan: plan
  seats: seats
  assignee_ids: owner_email
trigger:
  schedule: {{ expression: "rate(1 hour)" }}
  on_upload: {{ suffixes: [".csv"] }}
token: {{ secret: {secret} }}
endpoint: {endpoint}
{extra}
"#,
        bucket = e.data_bucket,
        endpoint = emu.graphql_url(),
    );
    put(
        &e.system_bucket,
        &format!("config/destinations/{name}.yaml"),
        yaml,
    )
    .await;
    Dest { name, table }
}

fn cards_of(emu: &EmulatorHandle, key: &str) -> usize {
    emu.snapshot()
        .cards
        .iter()
        .filter(|c| c.pipe_id == "301" && field_text(c.fields.get("external_id")) == key)
        .count()
}

fn mutations(emu: &EmulatorHandle) -> u64 {
    emu.stats().mutations.values().sum()
}

/// Blocking invocations run on a blocking thread so the in-process emulator keeps serving.
async fn invoke(
    function: &'static str,
    payload: serde_json::Value,
) -> pipefy_sync_tests::lambda::Invocation {
    tokio::task::spawn_blocking(move || env().watch.invoke(function, &payload))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_run_writes_cards_and_the_report_to_s3() {
    let emu = emulator().await;
    let d = destination(&emu, Some("demo-token"), "").await;
    put(
        &env().data_bucket,
        &format!("refined/{}/part-0001.csv", d.table),
        DEMO_TABLE,
    )
    .await;

    let answer = invoke(
        "sync-scheduled",
        json!({"destination": d.name, "scheduled_time": "2026-11-22T06:00:00Z"}),
    )
    .await;
    let summary = answer.expect_ok();
    assert_eq!(summary["status"], "completed", "{summary:#}");
    assert_eq!(summary["trigger"], "schedule");
    assert_eq!(summary["counts"]["read"], 44);
    // C0041 has plan Platinum (not an option): the mapping here has no date/account columns.
    assert_eq!(summary["counts"]["created"], 42, "{summary:#}");
    assert_eq!(summary["counts"]["skipped_by_preflight"], 2, "{summary:#}");
    assert_eq!(cards_of(&emu, "C0001"), 1);

    let run_id = summary["run_id"].as_str().unwrap();
    let objects = list(&env().system_bucket, &format!("reports/{}/", d.name)).await;
    let dir = objects
        .iter()
        .find(|k| k.ends_with("summary.json") && k.contains(run_id))
        .expect("summary.json in S3");
    let prefix = dir.trim_end_matches("summary.json");
    let stored: serde_json::Value =
        serde_json::from_str(&get(&env().system_bucket, dir).await.unwrap()).unwrap();
    assert_eq!(stored["counts"], summary["counts"]);
    let day = summary["started_at"].as_str().unwrap().get(..10).unwrap();
    let results = get(
        &env().system_bucket,
        &format!("reports/{}/results/{day}/{run_id}-part-00001.jsonl", d.name),
    )
    .await
    .expect("results part");
    assert_eq!(results.lines().count(), 44);
    assert!(
        results
            .lines()
            .all(|l| l.starts_with(&format!("{{\"run_id\":\"{run_id}\""))),
        "every result line carries its run: {results}"
    );
    let failed = get(
        &env().system_bucket,
        &format!("{prefix}failed/part-00001.jsonl"),
    )
    .await
    .expect("failed part");
    assert_eq!(failed.lines().count(), 2);
    assert!(
        failed.contains("NOT_AN_OPTION") && failed.contains("MISSING_REQUIRED"),
        "{failed}"
    );

    // The run page beside the summary, served as HTML, and the destination's history page.
    let page_key = format!("{prefix}report.html");
    assert_eq!(
        summary["report_page"],
        format!("s3://{}/{page_key}", env().system_bucket),
        "the response says where the run page is"
    );
    let s3 = env().moto.s3().await;
    let head = s3
        .head_object()
        .bucket(&env().system_bucket)
        .key(&page_key)
        .send()
        .await
        .expect("report.html in S3");
    assert_eq!(head.content_type(), Some("text/html; charset=utf-8"));
    let index = get(
        &env().system_bucket,
        &format!("reports/{}/index.html", d.name),
    )
    .await
    .expect("history page");
    assert!(index.contains(&format!("data-run=\"{run_id}\"")), "{index}");

    // notify's Slack message links the page through a presigned URL that opens it.
    let record = json!({
        "version": "1.0",
        "timestamp": "2026-11-22T06:00:05Z",
        "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:sync-scheduled", "condition": "Success", "approximateInvokeCount": 1},
        "requestPayload": {"destination": d.name},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": summary,
    });
    let notified = invoke("notify", record).await;
    let notified = notified.expect_ok();
    assert_eq!(notified["event"], "failed_rows", "{notified:#}");
    let message = notified["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("s3://{}/{page_key}", env().system_bucket))
            && !message.contains("X-Amz-Signature"),
        "the response names the page, without the signed link: {message}"
    );
    let post = env()
        .webhook
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains(&d.name))
        .cloned()
        .expect("a Slack post about the run");
    let link = post
        .split('<')
        .nth(1)
        .and_then(|l| l.split('|').next())
        .expect("a Slack link in the post");
    assert!(
        link.contains("X-Amz-Signature") && link.contains("report.html"),
        "{post}"
    );
    let opened = reqwest::get(link).await.expect("the link answers");
    assert_eq!(opened.status(), 200, "{link}");
    assert_eq!(
        opened.headers()["content-type"]
            .to_str()
            .unwrap_or_default(),
        "text/html; charset=utf-8"
    );
    assert!(opened.text().await.unwrap_or_default().contains(run_id));
    assert!(
        !env().watch.logs().contains("X-Amz-Signature"),
        "signed links stay out of the logs"
    );

    // The token never reaches the logs.
    assert!(!env().watch.logs().contains("demo-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_put_their_lifecycle_events_on_the_bus() {
    let emu = emulator().await;
    let e = env();
    let d = destination(&emu, Some("demo-token"), "").await;
    let no_token = destination(&emu, None, "").await;
    let queue = e
        .moto
        .bus_to_queue(
            &e.event_bus,
            &json!({"source": ["pipefy-sync"], "detail": {"destination": [d.name, no_token.name]}}),
        )
        .await;
    put(
        &e.data_bucket,
        &format!("refined/{}/part-0001.csv", d.table),
        DEMO_TABLE,
    )
    .await;
    let answer = invoke("sync-scheduled", json!({"destination": d.name})).await;
    let summary = answer.expect_ok();
    assert_eq!(summary["status"], "completed", "{summary:#}");
    let refused = invoke("sync-scheduled", json!({"destination": no_token.name})).await;
    assert!(refused.error.is_some(), "no token secret: the run fails");

    let events = e.moto.drain_queue(&queue, Duration::from_secs(15), 3).await;
    let of = |name: &str, kind: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|ev| ev["detail"]["destination"] == name && ev["detail-type"] == kind)
            .collect()
    };
    assert_eq!(events.len(), 3, "{events:#?}");
    for ev in &events {
        assert_eq!(ev["source"], "pipefy-sync", "{ev:#}");
    }
    let (started, completed) = (of(&d.name, "run started"), of(&d.name, "run completed"));
    assert_eq!((started.len(), completed.len()), (1, 1), "{events:#?}");
    let done = &completed[0]["detail"];
    assert_eq!(started[0]["detail"]["run_id"], summary["run_id"]);
    assert_eq!(done["run_id"], summary["run_id"]);
    assert_eq!(done["trigger"], "manual");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["counts"], summary["counts"]);
    assert_eq!(done["report_location"], summary["report_location"]);
    let failed = of(&no_token.name, "run failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let reason = failed[0]["detail"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("pipefy-sync/{}", no_token.name)),
        "the secret it could not read: {reason}"
    );
    assert!(!failed[0]["detail"]["run_id"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_event_with_an_encoded_key_and_the_same_event_twice() {
    let emu = emulator().await;
    let d = destination(&emu, Some("demo-token"), "").await;
    let key = format!("refined/{}/part 1+ü.csv", d.table);
    put(&env().data_bucket, &key, UPLOAD_TABLE).await;
    // The repo's event fixture, pointed at this test's bucket and table; S3 encodes the key.
    let event = S3_EVENT
        .replace("${DATA_BUCKET}", &env().data_bucket)
        .replace("${OBJECT_SIZE}", &UPLOAD_TABLE.len().to_string())
        .replace("refined/customers/", &format!("refined/{}/", d.table));
    assert!(event.contains("part+1%2B%C3%BC.csv"));
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();

    let first = invoke("sync-upload", event.clone()).await;
    let run = &first.expect_ok()["runs"][0];
    assert_eq!(run["counts"]["created"], 5, "{:#}", first.expect_ok());
    assert_eq!(run["source_files"][0], key);
    assert_eq!(cards_of(&emu, "C0101"), 1);

    // S3 delivers at least once: the same event again finds nothing to do.
    let before = mutations(&emu);
    let second = invoke("sync-upload", event).await;
    let run = &second.expect_ok()["runs"][0];
    assert_eq!(run["counts"]["created"], 0);
    assert_eq!(run["counts"]["unchanged"], 5);
    assert_eq!(
        mutations(&emu),
        before,
        "the second delivery sent mutations"
    );
    assert_eq!(cards_of(&emu, "C0101"), 1);

    // Objects nobody syncs, markers and empty objects are ignored with a reason.
    let ignored = json!({"Records": [
        {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": env().data_bucket}, "object": {"key": "raw/other/x.csv", "size": 10}}},
        {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": env().data_bucket}, "object": {"key": format!("refined/{}/_SUCCESS", d.table), "size": 0}}},
    ]});
    let answer = invoke("sync-upload", ignored).await;
    let out = answer.expect_ok();
    assert_eq!(out["runs"].as_array().unwrap().len(), 0);
    assert_eq!(out["ignored"].as_array().unwrap().len(), 2, "{out:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_dry_run_writes_nothing_to_pipefy() {
    let emu = emulator().await;
    let d = destination(&emu, Some("demo-token"), "").await;
    put(
        &env().data_bucket,
        &format!("refined/{}/part-0001.csv", d.table),
        DEMO_TABLE,
    )
    .await;
    let answer = invoke(
        "sync-scheduled",
        json!({"destination": d.name, "dry_run": true}),
    )
    .await;
    let summary = answer.expect_ok();
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["trigger"], "manual");
    assert_eq!(
        summary["counts"]["created"], 42,
        "would-create rows: {summary:#}"
    );
    assert_eq!(mutations(&emu), 0);
    assert_eq!(cards_of(&emu, "C0001"), 0);
    // No state was written.
    assert!(list(&env().system_bucket, &format!("state/{}/", d.name))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_payload_reads_pipefy_back_and_writes_its_report_to_s3() {
    let emu = emulator().await;
    let d = destination(&emu, Some("demo-token"), "sync: { track_edits: true }").await;
    put(
        &env().data_bucket,
        &format!("refined/{}/part-0001.csv", d.table),
        UPLOAD_TABLE,
    )
    .await;
    let run = invoke("sync-scheduled", json!({"destination": d.name})).await;
    assert_eq!(run.expect_ok()["counts"]["created"], 5);
    let before = mutations(&emu);

    // The repo's drift event, pointed at this test's destination.
    let event: serde_json::Value =
        serde_json::from_str(&DRIFT_EVENT.replace("customers-onboarding", &d.name)).unwrap();
    let answer = invoke("sync-scheduled", event).await;
    let summary = answer.expect_ok();
    assert_eq!(summary["kind"], "drift", "{summary:#}");
    assert_eq!(summary["counts"]["keys_in_ledger"], 5, "{summary:#}");
    assert_eq!(summary["counts"]["in_sync"], 5, "{summary:#}");
    assert_eq!(mutations(&emu), before, "drift wrote to Pipefy");
    let run_id = summary["run_id"].as_str().unwrap();
    let objects = list(&env().system_bucket, &format!("reports/{}/", d.name)).await;
    let lines = objects
        .iter()
        .find(|k| k.contains(run_id) && k.contains("/drift/part-"))
        .expect("drift lines in S3");
    let text = get(&env().system_bucket, lines).await.unwrap();
    let in_sync = text
        .lines()
        .filter(|l| l.contains("\"state\":\"in_sync\""))
        .count();
    assert_eq!(in_sync, 5, "{text}");
    // The demo pipe's own card, which this destination never wrote.
    assert!(text.contains("\"state\":\"unknown_to_ledger\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setups_and_events_are_clear_errors_and_write_nothing() {
    let emu = emulator().await;
    // A wrong token.
    let wrong = destination(&emu, Some("not-a-token"), "").await;
    put(
        &env().data_bucket,
        &format!("refined/{}/part-0001.csv", wrong.table),
        DEMO_TABLE,
    )
    .await;
    let answer = invoke("sync-scheduled", json!({"destination": wrong.name})).await;
    let (kind, message) = answer.error.clone().expect("wrong token fails");
    assert_eq!(kind, "PipefyUnauthorized", "{}", answer.raw);
    assert!(!message.is_empty(), "{}", answer.raw);
    assert!(!message.contains("not-a-token"), "{message}");
    assert!(!answer.raw.contains("not-a-token"), "{}", answer.raw);
    assert!(!env().watch.logs().contains("not-a-token"));
    assert!(list(
        &env().system_bucket,
        &format!("state/{}/manifest.json", wrong.name)
    )
    .await
    .is_empty());

    // A missing secret.
    let no_secret = destination(&emu, None, "").await;
    let answer = invoke("sync-scheduled", json!({"destination": no_secret.name})).await;
    let (kind, message) = answer.error.clone().expect("missing secret fails");
    assert_eq!(kind, "SecretUnavailable", "{}", answer.raw);
    assert!(
        message.contains(&format!("pipefy-sync/{}", no_secret.name)),
        "{message}"
    );

    // A destination whose endpoint would send the token to another host: refused before any
    // request carries it.
    let elsewhere = destination(&emu, Some("tok-ALLOWLIST-9"), "").await;
    let file = format!("config/destinations/{}.yaml", elsewhere.name);
    let yaml = get(&env().system_bucket, &file).await.unwrap();
    let yaml = yaml.replace(
        &format!("endpoint: {}", emu.graphql_url()),
        "endpoint: https://collector.example.net/graphql",
    );
    assert!(yaml.contains("collector.example.net"));
    put(&env().system_bucket, &file, yaml).await;
    let answer = invoke("sync-scheduled", json!({"destination": elsewhere.name})).await;
    let (kind, message) = answer.error.clone().expect("a foreign endpoint fails");
    assert_eq!(kind, "DestinationInvalid", "{}", answer.raw);
    assert!(message.contains("collector.example.net"), "{message}");
    assert!(!answer.raw.contains("tok-ALLOWLIST-9"), "{}", answer.raw);
    assert!(!env().watch.logs().contains("tok-ALLOWLIST-9"));

    // An unknown destination / a missing destination file.
    let answer = invoke(
        "sync-scheduled",
        json!({"destination": "no-such-destination"}),
    )
    .await;
    let (kind, message) = answer.error.clone().expect("unknown destination fails");
    assert_eq!(kind, "UnknownDestination", "{}", answer.raw);
    assert!(message.contains("no-such-destination"), "{message}");

    // Malformed events.
    for (function, payload) in [
        ("sync-scheduled", json!({"destinaton": "x"})),
        ("sync-scheduled", json!(["not", "an", "object"])),
        ("sync-upload", json!({"Records": "nope"})),
        ("notify", json!({"hello": "world"})),
    ] {
        let answer = invoke(function, payload.clone()).await;
        let (kind, _) = answer
            .error
            .clone()
            .unwrap_or_else(|| panic!("{function} accepted {payload}"));
        assert_eq!(kind, "InvalidEvent", "{function} {payload}: {}", answer.raw);
    }
    assert_eq!(mutations(&emu), 0, "nothing half-written to Pipefy");
    assert!(env().watch.logs().contains("InvalidEvent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_posts_on_failure_and_on_recovery() {
    let name = unique("notify-dest");
    let record = |condition: &str, response: serde_json::Value, error: Option<&str>| {
        json!({
            "version": "1.0",
            "timestamp": "2026-11-22T06:00:05Z",
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:sync-scheduled", "condition": condition, "approximateInvokeCount": 3},
            "requestPayload": {"destination": name},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": error},
            "responsePayload": response,
        })
    };
    let hooks = || {
        env()
            .webhook
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains(&name))
            .cloned()
            .collect::<Vec<_>>()
    };

    let failed = invoke("notify", record("RetriesExhausted", json!({"errorType": "PipefyUnauthorized", "errorMessage": "Pipefy rejected the credentials"}), Some("Unhandled"))).await;
    assert_eq!(failed.expect_ok()["event"], "failed");
    assert_eq!(failed.expect_ok()["posted"], true);
    let got = hooks();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("PipefyUnauthorized"), "{got:?}");

    let ok_summary = json!({"run_id": "r2", "destination": name, "trigger": "schedule", "status": "completed", "dry_run": false,
        "started_at": "2026-11-22T06:00:00Z", "source_files": [], "invocations": 1,
        "counts": {"read": 3, "created": 3, "updated": 0, "unchanged": 0, "skipped_by_preflight": 0, "failed": 0, "not_attempted": 0, "removed": 0, "requests": 2, "retries": 0, "throttles": 0}});
    let recovered = invoke("notify", record("Success", ok_summary.clone(), None)).await;
    assert_eq!(recovered.expect_ok()["event"], "recovered");
    assert_eq!(hooks().len(), 2);
    assert!(hooks()[1].contains("recovered"));

    // Still fine: nothing more to say.
    let quiet = invoke("notify", record("Success", ok_summary, None)).await;
    assert_eq!(quiet.expect_ok()["event"], "ok");
    assert_eq!(hooks().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_concurrent_invocations_of_one_destination_make_no_duplicates() {
    let emu = pipefy_emulator::start(EmulatorConfig {
        faults: Faults {
            latency_ms: 20,
            ..Faults::default()
        },
        ..fast_emulator_config()
    })
    .await
    .unwrap();
    let d = destination(&emu, Some("demo-token"), "").await;
    let mut rows = String::from("customer_id,name,plan,seats,owner_email\n");
    for i in 0..300 {
        rows.push_str(&format!("K{i:05},Name {i},Pro,{i},ana.souza@example.com\n"));
    }
    put(
        &env().data_bucket,
        &format!("refined/{}/big.csv", d.table),
        rows,
    )
    .await;
    let mut handles = Vec::new();
    for _ in 0..5 {
        let name = d.name.clone();
        handles.push(tokio::spawn(invoke(
            "sync-scheduled",
            json!({"destination": name}),
        )));
    }
    let mut statuses = Vec::new();
    for h in handles {
        let answer = h.await.unwrap();
        statuses.push(answer.expect_ok()["status"].as_str().unwrap().to_string());
    }
    assert!(statuses.iter().any(|s| s == "completed"), "{statuses:?}");
    let snapshot = emu.snapshot();
    for i in 0..300 {
        let key = format!("K{i:05}");
        let n = snapshot
            .cards
            .iter()
            .filter(|c| field_text(c.fields.get("external_id")) == key)
            .count();
        assert_eq!(n, 1, "key {key} has {n} cards (statuses {statuses:?})");
    }
}

/// Waits for the run's report to say it completed; its summary.
async fn completed_summary(
    bucket: &str,
    destination: &str,
    run_id: &str,
    logs: impl Fn() -> String,
) -> serde_json::Value {
    let mut summary = serde_json::Value::Null;
    for _ in 0..240 {
        let keys = list(bucket, &format!("reports/{destination}/")).await;
        if let Some(k) = keys
            .iter()
            .find(|k| k.contains(run_id) && k.ends_with("summary.json"))
        {
            summary = serde_json::from_str(&get(bucket, k).await.unwrap()).unwrap();
            if summary["status"] == "completed" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(summary["status"], "completed", "{summary:#}\n{}", logs());
    // One report: one summary for the run.
    let summaries = list(bucket, &format!("reports/{destination}/"))
        .await
        .into_iter()
        .filter(|k| k.ends_with("summary.json"))
        .count();
    assert_eq!(summaries, 1);
    summary
}

fn hand_off_rows(prefix: &str, range: std::ops::Range<usize>) -> String {
    let mut rows = String::from("customer_id,name,plan,seats,owner_email\n");
    for i in range {
        rows.push_str(&format!(
            "{prefix}{i:05},Name {i},Free,{i},bruno.lima@example.com\n"
        ));
    }
    rows
}

fn assert_one_card_each(emu: &EmulatorHandle, prefix: &str, range: std::ops::Range<usize>) {
    let snapshot = emu.snapshot();
    for i in range {
        let key = format!("{prefix}{i:05}");
        assert_eq!(
            snapshot
                .cards
                .iter()
                .filter(|c| field_text(c.fields.get("external_id")) == key)
                .count(),
            1,
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_both_sync_functions_hand_off_and_still_create_every_card_once_with_one_report() {
    // A watch of its own whose functions stop after 0.4 s and continue in a new invocation.
    // Each function runs under its own name, so a hand-off invokes the function that started
    // the run: sync-upload must take its own continuation.
    let e = env();
    let mut fn_env = e.moto.env();
    fn_env.push(("PIPEFY_SYNC_BUCKET".into(), e.system_bucket.clone()));
    fn_env.push(("PIPEFY_SYNC_TIME_BUDGET_SECONDS".into(), "0.4".into()));
    let watch = tokio::task::spawn_blocking(move || LambdaWatch::start(&fn_env))
        .await
        .unwrap();
    let watch = Arc::new(watch);

    let emu = pipefy_emulator::start(EmulatorConfig {
        faults: Faults {
            latency_ms: 60,
            ..Faults::default()
        },
        ..fast_emulator_config()
    })
    .await
    .unwrap();
    let d = destination(
        &emu,
        Some("demo-token"),
        "limits: { mutations_per_request: 5, concurrency: 1 }",
    )
    .await;
    put(
        &e.data_bucket,
        &format!("refined/{}/rows.csv", d.table),
        hand_off_rows("H", 0..150),
    )
    .await;

    let w = watch.clone();
    let name = d.name.clone();
    let first = tokio::task::spawn_blocking(move || {
        w.invoke("sync-scheduled", &json!({"destination": name}))
    })
    .await
    .unwrap();
    let first = first.expect_ok().clone();
    assert_eq!(first["status"], "handed_off", "{first:#}");
    let run_id = first["run_id"].as_str().unwrap().to_string();
    let summary = completed_summary(&e.system_bucket, &d.name, &run_id, || watch.logs()).await;
    assert!(
        summary["invocations"].as_u64().unwrap() >= 3,
        "at least two hand-offs: {summary:#}"
    );
    assert_eq!(summary["counts"]["created"], 150, "{summary:#}");
    assert_one_card_each(&emu, "H", 0..150);

    // An upload of two files that needs more than one invocation: the continuation goes to
    // sync-upload, stays scoped to the uploaded files, and ends in one report.
    let u = destination(
        &emu,
        Some("demo-token"),
        "limits: { mutations_per_request: 5, concurrency: 1 }",
    )
    .await;
    let keys = [
        format!("refined/{}/up-1.csv", u.table),
        format!("refined/{}/up-2.csv", u.table),
    ];
    put(&e.data_bucket, &keys[0], hand_off_rows("U", 0..40)).await;
    put(&e.data_bucket, &keys[1], hand_off_rows("U", 40..80)).await;
    // A file of the same table that was not uploaded: an upload run must not read it.
    put(
        &e.data_bucket,
        &format!("refined/{}/other.csv", u.table),
        hand_off_rows("X", 0..5),
    )
    .await;
    let records: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| json!({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": e.data_bucket}, "object": {"key": k, "size": 100}}}))
        .collect();
    let w = watch.clone();
    let upload = tokio::task::spawn_blocking(move || {
        w.invoke("sync-upload", &json!({ "Records": records }))
    })
    .await
    .unwrap();
    let run = upload.expect_ok()["runs"][0].clone();
    assert_eq!(run["status"], "handed_off", "{run:#}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let summary = completed_summary(&e.system_bucket, &u.name, &run_id, || watch.logs()).await;
    assert!(summary["invocations"].as_u64().unwrap() >= 2, "{summary:#}");
    assert_eq!(summary["counts"]["created"], 80, "{summary:#}");
    assert_eq!(summary["source_files"], json!(keys), "{summary:#}");
    assert_one_card_each(&emu, "U", 0..80);
    assert_eq!(
        cards_of(&emu, "X00000"),
        0,
        "the file that was not uploaded is not read"
    );
    assert!(
        !watch.logs().contains("InvalidEvent"),
        "a continuation was refused: {}",
        watch.logs()
    );
}
