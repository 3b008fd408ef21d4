//! One mapped target's fingerprints in the ledger, one per key. A target with few distinct
//! values (a plan, a status, a constant, a date bucket) is held as a palette of at most 256
//! values and a byte per key; any other as 4 bytes per key. Segments store them the same
//! way: palettes inside the compressed frame (they compress well), dense columns after it,
//! uncompressed (random 32-bit values do not compress, and copying them is what loading and
//! saving cost).

use std::collections::HashMap;

/// Palettes hold at most this many values, so an index fits a byte.
const PALETTE_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FingerprintColumn {
    Palette { values: Vec<u32>, index: Vec<u8> },
    Dense(Vec<u32>),
}

impl FingerprintColumn {
    /// The fingerprint of the key at `i` (0: none recorded).
    pub(crate) fn get(&self, i: usize) -> Option<u32> {
        match self {
            FingerprintColumn::Palette { values, index } => {
                let b = *index.get(i)?;
                values.get(usize::from(b)).copied()
            }
            FingerprintColumn::Dense(v) => v.get(i).copied(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_dense(&self) -> bool {
        matches!(self, FingerprintColumn::Dense(_))
    }
}

/// Builds a column key by key: a palette until a 257th distinct value, then dense.
pub(crate) struct ColumnBuilder {
    values: Vec<u32>,
    lookup: HashMap<u32, u8>,
    index: Vec<u8>,
    dense: Option<Vec<u32>>,
}

impl ColumnBuilder {
    pub(crate) fn with_capacity(n: usize) -> Self {
        ColumnBuilder {
            values: Vec::new(),
            lookup: HashMap::new(),
            index: Vec::with_capacity(n),
            dense: None,
        }
    }

    pub(crate) fn push(&mut self, f: u32) {
        if let Some(dense) = &mut self.dense {
            dense.push(f);
            return;
        }
        if let Some(b) = self.lookup.get(&f) {
            self.index.push(*b);
            return;
        }
        match u8::try_from(self.values.len()) {
            Ok(b) if self.values.len() < PALETTE_MAX => {
                self.values.push(f);
                self.lookup.insert(f, b);
                self.index.push(b);
            }
            _ => {
                let mut dense = Vec::with_capacity(self.index.capacity().max(self.index.len() + 1));
                dense.extend(
                    self.index
                        .iter()
                        .map(|b| self.values.get(usize::from(*b)).copied().unwrap_or(0)),
                );
                dense.push(f);
                self.index = Vec::new();
                self.lookup = HashMap::new();
                self.dense = Some(dense);
            }
        }
    }

    pub(crate) fn finish(self) -> FingerprintColumn {
        match self.dense {
            Some(dense) => FingerprintColumn::Dense(dense),
            None => FingerprintColumn::Palette {
                values: self.values,
                index: self.index,
            },
        }
    }
}

/// Column builders for `slots` columns of about `n` keys.
pub(crate) fn builders(slots: usize, n: usize) -> Vec<ColumnBuilder> {
    (0..slots)
        .map(|_| ColumnBuilder::with_capacity(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_make_a_palette_and_many_a_dense_column() {
        let mut few = ColumnBuilder::with_capacity(1000);
        let mut many = ColumnBuilder::with_capacity(1000);
        for i in 0..1000u32 {
            few.push(7 + i % 3);
            many.push(i + 1);
        }
        let few = few.finish();
        let many = many.finish();
        assert!(!few.is_dense());
        assert!(many.is_dense());
        for i in 0..1000u32 {
            assert_eq!(few.get(i as usize), Some(7 + i % 3));
            assert_eq!(many.get(i as usize), Some(i + 1));
        }
        assert_eq!(few.get(1000), None);
    }
}
