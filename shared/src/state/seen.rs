//! The keys one run has seen: a second row with the same key is refused before anything is
//! sent (duplicate keys), and at the end the ledger's keys that no row carried are the
//! removed rows.
//!
//! Exact and immediate, and small, because a run reads every row of a table: a key that is in
//! the loaded ledger costs one bit (a bitset over the ledger's sorted base), any other key
//! 8 bytes in a sorted vector. A `HashSet<u64>` costs 18 to 27 bytes per key once its load
//! factor and the doubling on resize are counted, which made a run's memory grow with the
//! table far more than the rows needed.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::Ledger;

/// Every key of this run, split by whether the loaded ledger knows it.
pub struct SeenKeys {
    ledger: Arc<Ledger>,
    /// Bit `i`: the key at position `i` of the ledger's base was seen.
    in_ledger: Vec<u64>,
    /// Keys that are not in the ledger's base (new rows, and keys only in its overlay).
    others: CompactKeySet,
}

impl SeenKeys {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        let words = ledger.base_len().div_ceil(64);
        SeenKeys {
            ledger,
            in_ledger: vec![0; words],
            others: CompactKeySet::default(),
        }
    }

    /// Records `key`; false when this run had already seen it.
    pub fn insert(&mut self, key: u64) -> bool {
        if let Some(i) = self.ledger.base_position(key) {
            let bit = 1u64 << (i % 64);
            if let Some(word) = self.in_ledger.get_mut(i / 64) {
                let fresh = *word & bit == 0;
                *word |= bit;
                return fresh;
            }
        }
        self.others.insert(key)
    }

    pub fn contains(&self, key: u64) -> bool {
        if let Some(i) = self.ledger.base_position(key) {
            if let Some(word) = self.in_ledger.get(i / 64) {
                return word & (1u64 << (i % 64)) != 0;
            }
        }
        self.others.contains(key)
    }

    /// Keys seen so far.
    pub fn len(&self) -> usize {
        let in_ledger: usize = self.in_ledger.iter().map(|w| w.count_ones() as usize).sum();
        in_ledger + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key seen, zstd-compressed little-endian `u64`s in ascending order: what a run
    /// that hands off keeps for its next invocation.
    pub fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<u64> = Vec::with_capacity(self.len());
        for (w, word) in self.in_ledger.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                if let Some(k) = self.ledger.base_key(i) {
                    keys.push(k);
                }
                bits &= bits - 1;
            }
        }
        keys.extend(self.others.sorted.iter().copied());
        keys.extend(self.others.head.iter().copied());
        keys.sort_unstable();
        let raw: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        zstd::bulk::compress(&raw, 3).unwrap_or(raw)
    }

    /// Adds the keys of [`SeenKeys::encode`]'s output.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), String> {
        let raw = zstd::stream::decode_all(bytes).map_err(|e| format!("not zstd: {e}"))?;
        if raw.len() % 8 != 0 {
            return Err(format!("{} bytes is not a whole number of keys", raw.len()));
        }
        for chunk in raw.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.insert(u64::from_le_bytes(word));
        }
        Ok(())
    }
}

/// Keys are already 64-bit hashes (xxh3): hashing them again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; this keeps any other use correct, if slow.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HeadSet = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// Keys waiting in the hash set before they are merged into the sorted vector. Each merge
/// moves the whole vector once, so this bounds the merge work to rows / HEAD_KEYS passes
/// while the set itself stays a few MiB.
const HEAD_KEYS: usize = 1 << 16;
/// The top bits of a key pick its bucket in the sorted vector; the keys are uniform hashes,
/// so a bucket holds rows / 2^16 keys and a lookup touches a few cache lines.
const RADIX_BITS: u32 = 16;

/// An exact set of 64-bit hashes at 8 bytes per key.
struct CompactKeySet {
    sorted: Vec<u64>,
    /// `starts[b]..starts[b + 1]`: the keys of `sorted` whose top bits are `b`.
    starts: Vec<usize>,
    head: HeadSet,
}

impl Default for CompactKeySet {
    fn default() -> Self {
        CompactKeySet {
            sorted: Vec::new(),
            starts: vec![0; (1usize << RADIX_BITS) + 1],
            head: HeadSet::default(),
        }
    }
}

impl CompactKeySet {
    fn bucket(key: u64) -> usize {
        (key >> (64 - RADIX_BITS)) as usize
    }

    fn contains(&self, key: u64) -> bool {
        if self.head.contains(&key) {
            return true;
        }
        let b = Self::bucket(key);
        match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&from), Some(&to)) => self
                .sorted
                .get(from..to)
                .is_some_and(|keys| keys.binary_search(&key).is_ok()),
            _ => false,
        }
    }

    fn insert(&mut self, key: u64) -> bool {
        if self.contains(key) {
            return false;
        }
        self.head.insert(key);
        if self.head.len() >= HEAD_KEYS {
            self.merge_head();
        }
        true
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.head.len()
    }

    /// Merges the head into the sorted vector in place, from the back. The vector grows
    /// geometrically, so it is reallocated (copied) a logarithmic number of times, and its
    /// spare capacity is not resident until keys are written into it.
    fn merge_head(&mut self) {
        let mut add: Vec<u64> = self.head.drain().collect();
        add.sort_unstable();
        let old_len = self.sorted.len();
        self.sorted.reserve(add.len());
        self.sorted.resize(old_len + add.len(), 0);
        let (mut i, mut j, mut k) = (old_len, add.len(), self.sorted.len());
        // Invariant: i + j == k, so the slot written is never one still to be read.
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1] > add[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = add[j - 1];
                j -= 1;
            }
        }
        let mut pos = 0;
        for b in 0..(1usize << RADIX_BITS) {
            if let Some(start) = self.starts.get_mut(b) {
                *start = pos;
            }
            while self.sorted.get(pos).is_some_and(|&k| Self::bucket(k) <= b) {
                pos += 1;
            }
        }
        if let Some(end) = self.starts.last_mut() {
            *end = self.sorted.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_keys_come_back_whole_over_another_ledger() {
        let ledger = ledger_of(&[key_hash("a"), key_hash("b"), key_hash("c")]);
        let mut seen = SeenKeys::new(ledger.clone());
        for k in ["a", "c", "new-1", "new-2"] {
            assert!(seen.insert(key_hash(k)));
        }
        let bytes = seen.encode();
        // The next invocation loads a ledger that has one more key in its base.
        let next = ledger_of(&[
            key_hash("a"),
            key_hash("b"),
            key_hash("c"),
            key_hash("new-1"),
        ]);
        let mut again = SeenKeys::new(next);
        again.decode_into(&bytes).unwrap();
        assert_eq!(again.len(), 4);
        for k in ["a", "c", "new-1", "new-2"] {
            assert!(again.contains(key_hash(k)), "{k}");
        }
        assert!(!again.contains(key_hash("b")));
        assert!(again.decode_into(b"not zstd at all").is_err());
    }
    use crate::state::{key_hash, Entry};

    fn entry(id: u64) -> Entry {
        Entry::numbered(id)
    }

    fn ledger_of(keys: &[u64]) -> Arc<Ledger> {
        let mut ledger = Ledger::new();
        for (n, k) in keys.iter().enumerate() {
            ledger.insert(*k, entry(n as u64 + 1));
        }
        ledger.compact();
        Arc::new(ledger)
    }

    #[test]
    fn compact_set_is_exact_across_merges() {
        let mut set = CompactKeySet::default();
        let n = HEAD_KEYS * 3 + 17;
        let keys: Vec<u64> = (0..n).map(|i| key_hash(&format!("row-{i}"))).collect();
        for k in &keys {
            assert!(set.insert(*k), "a new key is reported as new");
        }
        assert_eq!(set.len(), n);
        assert_eq!(set.sorted.len(), HEAD_KEYS * 3, "three merges happened");
        assert!(
            set.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        for k in &keys {
            assert!(!set.insert(*k), "a repeated key is reported as seen");
            assert!(set.contains(*k));
        }
        for i in 0..1000 {
            assert!(!set.contains(key_hash(&format!("other-{i}"))));
        }
        assert_eq!(set.len(), n);
    }

    #[test]
    fn compact_set_handles_the_extreme_buckets() {
        let mut set = CompactKeySet::default();
        for k in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            assert!(set.insert(k));
        }
        set.merge_head();
        for k in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            assert!(set.contains(k));
            assert!(!set.insert(k));
        }
        assert!(!set.contains(2));
        assert!(!set.contains(u64::MAX - 2));
    }

    #[test]
    fn ledger_keys_cost_a_bit_and_are_told_apart_from_new_ones() {
        let known: Vec<u64> = (0..200).map(|i| key_hash(&format!("k{i}"))).collect();
        let mut seen = SeenKeys::new(ledger_of(&known));
        assert_eq!(seen.in_ledger.len(), 200usize.div_ceil(64));
        assert!(seen.is_empty());
        assert!(seen.insert(known[5]));
        assert!(!seen.insert(known[5]), "a ledger key seen twice");
        assert!(!seen.contains(known[6]));
        let fresh = key_hash("not in the ledger");
        assert!(seen.insert(fresh));
        assert!(!seen.insert(fresh), "a new key seen twice");
        assert_eq!(seen.others.len(), 1, "only the new key is stored in full");
        assert_eq!(seen.len(), 2);
        assert!(seen.contains(known[5]) && seen.contains(fresh));
    }
}
