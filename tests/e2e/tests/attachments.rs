//! Attachments from S3: a column that names files in a bucket (moto, through the real
//! aws-sdk-rust client) puts those files on the card or record, uploaded to the emulator's
//! `createPresignedUrl` URLs (which check size, length, type and expiry as S3 does).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use pipefy_emulator::{EmulatorConfig, Fixture};
use pipefy_sync::config::Destination;
use pipefy_sync::engine::RunContext;
use pipefy_sync::report::{RowAction, RunSummary};
use pipefy_sync::store::{S3Buckets, S3Store};
use pipefy_sync_tests::moto::{new_bucket, Moto};
use pipefy_sync_tests::sync::{assert_counts_add_up, fast_emulator_config, result_at, Harness};

const TABLE: &str = "refined/customers/part-0001.csv";

fn moto() -> &'static Moto {
    Moto::kept_alive()
}

/// An emulator with attachment fields, a bucket holding the table and the files, and a
/// run context reading both from it.
struct Setup {
    h: Harness,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl Setup {
    async fn new(config: impl FnOnce(&mut EmulatorConfig)) -> Setup {
        let mut c = EmulatorConfig {
            ..EmulatorConfig::with_fixture(Fixture::demo_with_attachments())
        };
        c.rate_limit_requests = fast_emulator_config().rate_limit_requests;
        config(&mut c);
        let h = Harness::with_config(c).await;
        let s3 = moto().s3().await;
        let bucket = new_bucket(&s3, "attach").await;
        Setup { h, s3, bucket }
    }

    async fn put(&self, key: &str, body: &[u8], content_type: Option<&str>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_string))
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .expect("put object");
    }

    fn context(&self) -> RunContext {
        RunContext {
            source_store: Arc::new(S3Store::new(self.s3.clone(), &self.bucket)),
            attachment_buckets: Some(Arc::new(S3Buckets(self.s3.clone()))),
            ..self.h.context()
        }
    }

    fn cards(&self, destination: &str, attach: &str) -> Destination {
        self.h.destination(&format!(
            "name: {destination}\npipe_id: \"301\"\noperation: upsert_card\nkey: {{ columns: [cid], field: external_id }}\nsource:\n  bucket: {}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n  documents: {{ column: docs, transforms: [{{ split: {{ separator: ';' }} }}], attach: {attach} }}\n",
            self.bucket
        ))
    }

    async fn run(&self, d: &Destination) -> RunSummary {
        let s = pipefy_sync::engine::sync(
            &self.context(),
            d,
            pipefy_sync::engine::RunRequest {
                trigger: "test".into(),
                ..Default::default()
            },
        )
        .await
        .expect("run");
        assert_counts_add_up(&s);
        s
    }

    /// The storage paths on the card of `key`'s attachment field.
    fn documents(&self, key: &str) -> Vec<String> {
        let cards = self.h.cards_with("301", "external_id", key);
        assert_eq!(cards.len(), 1, "one card for {key}");
        let value = cards[0]
            .fields
            .get("documents")
            .cloned()
            .unwrap_or_default();
        serde_json::from_value::<Vec<String>>(value.clone())
            .unwrap_or_else(|_| panic!("documents is a list of paths: {value}"))
    }

    fn uploaded(&self) -> Vec<pipefy_emulator::UploadInfo> {
        self.h
            .emulator
            .uploads()
            .into_iter()
            .filter(|u| u.uploaded)
            .collect()
    }

    /// Runs a table of two rows where the first names a file and the second none: the
    /// second is created, the first fails; its message.
    async fn only_first_row_fails(&self, d: &Destination) -> String {
        let summary = self.run(d).await;
        assert_eq!(
            (summary.counts.created, summary.counts.failed_rows()),
            (1, 1),
            "{summary:#?}"
        );
        let results = self.h.results(&summary);
        let first = result_at(&results, TABLE, 2);
        assert_eq!(first.field.as_deref(), Some("documents"), "{first:?}");
        first.error_message.clone().unwrap_or_default()
    }

    fn presigns(&self) -> u64 {
        self.h.mutations("createPresignedUrl")
    }
}

#[tokio::test]
async fn files_named_by_a_column_are_on_the_card_once_and_replaced_when_changed() {
    let s = Setup::new(|_| {}).await;
    s.put(
        "docs/invoice-1.pdf",
        b"%PDF-1.4 invoice one",
        Some("application/pdf"),
    )
    .await;
    s.put("docs/photo.png", b"\x89PNG fake image", None).await;
    let table = format!(
        "cid,name,docs\nA1,Acme,invoice-1.pdf;s3://{}/docs/photo.png\nA2,Beta,\n",
        s.bucket
    );
    s.put(TABLE, table.as_bytes(), None).await;
    let d = s.cards("att-two-files", "{ prefix: docs }");

    let first = s.run(&d).await;
    assert_eq!(first.counts.failed_rows(), 0, "{first:#?}");
    assert_eq!(first.counts.created, 2);
    assert_eq!(
        (first.counts.files_uploaded, first.counts.bytes_uploaded),
        (2, 35)
    );
    let paths = s.documents("A1");
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths[0].ends_with("/invoice-1.pdf") && paths[1].ends_with("/photo.png"),
        "{paths:?}"
    );
    let uploads = s.h.emulator.uploads();
    let info = |path: &str| {
        uploads
            .iter()
            .find(|u| u.path == path)
            .expect("minted")
            .clone()
    };
    // The type the object was stored with, else the extension's; the bytes as in S3.
    assert_eq!(
        info(&paths[0]).content_type.as_deref(),
        Some("application/pdf")
    );
    assert_eq!(info(&paths[0]).size, Some(20));
    assert_eq!(info(&paths[1]).content_type.as_deref(), Some("image/png"));
    assert!(info(&paths[1]).uploaded);
    // The card was written once, with its files in the same create.
    assert_eq!(s.h.mutations("createCard"), 2);
    assert_eq!(s.h.mutations("updateFieldsValues"), 0);

    // A rerun uploads nothing and sends nothing.
    s.h.emulator.reset_stats();
    let rerun = s.run(&d).await;
    assert_eq!(rerun.counts.unchanged, 2, "{rerun:#?}");
    assert_eq!(rerun.counts.files_uploaded, 0);
    assert_eq!(s.presigns(), 0);
    assert_eq!(s.h.all_mutations(), 0);

    // A replaced object is uploaded once and swapped in; the other file keeps its path.
    s.put(
        "docs/invoice-1.pdf",
        b"%PDF-1.4 invoice one, corrected",
        Some("application/pdf"),
    )
    .await;
    s.h.emulator.reset_stats();
    let replaced = s.run(&d).await;
    assert_eq!(replaced.counts.updated, 1, "{replaced:#?}");
    assert_eq!(replaced.counts.files_uploaded, 1);
    assert_eq!(s.presigns(), 1);
    let now = s.documents("A1");
    assert_eq!(now.len(), 2, "{now:?}");
    assert_ne!(now[0], paths[0], "the corrected invoice is a new upload");
    assert_eq!(now[1], paths[1], "the unchanged photo keeps its upload");
    assert_eq!(info(&paths[1]).size, Some(15));
    assert_eq!(s.uploaded().len(), 3);

    // And the next run again sends nothing.
    s.h.emulator.reset_stats();
    let again = s.run(&d).await;
    assert_eq!(
        (again.counts.unchanged, again.counts.files_uploaded),
        (2, 0)
    );
    assert_eq!(s.presigns(), 0);
}

#[tokio::test]
async fn a_missing_an_oversized_or_an_outside_file_fails_only_its_row() {
    // The emulator's storage takes 64 bytes at most, standing in for Pipefy's 512 MB.
    let s = Setup::new(|c| c.upload_max_bytes = 64).await;
    s.put("docs/ok.txt", b"small enough", None).await;
    s.put("docs/big.bin", &[7u8; 100], None).await;
    s.put("other/secret.txt", b"not under the prefix", None)
        .await;
    let table = format!(
        "cid,name,docs\nM1,Fine,ok.txt\nM2,Missing,gone.pdf\nM3,Big,big.bin\nM4,Outside,s3://{}/other/secret.txt\nM5,No file,\n",
        s.bucket
    );
    s.put(TABLE, table.as_bytes(), None).await;
    let d = s.cards("att-bad-files", "{ prefix: docs/ }");
    let summary = s.run(&d).await;
    assert_eq!(summary.counts.created, 2, "{summary:#?}");
    assert_eq!(summary.counts.failed_rows(), 3);
    let results = s.h.results(&summary);
    let at = |line| result_at(&results, TABLE, line);
    assert_eq!(at(2).action, RowAction::Created);
    assert_eq!(at(6).action, RowAction::Created);
    let failure = |line: u64| {
        let r = at(line);
        // Skipped: found at preflight, before anything was sent; failed: refused on upload.
        assert!(
            matches!(r.action, RowAction::Skipped | RowAction::Failed),
            "{r:?}"
        );
        assert_eq!(r.field.as_deref(), Some("documents"), "{r:?}");
        (
            r.error_code.clone().unwrap_or_default(),
            r.error_message.clone().unwrap_or_default(),
        )
    };
    let (code, msg) = failure(3);
    assert_eq!(code, "NOT_FOUND");
    assert!(
        msg.contains(&format!("s3://{}/docs/gone.pdf", s.bucket)),
        "{msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");

    let (code, msg) = failure(4);
    assert_eq!(code, "PIPEFY_REJECTED", "{msg}");
    assert!(msg.contains("docs/big.bin"), "{msg}");

    let (code, msg) = failure(5);
    assert_eq!(code, "INVALID_VALUE");
    assert!(msg.contains("outside the attach location"), "{msg}");
    assert!(s.h.cards_with("301", "external_id", "M3").is_empty());
}

#[tokio::test]
async fn an_expired_upload_url_is_replaced_then_fails_only_its_row() {
    // Every URL the emulator mints is already expired when the PUT arrives.
    let s = Setup::new(|c| c.presigned_url_ttl = Duration::ZERO).await;
    s.put("docs/late.pdf", b"%PDF late", None).await;
    s.put(
        TABLE,
        b"cid,name,docs\nX1,Late,late.pdf\nX2,No file,\n",
        None,
    )
    .await;
    let d = s.cards("att-expired", "{ prefix: docs }");
    let msg = s.only_first_row_fails(&d).await;
    assert!(msg.contains("expired"), "{msg}");
    assert!(msg.contains("late.pdf"), "{msg}");
    assert!(
        !msg.contains("Signature"),
        "no signed URL in a report: {msg}"
    );
    // The window's URL is past its lifetime (X-Amz-Expires=0) before its upload begins, so
    // each of the three attempts asks for a fresh one, and each PUT finds it expired.
    assert_eq!(s.presigns(), 4);
    assert!(s.uploaded().is_empty());
    assert!(s.h.cards_with("301", "external_id", "X1").is_empty());
}

#[tokio::test]
async fn a_bucket_that_cannot_be_listed_fails_the_rows_that_name_it() {
    let s = Setup::new(|_| {}).await;
    s.put(TABLE, b"cid,name,docs\nB1,One,a.pdf\nB2,Two,\n", None)
        .await;
    let d = s.cards(
        "att-no-bucket",
        "{ bucket: pipefy-sync-no-such-bucket, prefix: docs }",
    );
    let msg = s.only_first_row_fails(&d).await;
    assert!(
        msg.contains("cannot read s3://pipefy-sync-no-such-bucket/docs/a.pdf"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_record_gets_its_file_too() {
    let s = Setup::new(|_| {}).await;
    s.put("contracts/c-1.pdf", b"%PDF contract", None).await;
    s.put(
        "refined/accounts/part-0001.csv",
        b"code,name,contract\nK1,Kappa,c-1.pdf\n",
        None,
    )
    .await;
    let d = s.h.destination(&format!(
        "name: att-record\ntable_id: tbl_accounts\noperation: upsert_record\nkey: {{ columns: [code], field: code }}\nsource:\n  bucket: {}\n  layer: refined\n  table: accounts\nmapping:\n  title: name\n  name: name\n  contract: {{ column: contract, attach: {{ prefix: contracts }} }}\n",
        s.bucket
    ));
    let summary = s.run(&d).await;
    assert_eq!(
        (summary.counts.created, summary.counts.failed_rows()),
        (1, 0),
        "{summary:#?}"
    );
    let snapshot = s.h.snapshot();
    let record = snapshot
        .records
        .iter()
        .find(|r| {
            r.table_id == "tbl_accounts"
                && r.fields.get("code").and_then(|v| v.as_str()) == Some("K1")
        })
        .expect("record K1");
    let paths: Vec<String> =
        serde_json::from_value(record.fields.get("contract").cloned().unwrap_or_default())
            .expect("paths");
    assert_eq!(paths.len(), 1);
    assert!(paths[0].ends_with("/c-1.pdf"), "{paths:?}");
    assert_eq!(s.uploaded().len(), 1);
}

#[tokio::test]
async fn files_in_a_local_source_folder_are_uploaded_too() {
    // A local run (the CLI's `source.path`): the folder is the source's store, its
    // listing gives each file's version, and the type comes from the extension.
    let h = Harness::with_config(EmulatorConfig {
        rate_limit_requests: fast_emulator_config().rate_limit_requests,
        ..EmulatorConfig::with_fixture(Fixture::demo_with_attachments())
    })
    .await;
    h.write_file("docs/plan.pdf", b"%PDF local plan");
    h.write_file(TABLE, "cid,name,docs\nL1,Local,plan.pdf\n");
    let d = h.destination(
        "name: att-local\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\nsource:\n  path: ${DATA}\n  layer: refined\n  table: customers\nmapping:\n  title: name\n  customer_name: name\n  documents: { column: docs, attach: { prefix: docs } }\n",
    );
    let s = h.run(&d).await;
    assert_counts_add_up(&s);
    assert_eq!(
        (s.counts.created, s.counts.files_uploaded),
        (1, 1),
        "{s:#?}"
    );
    let uploads = h.emulator.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].content_type.as_deref(), Some("application/pdf"));
    assert_eq!(uploads[0].size, Some(15));
    let again = h.run(&d).await;
    assert_eq!(
        (again.counts.unchanged, again.counts.files_uploaded),
        (1, 0)
    );
}
