//! Attachments: `createPresignedUrl`, the PUT to the returned URL (size limit, expiry,
//! Content-Length checks), attachment fields and `createCard(attachments:)` taking the
//! storage path, and `attachments { path url }` on cards and records.

mod common;

use std::time::Duration;

use common::*;
use pipefy_emulator::EmulatorConfig;
use serde_json::{json, Value};

const PRESIGN: &str = "mutation($o: ID!, $f: String!, $t: String, $l: Int) {
  createPresignedUrl(input: {organizationId: $o, fileName: $f, contentType: $t, contentLength: $l, clientMutationId: \"m1\"}) {
    url downloadUrl clientMutationId } }";

async fn attach_emu(cfg: impl FnOnce(&mut EmulatorConfig)) -> Emu {
    let mut c = EmulatorConfig::with_fixture(fixture_with_attachments());
    cfg(&mut c);
    emu_with(c).await
}

async fn presign(e: &Emu, name: &str, len: Option<usize>) -> (String, String, String) {
    let d = e
        .data(
            PRESIGN,
            json!({"o": "1", "f": name, "t": "text/plain", "l": len}),
        )
        .await;
    let p = &d["createPresignedUrl"];
    assert_eq!(p["clientMutationId"], "m1");
    let url = p["url"].as_str().expect("url").to_string();
    let dl = p["downloadUrl"].as_str().expect("downloadUrl").to_string();
    let path = reqwest::Url::parse(&url).expect("url parses").path()[1..].to_string();
    (url, dl, path)
}

async fn put(e: &Emu, url: &str, body: &'static [u8], len: Option<usize>) -> (u16, String) {
    let mut rb = e
        .http
        .put(url)
        .header("content-type", "text/plain")
        .body(body);
    if let Some(l) = len {
        rb = rb.header("content-length", l.to_string());
    }
    let r = rb.send().await.expect("PUT");
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn presigned_url_has_pipefys_shape() {
    let e = attach_emu(|_| {}).await;
    let (url, dl, path) = presign(&e, "report 1.pdf", Some(5)).await;
    assert!(url.starts_with(&e.h.base_url()), "{url}");
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    assert!(dl.contains("X-Amz-Signature="), "{dl}");
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(parts.len(), 5, "{path}");
    assert_eq!(parts[0], "orgs");
    assert_eq!(parts[2], "uploads");
    assert_eq!(parts[4], "report%201.pdf", "the URL escapes the name");
    let ups = e.h.uploads();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].path.rsplit('/').next(), Some("report 1.pdf"));
    assert!(!ups[0].uploaded);
    assert_eq!(ups[0].content_length, Some(5));
}

#[tokio::test]
async fn presign_refuses_unknown_orgs_bad_names_and_oversize() {
    let e = attach_emu(|c| c.upload_max_bytes = 10).await;
    let b = e.gql(PRESIGN, json!({"o": "999", "f": "a.txt"})).await;
    assert_eq!(code(&b), "PERMISSION_DENIED", "{b}");
    let b = e.gql(PRESIGN, json!({"o": "1", "f": " "})).await;
    assert_eq!(code(&b), "INVALID_INPUT", "{b}");
    let b = e
        .gql(PRESIGN, json!({"o": "1", "f": "a.txt", "l": 11}))
        .await;
    assert_eq!(code(&b), "INVALID_INPUT", "{b}");
    assert!(message(&b).contains("10 bytes"), "{b}");
    let b = e
        .gql(PRESIGN, json!({"o": "1", "f": "a.txt", "l": 10}))
        .await;
    assert!(b.get("errors").is_none(), "{b}");
}

#[tokio::test]
async fn put_stores_the_bytes_and_download_serves_them() {
    let e = attach_emu(|_| {}).await;
    let (url, dl, path) = presign(&e, "a.txt", Some(5)).await;
    let (s, body) = put(&e, &url, b"hello", None).await;
    assert_eq!(s, 200, "{body}");
    let up = e.h.uploads().into_iter().next().expect("upload");
    assert!(up.uploaded);
    assert_eq!(up.size, Some(5));
    assert_eq!(up.path, path);
    let r = e.http.get(&dl).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("text"), "hello");
}

#[tokio::test]
async fn put_with_a_wrong_length_is_refused_like_s3() {
    let e = attach_emu(|_| {}).await;
    let (url, _, _) = presign(&e, "a.txt", Some(5)).await;
    // The body of another length than signed.
    let (s, body) = put(&e, &url, b"hello!", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    let (s, body) = put(&e, &url, b"hey", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(!e.h.uploads()[0].uploaded);
    // Unsigned length: any Content-Length, but it must match the body.
    let (url2, _, _) = presign(&e, "b.txt", None).await;
    let (s, body) = put(&e, &url2, b"four", None).await;
    assert_eq!(s, 200, "{body}");
    // A wrong signature.
    let bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let (s, body) = put(&e, &bad, b"hello", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
}

#[tokio::test]
async fn put_over_the_size_limit_is_refused() {
    let e = attach_emu(|c| c.upload_max_bytes = 4).await;
    let (url, _, _) = presign(&e, "a.txt", None).await;
    let (s, body) = put(&e, &url, b"hello", None).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("<Code>EntityTooLarge</Code>"), "{body}");
    let (s, _) = put(&e, &url, b"hell", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_upload_url_expires() {
    let e = attach_emu(|c| c.presigned_url_ttl = Duration::from_millis(200)).await;
    let (url, _, _) = presign(&e, "a.txt", Some(2)).await;
    assert!(url.contains("X-Amz-Expires=0"), "{url}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = put(&e, &url, b"hi", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert!(body.contains("Request has expired"), "{body}");
}

const CARD_ATT: &str =
    "query($id: ID!) { card(id: $id) { attachments { path url field { id } } fields { name value array_value } } }";

#[tokio::test]
async fn attachment_fields_take_the_storage_path() {
    let e = attach_emu(|_| {}).await;
    let (url, _, path) = presign(&e, "a.txt", Some(5)).await;
    assert_eq!(put(&e, &url, b"hello", None).await.0, 200);
    let id = e
        .create_customer("ATT-1", json!({"documents": [path]}))
        .await;
    let snap = e.h.snapshot();
    let card = snap.cards.iter().find(|c| c.id == id).expect("card");
    assert_eq!(card.fields["documents"], json!([path]));
    let d = e.data(CARD_ATT, json!({"id": id})).await;
    let att = d["card"]["attachments"].as_array().expect("attachments");
    assert_eq!(att.len(), 1, "{d}");
    assert_eq!(att[0]["path"], json!(path));
    assert_eq!(att[0]["field"]["id"], "documents");
    let dl = att[0]["url"].as_str().expect("url");
    let r = e.http.get(dl).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "hello");
    // A signed URL is not a storage path.
    let b = e
        .gql(
            "mutation($i: UpdateCardFieldInput!) { updateCardField(input: $i) { success } }",
            json!({"i": {"card_id": id, "field_id": "documents", "new_value": [url]}}),
        )
        .await;
    assert!(b.get("errors").is_some(), "{b}");
}

#[tokio::test]
async fn create_card_attachments_are_kept_and_read_back() {
    let e = attach_emu(|_| {}).await;
    let (_, _, path) = presign(&e, "own.txt", None).await;
    let d = e
        .data(
            "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id attachments { path } } } }",
            json!({"i": {"pipe_id": "301", "attachments": [path],
                "fields_attributes": [{"field_id": "external_id", "field_value": "A-2"},
                                      {"field_id": "customer_name", "field_value": "A"}]}}),
        )
        .await;
    assert_eq!(
        d["createCard"]["card"]["attachments"][0]["path"],
        json!(path)
    );
    let id = d["createCard"]["card"]["id"].as_str().expect("id");
    let snap = e.h.snapshot();
    let card = snap.cards.iter().find(|c| c.id == id).expect("card");
    assert_eq!(card.attachments, vec![path]);
    let b = e
        .gql(
            "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id } } }",
            json!({"i": {"pipe_id": "301", "attachments": ["https://s3.example/x"],
                "fields_attributes": [{"field_id": "external_id", "field_value": "A-3"},
                                      {"field_id": "customer_name", "field_value": "A"}]}}),
        )
        .await;
    assert_eq!(code(&b), "INVALID_INPUT", "{b}");
}

#[tokio::test]
async fn record_attachment_fields_take_the_storage_path() {
    let e = attach_emu(|_| {}).await;
    let (url, _, path) = presign(&e, "contract.pdf", Some(3)).await;
    assert_eq!(put(&e, &url, b"pdf", None).await.0, 200);
    let d = e
        .data(
            "mutation($i: SetTableRecordFieldValueInput!) { setTableRecordFieldValue(input: $i) { table_record { id attachments { path url } } } }",
            json!({"i": {"table_record_id": "Xa7KpQ2m", "field_id": "contract", "value": [path]}}),
        )
        .await;
    let att: &Value = &d["setTableRecordFieldValue"]["table_record"]["attachments"];
    assert_eq!(att[0]["path"], json!(path), "{d}");
    let snap = e.h.snapshot();
    let rec = snap
        .records
        .iter()
        .find(|r| r.id == "Xa7KpQ2m")
        .expect("record");
    assert_eq!(rec.fields["contract"], json!([path]));
}

#[tokio::test]
async fn reset_forgets_uploads() {
    let e = attach_emu(|_| {}).await;
    presign(&e, "a.txt", None).await;
    assert_eq!(e.h.uploads().len(), 1);
    e.h.reset();
    assert!(e.h.uploads().is_empty());
    let r = e
        .http
        .get(format!("{}/_emulator/uploads", e.h.base_url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.json::<Value>().await.expect("json"), json!([]));
}
