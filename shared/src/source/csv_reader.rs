//! Streaming CSV: RFC 4180 with the usual leniencies, one record at a time.
//!
//! Hand-rolled rather than the `csv` crate because the reader must (a) report a bad quote
//! instead of silently repairing it, (b) keep the raw text of a bad record for the replay
//! file, and (c) recover from an unterminated quote without losing the rows it swallowed:
//! when a record that spans several lines turns out malformed, only its first line is
//! reported and the lines after it are read again as records of their own.
//!
//! Leniencies: a quote inside an unquoted field is literal (`5'10"`), blank lines are
//! skipped, `\r\n` and `\n` both end a record, a UTF-8 BOM is dropped.

use std::io::BufRead;
use std::sync::Arc;

use super::lines::{raw_text, LineRead, LineSource, MAX_RECORD_BYTES};
use super::{Provenance, Row, RowError};
use crate::value::Value;

pub(crate) struct CsvRows<R> {
    src: LineSource<R>,
    file: Arc<str>,
    delimiter: u8,
    quote: u8,
    has_header: bool,
    columns: Option<Vec<Arc<str>>>,
    /// The raw bytes of the current record, all its physical lines.
    raw: Vec<u8>,
    /// Offsets in `raw` where the record's second, third... physical lines start.
    line_starts: Vec<usize>,
    /// Unescaped field contents, back to back, and where each field ends.
    field: Vec<u8>,
    ends: Vec<usize>,
    done: bool,
}

enum Parsed {
    Record { line: u64 },
    Bad { line: u64, message: String },
    Eof,
}

impl<R: BufRead> CsvRows<R> {
    /// `delimiter` and `quote` must be ASCII (checked by the caller).
    pub(crate) fn new(
        reader: R,
        file: Arc<str>,
        delimiter: u8,
        quote: u8,
        has_header: bool,
    ) -> Self {
        CsvRows {
            src: LineSource::new(reader),
            file,
            delimiter,
            quote,
            has_header,
            columns: None,
            raw: Vec::with_capacity(1024),
            line_starts: Vec::new(),
            field: Vec::with_capacity(1024),
            ends: Vec::with_capacity(64),
            done: false,
        }
    }

    fn fatal(&mut self, message: String) -> Option<Result<Row, RowError>> {
        self.done = true;
        Some(Err(RowError::whole_file(self.file.clone(), message)))
    }

    fn record_raw(&self) -> String {
        raw_text(&self.raw)
    }

    fn parse_record(&mut self) -> std::io::Result<Parsed> {
        loop {
            self.raw.clear();
            self.line_starts.clear();
            self.field.clear();
            self.ends.clear();
            let line = match self.src.read_line(&mut self.raw, MAX_RECORD_BYTES)? {
                LineRead::Eof => return Ok(Parsed::Eof),
                LineRead::TooLong(line) => {
                    return Ok(Parsed::Bad {
                        line,
                        message: format!(
                            "record longer than {} MiB; skipped",
                            MAX_RECORD_BYTES >> 20
                        ),
                    })
                }
                LineRead::Line(line) => line,
            };
            if matches!(self.raw.as_slice(), b"\n" | b"\r\n" | b"\r" | b"") {
                continue;
            }
            return self.parse_fields(line);
        }
    }

    fn parse_fields(&mut self, line: u64) -> std::io::Result<Parsed> {
        let (delim, quote) = (self.delimiter, self.quote);
        let mut i = 0usize;
        loop {
            if self.raw.get(i) == Some(&quote) {
                i += 1;
                // Quoted field: up to the closing quote, across lines if need be.
                loop {
                    let rest = self.raw.get(i..).unwrap_or_default();
                    match rest.iter().position(|&b| b == quote) {
                        Some(p) => {
                            self.field
                                .extend_from_slice(rest.get(..p).unwrap_or_default());
                            i += p + 1;
                            if self.raw.get(i) == Some(&quote) {
                                self.field.push(quote);
                                i += 1;
                                continue;
                            }
                            break;
                        }
                        None => {
                            self.field.extend_from_slice(rest);
                            let start = self.raw.len();
                            i = start;
                            let room = MAX_RECORD_BYTES.saturating_sub(start);
                            match self.src.read_line(&mut self.raw, room)? {
                                LineRead::Line(_) => self.line_starts.push(start),
                                LineRead::Eof => {
                                    return Ok(self.resync(
                                        line,
                                        "unterminated quoted field: the closing quote is missing"
                                            .to_string(),
                                    ))
                                }
                                LineRead::TooLong(_) => {
                                    return Ok(self.resync(
                                        line,
                                        format!(
                                            "quoted field longer than {} MiB: is a closing quote missing?",
                                            MAX_RECORD_BYTES >> 20
                                        ),
                                    ))
                                }
                            }
                        }
                    }
                }
                // After the closing quote only a delimiter or the end of the record may come.
                match self.raw.get(i).copied() {
                    Some(b) if b == delim => {
                        self.ends.push(self.field.len());
                        i += 1;
                    }
                    None | Some(b'\n') => {
                        self.ends.push(self.field.len());
                        return Ok(Parsed::Record { line });
                    }
                    Some(b'\r') if matches!(self.raw.get(i + 1), None | Some(b'\n')) => {
                        self.ends.push(self.field.len());
                        return Ok(Parsed::Record { line });
                    }
                    Some(b) => {
                        let message = format!(
                            "bad quoting in field {}: {} after the closing quote (a quote inside a quoted field must be doubled)",
                            self.ends.len() + 1,
                            describe_byte(b)
                        );
                        return Ok(self.resync(line, message));
                    }
                }
            } else {
                let rest = self.raw.get(i..).unwrap_or_default();
                match rest.iter().position(|&b| b == delim || b == b'\n') {
                    Some(p) if rest.get(p) == Some(&delim) => {
                        self.field
                            .extend_from_slice(rest.get(..p).unwrap_or_default());
                        self.ends.push(self.field.len());
                        i += p + 1;
                    }
                    end => {
                        let mut end = end.unwrap_or(rest.len());
                        if end > 0 && rest.get(end - 1) == Some(&b'\r') {
                            end -= 1;
                        }
                        self.field
                            .extend_from_slice(rest.get(..end).unwrap_or_default());
                        self.ends.push(self.field.len());
                        return Ok(Parsed::Record { line });
                    }
                }
            }
        }
    }

    /// A malformed record: its first line is reported; when it spanned several lines (an
    /// unterminated quote swallows the lines after it) those are read again as records.
    fn resync(&mut self, line: u64, message: String) -> Parsed {
        if let Some(&first_end) = self.line_starts.first() {
            let mut again = Vec::with_capacity(self.line_starts.len());
            let mut bounds = self.line_starts.clone();
            bounds.push(self.raw.len());
            for pair in bounds.windows(2) {
                if let [a, b] = pair {
                    again.push(self.raw.get(*a..*b).unwrap_or_default().to_vec());
                }
            }
            self.src.push_back(again, line + 1);
            self.raw.truncate(first_end);
            self.line_starts.clear();
        }
        Parsed::Bad { line, message }
    }

    fn row_error(&self, line: u64, column: Option<String>, message: String) -> RowError {
        RowError {
            provenance: Provenance {
                file: self.file.clone(),
                line,
            },
            column,
            message,
            raw: Some(self.record_raw()),
        }
    }

    fn build_row(&self, line: u64, columns: &[Arc<str>]) -> Result<Row, RowError> {
        if self.ends.len() != columns.len() {
            return Err(self.row_error(
                line,
                None,
                format!(
                    "expected {} fields as in the {}, found {}",
                    columns.len(),
                    if self.has_header {
                        "header"
                    } else {
                        "first record"
                    },
                    self.ends.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(columns.len());
        let mut start = 0usize;
        for (name, &end) in columns.iter().zip(self.ends.iter()) {
            let bytes = self.field.get(start..end).unwrap_or_default();
            start = end;
            match std::str::from_utf8(bytes) {
                Ok(s) => values.push((name.clone(), Value::Str(s.to_owned()))),
                Err(e) => {
                    return Err(self.row_error(
                        line,
                        Some(name.to_string()),
                        format!(
                            "column '{name}' is not valid UTF-8 (byte {} of the value); set source.csv.encoding to the file's encoding, e.g. latin1",
                            e.valid_up_to() + 1
                        ),
                    ))
                }
            }
        }
        Ok(Row {
            provenance: Provenance {
                file: self.file.clone(),
                line,
            },
            values,
        })
    }

    fn fields_as_names(&self) -> Vec<Arc<str>> {
        let mut start = 0usize;
        self.ends
            .iter()
            .map(|&end| {
                let name = String::from_utf8_lossy(self.field.get(start..end).unwrap_or_default());
                start = end;
                Arc::from(name.as_ref())
            })
            .collect()
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02X}")
    }
}

impl<R: BufRead> Iterator for CsvRows<R> {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let parsed = match self.parse_record() {
                Ok(p) => p,
                Err(e) => return self.fatal(format!("cannot read the file: {e}")),
            };
            match parsed {
                Parsed::Eof => {
                    self.done = true;
                    if self.columns.is_none() && self.has_header {
                        return self.fatal("empty file: no header row".to_string());
                    }
                    return None;
                }
                Parsed::Bad { line, message } => {
                    if self.columns.is_none() && self.has_header {
                        return self
                            .fatal(format!("the header (line {line}) is malformed: {message}"));
                    }
                    return Some(Err(self.row_error(line, None, message)));
                }
                Parsed::Record { line } => {
                    let columns = match self.columns.take() {
                        Some(c) => c,
                        None if self.has_header => {
                            self.columns = Some(self.fields_as_names());
                            continue;
                        }
                        None => (1..=self.ends.len())
                            .map(|i| Arc::from(format!("column_{i}").as_str()))
                            .collect(),
                    };
                    let row = self.build_row(line, &columns);
                    self.columns = Some(columns);
                    return Some(row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(data: &[u8], header: bool) -> Vec<Result<Row, RowError>> {
        CsvRows::new(data, Arc::from("t.csv"), b',', b'"', header).collect()
    }

    fn cells(row: &Row) -> Vec<String> {
        row.values.iter().map(|(_, v)| v.to_string()).collect()
    }

    #[test]
    fn quoting_and_embedded_newlines() {
        let data = b"id,text,n\r\n1,\"a, \"\"quoted\"\"\nsecond line\",x\r\n\r\n2,,\"\"\n3,plain,\"multi\r\nline\"";
        let rows = read(data, true);
        assert_eq!(rows.len(), 3);
        let r1 = rows[0].as_ref().unwrap();
        assert_eq!(r1.provenance.line, 2);
        assert_eq!(cells(r1), ["1", "a, \"quoted\"\nsecond line", "x"]);
        assert_eq!(r1.values[1].0.as_ref(), "text");
        let r2 = rows[1].as_ref().unwrap();
        assert_eq!(r2.provenance.line, 5);
        assert_eq!(cells(r2), ["2", "", ""]);
        let r3 = rows[2].as_ref().unwrap();
        assert_eq!(r3.provenance.line, 6);
        assert_eq!(cells(r3), ["3", "plain", "multi\r\nline"]);
    }

    #[test]
    fn literal_quote_inside_unquoted_field() {
        let rows = read(b"h,w\nbob,5'10\"\n", true);
        assert_eq!(cells(rows[0].as_ref().unwrap()), ["bob", "5'10\""]);
    }

    #[test]
    fn trailing_delimiter_is_an_empty_field() {
        let rows = read(b"a,b\n1,\n", true);
        assert_eq!(cells(rows[0].as_ref().unwrap()), ["1", ""]);
    }

    #[test]
    fn bad_quote_reports_and_continues() {
        let rows = read(b"a,b\n\"x\"y,1\n2,3\n", true);
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 2);
        assert!(
            e.message.contains("bad quoting in field 1"),
            "{}",
            e.message
        );
        assert!(e.message.contains("'y'"), "{}", e.message);
        assert_eq!(e.raw.as_deref(), Some("\"x\"y,1"));
        assert_eq!(cells(rows[1].as_ref().unwrap()), ["2", "3"]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn unterminated_quote_gives_back_the_swallowed_lines() {
        let rows = read(b"a,b\n1,\"oops\n2,ok\n3,fine\n", true);
        assert_eq!(rows.len(), 3);
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 2);
        assert!(e.message.contains("unterminated"), "{}", e.message);
        assert_eq!(e.raw.as_deref(), Some("1,\"oops"));
        let r = rows[1].as_ref().unwrap();
        assert_eq!(
            (r.provenance.line, cells(r)),
            (3, vec!["2".into(), "ok".into()])
        );
        let r = rows[2].as_ref().unwrap();
        assert_eq!(
            (r.provenance.line, cells(r)),
            (4, vec!["3".into(), "fine".into()])
        );
    }

    #[test]
    fn quote_swallowing_until_a_later_quote() {
        // The stray quote on line 2 pairs with the one on line 4, which is then followed by
        // a letter: line 2 is reported, lines 3 and 4 are read again.
        let rows = read(b"a,b\n1,\"x\n2,y\n\"q\"r,3\n4,z\n", true);
        let lines: Vec<(u64, bool)> = rows
            .iter()
            .map(|r| match r {
                Ok(row) => (row.provenance.line, true),
                Err(e) => (e.provenance.line, false),
            })
            .collect();
        assert_eq!(lines, [(2, false), (3, true), (4, false), (5, true)]);
    }

    #[test]
    fn unequal_fields_and_invalid_utf8() {
        let rows = read(b"a,b\n1\n2,caf\xE9\n3,4\n", true);
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 2);
        assert_eq!(e.message, "expected 2 fields as in the header, found 1");
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 3);
        assert_eq!(e.column.as_deref(), Some("b"));
        assert!(
            e.message.contains("column 'b' is not valid UTF-8"),
            "{}",
            e.message
        );
        assert_eq!(e.raw.as_deref(), Some("2,caf\u{FFFD}"));
        assert_eq!(cells(rows[2].as_ref().unwrap()), ["3", "4"]);
    }

    #[test]
    fn empty_header_only_and_headerless() {
        let rows = read(b"", true);
        assert_eq!(rows.len(), 1);
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!(e.provenance.line, 0);
        assert!(e.message.contains("empty file"));
        assert!(read(b"a,b\r\n", true).is_empty());
        assert!(read(b"", false).is_empty());
        let rows = read(b"x,y\n", false);
        let r = rows[0].as_ref().unwrap();
        assert_eq!(r.provenance.line, 1);
        assert_eq!(r.values[1].0.as_ref(), "column_2");
        assert_eq!(r.get("column_1"), Some(&Value::Str("x".into())));
    }

    #[test]
    fn columns_are_interned() {
        let rows = read(b"a,b\n1,2\n3,4\n", true);
        let (r1, r2) = (rows[0].as_ref().unwrap(), rows[1].as_ref().unwrap());
        assert!(Arc::ptr_eq(&r1.values[0].0, &r2.values[0].0));
    }
}
