//! The request-rate limiter shared by every request of a run (docs/pipefy-api.md §9).
//!
//! Requests are paced: each one reserves the next free slot, one `window / rate` after the
//! previous one, so any window holds at most `rate` requests while a busy run stays at the
//! bound with no gaps (a reservation is taken only when a request is about to be sent).
//! The rate adapts AIMD-style: halved on a 429, raised by a small step on every success,
//! never above the configured bound. Several 429s caused by the same burst halve it once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Share of the configured rate the limiter never goes below after 429s.
const MIN_RATE_DIVISOR: f64 = 16.0;
/// Successes needed to climb back from zero to the configured rate (additive increase).
const RECOVERY_STEPS: f64 = 100.0;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    max_rate: f64,
    min_rate: f64,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Current allowed requests per window.
    rate: f64,
    /// The earliest instant the next request may start.
    next: Instant,
    /// When the rate was last decreased; 429s of requests sent before it are the same burst.
    last_decrease: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(requests_per_window: u32, window: Duration) -> Self {
        let max_rate = f64::from(requests_per_window.max(1));
        RateLimiter {
            max_rate,
            min_rate: (max_rate / MIN_RATE_DIVISOR).max(1.0),
            window,
            state: Mutex::new(State {
                rate: max_rate,
                next: Instant::now(),
                last_decrease: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (no partial updates), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interval(&self, rate: f64) -> Duration {
        Duration::from_secs_f64(self.window.as_secs_f64() / rate.max(f64::MIN_POSITIVE))
    }

    /// Waits for this request's slot and returns it (the instant the request may start).
    pub(crate) async fn acquire(&self) -> Instant {
        let slot = {
            let mut st = self.lock();
            let now = Instant::now();
            let slot = if st.next > now { st.next } else { now };
            st.next = slot + self.interval(st.rate);
            slot
        };
        tokio::time::sleep_until(slot).await;
        slot
    }

    /// A request whose slot was `slot` was answered 429: slow down (once per burst).
    pub(crate) fn on_throttle(&self, slot: Instant) {
        let mut st = self.lock();
        // A request that started at or before the last decrease belongs to that burst.
        if st.last_decrease.is_some_and(|d| slot <= d) {
            return;
        }
        let now = Instant::now();
        st.rate = (st.rate / 2.0).max(self.min_rate);
        st.last_decrease = Some(now);
        let pause = now + self.interval(st.rate);
        if st.next < pause {
            st.next = pause;
        }
        tracing::warn!(
            rate_per_window = st.rate,
            "Pipefy rate limit hit; slowing down"
        );
    }

    /// A request was answered normally: recover towards the configured rate.
    pub(crate) fn on_success(&self) {
        let mut st = self.lock();
        if st.rate < self.max_rate {
            st.rate = (st.rate + self.max_rate / RECOVERY_STEPS).min(self.max_rate);
        }
    }

    /// The current allowed requests per window.
    pub(crate) fn current_rate(&self) -> f64 {
        self.lock().rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // A paused clock: the pacing is measured in the limiter's own time, so the test neither
    // flakes on a busy machine nor waits for real.
    #[tokio::test(start_paused = true)]
    async fn paces_close_to_the_bound_without_exceeding_it() {
        // 50 requests per 500 ms, 8 concurrent callers: 75 requests should take ~750 ms.
        let lim = Arc::new(RateLimiter::new(50, Duration::from_millis(500)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let lim = lim.clone();
            tasks.push(tokio::spawn(async move {
                let mut slots = Vec::new();
                for _ in 0..10 {
                    slots.push(lim.acquire().await);
                }
                slots
            }));
        }
        let mut slots = Vec::new();
        for t in tasks {
            slots.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        slots.sort();
        // Never more than 50 starts in any 500 ms window.
        for (i, s) in slots.iter().enumerate() {
            let in_window = slots[i..]
                .iter()
                .take_while(|t| **t < *s + Duration::from_millis(500))
                .count();
            assert!(in_window <= 50, "{in_window} requests in one window");
        }
        // 80 requests at 100/s: the last starts at ~790 ms. At least 90% of the bound.
        let ideal = Duration::from_millis(790);
        assert!(elapsed >= Duration::from_millis(780), "{elapsed:?}");
        assert!(
            elapsed.as_secs_f64() <= ideal.as_secs_f64() / 0.9 + 0.05,
            "too slow: {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn halves_once_per_burst_and_recovers() {
        let lim = RateLimiter::new(100, Duration::from_secs(1));
        let s1 = lim.acquire().await;
        let s2 = lim.acquire().await;
        lim.on_throttle(s1);
        assert_eq!(lim.current_rate(), 50.0);
        // s2 was sent before the decrease: same burst, no second halving.
        lim.on_throttle(s2);
        assert_eq!(lim.current_rate(), 50.0);
        // A request sent after the decrease that is throttled again halves again.
        let s3 = lim.acquire().await;
        lim.on_throttle(s3);
        assert_eq!(lim.current_rate(), 25.0);
        for _ in 0..200 {
            lim.on_success();
        }
        assert_eq!(lim.current_rate(), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn never_goes_below_the_floor() {
        let lim = RateLimiter::new(32, Duration::from_millis(10));
        for _ in 0..20 {
            let s = lim.acquire().await;
            lim.on_throttle(s);
        }
        assert_eq!(lim.current_rate(), 2.0);
    }
}
