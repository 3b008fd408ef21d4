//! Everything around GraphQL: auth (PAT, service accounts, 401 shapes), the rate limit,
//! fault injection, the inspection endpoints and the binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pipefy_emulator::{EmulatorConfig, Faults, Fixture};
use serde_json::{json, Value};

const ME: &str = "{ me { id } }";

async fn status_and_body(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn missing_or_malformed_authorization_gives_401_with_errors_title() {
    let e = emu().await;
    let body = json!({"query": ME});
    for header in [
        None,
        Some("demo-token"),
        Some("Token demo-token"),
        Some("Bearer "),
        Some(""),
    ] {
        let mut rb = e.http.post(e.h.graphql_url()).json(&body);
        if let Some(h) = header {
            rb = rb.header("Authorization", h);
        }
        let (s, b) = status_and_body(rb.send().await.unwrap()).await;
        assert_eq!(s, 401, "{header:?}");
        assert_eq!(b["errors"][0]["title"], "Unauthorized", "{header:?}: {b}");
    }
    let (s, b) = status_and_body(e.post_as(Some("not-a-token"), body.clone()).await).await;
    assert_eq!(s, 401);
    assert_eq!(b["error"], "invalid_token");
    assert_eq!(b["error_description"], "The access token is invalid");
    assert_eq!(e.h.stats().status_401, 6);
    let (s, b) = status_and_body(e.post_as(Some(TOKEN), body).await).await;
    assert_eq!((s, b["data"]["me"]["id"].clone()), (200, json!("1001")));
}

#[tokio::test]
async fn service_account_tokens_via_client_credentials() {
    let mut f = Fixture::demo();
    f.service_accounts[0].expires_in = 1;
    let e = emu_with(EmulatorConfig::with_fixture(f)).await;
    let r = e
        .http
        .post(e.h.token_url())
        .json(&json!({"grant_type": "client_credentials", "client_id": "demo-sa-client", "client_secret": "demo-sa-secret"}))
        .send()
        .await
        .unwrap();
    let (s, tok) = status_and_body(r).await;
    assert_eq!(s, 200);
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 1);
    let access = tok["access_token"].as_str().unwrap().to_string();
    let (s, b) = status_and_body(e.post_as(Some(&access), json!({"query": ME})).await).await;
    assert_eq!((s, b["data"]["me"]["id"].clone()), (200, json!("1004")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, b) = status_and_body(e.post_as(Some(&access), json!({"query": ME})).await).await;
    assert_eq!(s, 401);
    assert_eq!(
        b,
        json!({"error": "invalid_token", "error_description": "The access token expired", "state": "unauthorized"})
    );

    // Form body with HTTP Basic client authentication (Go's clientcredentials).
    let r = e
        .http
        .post(e.h.token_url())
        .basic_auth("demo-sa-client", Some("demo-sa-secret"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    let (s, tok) = status_and_body(r).await;
    assert_eq!(s, 200, "{tok}");
    assert!(tok["access_token"].is_string());
    assert_eq!(e.h.stats().oauth_tokens_issued, 2);

    // Expiring on demand.
    let e = emu().await;
    let tok: Value = e
        .http
        .post(e.h.token_url())
        .json(&json!({"grant_type": "client_credentials", "client_id": "demo-sa-client", "client_secret": "demo-sa-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tok["access_token"].as_str().unwrap();
    assert_eq!(tok["expires_in"], 3600);
    assert_eq!(
        e.post_as(Some(access), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        200
    );
    let r = e
        .http
        .post(format!("{}/_emulator/expire-tokens", e.h.base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        e.post_as(Some(access), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        401
    );

    // Bad credentials, bad grant.
    let bad = |body: Value| {
        let http = e.http.clone();
        let url = e.h.token_url();
        async move { status_and_body(http.post(url).json(&body).send().await.unwrap()).await }
    };
    let (s, b) = bad(json!({"grant_type": "client_credentials", "client_id": "demo-sa-client", "client_secret": "nope"})).await;
    assert_eq!((s, b["error"].clone()), (401, json!("invalid_client")));
    let (s, b) = bad(json!({"grant_type": "password", "client_id": "demo-sa-client", "client_secret": "demo-sa-secret"})).await;
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn a_service_account_sees_nothing_until_it_is_a_member() {
    let mut f = Fixture::demo();
    for p in &mut f.pipes {
        p.members.retain(|m| m.user_id != "1004");
    }
    let e = emu_with(EmulatorConfig::with_fixture(f)).await;
    let tok: Value = e
        .http
        .post(e.h.token_url())
        .json(&json!({"grant_type": "client_credentials", "client_id": "demo-sa-client", "client_secret": "demo-sa-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tok["access_token"].as_str().unwrap();
    let body = e
        .gql_as(access, "{ pipe(id: 301) { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    let body = e
        .gql_as(access, "{ table(id: \"tbl_accounts\") { id } }", json!({}))
        .await;
    assert_eq!(body["data"]["table"]["id"], "tbl_accounts");
}

#[tokio::test]
async fn per_token_rate_limit_answers_429() {
    let e = emu_with(EmulatorConfig {
        rate_limit_requests: 5,
        rate_limit_window: Duration::from_millis(600),
        ..EmulatorConfig::with_fixture(fixture_with_more_tokens())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            e.post_as(Some(TOKEN), json!({"query": ME}))
                .await
                .status()
                .as_u16(),
            200
        );
    }
    let r = e.post_as(Some(TOKEN), json!({"query": ME})).await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_none());
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS");
    // Another token has its own budget.
    assert_eq!(
        e.post_as(Some("bruno-token"), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        200
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(
        e.post_as(Some(TOKEN), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        200
    );
    let st = e.h.stats();
    assert_eq!((st.status_429, st.rate_limited), (1, 1));
    assert_eq!(st.total, 8);

    let e = emu_with(EmulatorConfig {
        rate_limit_requests: 1,
        retry_after_secs: Some(2),
        ..EmulatorConfig::default()
    })
    .await;
    e.post_as(Some(TOKEN), json!({"query": ME})).await;
    let r = e.post_as(Some(TOKEN), json!({"query": ME})).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
}

fn create_doc(key: &str) -> Value {
    json!({"query": format!(
        "mutation CreateIt {{ c: createCard(input: {{pipe_id: 301, fields_attributes: [{{field_id: \"external_id\", field_value: \"{key}\"}}, {{field_id: \"customer_name\", field_value: \"N\"}}]}}) {{ card {{ id }} }} }}"
    )})
}

#[tokio::test]
async fn latency_faults_delay_requests_and_mutations() {
    let e = emu().await;
    e.h.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let t = Instant::now();
    e.post_as(Some(TOKEN), json!({"query": ME})).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    e.h.set_faults(Faults {
        latency_per_mutation_ms: 100,
        ..Faults::default()
    });
    let t = Instant::now();
    let r = e
        .gql("mutation { a: deleteCard(input: {id: 900001}) { success } b: deleteCard(input: {id: 900002}) { success } c: deleteCard(input: {id: 900003}) { success } }", json!({}))
        .await;
    assert!(r.get("errors").is_none());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    e.post_as(Some(TOKEN), json!({"query": ME})).await;
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "queries are not delayed per mutation"
    );
}

#[tokio::test]
async fn server_errors_are_not_applied() {
    let e = emu().await;
    e.h.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    for i in 0..5 {
        let r = e.post_as(Some(TOKEN), create_doc(&format!("E-{i}"))).await;
        assert!(
            [500, 502, 503].contains(&r.status().as_u16()),
            "{}",
            r.status()
        );
    }
    assert_eq!(e.h.snapshot().cards_in_pipe("301").count(), 1);
    assert_eq!(e.h.stats().faults.error_5xx, 5);
}

#[tokio::test]
async fn connection_resets_close_without_an_answer_and_apply_nothing() {
    let e = emu().await;
    e.h.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let err = e
        .http
        .post(e.h.graphql_url())
        .bearer_auth(TOKEN)
        .json(&create_doc("R-1"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_request() || err.is_connect() || err.is_body(),
        "{err:?}"
    );
    assert_eq!(
        e.h.snapshot()
            .count_cards_where("301", "external_id", "R-1"),
        0
    );
    assert_eq!(e.h.stats().faults.resets, 1);
    // The server keeps serving.
    e.h.set_faults(Faults::default());
    assert_eq!(
        e.post_as(Some(TOKEN), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn timeouts_hold_the_request_and_may_apply_it() {
    let e = emu().await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    e.h.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_hold_ms: 1500,
        timeout_applied_share: 1.0,
        ..Faults::default()
    });
    let err = quick
        .post(e.h.graphql_url())
        .bearer_auth(TOKEN)
        .json(&create_doc("T-1"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        e.h.snapshot()
            .count_cards_where("301", "external_id", "T-1"),
        1,
        "applied before the hold"
    );
    e.h.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_hold_ms: 1500,
        timeout_applied_share: 0.0,
        ..Faults::default()
    });
    let err = quick
        .post(e.h.graphql_url())
        .bearer_auth(TOKEN)
        .json(&create_doc("T-2"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(
        e.h.snapshot()
            .count_cards_where("301", "external_id", "T-2"),
        0
    );
    let st = e.h.stats();
    assert_eq!((st.faults.timeouts, st.faults.timeouts_applied), (2, 1));
    // A patient client gets a 504 after the hold.
    e.h.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_hold_ms: 100,
        timeout_applied_share: 0.0,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(
        e.post_as(Some(TOKEN), json!({"query": ME}))
            .await
            .status()
            .as_u16(),
        504
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn applied_but_reported_failed_per_alias() {
    let e = emu().await;
    e.h.set_faults(Faults {
        applied_but_failed_rate: 1.0,
        ..Faults::default()
    });
    let r = e.post_as(Some(TOKEN), create_doc("A-1")).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"c": null}));
    assert_eq!(body["errors"][0]["message"], "Something went wrong");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "INTERNAL_SERVER_ERROR"
    );
    assert_eq!(body["errors"][0]["path"], json!(["c"]));
    assert_eq!(
        e.h.snapshot()
            .count_cards_where("301", "external_id", "A-1"),
        1,
        "the mutation took effect"
    );
    // A failing mutation is not "applied".
    let body = e
        .gql(
            "mutation { x: deleteCard(input: {id: 1}) { success } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "PERMISSION_DENIED");
    assert_eq!(e.h.stats().faults.applied_but_failed, 1);
    // With a share, some aliases of one document fail and all are applied.
    e.h.set_faults(Faults {
        seed: 3,
        applied_but_failed_rate: 0.5,
        ..Faults::default()
    });
    let mut doc = String::from("mutation {");
    for i in 0..20 {
        doc.push_str(&format!(" c{i}: createCard(input: {{pipe_id: 301, fields_attributes: [{{field_id: \"external_id\", field_value: \"S-{i}\"}}, {{field_id: \"customer_name\", field_value: \"N\"}}]}}) {{ card {{ id }} }}"));
    }
    doc.push('}');
    let body = e.gql(&doc, json!({})).await;
    let failed = body["errors"].as_array().map(Vec::len).unwrap_or(0);
    assert!(failed > 0 && failed < 20, "{failed}");
    let snap = e.h.snapshot();
    assert_eq!(
        (0..20)
            .filter(|i| snap.count_cards_where("301", "external_id", &format!("S-{i}")) == 1)
            .count(),
        20
    );
}

#[tokio::test]
async fn throttle_bursts_answer_the_next_requests_with_429() {
    let e = emu().await;
    e.h.set_faults(Faults {
        throttle_burst: 2,
        ..Faults::default()
    });
    let s: Vec<u16> = futures_statuses(&e, 3).await;
    assert_eq!(s, vec![429, 429, 200]);
    let st = e.h.stats();
    assert_eq!(
        (st.faults.throttled, st.status_429, st.rate_limited),
        (2, 2, 0)
    );
}

async fn futures_statuses(e: &Emu, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            e.post_as(Some(TOKEN), json!({"query": ME}))
                .await
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed_and_settable_over_http() {
    let e = emu().await;
    let url = format!("{}/_emulator/faults", e.h.base_url());
    let run = |seed: u64| {
        let e = &e;
        let url = url.clone();
        async move {
            let r = e
                .http
                .post(&url)
                .json(&json!({"seed": seed, "error_5xx_rate": 0.5}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            futures_statuses(e, 24).await
        }
    };
    let a = run(42).await;
    let b = run(42).await;
    let c = run(7).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains(&200) && a.iter().any(|s| *s >= 500));
    let got: Value = e.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["seed"], 7);
    assert_eq!(got["error_5xx_rate"], 0.5);
    assert_eq!(e.h.faults().seed, 7);
    let r = e
        .http
        .post(&url)
        .json(&json!({"no_such_fault": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn inspection_state_stats_and_reset() {
    let e = emu().await;
    let base = e.h.base_url();
    let r = e.post_as(Some(TOKEN), create_doc("I-1")).await;
    assert_eq!(r.status().as_u16(), 200);
    e.gql(
        "mutation { deleteCard(input: {id: 900003}) { success } }",
        json!({}),
    )
    .await;
    e.gql("query Look { card(id: 900004) { id } }", json!({}))
        .await;

    let state: Value = e
        .http
        .get(format!("{base}/_emulator/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cards = state["cards"].as_array().unwrap();
    let created = cards
        .iter()
        .find(|c| c["fields"]["external_id"] == "I-1")
        .unwrap();
    assert_eq!(created["pipe_id"], "301");
    assert_eq!(created["phase_id"], "3011");
    let acme = cards.iter().find(|c| c["id"] == "900004").unwrap();
    assert_eq!(acme["labels"], json!(["310001"]));
    assert_eq!(acme["assignees"], json!(["1002"]));
    assert_eq!(acme["parent_ids"], json!(["900001"]));
    assert_eq!(acme["fields"]["seats"], json!(120));
    assert!(cards.iter().all(|c| c["id"] != "900003"));
    assert_eq!(state["records"].as_array().unwrap().len(), 3);

    let stats: Value = e
        .http
        .get(format!("{base}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_operation"]["CreateIt"], 1);
    assert_eq!(stats["by_operation"]["Look"], 1);
    assert_eq!(stats["by_operation"]["<anonymous>"], 1);
    assert_eq!(stats["mutations"]["createCard"], 1);
    assert_eq!(stats["mutations"]["deleteCard"], 1);
    assert_eq!(stats["queries"]["card"], 1);
    assert_eq!(stats["status_429"], 0);
    assert_eq!(stats["faults"]["resets"], 0);

    let r = e
        .http
        .post(format!("{base}/_emulator/reset"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let snap = e.h.snapshot();
    assert!(snap.card("900003").is_some());
    assert_eq!(snap.count_cards_where("301", "external_id", "I-1"), 0);
    assert_eq!(e.h.stats().total, 0);
    // Ids continue from the fixture again after a reset.
    let id = e.create_customer("I-2", json!({})).await;
    assert_eq!(id, "900005");

    e.h.reset_stats();
    e.gql(ME, json!({})).await;
    let r = e
        .http
        .post(format!("{base}/_emulator/stats/reset"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(e.h.stats().total, 0);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let e = emu().await;
    let url = e.h.graphql_url();
    e.h.shutdown().await;
    let http = reqwest::Client::new();
    assert!(http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"query": ME}))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn binary_prints_its_address_and_serves_until_terminated() {
    use tokio::io::AsyncBufReadExt;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/emulator/demo.json"
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipefy-emulator"))
        .args([
            "--port",
            "0",
            "--fixture",
            fixture,
            "--rate-limit-requests",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(base.starts_with("http://127.0.0.1:"));
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(port > 0);
    let http = reqwest::Client::new();
    let send = || {
        http.post(format!("{base}/graphql"))
            .bearer_auth(TOKEN)
            .json(&json!({"query": ME}))
            .send()
    };
    let r: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(r["data"]["me"]["id"], "1001");
    send().await.unwrap();
    assert_eq!(
        send().await.unwrap().status().as_u16(),
        429,
        "--rate-limit-requests applies"
    );
    let pid = child.id().unwrap();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // A missing fixture is an error exit.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipefy-emulator"))
        .args(["--port", "0", "--fixture", "/nonexistent/fixture.json"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read fixture"));
}

#[tokio::test]
async fn fixtures_load_from_files_and_bad_ones_are_rejected() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/emulator/demo.json"
    );
    let f = Fixture::from_file(path).unwrap();
    assert_eq!(f, Fixture::demo());
    assert_eq!(f.pipe("301").unwrap().name, "Customer onboarding");
    assert_eq!(f.pipe("302").unwrap().name, "Projects");
    assert_eq!(f.table("tbl_accounts").unwrap().name, "Accounts");

    let mut bad = Fixture::demo();
    bad.pipes[0].start_form_fields[0].uuid = "not-a-uuid".into();
    assert!(pipefy_emulator::start(EmulatorConfig::with_fixture(bad))
        .await
        .is_err());
    let mut bad = Fixture::demo();
    bad.cards[0]
        .fields
        .insert("project_code".into(), json!(["a", "b"]));
    assert!(pipefy_emulator::start(EmulatorConfig::with_fixture(bad))
        .await
        .is_err());
    let mut bad = Fixture::demo();
    bad.tokens[0].user_id = "nobody".into();
    assert!(pipefy_emulator::start(EmulatorConfig::with_fixture(bad))
        .await
        .is_err());
    let mut bad = Fixture::demo();
    bad.cards[0].due_date = Some("soon".into());
    assert!(pipefy_emulator::start(EmulatorConfig::with_fixture(bad))
        .await
        .is_err());
    let mut bad = Fixture::demo();
    bad.tables[0].title_field_id = Some("nope".into());
    assert!(pipefy_emulator::start(EmulatorConfig::with_fixture(bad))
        .await
        .is_err());
    assert!(Fixture::from_json("{\"pipes\": [], \"surprise\": 1}").is_err());

    // Fixture values are normalised like client writes.
    let mut f = Fixture::demo();
    f.cards[0].due_date = Some("2024-08-08T16:46:00-03:00".into());
    let emu = pipefy_emulator::start(EmulatorConfig::with_fixture(f))
        .await
        .unwrap();
    let snap = emu.snapshot();
    let c = snap.card("900001").unwrap();
    assert_eq!(c.due_date.as_deref(), Some("2024-08-08T19:46:00Z"));
    assert_eq!(snap.card("900002").unwrap().fields["budget"], json!(8500.5));
    assert_eq!(snap.card("900004").unwrap().fields["mrr"], json!(4999.9));
}
