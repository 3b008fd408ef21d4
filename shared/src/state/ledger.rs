//! The ledger: for every row key ever synced, the Pipefy id it became, a hash of the values
//! last written, a fingerprint per mapped target, and when. It is what makes reruns cheap
//! (unchanged rows are not sent, and of a changed row only its changed targets are) and
//! creates exactly-once (a key with an id is never created again).
//!
//! Size matters at 10 M keys, so keys are 64-bit hashes (the key text itself is only kept
//! for in-flight creates, in the manifest's intents) and the table is stored column-wise:
//! sorted key hashes, value hashes, ids, phase hashes and write times in parallel vectors
//! (28 bytes a key in memory), plus one fingerprint per key and mapped target (a byte for
//! a target with few distinct values, else 4; `state/fingerprints.rs`). Writes
//! made during a run go to a small overlay map and are merged in sorted order when a segment
//! is saved.
//!
//! A target is named by its slot: a 64-bit hash of the mapping entry (target name, source,
//! transforms, write policy), so a changed entry is a new slot that no key has written yet.
//! Fingerprint 0 means "nothing recorded"; real fingerprints are never 0.
//!
//! Segment encoding (little endian). `PSL2`: the magic, the length of a zstd frame (u64),
//! the frame, then the dense fingerprint columns uncompressed (u32 each, key by key, column
//! by column). The frame holds: the magic again, the entry count (u64), then per column: key
//! hashes as varint deltas (sorted), value hashes (u64 each), phase hashes (u32 each),
//! written_at minutes since the Unix epoch as varints, ids as tagged varints (numeric ids,
//! which Pipefy card ids are, are delta-encoded against the previous numeric id; other ids
//! index a string table stored after the columns as length-prefixed UTF-8), the slot count
//! (varint) and the slots (u64 each), and per slot a tag: a palette (its values, then a byte
//! per key) or dense (its values are in the tail). `PSL1`, the first version, is one zstd
//! frame of the same columns without slots: read as entries without targets.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use super::fingerprints::{builders, ColumnBuilder, FingerprintColumn};

/// A Pipefy card or record id. Card ids are numeric; table record ids may be opaque strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordId {
    Num(u64),
    Text(Box<str>),
}

impl RecordId {
    pub fn parse(id: &str) -> RecordId {
        match id.parse::<u64>() {
            // Keep the text form when it is not canonical ("007") so it round-trips exactly.
            Ok(n) if n.to_string() == id => RecordId::Num(n),
            _ => RecordId::Text(id.into()),
        }
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordId::Num(n) => write!(f, "{n}"),
            RecordId::Text(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: RecordId,
    /// Hash of the mapped values last written successfully.
    pub value_hash: u64,
    /// Hash of the phase id last set (0: none), so a phase change can be told apart.
    pub phase_hash: u32,
    /// Minutes since the Unix epoch of the last successful write.
    pub written_at_min: u32,
    /// `(slot, fingerprint)` of each mapped target's value last written. Empty for keys
    /// written before targets were fingerprinted (`PSL1`) and for creates recovered from
    /// intents: for those only `value_hash` is known.
    pub targets: Box<[(u64, u32)]>,
}

impl Entry {
    /// An entry without target fingerprints.
    pub fn new(id: RecordId, value_hash: u64, phase_hash: u32) -> Entry {
        Entry {
            id,
            value_hash,
            phase_hash,
            written_at_min: 0,
            targets: Box::default(),
        }
    }

    /// A numeric-id entry whose value hash is its id (a test fixture).
    #[cfg(test)]
    pub(crate) fn numbered(id: u64) -> Entry {
        Entry::new(RecordId::Num(id), id, 0)
    }

    /// The fingerprint recorded for `slot`, if any.
    pub fn fingerprint(&self, slot: u64) -> Option<u32> {
        self.targets
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, f)| *f)
    }
}

/// A mapping's target slots, located in one ledger's columns ([`Ledger::slot_lookup`]).
#[derive(Debug, Clone)]
pub struct SlotLookup {
    slots: Vec<u64>,
    in_base: Vec<Option<usize>>,
}

/// Hash of a row key (the text built from the key columns, or a row identity).
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

pub fn phase_hash(phase_id: Option<&str>) -> u32 {
    match phase_id {
        None => 0,
        // Never 0 for a real phase, so "no phase" stays distinct.
        Some(p) => (xxh3_64(p.as_bytes()) as u32) | 1,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LedgerError {
    #[error("ledger segment is corrupt: {0}")]
    Corrupt(String),
}

/// Sorted, column-wise base plus an overlay of this run's writes.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    keys: Vec<u64>,
    values: Vec<u64>,
    phases: Vec<u32>,
    times: Vec<u32>,
    /// Numeric id, or `TEXT_FLAG | index` into `texts`.
    ids: Vec<u64>,
    texts: Vec<Box<str>>,
    /// The target slots of the base's fingerprint column.
    slots: Vec<u64>,
    /// Per slot, one fingerprint per base key (0: none recorded), column by column as
    /// segments store them (`state/fingerprints.rs`).
    fingerprints: Vec<FingerprintColumn>,
    /// Writes not yet merged into the base; `None` marks a removal.
    overlay: HashMap<u64, Option<Entry>>,
}

const TEXT_FLAG: u64 = 1 << 63;
const MAGIC_V1: &[u8; 4] = b"PSL1";
const MAGIC: &[u8; 4] = b"PSL2";

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        let mut n = self.keys.len();
        for (k, v) in &self.overlay {
            let in_base = self.base_index(*k).is_some();
            match (in_base, v.is_some()) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn base_index(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// Where `key` sits in the sorted base (not the overlay): a dense index for bitsets.
    pub fn base_position(&self, key: u64) -> Option<usize> {
        self.base_index(key)
    }

    /// The key at `position` of the sorted base.
    pub fn base_key(&self, position: usize) -> Option<u64> {
        self.keys.get(position).copied()
    }

    /// Keys in the sorted base (the overlay not counted).
    pub fn base_len(&self) -> usize {
        self.keys.len()
    }

    fn base_id(&self, i: usize) -> Option<RecordId> {
        let raw = *self.ids.get(i)?;
        Some(if raw & TEXT_FLAG != 0 {
            let idx = usize::try_from(raw & !TEXT_FLAG).ok()?;
            RecordId::Text(self.texts.get(idx)?.clone())
        } else {
            RecordId::Num(raw)
        })
    }

    fn base_entry(&self, i: usize) -> Option<Entry> {
        Some(Entry {
            id: self.base_id(i)?,
            value_hash: *self.values.get(i)?,
            phase_hash: *self.phases.get(i)?,
            written_at_min: *self.times.get(i)?,
            targets: self
                .slots
                .iter()
                .zip(&self.fingerprints)
                .filter_map(|(s, column)| {
                    let f = column.get(i)?;
                    (f != 0).then_some((*s, f))
                })
                .collect(),
        })
    }

    /// The target slots the base holds fingerprints for.
    pub fn slots(&self) -> &[u64] {
        &self.slots
    }

    pub fn get(&self, key: u64) -> Option<Entry> {
        if let Some(v) = self.overlay.get(&key) {
            return v.clone();
        }
        self.base_index(key).and_then(|i| self.base_entry(i))
    }

    /// The id, value hash and phase hash of `key`, and whether it holds a fingerprint for
    /// every one of `slots`: what a rerun needs to call a row unchanged, read without
    /// building the key's target list.
    pub fn summary(&self, key: u64, slots: &SlotLookup) -> Option<(RecordId, u64, u32, bool)> {
        if let Some(v) = self.overlay.get(&key) {
            let e = v.as_ref()?;
            let covered = slots.slots.iter().all(|s| e.fingerprint(*s).is_some());
            return Some((e.id.clone(), e.value_hash, e.phase_hash, covered));
        }
        let i = self.base_index(key)?;
        let id = self.base_id(i)?;
        let covered = slots.in_base.iter().all(|j| {
            j.and_then(|j| self.fingerprints.get(j)?.get(i))
                .is_some_and(|f| f != 0)
        });
        Some((id, *self.values.get(i)?, *self.phases.get(i)?, covered))
    }

    /// `slots` with where each sits in the base's columns, for [`Ledger::summary`]: found
    /// once per run, not once per row.
    pub fn slot_lookup(&self, slots: Vec<u64>) -> SlotLookup {
        let in_base = slots
            .iter()
            .map(|s| self.slots.iter().position(|b| b == s))
            .collect();
        SlotLookup { slots, in_base }
    }

    pub fn insert(&mut self, key: u64, entry: Entry) {
        self.overlay.insert(key, Some(entry));
    }

    pub fn remove(&mut self, key: u64) {
        self.overlay.insert(key, None);
    }

    /// Every live entry, in key order (base merged with overlay).
    pub fn iter(&self) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let mut overlay_keys: Vec<u64> = self.overlay.keys().copied().collect();
        overlay_keys.sort_unstable();
        MergeIter {
            ledger: self,
            base_pos: 0,
            overlay_keys,
            overlay_pos: 0,
        }
    }

    /// Folds the overlay into the sorted base.
    pub fn compact(&mut self) {
        if self.overlay.is_empty() {
            return;
        }
        *self = self.merged();
    }

    /// The base with the overlay merged in, built column by column: base entries are
    /// copied from the columns, never built as [`Entry`] values.
    fn merged(&self) -> Ledger {
        let mut overlay_keys: Vec<u64> = self.overlay.keys().copied().collect();
        overlay_keys.sort_unstable();
        let mut slots = self.slots.clone();
        for s in slots_of(self.overlay.values().flatten()) {
            if !slots.contains(&s) {
                slots.push(s);
            }
        }
        // Where each slot of the merged ledger sits in the base.
        let in_base: Vec<Option<usize>> = slots
            .iter()
            .map(|s| self.slots.iter().position(|b| b == s))
            .collect();
        let mut out = Ledger {
            slots,
            ..Ledger::default()
        };
        let n = self.keys.len() + overlay_keys.len();
        let mut columns = out.reserve(n);
        let (mut b, mut o) = (0, 0);
        loop {
            let base_key = self.keys.get(b).copied();
            let over_key = overlay_keys.get(o).copied();
            match (base_key, over_key) {
                (None, None) => break,
                (Some(k), over) if over.is_none_or(|ok| k < ok) => {
                    out.push_base(self, b, k, &in_base, &mut columns);
                    b += 1;
                }
                (base, Some(k)) => {
                    if base == Some(k) {
                        b += 1;
                    }
                    o += 1;
                    if let Some(Some(e)) = self.overlay.get(&k) {
                        out.push_sorted(k, e.clone(), &mut columns);
                    }
                }
                // Unreachable: a base key with no overlay key is the arm above.
                (Some(_), None) => break,
            }
        }
        out.fingerprints = columns.into_iter().map(ColumnBuilder::finish).collect();
        out
    }

    /// A base from entries in key order; its slots are every slot the entries name.
    fn from_sorted(entries: Vec<(u64, Entry)>) -> Ledger {
        let mut l = Ledger {
            slots: slots_of(entries.iter().map(|(_, e)| e)),
            ..Ledger::default()
        };
        let mut columns = l.reserve(entries.len());
        for (k, e) in entries {
            l.push_sorted(k, e, &mut columns);
        }
        l.fingerprints = columns.into_iter().map(ColumnBuilder::finish).collect();
        l
    }

    /// Room for `n` keys; the builders of the fingerprint columns.
    fn reserve(&mut self, n: usize) -> Vec<ColumnBuilder> {
        self.keys.reserve(n);
        self.values.reserve(n);
        self.phases.reserve(n);
        self.times.reserve(n);
        self.ids.reserve(n);
        builders(self.slots.len(), n)
    }

    /// Appends an entry whose key is greater than every key in the base; its targets must
    /// be among `self.slots`.
    fn push_sorted(&mut self, key: u64, e: Entry, columns: &mut [ColumnBuilder]) {
        // Entries of one run list their targets in the ledger's slot order: copied as they
        // are; others are looked up slot by slot.
        let aligned = e.targets.len() == self.slots.len()
            && e.targets.iter().zip(&self.slots).all(|((s, _), b)| s == b);
        for (j, column) in columns.iter_mut().enumerate() {
            let f = if aligned {
                e.targets.get(j).map(|(_, f)| *f)
            } else {
                self.slots.get(j).and_then(|s| e.fingerprint(*s))
            };
            column.push(f.unwrap_or(0));
        }
        let raw = match e.id {
            RecordId::Num(n) if n & TEXT_FLAG == 0 => n,
            other => {
                self.texts.push(other.to_string().into_boxed_str());
                TEXT_FLAG | (self.texts.len() as u64 - 1)
            }
        };
        self.push_row(key, e.value_hash, e.phase_hash, e.written_at_min, raw);
    }

    /// Appends the base entry at `i` of `from`; `in_base` maps this ledger's slots to
    /// `from`'s.
    fn push_base(
        &mut self,
        from: &Ledger,
        i: usize,
        key: u64,
        in_base: &[Option<usize>],
        columns: &mut [ColumnBuilder],
    ) {
        for (column, pos) in columns.iter_mut().zip(in_base) {
            let f = pos
                .and_then(|p| from.fingerprints.get(p))
                .and_then(|c| c.get(i))
                .unwrap_or(0);
            column.push(f);
        }
        let raw = from.ids.get(i).copied().unwrap_or(0);
        let raw = if raw & TEXT_FLAG != 0 {
            let text = usize::try_from(raw & !TEXT_FLAG)
                .ok()
                .and_then(|t| from.texts.get(t))
                .cloned()
                .unwrap_or_default();
            self.texts.push(text);
            TEXT_FLAG | (self.texts.len() as u64 - 1)
        } else {
            raw
        };
        let get32 = |v: &[u32]| v.get(i).copied().unwrap_or(0);
        let value = from.values.get(i).copied().unwrap_or(0);
        self.push_row(key, value, get32(&from.phases), get32(&from.times), raw);
    }

    fn push_row(&mut self, key: u64, value: u64, phase: u32, time: u32, raw_id: u64) {
        self.keys.push(key);
        self.values.push(value);
        self.phases.push(phase);
        self.times.push(time);
        self.ids.push(raw_id);
    }

    /// Applies a segment on top of this ledger (later segments win; removals are encoded as
    /// entries whose id is the empty text).
    pub fn apply_segment(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let seg = decode_segment(bytes)?;
        if self.keys.is_empty() && self.overlay.is_empty() {
            // Loading a base: take it as is, no merge needed.
            let mut base = seg;
            base.drop_tombstones();
            *self = base;
            return Ok(());
        }
        for (k, e) in seg.iter() {
            if matches!(&e.id, RecordId::Text(t) if &**t == TOMBSTONE) {
                self.overlay.insert(k, None);
            } else {
                self.overlay.insert(k, Some(e));
            }
        }
        Ok(())
    }

    fn drop_tombstones(&mut self) {
        let has_tombstone = self.texts.iter().any(|t| &**t == TOMBSTONE);
        if !has_tombstone {
            return;
        }
        let entries: Vec<(u64, Entry)> = self
            .iter()
            .filter(|(_, e)| !matches!(&e.id, RecordId::Text(t) if &**t == TOMBSTONE))
            .collect();
        *self = Ledger::from_sorted(entries);
    }

    /// The whole ledger as one segment (a new base).
    pub fn encode_full(&self) -> Vec<u8> {
        if self.overlay.is_empty() {
            return encode_columns(self);
        }
        encode_columns(&self.merged())
    }

    /// Only the overlay (this run's writes), with removals as tombstones. The overlay stays
    /// readable until [`Ledger::compact`].
    pub fn encode_overlay(&self) -> Vec<u8> {
        let entries: Vec<(u64, Option<Entry>)> =
            self.overlay.iter().map(|(k, v)| (*k, v.clone())).collect();
        encode_delta(entries)
    }
}

/// A delta segment from a list of writes (`None`: removal), in any order; the last write of
/// a key wins.
pub fn encode_delta(writes: Vec<(u64, Option<Entry>)>) -> Vec<u8> {
    let mut latest: HashMap<u64, Option<Entry>> = HashMap::with_capacity(writes.len());
    for (k, v) in writes {
        latest.insert(k, v);
    }
    let mut entries: Vec<(u64, Entry)> = latest
        .into_iter()
        .map(|(k, v)| {
            let e = v.unwrap_or_else(|| Entry::new(RecordId::Text(TOMBSTONE.into()), 0, 0));
            (k, e)
        })
        .collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    encode_entries(entries)
}

/// Every slot the entries name, in the order first seen.
fn slots_of<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<u64> {
    let mut slots: Vec<u64> = Vec::new();
    let mut last: &[(u64, u32)] = &[];
    for e in entries {
        // Most entries name the same slots in the same order as the one before.
        let same =
            e.targets.len() == last.len() && e.targets.iter().zip(last).all(|(a, b)| a.0 == b.0);
        if same {
            continue;
        }
        for (s, _) in e.targets.iter() {
            if !slots.contains(s) {
                slots.push(*s);
            }
        }
        last = &e.targets;
    }
    slots
}

/// The id text that marks a removal inside a delta segment.
const TOMBSTONE: &str = "";

struct MergeIter<'a> {
    ledger: &'a Ledger,
    base_pos: usize,
    overlay_keys: Vec<u64>,
    overlay_pos: usize,
}

impl Iterator for MergeIter<'_> {
    type Item = (u64, Entry);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_key = self.ledger.keys.get(self.base_pos).copied();
            let over_key = self.overlay_keys.get(self.overlay_pos).copied();
            match (base_key, over_key) {
                (None, None) => return None,
                (Some(b), o) if o.is_none_or(|o| b < o) => {
                    self.base_pos += 1;
                    if let Some(e) = self.ledger.base_entry(self.base_pos - 1) {
                        return Some((b, e));
                    }
                }
                (b, o) => {
                    // Here the overlay key exists and is <= the base key.
                    let o = o?;
                    self.overlay_pos += 1;
                    if b == Some(o) {
                        self.base_pos += 1;
                    }
                    if let Some(Some(e)) = self.ledger.overlay.get(&o) {
                        return Some((o, e.clone()));
                    }
                }
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<u64, LedgerError> {
        u64::try_from(varint_u128(self)?)
            .map_err(|_| LedgerError::Corrupt("varint too long".into()))
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], LedgerError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| LedgerError::Corrupt("truncated segment".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, LedgerError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, LedgerError> {
        let b = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
}

/// A segment of `entries` (in key order).
fn encode_entries(entries: Vec<(u64, Entry)>) -> Vec<u8> {
    encode_columns(&Ledger::from_sorted(entries))
}

/// A segment of the base's columns (the overlay is not written), written column by column.
fn encode_columns(l: &Ledger) -> Vec<u8> {
    let n = l.keys.len();
    let mut out = Vec::with_capacity(n * (24 + 4 * l.slots.len()) + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    let mut prev = 0u64;
    for k in &l.keys {
        put_varint(&mut out, k.wrapping_sub(prev));
        prev = *k;
    }
    for v in &l.values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for p in &l.phases {
        out.extend_from_slice(&p.to_le_bytes());
    }
    for t in &l.times {
        put_varint(&mut out, u64::from(*t));
    }
    // Ids: tag bit 0 = numeric (zig-zag delta against the previous numeric id), 1 = text index.
    let mut prev_num: i128 = 0;
    for raw in &l.ids {
        if raw & TEXT_FLAG != 0 {
            put_varint_u128(&mut out, (u128::from(raw & !TEXT_FLAG) << 1) | 1);
        } else {
            let delta = i128::from(*raw) - prev_num;
            prev_num = i128::from(*raw);
            let zz = if delta >= 0 {
                (delta as u128) << 1
            } else {
                (((-delta) as u128) << 1) - 1
            };
            // Deltas of u64 ids fit in 65 bits after zig-zag; store the tag in bit 0.
            put_varint_u128(&mut out, zz << 1);
        }
    }
    put_varint(&mut out, l.texts.len() as u64);
    for t in &l.texts {
        put_varint(&mut out, t.len() as u64);
        out.extend_from_slice(t.as_bytes());
    }
    put_varint(&mut out, l.slots.len() as u64);
    for slot in &l.slots {
        out.extend_from_slice(&slot.to_le_bytes());
    }
    // Palettes go in the frame; dense columns after it, as they are.
    let mut tail = Vec::new();
    for column in &l.fingerprints {
        match column {
            FingerprintColumn::Palette { values, index } => {
                out.push(PALETTE);
                put_varint(&mut out, values.len() as u64);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(index);
            }
            FingerprintColumn::Dense(values) => {
                out.push(DENSE);
                tail.reserve(values.len() * 4);
                for v in values {
                    tail.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    // Hashes do not compress, but the varint columns, the texts and the palettes do.
    let frame = zstd::bulk::compress(&out, 3).unwrap_or_default();
    let mut segment = Vec::with_capacity(12 + frame.len() + tail.len());
    segment.extend_from_slice(MAGIC);
    segment.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    segment.extend_from_slice(&frame);
    segment.extend_from_slice(&tail);
    segment
}

/// Column tags of a `PSL2` segment's fingerprint columns.
const PALETTE: u8 = 1;
const DENSE: u8 = 0;

/// The content of a zstd frame, decompressed into a buffer of its recorded size.
fn decompress(frame: &[u8]) -> Result<Vec<u8>, LedgerError> {
    let corrupt = |e: std::io::Error| LedgerError::Corrupt(format!("zstd: {e}"));
    match zstd::zstd_safe::get_frame_content_size(frame) {
        // Within what a frame of this size can hold (zstd's ratio is bounded), so a corrupt
        // header cannot ask for gigabytes.
        Ok(Some(size)) if size <= (frame.len() as u64).saturating_mul(1 << 15) => {
            let size = usize::try_from(size)
                .map_err(|_| LedgerError::Corrupt("frame content size".into()))?;
            zstd::bulk::decompress(frame, size).map_err(corrupt)
        }
        _ => zstd::stream::decode_all(frame).map_err(corrupt),
    }
}

fn put_varint_u128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_u128(c: &mut Cursor<'_>) -> Result<u128, LedgerError> {
    let mut v: u128 = 0;
    let mut shift = 0;
    loop {
        let b = *c
            .buf
            .get(c.pos)
            .ok_or_else(|| LedgerError::Corrupt("truncated varint".into()))?;
        c.pos += 1;
        if shift >= 128 {
            return Err(LedgerError::Corrupt("varint too long".into()));
        }
        v |= u128::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn decode_segment(segment: &[u8]) -> Result<Ledger, LedgerError> {
    // `PSL2`: magic, frame length, frame, dense fingerprint columns. `PSL1`: one frame.
    let (frame, mut tail) = match segment.strip_prefix(MAGIC.as_slice()) {
        Some(rest) => {
            let truncated = || LedgerError::Corrupt("truncated segment".into());
            let len_bytes: [u8; 8] = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(truncated)?;
            let end = usize::try_from(u64::from_le_bytes(len_bytes))
                .ok()
                .and_then(|len| len.checked_add(8))
                .ok_or_else(truncated)?;
            let frame = rest.get(8..end).ok_or_else(truncated)?;
            (
                frame,
                Cursor {
                    buf: rest,
                    pos: end,
                },
            )
        }
        None => (segment, Cursor { buf: &[], pos: 0 }),
    };
    let raw = decompress(frame)?;
    let mut c = Cursor { buf: &raw, pos: 0 };
    let has_targets = match c.bytes(4)? {
        m if m == MAGIC => true,
        m if m == MAGIC_V1 => false,
        _ => return Err(LedgerError::Corrupt("bad magic".into())),
    };
    let n = usize::try_from(c.u64()?).map_err(|_| LedgerError::Corrupt("count".into()))?;
    if n > raw.len() {
        return Err(LedgerError::Corrupt(
            "entry count larger than segment".into(),
        ));
    }
    let mut l = Ledger::default();
    // The fingerprint columns are read whole below.
    let _ = l.reserve(n);
    let mut prev = 0u64;
    for _ in 0..n {
        prev = prev.wrapping_add(c.varint()?);
        l.keys.push(prev);
    }
    for _ in 0..n {
        l.values.push(c.u64()?);
    }
    for _ in 0..n {
        l.phases.push(c.u32()?);
    }
    for _ in 0..n {
        let t = c.varint()?;
        l.times
            .push(u32::try_from(t).map_err(|_| LedgerError::Corrupt("time".into()))?);
    }
    let mut prev_num: i128 = 0;
    let mut text_refs = Vec::new();
    // Numeric ids with the top bit set collide with TEXT_FLAG in memory: kept as text, as
    // `push_sorted` does.
    let mut wide_numbers = Vec::new();
    for i in 0..n {
        let v = varint_u128(&mut c)?;
        if v & 1 == 1 {
            text_refs.push((i, (v >> 1) as usize));
            l.ids.push(0);
        } else {
            let zz = v >> 1;
            let delta: i128 = if zz & 1 == 0 {
                (zz >> 1) as i128
            } else {
                -(((zz + 1) >> 1) as i128)
            };
            prev_num += delta;
            let id = u64::try_from(prev_num).map_err(|_| LedgerError::Corrupt("id".into()))?;
            if id & TEXT_FLAG != 0 {
                wide_numbers.push((i, id));
            }
            l.ids.push(id);
        }
    }
    let text_count =
        usize::try_from(c.varint()?).map_err(|_| LedgerError::Corrupt("texts".into()))?;
    let mut texts = Vec::with_capacity(text_count.min(raw.len()));
    for _ in 0..text_count {
        let len = usize::try_from(c.varint()?).map_err(|_| LedgerError::Corrupt("text".into()))?;
        let s = std::str::from_utf8(c.bytes(len)?)
            .map_err(|_| LedgerError::Corrupt("text id is not UTF-8".into()))?;
        texts.push(Box::<str>::from(s));
    }
    for (i, t) in text_refs {
        if t >= texts.len() {
            return Err(LedgerError::Corrupt("text index out of range".into()));
        }
        if let Some(slot) = l.ids.get_mut(i) {
            *slot = TEXT_FLAG | t as u64;
        }
    }
    for (i, id) in wide_numbers {
        texts.push(id.to_string().into_boxed_str());
        if let Some(slot) = l.ids.get_mut(i) {
            *slot = TEXT_FLAG | (texts.len() as u64 - 1);
        }
    }
    l.texts = texts;
    if has_targets {
        let width =
            usize::try_from(c.varint()?).map_err(|_| LedgerError::Corrupt("slots".into()))?;
        if width > raw.len() / 8 {
            return Err(LedgerError::Corrupt(
                "slot count larger than segment".into(),
            ));
        }
        for _ in 0..width {
            l.slots.push(c.u64()?);
        }
        let too_large = || LedgerError::Corrupt("fingerprint column larger than segment".into());
        for _ in 0..width {
            let column = match c.bytes(1)?.first() {
                Some(&PALETTE) => {
                    let count = usize::try_from(c.varint()?).map_err(|_| too_large())?;
                    if count > 256 {
                        return Err(LedgerError::Corrupt("palette of more than 256".into()));
                    }
                    let values = (0..count).map(|_| c.u32()).collect::<Result<_, _>>()?;
                    let index = c.bytes(n)?.to_vec();
                    if index.iter().any(|b| usize::from(*b) >= count) {
                        return Err(LedgerError::Corrupt("palette index out of range".into()));
                    }
                    FingerprintColumn::Palette { values, index }
                }
                Some(&DENSE) => {
                    let bytes = tail.bytes(n.checked_mul(4).ok_or_else(too_large)?)?;
                    FingerprintColumn::Dense(
                        bytes
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                            .collect(),
                    )
                }
                _ => return Err(LedgerError::Corrupt("fingerprint column tag".into())),
            };
            l.fingerprints.push(column);
        }
    }
    if l.keys.windows(2).any(|w| w[0] >= w[1]) {
        return Err(LedgerError::Corrupt("keys are not sorted".into()));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, v: u64) -> Entry {
        Entry {
            written_at_min: 29_000_000,
            ..Entry::new(RecordId::parse(id), v, phase_hash(Some("p1")))
        }
    }

    fn with_targets(e: Entry, targets: &[(u64, u32)]) -> Entry {
        Entry {
            targets: targets.into(),
            ..e
        }
    }

    #[test]
    fn target_fingerprints_round_trip_through_base_and_delta_segments() {
        let mut l = Ledger::new();
        l.insert(1, with_targets(entry("10", 1), &[(7, 70), (8, 80)]));
        l.insert(2, entry("20", 2));
        l.compact();
        assert_eq!(l.slots(), [7, 8]);
        assert_eq!(
            l.get(1).map(|e| e.targets.to_vec()),
            Some(vec![(7, 70), (8, 80)])
        );
        assert_eq!(l.get(2).map(|e| e.targets.len()), Some(0));

        // A later run maps another target (slot 9) and drops slot 8.
        l.insert(2, with_targets(entry("20", 3), &[(7, 71), (9, 90)]));
        let delta = l.encode_overlay();
        let mut back = Ledger::new();
        back.apply_segment(&l.encode_full()).unwrap();
        assert_eq!(back.get(2).unwrap().fingerprint(9), Some(90));
        let mut layered = Ledger::new();
        let mut base = Ledger::new();
        base.insert(1, with_targets(entry("10", 1), &[(7, 70), (8, 80)]));
        base.insert(2, entry("20", 2));
        layered.apply_segment(&base.encode_full()).unwrap();
        layered.apply_segment(&delta).unwrap();
        assert_eq!(
            layered.get(2).unwrap().targets.to_vec(),
            vec![(7, 71), (9, 90)]
        );
        assert_eq!(layered.get(1).unwrap().fingerprint(8), Some(80));
        layered.compact();
        assert_eq!(layered.get(1).unwrap().fingerprint(9), None);
        assert_eq!(layered.get(2).unwrap().fingerprint(9), Some(90));
    }

    #[test]
    fn palette_and_dense_columns_round_trip_and_merge_with_the_overlay() {
        let mut l = Ledger::new();
        for i in 0..1000u64 {
            // Slot 1: three values (a palette); slot 2: one per key (dense).
            let targets = [(1, (i % 3) as u32 + 1), (2, i as u32 + 1)];
            l.insert(i, with_targets(entry(&(500 + i).to_string(), i), &targets));
        }
        let mut back = Ledger::new();
        back.apply_segment(&l.encode_full()).unwrap();
        for i in [0u64, 1, 2, 999] {
            let e = back.get(i).unwrap();
            assert_eq!(e.fingerprint(1), Some((i % 3) as u32 + 1));
            assert_eq!(e.fingerprint(2), Some(i as u32 + 1));
            assert_eq!(e.id, RecordId::Num(500 + i));
        }
        // Overlay writes (one with a new slot, one removal) merge into the columns.
        back.insert(5, with_targets(entry("rec_5", 9), &[(1, 2), (3, 33)]));
        back.remove(6);
        back.insert(5000, entry("5000", 1));
        let mut again = Ledger::new();
        again.apply_segment(&back.encode_full()).unwrap();
        assert_eq!(again.len(), 1000);
        let e5 = again.get(5).unwrap();
        assert_eq!(e5.id.to_string(), "rec_5");
        assert_eq!(
            (e5.fingerprint(1), e5.fingerprint(2), e5.fingerprint(3)),
            (Some(2), None, Some(33))
        );
        assert_eq!(again.get(6), None);
        assert_eq!(again.get(7).unwrap().fingerprint(2), Some(8));
        assert_eq!(again.get(5000).unwrap().targets.len(), 0);
    }

    /// A segment written before targets were fingerprinted, by the format's first version.
    #[test]
    fn a_first_version_segment_reads_as_entries_without_targets() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/ledger-v1/upgrade/ledger/0000000000-b173243aa6924be191f713f7e0185dc9.bin"
        ))
        .unwrap();
        let mut l = Ledger::new();
        l.apply_segment(&bytes).unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.slots().is_empty());
        assert!(l
            .iter()
            .all(|(_, e)| e.targets.is_empty() && e.value_hash != 0));
    }

    #[test]
    fn overlay_shadows_base_and_round_trips() {
        let mut l = Ledger::new();
        l.insert(key_hash("a"), entry("100", 1));
        l.insert(key_hash("b"), entry("rec_x", 2));
        l.compact();
        assert_eq!(l.len(), 2);
        l.insert(key_hash("a"), entry("100", 9));
        l.insert(key_hash("c"), entry("5", 3));
        l.remove(key_hash("b"));
        assert_eq!(l.len(), 2);
        assert_eq!(l.get(key_hash("a")).map(|e| e.value_hash), Some(9));
        assert_eq!(l.get(key_hash("b")), None);

        let full = l.encode_full();
        let mut loaded = Ledger::new();
        loaded.apply_segment(&full).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.get(key_hash("a")), Some(entry("100", 9)));
        assert_eq!(loaded.get(key_hash("c")), Some(entry("5", 3)));
    }

    #[test]
    fn delta_segments_apply_in_order_with_tombstones() {
        let mut base = Ledger::new();
        base.insert(key_hash("a"), entry("1", 1));
        base.insert(key_hash("b"), entry("tbl_rec", 1));
        let base_bytes = base.encode_full();

        let mut run = Ledger::new();
        run.apply_segment(&base_bytes).unwrap();
        run.remove(key_hash("a"));
        run.insert(key_hash("c"), entry("3", 3));
        let delta = run.encode_overlay();

        let mut reloaded = Ledger::new();
        reloaded.apply_segment(&base_bytes).unwrap();
        reloaded.apply_segment(&delta).unwrap();
        assert_eq!(reloaded.get(key_hash("a")), None);
        assert_eq!(reloaded.get(key_hash("b")), Some(entry("tbl_rec", 1)));
        assert_eq!(reloaded.get(key_hash("c")), Some(entry("3", 3)));
        assert_eq!(reloaded.len(), 2);
        reloaded.compact();
        assert_eq!(reloaded.len(), 2);
        assert_eq!(reloaded.iter().count(), 2);
    }

    #[test]
    fn ids_keep_their_exact_text() {
        for id in ["0", "42", "18446744073709551615", "007", "fIVcd19N", "-3"] {
            let mut l = Ledger::new();
            l.insert(1, entry(id, 0));
            let mut back = Ledger::new();
            back.apply_segment(&l.encode_full()).unwrap();
            assert_eq!(back.get(1).map(|e| e.id.to_string()), Some(id.to_string()));
        }
    }

    #[test]
    fn descending_numeric_ids_round_trip() {
        let mut l = Ledger::new();
        for i in 0..1000u64 {
            l.insert(
                key_hash(&i.to_string()),
                entry(&(5_000_000 - i * 7).to_string(), i),
            );
        }
        let mut back = Ledger::new();
        back.apply_segment(&l.encode_full()).unwrap();
        for i in 0..1000u64 {
            let e = back.get(key_hash(&i.to_string())).unwrap();
            assert_eq!(e.id, RecordId::Num(5_000_000 - i * 7));
            assert_eq!(e.value_hash, i);
        }
    }

    #[test]
    fn corrupt_segments_are_errors_not_panics() {
        let mut l = Ledger::new();
        l.insert(7, entry("1", 1));
        let good = l.encode_full();
        assert!(Ledger::new()
            .apply_segment(&good[..good.len() / 2])
            .is_err());
        assert!(Ledger::new().apply_segment(b"not zstd at all").is_err());
        let bogus = zstd::bulk::compress(b"PSL1\xff\xff\xff\xff\xff\xff\xff\x7f", 1).unwrap();
        assert!(Ledger::new().apply_segment(&bogus).is_err());
    }
}
