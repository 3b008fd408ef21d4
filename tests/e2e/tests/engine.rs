//! The sync engine against the Pipefy emulator over HTTP, with local files, state and reports.

use pipefy_sync::engine::RunRequest;
use pipefy_sync::report::{RowAction, RunStatus};
use pipefy_sync_tests::sync::{field_text, result_at, Harness};

const DEMO_TABLE: &str = include_str!("../../fixtures/demo/data/refined/customers/part-0001.csv");

fn demo_destination(h: &Harness) -> pipefy_sync::config::Destination {
    let text = include_str!("../../fixtures/demo/destinations/customers.yaml");
    // The demo file names an S3 bucket and a secret; here the table is a local folder.
    let fragment: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("token:")
                && !l.starts_with("  secret:")
                && !l.starts_with("endpoint:")
                && !l.starts_with("  on_upload:")
        })
        .map(|l| l.replace("bucket: ${DATA_BUCKET}", "path: ${DATA}"))
        .collect::<Vec<_>>()
        .join("\n");
    h.destination(&fragment)
}

#[tokio::test]
async fn upsert_writes_every_field_type_then_finds_nothing_to_do() {
    let h = Harness::new().await;
    h.write_file("refined/customers/part-0001.csv", DEMO_TABLE);
    let dest = demo_destination(&h);

    let first = h.run(&dest).await;
    assert_eq!(first.status, RunStatus::Completed, "{first:#?}");
    assert_eq!(first.counts.read, 44);
    assert_eq!(first.counts.created, 40, "{first:#?}");
    assert_eq!(first.counts.failed_rows(), 4, "{first:#?}");

    // One card per key, with every type converted the way Pipefy takes it.
    let c1 = h.cards_with("301", "external_id", "C0001");
    assert_eq!(c1.len(), 1);
    let card = &c1[0];
    assert_eq!(card.title, "Customer 1 (Pro)");
    assert_eq!(field_text(card.fields.get("customer_name")), "Customer 1");
    assert_eq!(
        field_text(card.fields.get("email")),
        "customer1@example.com"
    );
    assert_eq!(field_text(card.fields.get("plan")), "Pro");
    assert_eq!(field_text(card.fields.get("seats")), "486");
    assert_eq!(field_text(card.fields.get("mrr")), "2481.5");
    assert_eq!(field_text(card.fields.get("signup_date")), "2025-01-21");
    assert!(
        field_text(card.fields.get("renewal_at")).starts_with("2026-02-27T09:30"),
        "{:?}",
        card.fields.get("renewal_at")
    );
    assert_eq!(
        card.fields.get("tasks"),
        Some(&serde_json::json!(["Kickoff", "Training"]))
    );
    // Connector by key: INITECH is record Lm3Yd9Qe in tbl_accounts.
    assert_eq!(
        card.fields.get("account"),
        Some(&serde_json::json!(["Lm3Yd9Qe"]))
    );
    // Assignee by e-mail, label by name, phase by name.
    assert_eq!(card.assignees, vec!["1001".to_string()]);
    assert_eq!(card.labels, vec!["310002".to_string()]);
    assert_eq!(card.phase_id, "3013");
    assert_eq!(card.due_date.as_deref(), Some("2026-02-27T12:30:00Z"));

    // The rows a person must fix, each with its file, line, field and a reason.
    let results = h.results(&first);
    let file = "refined/customers/part-0001.csv";
    let plan = result_at(&results, file, 42);
    assert_eq!(plan.error_code.as_deref(), Some("NOT_AN_OPTION"));
    assert_eq!(plan.field.as_deref(), Some("plan"));
    assert!(plan
        .error_message
        .as_deref()
        .unwrap_or("")
        .contains("Platinum"));
    let date = result_at(&results, file, 43);
    assert_eq!(date.error_code.as_deref(), Some("INVALID_VALUE"));
    assert_eq!(date.field.as_deref(), Some("signup_date"));
    let account = result_at(&results, file, 44);
    assert_eq!(account.error_code.as_deref(), Some("UNKNOWN_REFERENCE"));
    assert_eq!(account.field.as_deref(), Some("account"));
    let key = result_at(&results, file, 45);
    assert_eq!(key.error_code.as_deref(), Some("MISSING_REQUIRED"));
    let failed = h.failed_rows(&first);
    assert_eq!(failed.len(), 4);
    assert!(failed
        .iter()
        .all(|r| r["_source_file"] == file && r.get("customer_id").is_some()));

    // Second run: nothing changed, nothing sent.
    let mutations_before: u64 = h.emulator.stats().mutations.values().sum();
    let second = h.run(&dest).await;
    assert_eq!(second.counts.unchanged, 40, "{second:#?}");
    assert_eq!(second.counts.created + second.counts.updated, 0);
    assert_eq!(
        h.emulator.stats().mutations.values().sum::<u64>(),
        mutations_before
    );

    // Two rows change: exactly those two are updated.
    let changed = DEMO_TABLE
        .replace("C0001,Customer 1,", "C0001,Customer One,")
        .replace("C0002,Customer 2,", "C0002,Customer Two,");
    h.write_file("refined/customers/part-0001.csv", changed);
    let third = h.run(&dest).await;
    assert_eq!(third.counts.updated, 2, "{third:#?}");
    assert_eq!(third.counts.unchanged, 38);
    assert_eq!(
        h.cards_with("301", "external_id", "C0001")[0].title,
        "Customer One (Pro)"
    );
    assert_eq!(h.cards_with("301", "external_id", "C0001").len(), 1);
    let summary = h.summary_file(&third);
    assert_eq!(summary.counts, third.counts);
    assert!(
        h.results(&third)
            .iter()
            .filter(|r| r.action == RowAction::Updated)
            .count()
            == 2
    );
    let _ = RunRequest::default();
}
