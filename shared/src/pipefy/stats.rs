//! Counters of one client (and all its clones), readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClientStats {
    /// HTTP requests sent to the GraphQL endpoint (every attempt, including re-sends).
    pub requests: u64,
    /// Requests that re-sent operations after a retryable failure.
    pub retries: u64,
    /// Answers that said "slow down" (HTTP 429 or a throttle error code).
    pub throttles: u64,
    /// Mutations (aliases) sent, counting each attempt.
    pub mutations: u64,
    /// Requests to the service-account token endpoint.
    pub token_requests: u64,
    /// Times Pipefy refused a guessed document shape (a document-level validation error)
    /// and the client switched to the documented form (docs/pipefy-api.md, Unverified).
    pub shape_fallbacks: u64,
    /// Documents Pipefy refused for their size (complexity, alias count) and the client
    /// sent again in halves.
    pub splits: u64,
    /// The rate limiter's current allowed requests per window (lower than configured after
    /// 429s, until it recovers).
    pub rate_per_window: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttles: AtomicU64,
    pub mutations: AtomicU64,
    pub token_requests: AtomicU64,
    pub shape_fallbacks: AtomicU64,
    pub splits: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, rate_per_window: f64) -> ClientStats {
        ClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            mutations: self.mutations.load(Ordering::Relaxed),
            token_requests: self.token_requests.load(Ordering::Relaxed),
            shape_fallbacks: self.shape_fallbacks.load(Ordering::Relaxed),
            splits: self.splits.load(Ordering::Relaxed),
            // Rates are small positive numbers; the float-to-int cast saturates.
            rate_per_window: rate_per_window.floor() as u32,
        }
    }
}
