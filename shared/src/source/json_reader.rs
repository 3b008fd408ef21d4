//! JSON Lines (one object per line) and JSON arrays of objects, streamed.
//!
//! A JSON array is never loaded whole: a small scanner over the byte stream splits the
//! top-level elements (tracking strings, escapes and nesting), and each element alone goes
//! through serde_json. A `.json` file that does not start with `[` is read as JSON Lines,
//! which is what Spark and most data-lake writers produce under that extension.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use super::lines::{raw_text, LineRead, LineSource, MAX_RECORD_BYTES};
use super::{Provenance, Row, RowError};
use crate::value::Value;

/// Column names seen in a file, shared by every row: the previous row's names are tried by
/// position first (JSON writers repeat the same key order), then a bounded map.
#[derive(Default)]
pub(crate) struct KeyInterner {
    previous: Vec<Arc<str>>,
    seen: HashMap<String, Arc<str>>,
}

const MAX_INTERNED_KEYS: usize = 10_000;

impl KeyInterner {
    fn intern(&mut self, position: usize, key: String) -> Arc<str> {
        if let Some(k) = self.previous.get(position) {
            if k.as_ref() == key.as_str() {
                return k.clone();
            }
        }
        let name = match self.seen.get(key.as_str()) {
            Some(k) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(key.as_str());
                if self.seen.len() < MAX_INTERNED_KEYS {
                    self.seen.insert(key, k.clone());
                }
                k
            }
        };
        if let Some(slot) = self.previous.get_mut(position) {
            *slot = name.clone();
        } else if position == self.previous.len() {
            self.previous.push(name.clone());
        }
        name
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// One parsed JSON record, or why it is not a row. `what` names the unit ("line", "element").
fn parse_object(
    bytes: &[u8],
    file: &Arc<str>,
    line: u64,
    what: &str,
    keys: &mut KeyInterner,
) -> Result<Row, RowError> {
    let provenance = Provenance {
        file: file.clone(),
        line,
    };
    let error = |message: String| RowError {
        provenance: provenance.clone(),
        column: None,
        message,
        raw: Some(raw_text(bytes)),
    };
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) => {
            let values = map
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (keys.intern(i, k), Value::from_json(v)))
                .collect();
            Ok(Row {
                provenance: provenance.clone(),
                values,
            })
        }
        Ok(other) => Err(error(format!(
            "the {what} is a JSON {}, not an object",
            json_kind(&other)
        ))),
        Err(e) => Err(error(format!("invalid JSON: {e}"))),
    }
}

fn fatal(file: &Arc<str>, message: String) -> RowError {
    RowError::whole_file(file.clone(), message)
}

pub(crate) struct JsonLinesRows<R> {
    src: LineSource<R>,
    file: Arc<str>,
    buf: Vec<u8>,
    keys: KeyInterner,
    done: bool,
}

impl<R: BufRead> JsonLinesRows<R> {
    pub(crate) fn new(reader: R, file: Arc<str>) -> Self {
        JsonLinesRows {
            src: LineSource::new(reader),
            file,
            buf: Vec::with_capacity(1024),
            keys: KeyInterner::default(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for JsonLinesRows<R> {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            let line = match self.src.read_line(&mut self.buf, MAX_RECORD_BYTES) {
                Ok(LineRead::Line(n)) => n,
                Ok(LineRead::TooLong(n)) => {
                    return Some(Err(RowError {
                        provenance: Provenance {
                            file: self.file.clone(),
                            line: n,
                        },
                        column: None,
                        message: format!(
                            "line longer than {} MiB; skipped",
                            MAX_RECORD_BYTES >> 20
                        ),
                        raw: None,
                    }))
                }
                Ok(LineRead::Eof) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(fatal(&self.file, format!("cannot read the file: {e}"))));
                }
            };
            let text = self.buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            return Some(parse_object(text, &self.file, line, "line", &mut self.keys));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    Start,
    Elements,
    Done,
}

pub(crate) struct JsonArrayRows<R> {
    reader: R,
    file: Arc<str>,
    element: Vec<u8>,
    index: u64,
    state: ArrayState,
    keys: KeyInterner,
}

/// How the scan of one element ended.
enum ElementEnd {
    /// `,`: more elements follow.
    Comma,
    /// `]`: the array ends.
    Close,
    Eof,
}

impl<R: BufRead> JsonArrayRows<R> {
    pub(crate) fn new(reader: R, file: Arc<str>) -> Self {
        JsonArrayRows {
            reader,
            file,
            element: Vec::with_capacity(1024),
            index: 0,
            state: ArrayState::Start,
            keys: KeyInterner::default(),
        }
    }

    /// Skips whitespace (and a UTF-8 BOM) and returns the next byte without consuming it.
    fn peek_significant(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let skip = buf
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0xEF | 0xBB | 0xBF));
            match skip {
                Some(p) => {
                    let b = buf.get(p).copied();
                    self.reader.consume(p);
                    return Ok(b);
                }
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
    }

    /// Collects the bytes of the next top-level element into `self.element`. Returns whether
    /// it overflowed the size cap (then its bytes were dropped as they came).
    fn scan_element(&mut self) -> std::io::Result<(ElementEnd, bool)> {
        self.element.clear();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut overflow = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok((ElementEnd::Eof, overflow));
            }
            let mut end = None;
            for (j, &b) in buf.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b']' => {
                        end = Some((j, ElementEnd::Close));
                        break;
                    }
                    b',' if depth == 0 => {
                        end = Some((j, ElementEnd::Comma));
                        break;
                    }
                    _ => {}
                }
            }
            let taken = end.as_ref().map(|(j, _)| *j).unwrap_or(buf.len());
            if !overflow {
                if self.element.len() + taken > MAX_RECORD_BYTES {
                    overflow = true;
                    self.element.clear();
                } else {
                    self.element
                        .extend_from_slice(buf.get(..taken).unwrap_or_default());
                }
            }
            match end {
                Some((_, how)) => {
                    self.reader.consume(taken + 1);
                    return Ok((how, overflow));
                }
                None => self.reader.consume(taken),
            }
        }
    }

    fn step(&mut self) -> std::io::Result<Option<Result<Row, RowError>>> {
        loop {
            match self.state {
                ArrayState::Done => return Ok(None),
                ArrayState::Start => match self.peek_significant()? {
                    Some(b'[') => {
                        self.reader.consume(1);
                        self.state = ArrayState::Elements;
                        if self.peek_significant()? == Some(b']') {
                            self.reader.consume(1);
                            self.state = ArrayState::Done;
                        }
                    }
                    None => {
                        self.state = ArrayState::Done;
                        return Ok(Some(Err(fatal(
                            &self.file,
                            "empty file: expected a JSON array".to_string(),
                        ))));
                    }
                    Some(_) => {
                        self.state = ArrayState::Done;
                        return Ok(Some(Err(fatal(
                            &self.file,
                            "expected a JSON array ('[') at the start of the file".to_string(),
                        ))));
                    }
                },
                ArrayState::Elements => {
                    let (how, overflow) = self.scan_element()?;
                    let text = self.element.trim_ascii();
                    match how {
                        ElementEnd::Eof => {
                            self.state = ArrayState::Done;
                            return Ok(Some(Err(fatal(
                                &self.file,
                                format!(
                                    "the JSON array is cut short: the file ends after element {} without ']'",
                                    self.index
                                ),
                            ))));
                        }
                        ElementEnd::Close => {
                            self.state = ArrayState::Done;
                            // `[1, 2,]`: a trailing comma, nothing more to read.
                            if text.is_empty() && !overflow {
                                return Ok(None);
                            }
                        }
                        ElementEnd::Comma => {}
                    }
                    self.index += 1;
                    let provenance = Provenance {
                        file: self.file.clone(),
                        line: self.index,
                    };
                    if overflow {
                        return Ok(Some(Err(RowError {
                            provenance,
                            column: None,
                            message: format!(
                                "element longer than {} MiB; skipped",
                                MAX_RECORD_BYTES >> 20
                            ),
                            raw: None,
                        })));
                    }
                    if text.is_empty() {
                        return Ok(Some(Err(RowError {
                            provenance,
                            column: None,
                            message: "empty array element (two commas in a row)".to_string(),
                            raw: None,
                        })));
                    }
                    return Ok(Some(parse_object(
                        text,
                        &self.file,
                        self.index,
                        "element",
                        &mut self.keys,
                    )));
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for JsonArrayRows<R> {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(item) => item,
            Err(e) => {
                self.state = ArrayState::Done;
                Some(Err(fatal(&self.file, format!("cannot read the file: {e}"))))
            }
        }
    }
}

/// True when the first significant byte is `[` (a JSON array), false for anything else
/// (read as JSON Lines). Looks only at what the first buffer fill holds.
pub(crate) fn starts_with_array<R: BufRead>(reader: &mut R) -> std::io::Result<bool> {
    let buf = reader.fill_buf()?;
    let first = buf
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0xEF | 0xBB | 0xBF));
    Ok(first == Some(&b'[') || buf.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<Result<Row, RowError>> {
        JsonLinesRows::new(data, Arc::from("t.jsonl")).collect()
    }

    fn array(data: &[u8]) -> Vec<Result<Row, RowError>> {
        // A tiny buffer: elements and strings straddle buffer boundaries.
        JsonArrayRows::new(
            std::io::BufReader::with_capacity(3, data),
            Arc::from("t.json"),
        )
        .collect()
    }

    #[test]
    fn json_lines() {
        let rows = lines(b"{\"a\":1,\"b\":[true,null]}\n\n  \n{\"a\":\"x\"}\r\nnot json\n[1]\n{\"b\":2.5,\"a\":3}");
        assert_eq!(rows.len(), 5);
        let r = rows[0].as_ref().unwrap();
        assert_eq!(r.provenance.line, 1);
        assert_eq!(r.get("a"), Some(&Value::Int(1)));
        assert_eq!(
            r.get("b"),
            Some(&Value::List(vec![Value::Bool(true), Value::Null]))
        );
        assert_eq!(rows[1].as_ref().unwrap().provenance.line, 4);
        let e = rows[2].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 5);
        assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
        assert_eq!(e.raw.as_deref(), Some("not json"));
        let e = rows[3].as_ref().unwrap_err();
        assert_eq!(e.message, "the line is a JSON array, not an object");
        let r = rows[4].as_ref().unwrap();
        assert_eq!(r.values[0].0.as_ref(), "b", "file order is kept");
        assert!(Arc::ptr_eq(
            &rows[0].as_ref().unwrap().values[0].0,
            &r.values[1].0
        ));
    }

    #[test]
    fn json_array_elements() {
        let data = br#" [ {"s": "a,]}[\"\\", "n": {"x": [1, 2]}},
            42, {"a": tru}, {"ok": 1.5e3} , ] "#;
        let rows = array(data);
        assert_eq!(rows.len(), 4);
        let r = rows[0].as_ref().unwrap();
        assert_eq!(r.provenance.line, 1);
        assert_eq!(r.get("s"), Some(&Value::Str("a,]}[\"\\".into())));
        assert_eq!(r.get("n"), Some(&Value::Str("{\"x\":[1,2]}".into())));
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 2);
        assert_eq!(e.message, "the element is a JSON number, not an object");
        assert_eq!(e.raw.as_deref(), Some("42"));
        let e = rows[2].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 3);
        assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
        let r = rows[3].as_ref().unwrap();
        assert_eq!(r.provenance.line, 4);
        assert_eq!(r.get("ok"), Some(&Value::Float(1500.0)));
    }

    #[test]
    fn json_array_edges() {
        assert!(array(b"[]").is_empty());
        assert!(array(b"\xEF\xBB\xBF[ \n ]").is_empty());
        let rows = array(b"[{\"a\":1},{\"a\":");
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_ok());
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 0);
        assert!(e.message.contains("cut short"), "{}", e.message);
        let e = &array(b"")[0].as_ref().unwrap_err().message.clone();
        assert!(e.contains("empty file"));
        let rows = array(b"[{\"a\":1},,{\"a\":2}]");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].as_ref().unwrap_err().provenance.line, 2);
        assert_eq!(rows[2].as_ref().unwrap().provenance.line, 3);
    }

    #[test]
    fn sniffs_arrays() {
        assert!(starts_with_array(&mut &b"\xEF\xBB\xBF \n [{}]"[..]).unwrap());
        assert!(!starts_with_array(&mut &b"{\"a\":1}\n"[..]).unwrap());
    }
}
