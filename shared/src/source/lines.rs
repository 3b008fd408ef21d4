//! Physical lines of a text file, with their 1-based numbers, a per-line size cap (memory
//! stays bounded even for a file without newlines) and push-back, so a CSV reader that
//! misread several lines as one record can read them again.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

/// The largest record (CSV record, JSON line or array element) a reader holds in memory.
pub(crate) const MAX_RECORD_BYTES: usize = 16 << 20;
/// Read buffer of the text readers.
pub(crate) const BUF_SIZE: usize = 128 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// A line was appended (with its `\n` unless it is the last line); its number.
    Line(u64),
    /// The line is longer than the limit; it was skipped whole. Its number.
    TooLong(u64),
    Eof,
}

pub(crate) struct LineSource<R> {
    reader: R,
    pending: VecDeque<Vec<u8>>,
    next_line: u64,
    at_start: bool,
}

impl<R: BufRead> LineSource<R> {
    pub(crate) fn new(reader: R) -> Self {
        LineSource {
            reader,
            pending: VecDeque::new(),
            next_line: 1,
            at_start: true,
        }
    }

    /// Appends the next physical line to `buf`. A line longer than `limit` bytes is skipped
    /// (read and dropped without being held) and reported as [`LineRead::TooLong`].
    pub(crate) fn read_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<LineRead> {
        let number = self.next_line;
        if let Some(line) = self.pending.pop_front() {
            self.next_line += 1;
            buf.extend_from_slice(&line);
            return Ok(LineRead::Line(number));
        }
        let start = buf.len();
        let cap = (limit as u64).saturating_add(1);
        let n = (&mut self.reader).take(cap).read_until(b'\n', buf)?;
        if n == 0 {
            return Ok(LineRead::Eof);
        }
        self.next_line += 1;
        if self.at_start {
            self.at_start = false;
            if buf.get(start..).is_some_and(|l| l.starts_with(UTF8_BOM)) {
                buf.drain(start..start + UTF8_BOM.len());
            }
        }
        if n as u64 == cap && buf.last() != Some(&b'\n') {
            buf.truncate(start);
            self.reader.skip_until(b'\n')?;
            return Ok(LineRead::TooLong(number));
        }
        Ok(LineRead::Line(number))
    }

    /// Makes `lines` (in order) the next lines read, numbered from `first_number`.
    pub(crate) fn push_back(&mut self, lines: Vec<Vec<u8>>, first_number: u64) {
        for line in lines.into_iter().rev() {
            self.pending.push_front(line);
        }
        self.next_line = first_number;
    }
}

/// The text of a record for messages and the failed-rows file: lossy UTF-8, without the
/// line terminator.
pub(crate) fn raw_text(bytes: &[u8]) -> String {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes.get(end - 1), Some(b'\n' | b'\r')) {
        end -= 1;
    }
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lines_strips_bom_and_caps_length() {
        let data = b"\xEF\xBB\xBFa,b\r\nthis line is long\nc\nlast";
        let mut src = LineSource::new(io::BufReader::with_capacity(4, &data[..]));
        let mut buf = Vec::new();
        assert_eq!(src.read_line(&mut buf, 100).unwrap(), LineRead::Line(1));
        assert_eq!(buf, b"a,b\r\n");
        buf.clear();
        assert_eq!(src.read_line(&mut buf, 5).unwrap(), LineRead::TooLong(2));
        assert!(buf.is_empty());
        assert_eq!(src.read_line(&mut buf, 5).unwrap(), LineRead::Line(3));
        assert_eq!(buf, b"c\n");
        // Read again, as the CSV reader does after a misread multi-line record.
        src.push_back(vec![b"c\n".to_vec()], 3);
        buf.clear();
        assert_eq!(src.read_line(&mut buf, 5).unwrap(), LineRead::Line(3));
        assert_eq!(buf, b"c\n");
        buf.clear();
        assert_eq!(src.read_line(&mut buf, 100).unwrap(), LineRead::Line(4));
        assert_eq!(buf, b"last");
        assert_eq!(src.read_line(&mut buf, 100).unwrap(), LineRead::Eof);
        assert_eq!(raw_text(b"a,b\r\n"), "a,b");
    }
}
