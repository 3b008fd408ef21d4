//! The object stores against their contract: S3Store on moto (real HTTP, real SDK) and
//! LocalStore on a temporary folder pass the same checks — listing, streaming, conditional
//! puts and deletes, not-found — and a table is read from S3 through the source layer.

use std::io::Write;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use pipefy_sync::config::{Compression, CsvOptions, SourceConfig};
use pipefy_sync::source::formats::flate2;
use pipefy_sync::source::{list_table_files, open_rows};
use pipefy_sync::store::{LocalStore, ObjectStore, S3Store, StoreError, WriteCondition};
use pipefy_sync::value::Value;
use pipefy_sync_tests::moto::{new_bucket, Moto};
use tokio::io::AsyncReadExt;

fn moto() -> &'static Moto {
    Moto::kept_alive()
}

async fn s3_store(prefix: &str) -> S3Store {
    let s3 = moto().s3().await;
    let bucket = new_bucket(&s3, prefix).await;
    S3Store::new(s3, bucket)
}

fn is_precondition(r: &Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(r, Err(StoreError::PreconditionFailed(_)))
}

/// The contract the state module relies on, for any store.
async fn contract(store: &dyn ObjectStore) {
    // Create-only.
    let e1 = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"one"),
            WriteCondition::IfAbsent,
        )
        .await
        .unwrap();
    assert!(
        e1.starts_with('"') && e1.ends_with('"'),
        "quoted etag: {e1}"
    );
    let again = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"two"),
            WriteCondition::IfAbsent,
        )
        .await;
    assert!(is_precondition(&again), "{again:?}");

    // Replace-if-unchanged.
    let stale = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"two"),
            WriteCondition::IfMatch("\"0123456789abcdef\"".into()),
        )
        .await;
    assert!(is_precondition(&stale), "{stale:?}");
    let e2 = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"two"),
            WriteCondition::IfMatch(e1.clone()),
        )
        .await
        .unwrap();
    assert_ne!(e1, e2);
    let reused = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"three"),
            WriteCondition::IfMatch(e1.clone()),
        )
        .await;
    assert!(
        is_precondition(&reused),
        "an old etag no longer matches: {reused:?}"
    );
    let on_missing = store
        .put_bytes(
            "state/d/nothing.json",
            Bytes::from_static(b"x"),
            WriteCondition::IfMatch(e2.clone()),
        )
        .await;
    assert!(is_precondition(&on_missing), "{on_missing:?}");

    // Reads see what was written, with the same etag.
    let (meta, body) = store.get_bytes("state/d/lease.json").await.unwrap();
    assert_eq!(
        (&body[..], meta.etag.as_str(), meta.size),
        (&b"two"[..], e2.as_str(), 3)
    );
    let head = store.head("state/d/lease.json").await.unwrap();
    assert_eq!((head.etag.as_str(), head.size), (e2.as_str(), 3));
    let (meta, mut reader) = store.get_stream("state/d/lease.json").await.unwrap();
    let mut streamed = Vec::new();
    reader.read_to_end(&mut streamed).await.unwrap();
    assert_eq!(
        (streamed.as_slice(), meta.etag.as_str()),
        (&b"two"[..], e2.as_str())
    );

    // Unconditional overwrite.
    let e3 = store
        .put_bytes(
            "state/d/lease.json",
            Bytes::from_static(b"four"),
            WriteCondition::None,
        )
        .await
        .unwrap();
    assert_ne!(e3, e2);

    // Listing: recursive, sorted, prefix may end mid-name.
    for key in [
        "state/d/pending/b.json",
        "state/d/pending/a.json",
        "state/dx/other.json",
    ] {
        store
            .put_bytes(key, Bytes::from(key.to_string()), WriteCondition::None)
            .await
            .unwrap();
    }
    let keys = |v: Vec<pipefy_sync::store::ObjectMeta>| -> Vec<String> {
        v.into_iter().map(|m| m.key).collect()
    };
    assert_eq!(
        keys(store.list("state/d/").await.unwrap()),
        [
            "state/d/lease.json",
            "state/d/pending/a.json",
            "state/d/pending/b.json"
        ]
    );
    assert_eq!(
        keys(store.list("state/d").await.unwrap()),
        [
            "state/d/lease.json",
            "state/d/pending/a.json",
            "state/d/pending/b.json",
            "state/dx/other.json"
        ]
    );
    assert_eq!(
        keys(store.list("state/d/pending/a").await.unwrap()),
        ["state/d/pending/a.json"]
    );
    assert!(store.list("nowhere/").await.unwrap().is_empty());
    let listed = store.list("state/d/lease").await.unwrap();
    assert_eq!((listed[0].etag.as_str(), listed[0].size), (e3.as_str(), 4));

    // Deletes.
    let stale = store
        .delete("state/d/lease.json", WriteCondition::IfMatch(e2.clone()))
        .await;
    assert!(is_precondition(&stale), "{stale:?}");
    assert!(
        store.head("state/d/lease.json").await.is_ok(),
        "still there"
    );
    store
        .delete("state/d/lease.json", WriteCondition::IfMatch(e3.clone()))
        .await
        .unwrap();
    store
        .delete("state/d/pending/a.json", WriteCondition::None)
        .await
        .unwrap();
    store
        .delete("state/d/never-was.json", WriteCondition::None)
        .await
        .unwrap();
    store
        .delete(
            "state/d/never-was.json",
            WriteCondition::IfMatch(e3.clone()),
        )
        .await
        .unwrap();

    // Not found.
    assert!(matches!(
        store.get_bytes("state/d/lease.json").await,
        Err(StoreError::NotFound(k)) if k == "state/d/lease.json"
    ));
    assert!(matches!(
        store.head("state/d/lease.json").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get_stream("state/d/pending/a.json").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        keys(store.list("state/d/").await.unwrap()),
        ["state/d/pending/b.json"]
    );

    // Racing creators: exactly one wins.
    let results = futures::future::join_all((0..8).map(|i| {
        store.put_bytes(
            "state/d/race.json",
            Bytes::from(format!("writer {i}")),
            WriteCondition::IfAbsent,
        )
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results.iter().filter(|r| is_precondition(r)).count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
}

#[tokio::test]
async fn s3_store_keeps_the_contract() {
    let store = s3_store("contract").await;
    assert!(store.describe().starts_with("s3://contract-"));
    contract(&store).await;
}

#[tokio::test]
async fn local_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    contract(&store).await;
    // No temporary files are left behind by the atomic writes.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".pipefy-sync-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Keys cannot escape the root.
    assert!(matches!(
        store.get_bytes("../etc/passwd").await,
        Err(StoreError::Other { .. })
    ));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn s3_listing_follows_pagination() {
    let store = s3_store("pages").await;
    let client = store.client().clone();
    let bucket = store.bucket().to_string();
    let uploads = futures::stream::iter(0..1100).map(|i| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(format!("refined/many/part-{i:05}.csv"))
                .body(ByteStream::from(format!("id\n{i}\n").into_bytes()))
                .send()
                .await
                .map(|_| ())
        }
    });
    let results: Vec<_> = uploads.buffer_unordered(32).collect().await;
    assert!(results.iter().all(Result::is_ok));

    let listed = store.list("refined/many/").await.unwrap();
    assert_eq!(listed.len(), 1100, "more than one default page of 1000");
    assert_eq!(listed[0].key, "refined/many/part-00000.csv");
    assert_eq!(listed[1099].key, "refined/many/part-01099.csv");
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));

    let small_pages = store.clone().with_page_size(150);
    let again = small_pages.list("refined/many/part-001").await.unwrap();
    assert_eq!(again.len(), 100);
    assert_eq!(again[99].key, "refined/many/part-00199.csv");
}

#[tokio::test]
async fn s3_get_stream_streams_a_large_object() {
    let store = s3_store("stream").await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put_bytes("big.bin", Bytes::from(body.clone()), WriteCondition::None)
        .await
        .unwrap();
    let (meta, mut reader) = store.get_stream("big.bin").await.unwrap();
    assert_eq!(meta.size, body.len() as u64);
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= chunk.len());
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, body);
    assert!(matches!(
        S3Store::new(store.client().clone(), "no-such-bucket-pipefy-sync")
            .head("x")
            .await,
        Err(StoreError::Other { .. } | StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_table_is_read_from_s3() {
    let store = s3_store("table").await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"id,name\n1,Ana\n2,\"Bruno\nB\"\n3,Carla\n")
        .unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("refined/customers/part-0000.csv.gz", gz.finish().unwrap()),
        (
            "refined/customers/part-0001.jsonl",
            b"{\"id\":4,\"name\":\"Davi\"}\nnope\n".to_vec(),
        ),
        ("refined/customers/_SUCCESS", Vec::new()),
        ("refined/customers/_delta_log/0.json", b"{}".to_vec()),
        ("refined/customers/.part-0000.csv.gz.crc", b"x".to_vec()),
        ("refined/customers_old/part-0000.csv", b"id\n9\n".to_vec()),
    ];
    for (key, data) in files {
        store
            .put_bytes(key, Bytes::from(data), WriteCondition::None)
            .await
            .unwrap();
    }
    let source = SourceConfig {
        bucket: Some(store.bucket().to_string()),
        path: None,
        layer: "refined".into(),
        table: "customers".into(),
        format: None,
        compression: Compression::Auto,
        csv: CsvOptions::default(),
    };
    let listed = list_table_files(&store, &source).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "refined/customers/part-0000.csv.gz",
            "refined/customers/part-0001.jsonl"
        ]
    );
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let mut seen = Vec::new();
    for object in &listed {
        let mut rows = open_rows(store.clone(), object, &source, 0).await;
        while let Some(item) = rows.next().await {
            seen.push(match item {
                Ok(r) => (
                    r.provenance.file.to_string(),
                    r.provenance.line,
                    r.get("name").map(Value::to_string).unwrap_or_default(),
                ),
                Err(e) => (
                    e.provenance.file.to_string(),
                    e.provenance.line,
                    format!("error: {}", e.message),
                ),
            });
        }
    }
    let gz = "refined/customers/part-0000.csv.gz".to_string();
    let jl = "refined/customers/part-0001.jsonl".to_string();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    assert_eq!(seen[0], (gz.clone(), 2, "Ana".to_string()));
    assert_eq!(seen[1], (gz.clone(), 3, "Bruno\nB".to_string()));
    assert_eq!(seen[2], (gz, 5, "Carla".to_string()));
    assert_eq!(seen[3], (jl.clone(), 1, "Davi".to_string()));
    assert_eq!(seen[4].0, jl);
    assert_eq!(seen[4].1, 2);
    assert!(
        seen[4].2.starts_with("error: invalid JSON"),
        "{:?}",
        seen[4]
    );

    // A file deleted between listing and reading: one file error, no panic.
    store
        .delete("refined/customers/part-0001.jsonl", WriteCondition::None)
        .await
        .unwrap();
    let mut rows = open_rows(store.clone(), &listed[1], &source, 0).await;
    let e = rows.next().await.unwrap().unwrap_err();
    assert_eq!(e.provenance.line, 0);
    assert!(e.message.contains("not found"), "{}", e.message);
    assert!(rows.next().await.is_none());
}
