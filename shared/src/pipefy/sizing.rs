//! How many aliases go into one document, learnt from Pipefy's answers.
//!
//! Pipefy publishes no figure for how many mutations a request may carry: its complexity
//! limit is far away (a create costs a few of 50,000 points) and its 33 s execution limit is
//! what a large document meets first (docs/pipefy-api.md §9). So mutation documents start at
//! the destination's `mutations_per_request`, grow by [`GROWTH`] after each full document
//! answered in under [`FAST`], up to `max_mutations_per_request`, and halve when a document
//! is answered slower than [`SLOW`], times out or fails with a 5xx: additive increase,
//! multiplicative decrease. A document Pipefy refuses for its size (complexity, alias cap)
//! also caps growth below that size for the rest of the client's life.
//!
//! One sizer per document kind per client, and a client is one destination and token: a
//! struggling destination does not shrink another's documents.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Answered in under this, a full document may grow: a quarter of Pipefy's 33 s limit.
pub const FAST: Duration = Duration::from_secs(8);

/// Answered slower than this, documents halve before one meets the 33 s limit.
pub const SLOW: Duration = Duration::from_secs(16);

/// Aliases added after a fast full document.
pub const GROWTH: usize = 2;

/// The size of the next document of one kind, shared by the client's concurrent requests.
#[derive(Debug)]
pub struct DocumentSize {
    current: AtomicUsize,
    ceiling: usize,
    /// The smallest size Pipefy refused for its size (`usize::MAX`: none).
    refused: AtomicUsize,
}

impl DocumentSize {
    /// Starts at `start` and never grows past `ceiling` (both at least 1).
    pub fn new(start: usize, ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        DocumentSize {
            current: AtomicUsize::new(start.clamp(1, ceiling)),
            ceiling,
            refused: AtomicUsize::new(usize::MAX),
        }
    }

    /// Aliases for the next document.
    pub fn get(&self) -> usize {
        self.current.load(Ordering::Relaxed).max(1)
    }

    /// The most this sizer may reach now: the ceiling, or below a size Pipefy refused.
    fn limit(&self) -> usize {
        let refused = self.refused.load(Ordering::Relaxed);
        self.ceiling.min(refused.saturating_sub(1)).max(1)
    }

    /// A document of `aliases` was answered (with data, whatever its operations' outcomes)
    /// after `took`.
    pub fn answered(&self, aliases: usize, took: Duration) {
        if took > SLOW {
            self.struggled();
        } else if took < FAST {
            let limit = self.limit();
            // Only a full document says the size works: a window's last, partial one does not.
            let _ = self
                .current
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                    (aliases >= now && now < limit).then(|| (now + GROWTH).min(limit))
                });
        }
    }

    /// A document timed out or failed with a 5xx: halve.
    pub fn struggled(&self) {
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some((now / 2).max(1))
            });
    }

    /// Pipefy refused a document of `aliases` for its size: never reach it again, and halve
    /// it for the next documents.
    pub fn refused(&self, aliases: usize) {
        self.refused.fetch_min(aliases, Ordering::Relaxed);
        let half = (aliases / 2).max(1);
        self.current.fetch_min(half, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    #[test]
    fn full_fast_documents_grow_to_the_ceiling_and_no_further() {
        let size = DocumentSize::new(30, 50);
        let mut seen = vec![size.get()];
        for _ in 0..20 {
            size.answered(size.get(), QUICK);
            seen.push(size.get());
        }
        assert_eq!(&seen[..4], [30, 32, 34, 36]);
        assert_eq!(size.get(), 50);
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn partial_or_middling_documents_do_not_grow() {
        let size = DocumentSize::new(30, 50);
        size.answered(12, QUICK);
        assert_eq!(size.get(), 30, "a partial document proves nothing");
        size.answered(30, Duration::from_secs(10));
        assert_eq!(size.get(), 30, "between fast and slow: stay");
    }

    #[test]
    fn slow_answers_timeouts_and_5xx_halve_down_to_one() {
        let size = DocumentSize::new(40, 50);
        size.answered(40, Duration::from_secs(20));
        assert_eq!(size.get(), 20);
        size.struggled();
        assert_eq!(size.get(), 10);
        for _ in 0..10 {
            size.struggled();
        }
        assert_eq!(size.get(), 1);
        size.answered(1, QUICK);
        assert_eq!(size.get(), 3, "and it grows back");
    }

    #[test]
    fn a_size_refusal_caps_growth_below_the_refused_size() {
        let size = DocumentSize::new(30, 50);
        size.refused(36);
        assert_eq!(size.get(), 18);
        for _ in 0..30 {
            size.answered(size.get(), QUICK);
        }
        assert_eq!(size.get(), 35, "never 36 again");
    }

    #[test]
    fn a_fixed_size_stays_fixed() {
        let size = DocumentSize::new(20, 20);
        size.answered(20, QUICK);
        assert_eq!(size.get(), 20);
        let clamped = DocumentSize::new(80, 50);
        assert_eq!(clamped.get(), 50);
    }
}
