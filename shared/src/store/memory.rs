//! An object store in memory, with the same conditional-write semantics as S3: for unit
//! tests of the state protocol and the handlers, where a paused tokio clock must not be
//! moved on by file-system threads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectReader, ObjectStore, StoreError, StoreResult, WriteCondition};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Bytes, u64)>>,
    next_etag: Mutex<u64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn meta(key: &str, body: &Bytes, etag: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: body.len() as u64,
            etag: format!("\"{etag}\""),
            version_id: None,
        }
    }

    /// Fails with [`StoreError::PreconditionFailed`] unless `condition` holds for `key`.
    fn check(
        objects: &BTreeMap<String, (Bytes, u64)>,
        key: &str,
        condition: &WriteCondition,
    ) -> Result<(), StoreError> {
        let current = objects.get(key).map(|(_, etag)| format!("\"{etag}\""));
        if condition.holds(current.as_deref()) {
            Ok(())
        } else {
            Err(StoreError::PreconditionFailed(key.to_string()))
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, u64)>> {
        // A poisoned lock only means a test panicked while holding it; the map is still whole.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (body, etag))| Self::meta(k, body, *etag))
            .collect())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.objects()
            .get(key)
            .map(|(body, etag)| Self::meta(key, body, *etag))
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn get_stream(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let (meta, body) = self.get_bytes(key).await?;
        Ok((meta, Box::pin(std::io::Cursor::new(body.to_vec()))))
    }

    async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes), StoreError> {
        self.objects()
            .get(key)
            .map(|(body, etag)| (Self::meta(key, body, *etag), body.clone()))
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn put_bytes(&self, key: &str, body: Bytes, when: WriteCondition) -> StoreResult<String> {
        let mut objects = self.objects();
        Self::check(&objects, key, &when)?;
        let etag = {
            let mut next = self.next_etag.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let meta = Self::meta(key, &body, etag);
        objects.insert(key.to_string(), (body, etag));
        Ok(meta.etag)
    }

    async fn delete(&self, key: &str, when: WriteCondition) -> Result<(), StoreError> {
        let mut objects = self.objects();
        if objects.get(key).is_none() {
            return Ok(());
        }
        Self::check(&objects, key, &when)?;
        objects.remove(key);
        Ok(())
    }
}
