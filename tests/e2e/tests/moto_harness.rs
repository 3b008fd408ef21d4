//! The harness itself: moto answers, and enforces S3 conditional writes the state relies on.

use aws_sdk_s3::primitives::ByteStream;
use pipefy_sync_tests::moto::{new_bucket, Moto};

#[tokio::test]
async fn moto_enforces_conditional_writes() {
    let s3 = Moto::shared().s3().await;
    let bucket = new_bucket(&s3, "harness").await;
    let first = s3
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"1"))
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    let again = s3
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"2"))
        .if_none_match("*")
        .send()
        .await;
    assert!(again.is_err(), "If-None-Match on an existing key must fail");
    let stale = s3
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"3"))
        .if_match("\"not-the-etag\"")
        .send()
        .await;
    assert!(stale.is_err(), "If-Match with a stale ETag must fail");
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"4"))
        .if_match(first.e_tag().unwrap())
        .send()
        .await
        .expect("If-Match with the current ETag succeeds");
}
