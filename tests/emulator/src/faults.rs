//! Fault injection (seeded, so tests are reproducible), request statistics and the
//! per-token rate limiter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Faults injected into `/graphql` (and `/queries`) requests. `Default` injects nothing.
///
/// Per request, in this order: `throttle_burst` (the next N requests answer 429), then
/// `latency_ms`, then one draw each for `error_5xx_rate` (answer 5xx, nothing applied),
/// `reset_rate` (close the connection without an answer, nothing applied) and
/// `timeout_rate` (hold the request `timeout_hold_ms`, then answer 504; with probability
/// `timeout_applied_share` the operations are executed before the hold). Inside the
/// document every mutation alias sleeps `latency_per_mutation_ms` and, after it has been
/// applied, fails with `applied_but_failed_rate` (`INTERNAL_SERVER_ERROR`,
/// "Something went wrong", data null for that alias).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub seed: u64,
    pub latency_ms: u64,
    pub latency_per_mutation_ms: u64,
    pub error_5xx_rate: f64,
    pub timeout_rate: f64,
    pub timeout_hold_ms: u64,
    pub timeout_applied_share: f64,
    pub reset_rate: f64,
    pub applied_but_failed_rate: f64,
    pub throttle_burst: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 1,
            latency_ms: 0,
            latency_per_mutation_ms: 0,
            error_5xx_rate: 0.0,
            timeout_rate: 0.0,
            timeout_hold_ms: 35_000,
            timeout_applied_share: 0.5,
            reset_rate: 0.0,
            applied_but_failed_rate: 0.0,
            throttle_burst: 0,
        }
    }
}

/// What the HTTP layer does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFault {
    None,
    Error5xx(u16),
    Reset,
    Timeout { applied: bool },
}

/// The live fault settings and their random generator.
pub(crate) struct FaultEngine {
    pub faults: Faults,
    rng: StdRng,
    burst_left: u32,
}

impl FaultEngine {
    pub fn new(faults: Faults) -> Self {
        let rng = StdRng::seed_from_u64(faults.seed);
        let burst_left = faults.throttle_burst;
        FaultEngine {
            faults,
            rng,
            burst_left,
        }
    }

    /// Replaces the settings and reseeds the generator.
    pub fn set(&mut self, faults: Faults) {
        *self = FaultEngine::new(faults);
    }

    /// Whether this request falls into a 429 burst (consumes one).
    pub fn take_throttle(&mut self) -> bool {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            true
        } else {
            false
        }
    }

    fn hit(&mut self, rate: f64) -> bool {
        // Always draw, so one setting does not shift the sequence of another.
        let x: f64 = self.rng.gen();
        x < rate
    }

    pub fn draw_request(&mut self) -> RequestFault {
        let f = self.faults.clone();
        let e5 = self.hit(f.error_5xx_rate);
        let code = match self.rng.gen_range(0..3u8) {
            0 => 500,
            1 => 502,
            _ => 503,
        };
        let reset = self.hit(f.reset_rate);
        let timeout = self.hit(f.timeout_rate);
        let applied = self.hit(f.timeout_applied_share);
        if e5 {
            RequestFault::Error5xx(code)
        } else if reset {
            RequestFault::Reset
        } else if timeout {
            RequestFault::Timeout { applied }
        } else {
            RequestFault::None
        }
    }

    pub fn draw_applied_but_failed(&mut self) -> bool {
        let rate = self.faults.applied_but_failed_rate;
        self.hit(rate)
    }
}

/// Counts of injected faults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub error_5xx: u64,
    pub timeouts: u64,
    /// Timeouts whose operations were executed before the hold.
    pub timeouts_applied: u64,
    pub resets: u64,
    pub applied_but_failed: u64,
    /// 429s from `throttle_burst`.
    pub throttled: u64,
}

/// Request statistics (`GET /_emulator/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every request to `/graphql` or `/queries`, whatever its answer.
    pub total: u64,
    /// Requests per `operationName` (`"<anonymous>"` without one), counted once the
    /// document parsed.
    pub by_operation: BTreeMap<String, u64>,
    /// Executed mutation fields by name (each alias counts once).
    pub mutations: BTreeMap<String, u64>,
    /// Executed query root fields by name.
    pub queries: BTreeMap<String, u64>,
    /// Field values received by `updateFieldsValues`, over all its calls: with
    /// `mutations["updateFieldsValues"]` it tells how many values each call carried.
    pub field_values_updated: u64,
    /// All 429 answers (rate limit and throttle bursts).
    pub status_429: u64,
    /// 429 answers from the per-token rate limiter.
    pub rate_limited: u64,
    pub status_401: u64,
    pub faults: FaultCounts,
    /// Tokens issued by `POST /oauth/token`.
    pub oauth_tokens_issued: u64,
}

/// Sliding-window request counter per token.
pub(crate) struct RateLimiter {
    pub limit: u32,
    pub window: Duration,
    hits: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            hits: HashMap::new(),
        }
    }

    /// Records a request; `false` when the token is over its limit (not recorded then).
    pub fn allow(&mut self, token: &str, now: Instant) -> bool {
        let q = self.hits.entry(token.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.limit as usize {
            return false;
        }
        q.push_back(now);
        true
    }

    pub fn clear(&mut self) {
        self.hits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let f = Faults {
            seed: 7,
            error_5xx_rate: 0.3,
            reset_rate: 0.2,
            ..Faults::default()
        };
        let mut a = FaultEngine::new(f.clone());
        let mut b = FaultEngine::new(f);
        let xa: Vec<_> = (0..50).map(|_| a.draw_request()).collect();
        let xb: Vec<_> = (0..50).map(|_| b.draw_request()).collect();
        assert_eq!(xa, xb);
        assert!(xa.iter().any(|x| matches!(x, RequestFault::Error5xx(_))));
        assert!(xa.contains(&RequestFault::None));
    }

    #[test]
    fn limiter_slides() {
        let mut l = RateLimiter::new(2, Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(l.allow("a", t0));
        assert!(l.allow("a", t0));
        assert!(!l.allow("a", t0));
        assert!(l.allow("b", t0));
        assert!(l.allow("a", t0 + Duration::from_millis(100)));
    }
}
