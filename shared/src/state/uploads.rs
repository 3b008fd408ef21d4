//! The files a destination has uploaded to Pipefy: for each card or record (by key hash)
//! and each version of an S3 object (location and ETag), the storage path Pipefy gave it.
//! An attachment field that is written again (another of its files changed, a full resync)
//! reuses the path of every file it already uploaded, so an unchanged file is never
//! uploaded twice.
//!
//! Kept apart from the ledger (most destinations have no attachments, and a path is long):
//! under `<destination>/uploads/`, one JSON Lines part per window that uploaded, read once
//! by a run that needs it and folded into one part when there are many. Losing an entry
//! costs an upload again, never a wrong card: the ledger, not this list, says what was
//! written.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, WriteCondition};

use super::{StateError, StateStore};

/// Parts past this count are folded into one when the list is read.
const FOLD_AT: usize = 32;

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedFile {
    /// The card's or record's key hash.
    pub key_hash: u64,
    /// `s3://bucket/key`, or the key in the source's store.
    pub object: String,
    pub etag: String,
    /// Where Pipefy keeps it: what the attachment field holds.
    pub path: String,
}

/// `(key hash, object, etag)` -> storage path.
pub type UploadedFiles = HashMap<(u64, String, String), String>;

impl StateStore {
    fn uploads_prefix(&self) -> String {
        self.key("uploads/")
    }

    /// Every file uploaded so far. Many parts are folded into one (the run holds the
    /// lease, so no other writer adds parts meanwhile).
    pub async fn load_uploads(&self) -> Result<UploadedFiles, StateError> {
        let parts = self.store.list(&self.uploads_prefix()).await?;
        let mut files = UploadedFiles::new();
        for part in &parts {
            let bytes = match self.store.get_bytes(&part.key).await {
                Ok((_, b)) => b,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let f: UploadedFile =
                    serde_json::from_slice(line).map_err(|e| StateError::Corrupt {
                        key: part.key.clone(),
                        message: e.to_string(),
                    })?;
                files.insert((f.key_hash, f.object, f.etag), f.path);
            }
        }
        if parts.len() > FOLD_AT {
            let all: Vec<UploadedFile> = files
                .iter()
                .map(|((key_hash, object, etag), path)| UploadedFile {
                    key_hash: *key_hash,
                    object: object.clone(),
                    etag: etag.clone(),
                    path: path.clone(),
                })
                .collect();
            self.put_uploads("folded", &all).await?;
            let folded = self.uploads_key("folded");
            for part in parts.iter().filter(|p| p.key != folded) {
                if let Err(e) = self.store.delete(&part.key, WriteCondition::None).await {
                    tracing::warn!(key = %part.key, error = %e, "could not delete a folded part of the uploaded files");
                }
            }
        }
        Ok(files)
    }

    fn uploads_key(&self, name: &str) -> String {
        format!("{}{name}.jsonl", self.uploads_prefix())
    }

    /// Adds a part named `name` (unique per run and window) holding `files`.
    pub async fn put_uploads(&self, name: &str, files: &[UploadedFile]) -> Result<(), StateError> {
        let mut body = Vec::new();
        for f in files {
            serde_json::to_writer(&mut body, f).map_err(|e| StateError::Corrupt {
                key: self.uploads_key(name),
                message: e.to_string(),
            })?;
            body.push(b'\n');
        }
        self.store
            .put_bytes(
                &self.uploads_key(name),
                Bytes::from(body),
                WriteCondition::None,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{MemoryStore, ObjectStore};

    fn file(n: u64) -> UploadedFile {
        UploadedFile {
            key_hash: n,
            object: format!("s3://docs/invoices/{n}.pdf"),
            etag: format!("\"e{n}\""),
            path: format!("orgs/o/uploads/u{n}/{n}.pdf"),
        }
    }

    #[tokio::test]
    async fn parts_are_read_back_and_folded_when_many() {
        let store = Arc::new(MemoryStore::new());
        let state = StateStore::new(store.clone(), "state", "d");
        for n in 0..(FOLD_AT as u64 + 3) {
            state
                .put_uploads(&format!("r-{n}"), &[file(n)])
                .await
                .unwrap();
        }
        let files = state.load_uploads().await.unwrap();
        assert_eq!(files.len(), FOLD_AT + 3);
        let f = file(7);
        assert_eq!(
            files.get(&(7, f.object.clone(), f.etag.clone())),
            Some(&f.path)
        );
        let parts = store.list("state/d/uploads/").await.unwrap();
        assert_eq!(parts.len(), 1, "{parts:?}");
        assert_eq!(state.load_uploads().await.unwrap(), files);
    }
}
