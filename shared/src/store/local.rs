//! Local-folder object store, for CLI runs and tests.
//!
//! Keys are `/`-separated paths relative to the root. ETags are the quoted hex xxh3-128 of
//! the content, so the conditional-write contract of [`ObjectStore`] holds exactly as on S3.
//! Conditional writes are made atomic within the process by one mutex around
//! check + write-to-temp + rename; a rename never exposes a half-written file to readers.
//! Two processes writing the same folder at once are not protected (the CLI runs one).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use xxhash_rust::xxh3::Xxh3;

use super::{ObjectMeta, ObjectReader, ObjectStore, StoreError, StoreResult, WriteCondition};

/// Prefix of the temporary files written before the atomic rename; never listed.
const TEMP_PREFIX: &str = ".pipefy-sync-tmp-";

/// Serialises every conditional check-and-write of every `LocalStore` in the process, so two
/// writers racing on one key see the same order S3 would impose.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Content hashes by path, valid while size and modification time are unchanged: listing
    /// and then streaming a big file hashes it once.
    etags: Arc<Mutex<HashMap<PathBuf, CachedEtag>>>,
}

#[derive(Debug, Clone)]
struct CachedEtag {
    size: u64,
    modified: Option<SystemTime>,
    etag: String,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            etags: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key; rejects keys that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let mut path = self.root.clone();
        for segment in key.split('/') {
            match segment {
                "" | "." => continue,
                ".." => {
                    return Err(StoreError::Other {
                        key: key.to_string(),
                        message: "key must not contain '..'".to_string(),
                    })
                }
                s => path.push(s),
            }
        }
        Ok(path)
    }

    async fn blocking<T, F>(&self, key: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Other {
                key: key.to_string(),
                message: format!("local store task failed: {e}"),
            })?
    }

    /// Runs a write or delete of `key` under the process-wide write lock, given the metadata
    /// of the object now there (`None`: absent), so that checking a condition and writing are
    /// one step for every writer in the process.
    async fn locked<T, F>(&self, key: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx, String, PathBuf, Option<ObjectMeta>) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let path = self.path_of(key)?;
        let ctx = Ctx {
            etags: self.etags.clone(),
        };
        let k = key.to_string();
        self.blocking(key, move || {
            let _guard = WRITE_LOCK.lock().map_err(|_| StoreError::Other {
                key: k.clone(),
                message: "local store lock poisoned".to_string(),
            })?;
            let current = ctx.meta_if_exists(&k, &path)?;
            f(&ctx, k, path, current)
        })
        .await
    }
}

/// The ETag of some bytes: quoted hex xxh3-128, the same for a write and a later read.
pub fn content_etag(bytes: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn io_error(key: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(key.to_string()),
        std::io::ErrorKind::PermissionDenied => StoreError::AccessDenied(key.to_string()),
        _ => StoreError::Other {
            key: key.to_string(),
            message: e.to_string(),
        },
    }
}

/// Everything the blocking file operations need, cloned into the blocking task.
#[derive(Clone)]
struct Ctx {
    etags: Arc<Mutex<HashMap<PathBuf, CachedEtag>>>,
}

impl Ctx {
    /// Metadata of an existing file, hashing its content unless the cache is still valid.
    fn meta(&self, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let md = std::fs::metadata(path).map_err(|e| io_error(key, e))?;
        if !md.is_file() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let size = md.len();
        let modified = md.modified().ok();
        if let Some(etag) = self.cached(path, size, modified) {
            return Ok(ObjectMeta {
                key: key.to_string(),
                size,
                etag,
                version_id: None,
            });
        }
        let mut file = std::fs::File::open(path).map_err(|e| io_error(key, e))?;
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|e| io_error(key, e))?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        let etag = format!("\"{:032x}\"", hasher.digest128());
        self.remember(path, size, modified, &etag);
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            etag,
            version_id: None,
        })
    }

    fn meta_if_exists(&self, key: &str, path: &Path) -> Result<Option<ObjectMeta>, StoreError> {
        match self.meta(key, path) {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cached(&self, path: &Path, size: u64, modified: Option<SystemTime>) -> Option<String> {
        let cache = self.etags.lock().ok()?;
        let c = cache.get(path)?;
        (c.size == size && c.modified == modified && modified.is_some()).then(|| c.etag.clone())
    }

    fn remember(&self, path: &Path, size: u64, modified: Option<SystemTime>, etag: &str) {
        if let Ok(mut cache) = self.etags.lock() {
            cache.insert(
                path.to_path_buf(),
                CachedEtag {
                    size,
                    modified,
                    etag: etag.to_string(),
                },
            );
        }
    }

    fn forget(&self, path: &Path) {
        if let Ok(mut cache) = self.etags.lock() {
            cache.remove(path);
        }
    }
}

fn walk(dir: &Path, key_prefix: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: a linked folder of data files is a normal local setup.
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        let key = format!("{key_prefix}{name}");
        if md.is_dir() {
            walk(&path, &format!("{key}/"), out)?;
        } else if md.is_file() {
            out.push((key, path));
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk the deepest folder the prefix names, then keep the keys that start with it
        // (a prefix may end in the middle of a name, as on S3).
        let dir_part = match prefix.rfind('/') {
            Some(i) => prefix.get(..=i).unwrap_or(""),
            None => "",
        };
        let dir = self.path_of(dir_part)?;
        let key_prefix = dir_part
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(|s| format!("{s}/"))
            .collect::<String>();
        let wanted = format!("{key_prefix}{}", prefix.get(dir_part.len()..).unwrap_or(""));
        let ctx = Ctx {
            etags: self.etags.clone(),
        };
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, move || {
            let mut files = Vec::new();
            walk(&dir, &key_prefix, &mut files).map_err(|e| io_error(&prefix_owned, e))?;
            let mut out = Vec::new();
            for (key, path) in files {
                if !key.starts_with(&wanted) {
                    continue;
                }
                match ctx.meta(&key, &path) {
                    Ok(m) => out.push(m),
                    // Deleted between the walk and the stat: it is simply not there.
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path_of(key)?;
        let ctx = Ctx {
            etags: self.etags.clone(),
        };
        let k = key.to_string();
        self.blocking(key, move || ctx.meta(&k, &path)).await
    }

    async fn get_stream(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let meta = self.head(key).await?;
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(key, e))?;
        Ok((meta, Box::pin(file)))
    }

    async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes), StoreError> {
        let path = self.path_of(key)?;
        let ctx = Ctx {
            etags: self.etags.clone(),
        };
        let k = key.to_string();
        self.blocking(key, move || {
            if std::fs::metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                return Err(StoreError::NotFound(k));
            }
            let body = std::fs::read(&path).map_err(|e| io_error(&k, e))?;
            // The hash of what was read, so the ETag matches these bytes even if the file
            // changes right after.
            let etag = content_etag(&body);
            if let Ok(md) = std::fs::metadata(&path) {
                if md.len() == body.len() as u64 {
                    ctx.remember(&path, md.len(), md.modified().ok(), &etag);
                }
            }
            Ok((
                ObjectMeta {
                    key: k,
                    size: body.len() as u64,
                    etag,
                    version_id: None,
                },
                Bytes::from(body),
            ))
        })
        .await
    }

    async fn put_bytes(&self, key: &str, body: Bytes, when: WriteCondition) -> StoreResult<String> {
        self.locked(key, move |ctx, k, path, current| {
            if !when.holds(current.as_ref().map(|m| m.etag.as_str())) {
                return Err(StoreError::PreconditionFailed(k));
            }
            let parent = path.parent().ok_or_else(|| StoreError::Other {
                key: k.clone(),
                message: "key has no parent folder".to_string(),
            })?;
            std::fs::create_dir_all(parent).map_err(|e| io_error(&k, e))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(parent)
                .map_err(|e| io_error(&k, e))?;
            tmp.write_all(&body).map_err(|e| io_error(&k, e))?;
            tmp.flush().map_err(|e| io_error(&k, e))?;
            tmp.persist(&path).map_err(|e| io_error(&k, e.error))?;
            let etag = content_etag(&body);
            match std::fs::metadata(&path) {
                Ok(md) => ctx.remember(&path, md.len(), md.modified().ok(), &etag),
                Err(_) => ctx.forget(&path),
            }
            Ok(etag)
        })
        .await
    }

    async fn delete(&self, key: &str, when: WriteCondition) -> Result<(), StoreError> {
        self.locked(key, move |ctx, k, path, current| {
            // Deleting what is not there succeeds, whatever the condition.
            let Some(current) = current else {
                return Ok(());
            };
            if !when.holds(Some(&current.etag)) {
                return Err(StoreError::PreconditionFailed(k));
            }
            ctx.forget(&path);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(&k, e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn etags_follow_content_even_when_changed_behind_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let written = store
            .put_bytes("a/b.txt", Bytes::from_static(b"aaa"), WriteCondition::None)
            .await
            .unwrap();
        assert_eq!(written, content_etag(b"aaa"));
        assert_eq!(store.head("a/b.txt").await.unwrap().etag, written);
        // Another program rewrites the file with the same size.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("a/b.txt"), b"bbb").unwrap();
        let meta = store.head("a/b.txt").await.unwrap();
        assert_eq!(meta.etag, content_etag(b"bbb"));
        let stale = store
            .put_bytes(
                "a/b.txt",
                Bytes::from_static(b"c"),
                WriteCondition::IfMatch(written),
            )
            .await;
        assert!(matches!(stale, Err(StoreError::PreconditionFailed(_))));
    }

    #[tokio::test]
    async fn keys_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert_eq!(
            store.local_path("x//y/./z.csv"),
            Some(dir.path().join("x/y/z.csv"))
        );
        assert!(store.local_path("x/../../etc").is_none());
        // A temporary file of an interrupted write is never listed.
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/.pipefy-sync-tmp-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("p/real.json"), b"{}").unwrap();
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["p/real.json"]);
        assert!(
            super::super::etag_eq("W/\"abc\"", "abc")
                && !super::super::etag_eq("\"abc\"", "\"abd\"")
        );
    }
}
