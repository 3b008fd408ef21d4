//! The run's hold on its destination, and the fence that keeps a run that lost it from
//! writing.
//!
//! ```text
//!   acquire ──> held ──renew every ttl/4──> held ...
//!                 │  a renewal fails: retried with backoff while the lease is still ours
//!                 ▼
//!   now + margin > valid_until, or another run took the lease: lost (for good)
//! ```
//!
//! `valid_until` is measured on this process's clock from the moment a lease write was sent
//! (so it is never later than what the store holds). Before each request that writes, the run
//! asks [`LeaseKeeper::may_write`]: the lease must stay ours for at least `margin` (half the
//! lease's life), longer than a request to Pipefy takes. Once it is not, nothing more is
//! sent: a successor can only take the lease after it expired, by which time every request
//! this run sent has been answered, and the successor resolves this run's intents by key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::pipefy::WriteGate;

use super::{Lease, StateError, StateStore};

/// First wait before a failed renewal is tried again; doubled up to a eighth of the ttl.
const RENEW_BACKOFF_BASE: Duration = Duration::from_millis(100);

pub struct LeaseKeeper {
    state: StateStore,
    ttl: Duration,
    lease: Mutex<Lease>,
    valid_until: std::sync::Mutex<Instant>,
    lost: AtomicBool,
}

impl LeaseKeeper {
    /// Takes the lease for `holder`, trying for `wait`; `None` when another run holds it.
    pub async fn acquire(
        state: &StateStore,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Arc<LeaseKeeper>>, StateError> {
        let deadline = Instant::now() + wait;
        loop {
            let sent = Instant::now();
            if let Some(lease) = state.try_acquire_lease(holder, ttl).await? {
                return Ok(Some(Arc::new(LeaseKeeper {
                    state: state.clone(),
                    ttl,
                    lease: Mutex::new(lease),
                    valid_until: std::sync::Mutex::new(sent + ttl),
                    lost: AtomicBool::new(false),
                })));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// How long the lease must stay ours for a write to start.
    fn margin(&self) -> Duration {
        self.ttl / 2
    }

    fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn mark_lost(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(destination = %self.state.destination(), why, "the run lost its lease on the destination: it sends nothing more");
        }
    }

    /// Renews once; a refusal means another run took the lease.
    pub async fn renew(&self) -> Result<(), StateError> {
        let mut lease = self.lease.lock().await;
        let sent = Instant::now();
        match self.state.renew_lease(&mut lease, self.ttl).await {
            Ok(()) => {
                *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = sent + self.ttl;
                Ok(())
            }
            Err(e) => {
                if matches!(e, StateError::LeaseLost(_)) {
                    self.mark_lost("another run holds the lease now");
                }
                Err(e)
            }
        }
    }

    /// Renews the lease every quarter of its life until the task is aborted; a failed
    /// renewal is retried with backoff for as long as the lease is still ours.
    pub fn spawn_renewer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let keeper = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(keeper.ttl / 4).await;
                let mut delay = RENEW_BACKOFF_BASE;
                loop {
                    match keeper.renew().await {
                        Ok(()) => break,
                        Err(StateError::LeaseLost(_)) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lease renewal failed; retrying");
                            if Instant::now() + delay >= keeper.valid_until() {
                                keeper
                                    .mark_lost("the lease could not be renewed before it expired");
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min((keeper.ttl / 8).max(RENEW_BACKOFF_BASE));
                        }
                    }
                }
            }
        })
    }

    /// Hands the lease to another run id of this process (work drained after a run).
    pub async fn rename(&self, holder: &str) -> Result<(), StateError> {
        self.lease.lock().await.holder = holder.to_string();
        self.renew().await
    }

    /// Lets go of the lease; a lease already taken by another run is left alone.
    pub async fn release(&self) -> Result<(), StateError> {
        let lease = self.lease.lock().await.clone();
        self.state.release_lease(lease).await
    }
}

impl WriteGate for LeaseKeeper {
    fn may_write(&self) -> bool {
        if self.is_lost() {
            return false;
        }
        if Instant::now() + self.margin() > self.valid_until() {
            self.mark_lost("the lease would expire before a request could be answered");
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, RefusingRenewals, WriteCondition};
    use bytes::Bytes;

    async fn keeper(fail: usize) -> (Arc<LeaseKeeper>, Arc<RefusingRenewals>) {
        let store = Arc::new(RefusingRenewals::new(Arc::new(MemoryStore::new()), fail));
        let state = StateStore::new(store.clone(), "state/", "dest");
        let keeper = LeaseKeeper::acquire(&state, "run-1", Duration::from_secs(8), Duration::ZERO)
            .await
            .unwrap()
            .expect("the lease is free");
        (keeper, store)
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_gate_open() {
        let (keeper, store) = keeper(0).await;
        let _renewer = keeper.spawn_renewer();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(keeper.may_write());
        }
        assert!(!keeper.is_lost());
        assert_eq!(store.refused(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_failed_renewals_are_retried_with_backoff() {
        // Three refusals cost 100 + 200 + 400 ms of retries: well within the lease.
        let (keeper, store) = keeper(3).await;
        let _renewer = keeper.spawn_renewer();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(keeper.may_write());
        }
        assert_eq!(store.refused(), 3);
        assert!(!keeper.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_that_keep_failing_close_the_gate_before_the_lease_expires() {
        let (keeper, _store) = keeper(usize::MAX).await;
        let _renewer = keeper.spawn_renewer();
        let started = Instant::now();
        // Open while the lease has more than half its life (4 s of 8) left.
        tokio::time::sleep(Duration::from_millis(3900)).await;
        assert!(keeper.may_write());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !keeper.may_write(),
            "closed once less than the margin is left"
        );
        assert!(keeper.is_lost());
        // And it stays closed, even if a renewal were to succeed later.
        assert!(Instant::now() - started < Duration::from_secs(8));
        assert!(!keeper.may_write());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_run_closes_the_gate_at_once() {
        let (keeper, store) = keeper(0).await;
        // Another writer replaces the lease (a successor after expiry).
        let state = StateStore::new(store.clone(), "state/", "dest");
        store
            .inner()
            .put_bytes(
                "state/dest/lease.json",
                Bytes::from_static(b"{}"),
                WriteCondition::None,
            )
            .await
            .unwrap();
        assert!(matches!(
            keeper.renew().await,
            Err(StateError::LeaseLost(_))
        ));
        assert!(!keeper.may_write());
        drop(state);
    }
}
