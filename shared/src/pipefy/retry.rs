//! Exponential backoff with jitter for retried requests.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry` (1 = first retry): `base * 2^(retry-1)` capped at
    /// `max`, then "equal jitter" (between half and all of it) so that the concurrent
    /// requests failed by one incident do not come back in lockstep.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// The delay for `retry`, but at least what the server asked for (`Retry-After`), which is
    /// itself capped at `max` so a hostile header cannot stall the run.
    pub(crate) fn delay_with_hint(&self, retry: u32, hint: Option<Duration>) -> Duration {
        let d = self.delay(retry);
        match hint {
            Some(h) => d.max(h.min(self.max)),
            None => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_jitter_and_cap() {
        let b = Backoff {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d10 = b.delay(10);
            assert!(d10 >= Duration::from_millis(500) && d10 <= Duration::from_millis(1000));
            assert!(b.delay(u32::MAX) <= Duration::from_millis(1000));
        }
        let h = b.delay_with_hint(1, Some(Duration::from_secs(60)));
        assert_eq!(h, Duration::from_millis(1000));
    }
}
