//! The command line on local folders: a run whose source, state and reports are folders and
//! whose token comes from the environment never loads AWS configuration, so it prints its
//! summary and nothing about regions, profiles or instance metadata.

use std::process::Command;

use pipefy_sync_tests::sync::{Harness, DEMO_TOKEN};
use pipefy_sync_tests::tools::{cli_binary, printed_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_prints_no_aws_warning() {
    let h = Harness::new().await;
    h.write_file(
        "refined/customers/part-0001.csv",
        "cid,name\nQ1,Quiet one\nQ2,Quiet two\n",
    );
    let dest_file = h.dir.path().join("quiet.yaml");
    std::fs::write(
        &dest_file,
        format!(
            "name: quiet\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n\
             source: {{ path: {}, layer: refined, table: customers }}\n\
             mapping:\n  title: name\n  customer_name: name\n\
             token: {{ env: QUIET_TEST_PIPEFY_TOKEN }}\nendpoint: {}\n",
            h.data_root().display(),
            h.emulator.graphql_url()
        ),
    )
    .expect("write destination");
    let cli = cli_binary();
    let mut cmd = Command::new(&cli);
    cmd.arg("run")
        .arg(&dest_file)
        .args(["--state"])
        .arg(h.state_root())
        .args(["--reports"])
        .arg(h.reports_root())
        .env("QUIET_TEST_PIPEFY_TOKEN", DEMO_TOKEN);
    // No AWS settings at all, as on a laptop that never configured them: loading the SDK's
    // configuration would look for a region and credentials (and ask instance metadata).
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", h.dir.path());
    let out = cmd.output().expect("run pipefy-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("created") && stdout.contains('2'),
        "{stdout}"
    );
    assert_eq!(h.cards_with("301", "external_id", "Q1").len(), 1);
    // The summary ends with where the run page is, and the page is there.
    let page = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("run page"))
        .map(str::trim)
        .expect("the run page is printed");
    assert!(
        page.ends_with("report.html") && std::path::Path::new(page).exists(),
        "{page}"
    );

    // `report` renders the pages again and prints where the history page is, quietly too.
    let mut report = Command::new(&cli);
    report
        .arg("report")
        .arg(&dest_file)
        .arg("--reports")
        .arg(h.reports_root())
        .env("HOME", h.dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            report.env_remove(k);
        }
    }
    let rendered = report.output().expect("run pipefy-sync report");
    let report_out = String::from_utf8_lossy(&rendered.stdout);
    let report_err = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success(), "{report_out}\n{report_err}");
    let index = report_out
        .lines()
        .find_map(|l| l.strip_prefix("history page: "))
        .expect("the history page is printed");
    let history = std::fs::read_to_string(index).expect("index.html written");
    assert_eq!(
        history.matches("class=\"run\"").count(),
        1,
        "the one run: {history}"
    );
    assert!(
        report_out.contains(page),
        "its run page is listed: {report_out}"
    );
    assert!(report_err.is_empty(), "{report_err}");
    for word in [
        "IMDS",
        "imds",
        "aws_config",
        "aws_smithy",
        "region",
        "profile",
        "WARN",
    ] {
        assert!(
            !stderr.contains(word) && !stdout.contains(word),
            "'{word}' printed by a local run:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_counts_what_a_run_would_do_and_writes_nothing() {
    let h = Harness::new().await;
    h.write_file(
        "refined/customers/part-0001.csv",
        "cid,name\nW1,Would one\nW2,Would two\n",
    );
    let dest_file = h.dir.path().join("would.yaml");
    std::fs::write(
        &dest_file,
        format!(
            "name: would\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n\
             source: {{ path: {}, layer: refined, table: customers }}\n\
             mapping:\n  title: name\n  customer_name: name\n\
             token: {{ env: WOULD_TEST_PIPEFY_TOKEN }}\nendpoint: {}\n",
            h.data_root().display(),
            h.emulator.graphql_url()
        ),
    )
    .expect("write destination");
    let out = Command::new(cli_binary())
        .arg("plan")
        .arg(&dest_file)
        .arg("--state")
        .arg(h.state_root())
        .arg("--reports")
        .arg(h.reports_root())
        .env("WOULD_TEST_PIPEFY_TOKEN", DEMO_TOKEN)
        .output()
        .expect("run pipefy-sync plan");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let count = |label: &str| printed_count(&stdout, label);
    assert_eq!(count("would create"), Some(2), "{stdout}");
    assert_eq!(
        count("failed rows"),
        Some(0),
        "one failed-rows figure:\n{stdout}"
    );
    assert_eq!(
        count("created"),
        None,
        "a dry run created nothing:\n{stdout}"
    );
    assert!(h.cards_with("301", "external_id", "W1").is_empty());
    assert_eq!(h.emulator.stats().mutations.values().sum::<u64>(), 0);
}
