//! Change detection: a stable hash of the values a [`MappedRow`] will write.
//!
//! The hash is stored in the ledger and compared across runs and releases, so the encoding
//! is explicit (tags, lengths, fixed order) rather than derived from `Debug` or serde output,
//! and `ENCODING_VERSION` changes whenever it does (every row is then sent once more).

use std::cell::RefCell;
use std::fmt::Write as _;

use xxhash_rust::xxh3::xxh3_64;

use super::{ConnectionRef, FieldValue, MappedField, MappedRow, Set};

const ENCODING_VERSION: u8 = 1;

/// The encoding is built in a reused buffer and hashed in one call: one-shot xxh3 over a few
/// hundred bytes is several times faster than feeding a streaming state piece by piece.
struct Enc<'b>(&'b mut Vec<u8>);

impl std::fmt::Write for Enc<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Buffers above this are not kept between calls (one huge row must not pin memory).
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

impl Enc<'_> {
    fn tag(&mut self, t: u8) {
        self.0.push(t);
    }
    fn len(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(2);
                self.str(s);
            }
        }
    }
    fn strs(&mut self, items: &[String]) {
        self.len(items.len());
        for s in items {
            self.str(s);
        }
    }
    fn set_str(&mut self, s: Option<&Set<String>>) {
        match s {
            None => self.tag(0),
            Some(Set::Clear) => self.tag(1),
            Some(Set::Value(v)) => {
                self.tag(2);
                self.str(v);
            }
        }
    }
    fn set_strs(&mut self, s: Option<&Set<Vec<String>>>) {
        match s {
            None => self.tag(0),
            Some(Set::Clear) => self.tag(1),
            Some(Set::Value(v)) => {
                self.tag(2);
                self.strs(v);
            }
        }
    }
    fn refs(&mut self, refs: &[ConnectionRef]) {
        self.len(refs.len());
        for r in refs {
            match r {
                ConnectionRef::Id(id) => {
                    self.tag(0);
                    self.str(id);
                }
                ConnectionRef::Key {
                    repo,
                    key_field,
                    key,
                } => {
                    self.tag(1);
                    self.str(repo);
                    self.str(key_field);
                    self.str(key);
                }
            }
        }
    }
    fn json(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::Null => self.tag(0),
            serde_json::Value::Bool(false) => self.tag(1),
            serde_json::Value::Bool(true) => self.tag(2),
            serde_json::Value::Number(n) => {
                self.tag(3);
                // Printed form, ended by a byte UTF-8 never contains.
                let _ = write!(self, "{n}");
                self.tag(0xff);
            }
            serde_json::Value::String(s) => {
                self.tag(4);
                self.str(s);
            }
            serde_json::Value::Array(items) => {
                self.tag(5);
                self.len(items.len());
                for item in items {
                    self.json(item);
                }
            }
            serde_json::Value::Object(map) => {
                self.tag(6);
                self.len(map.len());
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in entries {
                    self.str(k);
                    self.json(v);
                }
            }
        }
    }
    fn field(&mut self, f: &MappedField) {
        self.str(&f.field_id);
        self.value(&f.value);
    }
    fn value(&mut self, v: &FieldValue) {
        match v {
            FieldValue::Clear => self.tag(0),
            FieldValue::Json(j) => {
                self.tag(1);
                self.json(j);
            }
            FieldValue::Connect(refs) => {
                self.tag(2);
                self.refs(refs);
            }
            // A file is its object and version: a replaced object is a new value.
            FieldValue::Files(files) => {
                self.tag(3);
                self.len(files.len());
                for f in files {
                    self.opt_str(f.bucket.as_deref());
                    self.str(&f.key);
                    self.str(&f.etag);
                }
            }
        }
    }
}

/// xxh3 of the key, the card id and every value to be written, in a canonical order (fields
/// by id). The provenance is left out: the same values hash the same from any file and line.
pub fn canonical_hash(row: &MappedRow) -> u64 {
    hashed(|e| encode_row(row, e))
}

/// xxh3 of what `encode` writes, built in the thread's reused buffer.
fn hashed(encode: impl Fn(&mut Enc<'_>)) -> u64 {
    let run = |buf: &mut Vec<u8>| {
        let mut e = Enc(buf);
        encode(&mut e);
        xxh3_64(e.0)
    };
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let h = run(&mut buf);
            if buf.capacity() > KEEP_BUFFER_BYTES {
                *buf = Vec::new();
            }
            h
        }
        // Only reachable if hashing re-entered itself; a fresh buffer gives the same hash.
        Err(_) => run(&mut Vec::new()),
    })
}

/// Per-target hashes for field-level change detection (`super::targets`): each encodes one
/// value the way [`canonical_hash`] encodes it inside a row.
pub(super) fn text_hash(v: &Set<String>) -> u64 {
    hashed(|e| e.set_str(Some(v)))
}

pub(super) fn list_hash(v: &Set<Vec<String>>) -> u64 {
    hashed(|e| e.set_strs(Some(v)))
}

pub(super) fn refs_hash(refs: &[ConnectionRef]) -> u64 {
    hashed(|e| e.refs(refs))
}

pub(super) fn field_value_hash(v: &FieldValue) -> u64 {
    hashed(|e| e.value(v))
}

fn encode_row(row: &MappedRow, e: &mut Enc<'_>) {
    e.tag(ENCODING_VERSION);
    e.opt_str(row.key.as_deref());
    e.opt_str(row.id.as_deref());
    e.set_str(row.title.as_ref());
    e.set_str(row.due_date.as_ref());
    e.opt_str(row.phase_id.as_deref());
    e.set_strs(row.assignee_ids.as_ref());
    e.set_strs(row.label_ids.as_ref());
    match &row.parent_ids {
        None => e.tag(0),
        Some(refs) => {
            e.tag(2);
            e.refs(refs);
        }
    }
    e.len(row.fields.len());
    let sorted = row
        .fields
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.field_id <= b.field_id));
    if sorted {
        row.fields.iter().for_each(|f| e.field(f));
    } else {
        // Rows from the mapper are sorted; others (deserialized, built by hand) are not
        // required to be.
        let mut order: Vec<&MappedField> = row.fields.iter().collect();
        order.sort_by(|a, b| a.field_id.cmp(&b.field_id));
        order.into_iter().for_each(|f| e.field(f));
    }
}
