//! Presigned attachment uploads: `createPresignedUrl` mints a PUT URL on the emulator
//! itself (standing in for Pipefy's S3 bucket), the PUT stores the bytes, attachment
//! fields then take the storage path (the URL's path without the leading `/`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

/// Characters escaped in a path segment of an upload URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// One minted upload target.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    pub organization_id: String,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub signature: String,
    pub expires_at: Instant,
    pub bytes: Option<Vec<u8>>,
    pub uploaded_content_type: Option<String>,
}

/// What `GET /_emulator/uploads` shows of one upload.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UploadInfo {
    pub path: String,
    pub organization_id: String,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// Whether the bytes were PUT.
    pub uploaded: bool,
    /// Size of the stored bytes.
    pub size: Option<u64>,
}

/// Upload settings and state.
#[derive(Debug)]
pub(crate) struct Uploads {
    pub max_bytes: u64,
    pub ttl: Duration,
    counter: u64,
    by_path: BTreeMap<String, Upload>,
}

/// An S3-style refusal of a PUT/GET.
#[derive(Debug, PartialEq)]
pub(crate) struct S3Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl S3Error {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status,
            code,
            message: message.into(),
        }
    }

    /// The XML body S3 answers with.
    pub fn xml(&self, key: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Key>{}</Key><RequestId>emulator</RequestId></Error>",
            self.code,
            xml_escape(&self.message),
            xml_escape(key)
        )
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Encodes a storage path for a URL (each segment escaped, `/` kept).
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Decodes the path of a request URL into a storage path.
pub(crate) fn decode_path(path: &str) -> String {
    percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned()
}

/// A file name as it may appear in a storage path (no separators, not empty).
fn clean_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    (!base.is_empty() && base != "." && base != "..").then(|| base.to_string())
}

/// A deterministic uuid-shaped string from a counter.
fn counter_uuid(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995_1234_5678;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (n & 0xfff) as u16,
        n & 0xffff_ffff_ffff
    )
}

impl Uploads {
    pub fn new(max_bytes: u64, ttl: Duration) -> Uploads {
        Uploads {
            max_bytes,
            ttl,
            counter: 0,
            by_path: BTreeMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.counter = 0;
        self.by_path.clear();
    }

    /// Mints an upload target; returns the storage path and its signature.
    pub fn mint(
        &mut self,
        organization_id: &str,
        organization_uuid: &str,
        file_name: &str,
        content_type: Option<String>,
        content_length: Option<i64>,
    ) -> Result<(String, String), String> {
        let name = clean_file_name(file_name)
            .ok_or_else(|| format!("Invalid file name: {file_name:?}"))?;
        let content_length = match content_length {
            None => None,
            Some(n) if n < 0 => return Err(format!("Invalid content length: {n}")),
            Some(n) => Some(n as u64),
        };
        if let Some(n) = content_length {
            if n > self.max_bytes {
                return Err(format!(
                    "File size exceeds the maximum allowed ({} bytes)",
                    self.max_bytes
                ));
            }
        }
        self.counter += 1;
        let id = counter_uuid(self.counter);
        let path = format!("orgs/{organization_uuid}/uploads/{id}/{name}");
        let signature = format!("{:064x}", u128::from(self.counter) * 0x1f2e_3d4c_5b6a);
        self.by_path.insert(
            path.clone(),
            Upload {
                organization_id: organization_id.to_string(),
                content_type,
                content_length,
                signature: signature.clone(),
                expires_at: Instant::now() + self.ttl,
                bytes: None,
                uploaded_content_type: None,
            },
        );
        Ok((path, signature))
    }

    /// Handles `PUT /<path>?X-Amz-Signature=..`: the checks S3 makes of a presigned PUT.
    pub fn put(
        &mut self,
        path: &str,
        signature: Option<&str>,
        content_length_header: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), S3Error> {
        let max = self.max_bytes;
        let Some(up) = self.by_path.get_mut(path) else {
            return Err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ));
        };
        if signature != Some(up.signature.as_str()) {
            return Err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ));
        }
        if Instant::now() >= up.expires_at {
            return Err(S3Error::new(403, "AccessDenied", "Request has expired"));
        }
        let declared = match content_length_header {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(S3Error::new(
                        400,
                        "BadRequest",
                        "An error occurred when parsing the HTTP request.",
                    ))
                }
            },
            None => None,
        };
        if let (Some(signed), Some(sent)) = (up.content_length, declared) {
            if signed != sent {
                return Err(S3Error::new(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided (Content-Length).",
                ));
            }
        }
        if let (Some(signed), Some(sent)) = (up.content_type.as_deref(), content_type) {
            if signed != sent {
                return Err(S3Error::new(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided (Content-Type).",
                ));
            }
        }
        let len = body.len() as u64;
        if len > max {
            return Err(S3Error::new(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
            ));
        }
        if let Some(d) = declared {
            if d != len {
                return Err(S3Error::new(
                    400,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header",
                ));
            }
        }
        if let Some(signed) = up.content_length {
            if signed != len {
                return Err(S3Error::new(
                    400,
                    "IncompleteBody",
                    "The body does not have the length the URL was signed for",
                ));
            }
        }
        up.bytes = Some(body.to_vec());
        up.uploaded_content_type = content_type.map(str::to_string);
        Ok(())
    }

    /// The stored bytes and content type of an uploaded path.
    pub fn get(&self, path: &str) -> Result<(Vec<u8>, Option<String>), S3Error> {
        match self.by_path.get(path) {
            Some(Upload {
                bytes: Some(b),
                uploaded_content_type,
                content_type,
                ..
            }) => Ok((
                b.clone(),
                uploaded_content_type
                    .clone()
                    .or_else(|| content_type.clone()),
            )),
            _ => Err(S3Error::new(
                404,
                "NoSuchKey",
                "The specified key does not exist.",
            )),
        }
    }

    /// The signature of a minted path (for download URLs).
    pub fn signature_of(&self, path: &str) -> Option<String> {
        self.by_path.get(path).map(|u| u.signature.clone())
    }

    pub fn list(&self) -> Vec<UploadInfo> {
        self.by_path
            .iter()
            .map(|(path, u)| UploadInfo {
                path: path.clone(),
                organization_id: u.organization_id.clone(),
                content_type: u.content_type.clone(),
                content_length: u.content_length,
                uploaded: u.bytes.is_some(),
                size: u.bytes.as_ref().map(|b| b.len() as u64),
            })
            .collect()
    }
}
