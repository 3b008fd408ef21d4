//! Attachment uploads, as Pipefy documents them (docs/pipefy-api.md §11): the organization
//! of the pipe (from its schema) or table, `createPresignedUrl` for each file, a `PUT` of the bytes to the URL
//! it answers, and the storage path (the URL's path) written into the field.
//!
//! The `PUT` goes to Pipefy's storage, not to the GraphQL API: it carries no token, only the
//! URL's own signature, and is sent only to Pipefy's or Amazon's hosts (or the endpoint's
//! own host, for the emulator). The signed URL is a credential for five minutes: it is never
//! logged or put in an error; messages name the storage path.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use super::batch::{BatchOp, DocKind, Vars};
use super::client::{PipefyClient, WriteGate};
use super::error::{Failure, OpError, PipefyError};

/// How long Pipefy's upload URLs live (docs/pipefy-api.md §11).
pub const PRESIGNED_URL_LIFETIME: Duration = Duration::from_secs(300);

/// One file to upload, as `createPresignedUrl` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub organization_id: String,
    pub file_name: String,
    pub content_type: String,
    pub content_length: u64,
}

/// Where to `PUT` a file, and the storage path it then has.
#[derive(Clone)]
pub struct PresignedUrl {
    url: url::Url,
    pub storage_path: String,
    /// The URL's `X-Amz-Expires`, else [`PRESIGNED_URL_LIFETIME`].
    pub lifetime: Duration,
}

/// A file on its way to an upload URL: what it was signed for, and its bytes as a stream.
pub struct UploadBody<'a> {
    pub content_type: &'a str,
    /// The exact length: S3 refuses a `PUT` without it.
    pub length: u64,
    pub body: reqwest::Body,
}

impl std::fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query string is the signature: never printed.
        f.debug_struct("PresignedUrl")
            .field("storage_path", &self.storage_path)
            .finish_non_exhaustive()
    }
}

impl PresignedUrl {
    /// Reads `createPresignedUrl`'s `url`: the storage path is its path without the leading
    /// `/`, percent-decoded.
    pub fn parse(url: &str) -> Result<PresignedUrl, String> {
        let url = url::Url::parse(url).map_err(|e| format!("the upload URL is not a URL: {e}"))?;
        let storage_path = percent_decode_str(url.path().trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        if storage_path.is_empty() {
            return Err("the upload URL has no path".to_string());
        }
        let lifetime = url
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Expires"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map_or(PRESIGNED_URL_LIFETIME, Duration::from_secs);
        Ok(PresignedUrl {
            url,
            storage_path,
            lifetime,
        })
    }
}

/// Why an upload's `PUT` did not store the file.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The URL's lifetime ran out before the `PUT` began: ask for a new one.
    #[error("the upload URL for {path} expired before the upload began")]
    Expired { path: String },
    /// Pipefy's storage refused the file (size, signature): retrying will not help.
    #[error("Pipefy's storage refused {path}: HTTP {status} {code}")]
    Refused {
        path: String,
        status: u16,
        code: String,
    },
    /// The `PUT` failed on the way (connection, timeout, 5xx): whether the bytes landed is
    /// unknown; a fresh URL and a new `PUT` settle it.
    #[error("uploading {path} failed: {reason}")]
    Transient { path: String, reason: String },
    /// Reading the file from S3 failed during the upload.
    #[error("reading the file for {path} failed: {reason}")]
    Source { path: String, reason: String },
    /// The URL points somewhere files must not go.
    #[error("the upload URL for {path} is on {host}, which is not Pipefy's storage")]
    Host { path: String, host: String },
}

impl UploadError {
    /// Whether a new URL and a new `PUT` may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UploadError::Expired { .. } | UploadError::Transient { .. }
        )
    }
}

/// `createPresignedUrl`, in the shape Pipefy's SDK sends: four variables, three fields.
struct PresignOp<'a>(&'a UploadRequest);

impl BatchOp for PresignOp<'_> {
    type Output = PresignedUrl;

    fn render(&self, vars: &mut Vars) -> String {
        let org = vars.add("ID!", json!(self.0.organization_id));
        let name = vars.add("String!", json!(self.0.file_name));
        let ty = vars.add("String", json!(self.0.content_type));
        let len = vars.add("Int", json!(self.0.content_length));
        format!(
            "createPresignedUrl(input: {{organizationId: {org}, fileName: {name}, contentType: {ty}, contentLength: {len}}}) {{ url downloadUrl clientMutationId }}"
        )
    }

    fn parse(&self, payload: &Value) -> Result<PresignedUrl, Failure> {
        let url = payload
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::uncertain("createPresignedUrl answered no url"))?;
        PresignedUrl::parse(url).map_err(Failure::uncertain)
    }
}

/// `organizations { id tables(first:) { nodes { id } } }`: Pipefy's SDK shows no field from
/// a table to its organization, only this listing (docs/pipefy-api.md §11).
struct TableOrganizationsQuery;

/// Tables read per organization when looking a table's organization up.
const TABLES_PAGE: u32 = 200;

impl BatchOp for TableOrganizationsQuery {
    type Output = Vec<(String, Vec<String>)>;

    fn render(&self, vars: &mut Vars) -> String {
        let first = vars.add("Int!", json!(TABLES_PAGE));
        format!("organizations {{ id tables(first: {first}) {{ nodes {{ id }} }} }}")
    }

    fn parse(&self, payload: &Value) -> Result<Self::Output, Failure> {
        let orgs = payload
            .as_array()
            .ok_or_else(|| Failure::uncertain("organizations is not a list"))?;
        Ok(orgs
            .iter()
            .filter_map(|o| {
                let id = id_text(o.get("id"))?;
                let ids = o
                    .get("tables")
                    .and_then(|t| t.get("nodes"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|i| id_text(i.get("id"))).collect())
                    .unwrap_or_default();
                Some((id, ids))
            })
            .collect())
    }
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl PipefyClient {
    /// The organization that holds the table; `None` if no organization the token sees
    /// lists it. (A pipe's comes with its schema: `pipe { organizationId }`.)
    pub async fn table_organization(&self, table_id: &str) -> Result<Option<String>, PipefyError> {
        let orgs = self.query_one(TableOrganizationsQuery).await?;
        Ok(orgs
            .into_iter()
            .find(|(_, ids)| ids.iter().any(|i| i == table_id))
            .map(|(org, _)| org))
    }

    /// One upload URL per request, many per HTTP request; each counts against the rate
    /// limit like any mutation.
    pub async fn presigned_urls(
        &self,
        requests: &[UploadRequest],
        gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<Result<PresignedUrl, OpError>>, PipefyError> {
        let ops: Vec<PresignOp<'_>> = requests.iter().map(PresignOp).collect();
        self.run_batch(DocKind::Mutation, &ops, gate).await
    }

    /// `PUT`s the file to the upload URL, with the content type it was signed for. The body
    /// is streamed: the file is never held in memory whole.
    pub async fn put_upload(
        &self,
        target: &PresignedUrl,
        file: UploadBody<'_>,
    ) -> Result<(), UploadError> {
        let UploadBody {
            content_type,
            length,
            body,
        } = file;
        let path = target.storage_path.clone();
        self.check_upload_host(&target.url)
            .map_err(|host| UploadError::Host {
                path: path.clone(),
                host,
            })?;
        let answer = self
            .upload_http()
            .put(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body)
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                // reqwest's error names the URL, signature included: say what failed only.
                let reason = if e.is_timeout() {
                    "the upload timed out".to_string()
                } else if e.is_body() || e.is_request() {
                    "the connection failed while sending the file".to_string()
                } else {
                    "the connection failed".to_string()
                };
                return Err(UploadError::Transient { path, reason });
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let code = xml_tag(&text, "Code").unwrap_or_default();
        let message = xml_tag(&text, "Message").unwrap_or_default();
        Err(match (status, code.as_str()) {
            (403, "AccessDenied") if message.to_ascii_lowercase().contains("expired") => {
                UploadError::Expired { path }
            }
            (500..=599, _) | (408, _) | (429, _) => UploadError::Transient {
                path,
                reason: format!("HTTP {status} {code}"),
            },
            _ => UploadError::Refused {
                path,
                status,
                code: if message.is_empty() {
                    code
                } else {
                    format!("{code} ({message})")
                },
            },
        })
    }

    /// Pipefy's storage is on Amazon's or Pipefy's hosts (as Pipefy's SDK checks); the
    /// endpoint's own host is allowed too, which is how the emulator serves uploads.
    fn check_upload_host(&self, url: &url::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let endpoint_host = url::Url::parse(&self.config().endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let pipefy_storage = url.scheme() == "https"
            && (host.ends_with(".amazonaws.com") || host.ends_with(".pipefy.com"));
        if pipefy_storage || endpoint_host.as_deref() == Some(host.as_str()) {
            Ok(())
        } else {
            Err(host)
        }
    }
}

/// The text of `<tag>` in S3's XML error body.
fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body.get(start..)?.find(&format!("</{tag}>"))? + start;
    body.get(start..end).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_path_is_the_urls_path_decoded() {
        let u = PresignedUrl::parse(
            "https://pipefy-prd.s3.amazonaws.com/orgs/abc/uploads/u1/my%20file.pdf?X-Amz-Expires=120&X-Amz-Signature=s",
        )
        .unwrap();
        assert_eq!(u.storage_path, "orgs/abc/uploads/u1/my file.pdf");
        assert_eq!(u.lifetime, Duration::from_secs(120));
        assert!(!format!("{u:?}").contains("Signature"));
    }

    #[test]
    fn s3_error_bodies_are_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_tag(body, "Message").as_deref(),
            Some("Request has expired")
        );
        assert_eq!(xml_tag(body, "Key"), None);
    }
}
