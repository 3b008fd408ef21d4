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

/// Runs the command line with the demo token in `PIPEFY_SYNC_INIT_TOKEN` and no AWS
/// settings; its exit status and what it printed.
fn cli(h: &Harness, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut cmd = Command::new(cli_binary());
    cmd.args(args)
        .env("PIPEFY_SYNC_INIT_TOKEN", DEMO_TOKEN)
        .env("HOME", h.dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run pipefy-sync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_destination_that_check_and_plan_take_as_it_is() {
    let h = Harness::new().await;
    let sample = h.write_file(
        "refined/customers/part-0001.csv",
        include_str!("../../fixtures/demo/data/refined/customers/part-0001.csv"),
    );
    let sample = h.data_root().join(sample);
    let file = h.dir.path().join("customers.yaml");
    let endpoint = h.emulator.graphql_url();
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, printed) = cli(
        &h,
        &[
            &os("init"),
            &os("--pipe"),
            &os("301"),
            &os("--sample"),
            sample.as_os_str(),
            &os("--endpoint"),
            &os(&endpoint),
            &os("--token-env"),
            &os("PIPEFY_SYNC_INIT_TOKEN"),
            &os("--out"),
            file.as_os_str(),
        ],
    );
    assert!(ok, "{printed}");
    assert!(
        printed.contains("key customer_id -> external_id"),
        "{printed}"
    );
    let written = std::fs::read_to_string(&file).expect("the file is written");

    // Every column named like a field's id or label is mapped to it, and each guess says why.
    let dest = pipefy_sync::config::load_destination_file(&file).expect("the file parses");
    assert_eq!(dest.operation.as_str(), "upsert_card");
    let key = dest.key.as_ref().expect("a key");
    assert_eq!(
        (key.columns.as_slice(), key.field.as_str()),
        (&["customer_id".to_string()][..], "external_id")
    );
    let column_of = |target: &str| match dest.mapping.get(target).map(|m| &m.value) {
        Some(pipefy_sync::config::ValueSource::Column(c)) => Some(c.clone()),
        _ => None,
    };
    for same_name in ["email", "plan", "seats", "mrr", "tasks", "tags"] {
        assert_eq!(
            column_of(same_name).as_deref(),
            Some(same_name),
            "{written}"
        );
    }
    assert_eq!(
        column_of("customer_name").as_deref(),
        Some("name"),
        "{written}"
    );
    assert_eq!(column_of("phase_id").as_deref(), Some("stage"), "{written}");
    assert!(
        written.contains("# the column is the field's id"),
        "{written}"
    );
    assert!(written.contains("# a guess:"), "{written}");
    assert!(
        written.contains("# account: account_code"),
        "a connection is left for a person: {written}"
    );
    assert!(
        written.contains("parse_date: { format: \"%d/%m/%Y\" }"),
        "{written}"
    );

    // `check` and `plan` take it as it is.
    let (ok, printed) = cli(&h, &[&os("check"), file.as_os_str()]);
    assert!(
        ok && printed.contains("matches the Pipefy schema"),
        "{printed}"
    );
    let (ok, printed) = cli(
        &h,
        &[
            &os("plan"),
            file.as_os_str(),
            &os("--state"),
            h.state_root().as_os_str(),
            &os("--reports"),
            h.reports_root().as_os_str(),
        ],
    );
    assert!(ok, "{printed}");
    assert!(
        printed_count(&printed, "would create").is_some_and(|n| n > 40),
        "{printed}"
    );
    assert_eq!(
        h.all_mutations(),
        0,
        "init and plan write nothing to Pipefy"
    );

    // A table: its key field matched by id holds the key; an existing file is kept.
    let accounts = h.write_file(
        "refined/accounts/part-0001.csv",
        "code,name,RÉGION\nACME,Acme,Europe\nINITECH,Initech,APAC\n",
    );
    let accounts = h.data_root().join(accounts);
    let table_file = h.dir.path().join("accounts.yaml");
    let args = [
        os("init"),
        os("--table"),
        os("tbl_accounts"),
        os("--sample"),
        accounts.into_os_string(),
        os("--endpoint"),
        os(&endpoint),
        os("--token-env"),
        os("PIPEFY_SYNC_INIT_TOKEN"),
        os("--out"),
        table_file.clone().into_os_string(),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (ok, printed) = cli(&h, &refs);
    assert!(ok, "{printed}");
    let table = pipefy_sync::config::load_destination_file(&table_file).expect("parses");
    assert_eq!(table.operation.as_str(), "upsert_record");
    assert_eq!(table.key.as_ref().map(|k| k.field.as_str()), Some("code"));
    assert!(
        matches!(
            table.mapping.get("region").map(|m| &m.value),
            Some(pipefy_sync::config::ValueSource::Column(c)) if c == "RÉGION"
        ),
        "accents and case ignored: {:?}",
        table.mapping
    );
    let (ok, printed) = cli(&h, &[&os("check"), table_file.as_os_str()]);
    assert!(ok, "{printed}");
    let (again, printed) = cli(&h, &refs);
    assert!(!again && printed.contains("--force"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_by_key_sends_one_row_and_prints_the_request_and_answer() {
    let h = Harness::new().await;
    h.write_file(
        "refined/customers/part-0001.csv",
        "cid,name\nK1,One\nK2,Two\nK3,Three\n",
    );
    let file = h.dir.path().join("by-key.yaml");
    std::fs::write(
        &file,
        format!(
            "name: by-key-cli\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\n\
             source: {{ path: {}, layer: refined, table: customers }}\n\
             mapping:\n  title: name\n  customer_name: name\n\
             token: {{ env: PIPEFY_SYNC_INIT_TOKEN }}\nendpoint: {}\n",
            h.data_root().display(),
            h.emulator.graphql_url()
        ),
    )
    .expect("write destination");
    let os = |s: &str| std::ffi::OsString::from(s);
    let args = [
        os("run"),
        file.clone().into_os_string(),
        os("--key"),
        os("K2"),
        os("--state"),
        h.state_root().into_os_string(),
        os("--reports"),
        h.reports_root().into_os_string(),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (ok, printed) = cli(&h, &refs);
    assert!(ok, "{printed}");
    assert_eq!(h.mutations("createCard"), 1, "one row sent: {printed}");
    assert_eq!(h.cards_with("301", "external_id", "K2").len(), 1);
    assert!(h.cards_with("301", "external_id", "K1").is_empty());
    assert!(printed.contains("── request 1 ──"), "{printed}");
    assert!(
        printed.contains("createCard"),
        "the request is printed: {printed}"
    );
    assert!(
        printed.contains("HTTP 200"),
        "the answer is printed: {printed}"
    );
    assert!(!printed.contains(DEMO_TOKEN), "the token is never printed");
    assert!(printed.contains("keys asked for   K2"), "{printed}");

    // A key no row has: nothing sent, and the run says so (and exits 1).
    let mut missing = args.clone();
    missing[3] = os("K9");
    let refs: Vec<&std::ffi::OsStr> = missing.iter().map(|a| a.as_os_str()).collect();
    let (ok, printed) = cli(&h, &refs);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("key K9: no row of the table has it"),
        "{printed}"
    );
    assert_eq!(h.mutations("createCard"), 1);
}
