//! Object storage: S3 (the real aws-sdk-rust client, endpoint override for moto), a local
//! folder, and memory (unit tests), behind one small trait used for sources, state,
//! checkpoints and reports. The state module (ledger, lease) depends on the
//! conditional-write semantics exactly as written below.

use async_trait::async_trait;
use bytes::Bytes;

pub mod local;
pub mod memory;
pub mod refusing;
pub mod s3;

pub use local::LocalStore;
pub use memory::MemoryStore;
pub use refusing::{BeforeWrite, HookedStore, RefusingRenewals};
pub use s3::{S3Buckets, S3Store};

/// Metadata of one listed or fetched object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// Key within the store (S3 key, or path relative to the local root, `/`-separated).
    pub key: String,
    pub size: u64,
    /// Opaque entity tag, quotes included as S3 returns them. Local store: a content hash.
    pub etag: String,
    /// S3 version ID when the bucket is versioned.
    pub version_id: Option<String>,
}

/// Precondition for a write. S3 conditional writes: `If-None-Match: *` and `If-Match: <etag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditional overwrite.
    None,
    /// Create only: fails with [`StoreError::PreconditionFailed`] if the key exists.
    IfAbsent,
    /// Replace only if the current ETag equals this one.
    IfMatch(String),
}

impl WriteCondition {
    /// Whether a write under this condition may go ahead when the object now at the key has
    /// the ETag `current` (`None`: the key is absent). The local and in-memory stores check
    /// it as S3 does server-side.
    pub fn holds(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (WriteCondition::None, _) => true,
            (WriteCondition::IfAbsent, current) => current.is_none(),
            (WriteCondition::IfMatch(want), Some(etag)) => etag_eq(want, etag),
            (WriteCondition::IfMatch(_), None) => false,
        }
    }
}

/// ETags compare without quotes and without a weak `W/` prefix, as HTTP does for If-Match.
pub(crate) fn etag_eq(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        s.trim().trim_start_matches("W/").trim_matches('"')
    }
    bare(a) == bare(b)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("precondition failed writing {0}: another writer changed it")]
    PreconditionFailed(String),
    #[error("access denied to {0}")]
    AccessDenied(String),
    #[error("storage error on {key}: {message}")]
    Other { key: String, message: String },
}

/// The media type of a file by its extension: what S3 serves report files as (a run page
/// over a presigned link must open as HTML, not download), and what an attachment is
/// uploaded as when its object carries no type of its own.
pub fn media_type(key: &str) -> Option<&'static str> {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "csv" => "text/csv",
        "txt" => "text/plain",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => return None,
    })
}

/// Opens the store of a bucket by name: where attachments in buckets other than the
/// source's are read from.
pub trait BucketStores: Send + Sync {
    fn bucket(&self, name: &str) -> std::sync::Arc<dyn ObjectStore>;
}

/// A readable byte stream of an object, for the streaming readers.
pub type ObjectReader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// What every store operation returns.
pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Human-readable location prefix for messages, e.g. `s3://bucket` or `/data`.
    fn describe(&self) -> String;
    /// The file behind a key when the store is a local folder, so readers that need random
    /// access (Parquet) read it in place instead of copying it. `None` for remote stores.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// All objects under a prefix (recursive), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    /// The media type the object was stored with, where the store keeps one (S3 does; a
    /// folder does not).
    async fn content_type(&self, _key: &str) -> StoreResult<Option<String>> {
        Ok(None)
    }
    /// Streams the object; never buffers it whole.
    async fn get_stream(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError>;
    /// Whole small object (state, config, checkpoints).
    async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes), StoreError>;
    /// Writes `body` if `when` holds and returns the new ETag.
    async fn put_bytes(&self, key: &str, body: Bytes, when: WriteCondition) -> StoreResult<String>;
    /// Deletes; with `IfMatch` only if unchanged. Deleting a missing key is not an error.
    async fn delete(&self, key: &str, condition: WriteCondition) -> Result<(), StoreError>;
}
