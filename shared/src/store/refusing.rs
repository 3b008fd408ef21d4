//! A store that refuses lease renewals: the failure the lease fence exists for, made on
//! purpose. Used by the lease's unit tests and by the end-to-end test in which a second run
//! takes a destination over from one that can no longer renew.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectReader, ObjectStore, StoreError, StoreResult, WriteCondition};

/// Passes everything to `inner`, but refuses the next `refuse` renewals of a lease (writes of
/// a `lease.json` with If-Match) with a storage error, as an unreachable S3 would.
pub struct RefusingRenewals {
    inner: Arc<dyn ObjectStore>,
    refuse: AtomicUsize,
    refused: AtomicUsize,
}

impl RefusingRenewals {
    /// `refuse`: how many renewals to refuse (`usize::MAX`: all of them).
    pub fn new(inner: Arc<dyn ObjectStore>, refuse: usize) -> Self {
        RefusingRenewals {
            inner,
            refuse: AtomicUsize::new(refuse),
            refused: AtomicUsize::new(0),
        }
    }

    /// Renewals refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// The store behind the refusals, for writes that bypass them.
    pub fn inner(&self) -> &dyn ObjectStore {
        self.inner.as_ref()
    }
}

#[async_trait]
impl ObjectStore for RefusingRenewals {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.head(key).await
    }
    async fn get_stream(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        self.inner.get_stream(key).await
    }
    async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes), StoreError> {
        self.inner.get_bytes(key).await
    }
    async fn put_bytes(&self, key: &str, body: Bytes, when: WriteCondition) -> StoreResult<String> {
        let renewal = key.ends_with("lease.json") && matches!(when, WriteCondition::IfMatch(_));
        if renewal
            && self
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Other {
                key: key.into(),
                message: "lease renewal refused on purpose".into(),
            });
        }
        self.inner.put_bytes(key, body, when).await
    }
    async fn delete(&self, key: &str, when: WriteCondition) -> Result<(), StoreError> {
        self.inner.delete(key, when).await
    }
}
