//! Stores that pass everything to another store but step in before its writes: the failures
//! and races the state protocol exists for, made on purpose. [`RefusingRenewals`] is used by
//! the lease's unit tests and by the end-to-end test in which a second run takes a
//! destination over from one that can no longer renew; [`BeforeWrite`] lets a test make any
//! other race (another run writing between a read and a write) in one small type.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectReader, ObjectStore, StoreError, StoreResult, WriteCondition};

/// What happens before each write of a [`HookedStore`]: an error refuses the write, `Ok`
/// lets it through. `inner` is the store behind, for a hook that writes first itself.
#[async_trait]
pub trait BeforeWrite: Send + Sync {
    async fn before_put(
        &self,
        inner: &dyn ObjectStore,
        key: &str,
        when: &WriteCondition,
    ) -> StoreResult<()>;
}

/// Passes everything to `inner`; each `put_bytes` goes through `hook` first.
pub struct HookedStore<H> {
    inner: Arc<dyn ObjectStore>,
    hook: H,
}

impl<H: BeforeWrite> HookedStore<H> {
    pub fn with_hook(inner: Arc<dyn ObjectStore>, hook: H) -> Self {
        HookedStore { inner, hook }
    }

    /// The store behind the hook, for writes that bypass it.
    pub fn inner(&self) -> &dyn ObjectStore {
        self.inner.as_ref()
    }
}

#[async_trait]
impl<H: BeforeWrite> ObjectStore for HookedStore<H> {
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
        self.hook.before_put(self.inner(), key, &when).await?;
        self.inner.put_bytes(key, body, when).await
    }
    async fn delete(&self, key: &str, when: WriteCondition) -> Result<(), StoreError> {
        self.inner.delete(key, when).await
    }
}

/// Refuses the next `refuse` renewals of a lease (writes of a `lease.json` with If-Match)
/// with a storage error, as an unreachable S3 would.
pub struct RenewalRefusals {
    refuse: AtomicUsize,
    refused: AtomicUsize,
}

#[async_trait]
impl BeforeWrite for RenewalRefusals {
    async fn before_put(
        &self,
        _inner: &dyn ObjectStore,
        key: &str,
        when: &WriteCondition,
    ) -> StoreResult<()> {
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
        Ok(())
    }
}

/// A store that refuses lease renewals.
pub type RefusingRenewals = HookedStore<RenewalRefusals>;

impl HookedStore<RenewalRefusals> {
    /// `refuse`: how many renewals to refuse (`usize::MAX`: all of them).
    pub fn new(inner: Arc<dyn ObjectStore>, refuse: usize) -> Self {
        HookedStore::with_hook(
            inner,
            RenewalRefusals {
                refuse: AtomicUsize::new(refuse),
                refused: AtomicUsize::new(0),
            },
        )
    }

    /// Renewals refused so far.
    pub fn refused(&self) -> usize {
        self.hook.refused.load(Ordering::SeqCst)
    }
}
