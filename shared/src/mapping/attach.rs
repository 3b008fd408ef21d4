//! Attachments from S3: an attachment column names objects in a bucket (`attach:` in the
//! mapping). The mapping turns each name into a [`FileRef`] (bucket, key, and the object's
//! ETag and size from a listing made once per run), so that a replaced object changes the
//! row's fingerprint and an unchanged one does not. The upload itself is the engine's
//! (engine/attachments.rs); the mapping stays pure.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::config::AttachConfig;
use crate::failure::FailureCode;

use super::resolve::quote;
use super::Problem;

/// The largest file Pipefy takes as an attachment (docs/pipefy-api.md §11: 512 MB).
pub const MAX_ATTACHMENT_BYTES: u64 = 512 * 1024 * 1024;

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStat {
    pub etag: String,
    pub size: u64,
}

/// What the run's listing of an attach location found: the objects under its prefix by
/// key, or why the location could not be listed (every row that names a file there fails
/// with it).
pub type Listing = Result<HashMap<String, ObjectStat>, String>;

/// One file to attach: where it is and which version of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// The bucket (`None`: the source's own store, which for a local run is a folder).
    pub bucket: Option<String>,
    pub key: String,
    pub etag: String,
    pub size: u64,
}

impl FileRef {
    /// `s3://bucket/key`, or the key alone for the source's own store: what messages show.
    pub fn location(&self) -> String {
        match &self.bucket {
            Some(b) => format!("s3://{b}/{}", self.key),
            None => self.key.clone(),
        }
    }

    /// The name the file gets in Pipefy: the key's last segment.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// An attach location of the mapping: a bucket and a prefix, and (once the run has listed
/// it) what is there.
#[derive(Debug)]
pub struct AttachSource {
    /// The bucket named by `attach.bucket`, or `None` for the source's bucket.
    pub bucket: Option<String>,
    /// The source's bucket, for `s3://` values that name it.
    source_bucket: Option<String>,
    /// Empty, or ending in `/`.
    pub prefix: String,
    listing: OnceLock<Listing>,
}

impl AttachSource {
    pub fn new(config: &AttachConfig, source_bucket: Option<&str>) -> Self {
        let prefix = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => format!("{p}/"),
        };
        let bucket = config
            .bucket
            .clone()
            .filter(|b| Some(b.as_str()) != source_bucket);
        AttachSource {
            bucket,
            source_bucket: source_bucket.map(str::to_string),
            prefix,
            listing: OnceLock::new(),
        }
    }

    /// `s3://bucket/prefix`: where files are read from, for messages.
    pub fn describe(&self) -> String {
        match self.bucket.as_deref().or(self.source_bucket.as_deref()) {
            Some(b) => format!("s3://{b}/{}", self.prefix),
            None => format!("the source folder/{}", self.prefix),
        }
    }

    /// Records what the run's listing found; a second listing is ignored.
    pub fn set_listing(&self, listing: Listing) {
        let _ = self.listing.set(listing);
    }

    /// The object a cell names: an `s3://bucket/key` URL, a key under the prefix, or a key
    /// relative to it.
    pub(crate) fn resolve(&self, text: &str) -> Result<FileRef, Problem> {
        let text = text.trim();
        let key = match text.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                let ours = self.bucket.as_deref().or(self.source_bucket.as_deref());
                if Some(bucket) != ours || !key.starts_with(&self.prefix) || key.is_empty() {
                    return Err(Problem::new(
                        FailureCode::InvalidValue,
                        format!(
                            "{} is outside the attach location {}; pipefy-sync reads files only there",
                            quote(text),
                            self.describe()
                        ),
                    ));
                }
                key.to_string()
            }
            None if text.contains("://") => {
                return Err(Problem::new(
                    FailureCode::InvalidValue,
                    format!(
                        "expected an object key or an s3:// URL, got {}",
                        quote(text)
                    ),
                ))
            }
            None => {
                let relative = text.trim_start_matches('/');
                if relative.starts_with(&self.prefix) {
                    relative.to_string()
                } else {
                    format!("{}{relative}", self.prefix)
                }
            }
        };
        let where_ = |key: &str| match self.bucket.as_deref().or(self.source_bucket.as_deref()) {
            Some(b) => format!("s3://{b}/{key}"),
            None => key.to_string(),
        };
        let listing = self
            .listing
            .get()
            .ok_or_else(|| Problem::internal("the attach location was not listed"))?;
        let objects = listing.as_ref().map_err(|why| {
            Problem::new(
                FailureCode::NotFound,
                format!("cannot read {}: {why}", where_(&key)),
            )
        })?;
        let Some(stat) = objects.get(&key) else {
            return Err(Problem::new(
                FailureCode::NotFound,
                format!("the file {} does not exist", where_(&key)),
            ));
        };
        if stat.size > MAX_ATTACHMENT_BYTES {
            return Err(Problem::new(
                FailureCode::TooLarge,
                format!(
                    "the file {} is {} bytes; Pipefy takes attachments up to 512 MB",
                    where_(&key),
                    stat.size
                ),
            ));
        }
        Ok(FileRef {
            bucket: self.bucket.clone(),
            key,
            etag: stat.etag.clone(),
            size: stat.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn source(bucket: Option<&str>, prefix: Option<&str>, listing: Listing) -> AttachSource {
        let s = AttachSource::new(
            &AttachConfig {
                bucket: bucket.map(str::to_string),
                prefix: prefix.map(str::to_string),
            },
            Some("lake"),
        );
        s.set_listing(listing);
        s
    }

    fn objects(items: &[(&str, u64)]) -> Listing {
        Ok(items
            .iter()
            .map(|(k, size)| {
                let stat = ObjectStat {
                    etag: format!("\"{k}\""),
                    size: *size,
                };
                (k.to_string(), stat)
            })
            .collect::<HashMap<_, _>>())
    }

    #[test]
    fn a_cell_names_a_key_a_relative_key_or_a_url() {
        let s = source(None, Some("/docs/"), objects(&[("docs/a.pdf", 3)]));
        for cell in [
            "a.pdf",
            "docs/a.pdf",
            "/a.pdf",
            "s3://lake/docs/a.pdf",
            " a.pdf ",
        ] {
            let f = s
                .resolve(cell)
                .unwrap_or_else(|p| panic!("{cell}: {}", p.message));
            assert_eq!(
                (f.bucket.as_deref(), f.key.as_str()),
                (None, "docs/a.pdf"),
                "{cell}"
            );
            assert_eq!((f.etag.as_str(), f.size), ("\"docs/a.pdf\"", 3));
            assert_eq!(f.file_name(), "a.pdf");
        }
        // The source's bucket named again is the source's store.
        let same = source(Some("lake"), None, objects(&[("x.png", 1)]));
        assert_eq!(same.bucket, None);
        assert_eq!(
            same.resolve("x.png").map(|f| f.location()).ok().as_deref(),
            Some("x.png")
        );
    }

    #[test]
    fn files_elsewhere_missing_or_too_large_are_refused_with_where() {
        let s = source(
            Some("docs"),
            Some("inv"),
            objects(&[("inv/big.bin", MAX_ATTACHMENT_BYTES + 1), ("other/x", 1)]),
        );
        let err = |cell: &str| s.resolve(cell).err().map(|p| (p.code, p.message));
        let (code, msg) = err("s3://lake/inv/a.pdf").expect("refused");
        assert_eq!(code, FailureCode::InvalidValue);
        assert!(
            msg.contains("outside the attach location s3://docs/inv/"),
            "{msg}"
        );
        let (code, _) = err("s3://docs/other/x").expect("refused");
        assert_eq!(code, FailureCode::InvalidValue);
        let (code, msg) = err("https://example.com/a.pdf").expect("refused");
        assert_eq!(code, FailureCode::InvalidValue);
        assert!(msg.contains("object key or an s3:// URL"), "{msg}");
        let (code, msg) = err("gone.pdf").expect("refused");
        assert_eq!(code, FailureCode::NotFound);
        assert!(
            msg.contains("s3://docs/inv/gone.pdf does not exist"),
            "{msg}"
        );
        let (code, msg) = err("big.bin").expect("refused");
        assert_eq!(code, FailureCode::TooLarge);
        assert!(msg.contains("512 MB"), "{msg}");
    }

    #[test]
    fn a_location_that_could_not_be_listed_fails_with_why() {
        let s = source(Some("locked"), None, Err("access denied to docs/".into()));
        let p = s
            .resolve("a.pdf")
            .err()
            .map(|p| (p.code, p.message))
            .expect("refused");
        assert_eq!(p.0, FailureCode::NotFound);
        assert!(
            p.1.contains("cannot read s3://locked/a.pdf: access denied"),
            "{}",
            p.1
        );
    }
}
