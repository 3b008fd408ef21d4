//! The synchronous core: bytes in, rows out. Decompression, encodings and the choice of
//! reader happen here; the async [`super::RowStream`] only moves the rows across threads.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use super::csv_reader::CsvRows;
use super::json_reader::{starts_with_array, JsonArrayRows, JsonLinesRows};
use super::lines::BUF_SIZE;
use super::parquet_reader::ParquetRows;
use super::{Row, RowError};
use crate::config::{Compression, CsvOptions, FileFormat};

type TextReader = Box<dyn BufRead + Send>;

/// The rows of one file, in file order; see [`read_rows_blocking`].
pub struct RowIter {
    inner: Inner,
}

enum Inner {
    Csv(CsvRows<TextReader>),
    JsonLines(JsonLinesRows<TextReader>),
    JsonArray(JsonArrayRows<TextReader>),
    Parquet(ParquetRows),
    Failed(Option<RowError>),
}

impl RowIter {
    /// A file that cannot be read at all: one error with line 0, then the end.
    pub fn failed(file: Arc<str>, message: impl Into<String>) -> RowIter {
        RowIter {
            inner: Inner::Failed(Some(RowError::whole_file(file, message))),
        }
    }
}

impl Iterator for RowIter {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Csv(r) => r.next(),
            Inner::JsonLines(r) => r.next(),
            Inner::JsonArray(r) => r.next(),
            Inner::Parquet(r) => r.next(),
            Inner::Failed(e) => e.take().map(Err),
        }
    }
}

const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps the decompressor the file needs; `Auto` looks at the magic bytes.
fn decompress(
    mut reader: Box<dyn Read + Send>,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    let compression = match compression {
        Compression::Auto => {
            let mut head = [0u8; 4];
            let mut n = 0;
            while n < head.len() {
                match reader.read(head.get_mut(n..).unwrap_or_default()) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let head = head.get(..n).unwrap_or_default().to_vec();
            let found = sniff(&head);
            reader = Box::new(io::Cursor::new(head).chain(reader));
            found
        }
        c => c,
    };
    Ok(match compression {
        // Multi-member: concatenated gzip files (and some writers' output) are one stream.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        Compression::None | Compression::Auto => reader,
    })
}

fn ascii_byte(c: char, option: &str) -> Result<u8, String> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| format!("source.csv.{option} must be one ASCII character, got '{c}'"))
}

fn csv_rows(reader: Box<dyn Read + Send>, file: Arc<str>, options: &CsvOptions) -> RowIter {
    let (delimiter, quote) = match (
        ascii_byte(options.delimiter, "delimiter"),
        ascii_byte(options.quote, "quote"),
    ) {
        (Ok(d), Ok(q)) => (d, q),
        (Err(e), _) | (_, Err(e)) => return RowIter::failed(file, e),
    };
    let Some(encoding) = encoding_rs::Encoding::for_label(options.encoding.trim().as_bytes())
    else {
        return RowIter::failed(
            file,
            format!(
                "unknown encoding '{}' in source.csv.encoding (use a WHATWG label such as utf-8, latin1, windows-1252, utf-16le)",
                options.encoding
            ),
        );
    };
    // UTF-8 is read as bytes and checked per field, so a bad byte names its column; other
    // encodings are transcoded to UTF-8 on the way in.
    let text: TextReader = if encoding == encoding_rs::UTF_8 {
        Box::new(BufReader::with_capacity(BUF_SIZE, reader))
    } else {
        let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(Some(encoding))
            .build(reader);
        Box::new(BufReader::with_capacity(BUF_SIZE, decoded))
    };
    RowIter {
        inner: Inner::Csv(CsvRows::new(text, file, delimiter, quote, options.header)),
    }
}

/// Copies a stream into an anonymous temporary file (deleted when closed), for Parquet,
/// which needs random access.
fn spill(mut reader: impl Read) -> io::Result<File> {
    let mut file = tempfile::tempfile_in(std::env::temp_dir())?;
    {
        let mut w = BufWriter::with_capacity(BUF_SIZE, &mut file);
        io::copy(&mut reader, &mut w)?;
        w.flush()?;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Reads the rows of one file from a byte stream, on the calling thread. `file` is the name
/// every row's provenance carries. Memory stays bounded whatever the file size; Parquet is
/// first copied to a temporary file (use [`read_parquet_file`] for a file on disk).
pub fn read_rows_blocking(
    reader: Box<dyn Read + Send>,
    file: Arc<str>,
    format: FileFormat,
    compression: Compression,
    csv: &CsvOptions,
) -> RowIter {
    let plain = match decompress(reader, compression) {
        Ok(r) => r,
        Err(e) => return RowIter::failed(file, format!("cannot read the file: {e}")),
    };
    match format {
        FileFormat::Csv => csv_rows(plain, file, csv),
        FileFormat::Jsonl => RowIter {
            inner: Inner::JsonLines(JsonLinesRows::new(
                Box::new(BufReader::with_capacity(BUF_SIZE, plain)),
                file,
            )),
        },
        FileFormat::Json => {
            let mut text: TextReader = Box::new(BufReader::with_capacity(BUF_SIZE, plain));
            match starts_with_array(&mut text) {
                Ok(true) => RowIter {
                    inner: Inner::JsonArray(JsonArrayRows::new(text, file)),
                },
                Ok(false) => RowIter {
                    inner: Inner::JsonLines(JsonLinesRows::new(text, file)),
                },
                Err(e) => RowIter::failed(file, format!("cannot read the file: {e}")),
            }
        }
        FileFormat::Parquet => match spill(plain) {
            Ok(f) => read_parquet_file(f, file),
            Err(e) => RowIter::failed(
                file,
                format!("cannot read the file into a temporary file for Parquet: {e}"),
            ),
        },
    }
}

/// The rows of a Parquet file on disk, read in place, a batch at a time.
pub fn read_parquet_file(file: File, name: Arc<str>) -> RowIter {
    RowIter {
        inner: Inner::Parquet(ParquetRows::open(file, name)),
    }
}

/// The rows of a local file. An uncompressed Parquet file is read in place; everything else
/// goes through [`read_rows_blocking`].
pub fn read_local_file(
    path: &Path,
    name: Arc<str>,
    format: FileFormat,
    compression: Compression,
    csv: &CsvOptions,
) -> RowIter {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return RowIter::failed(name, format!("cannot open the file: {e}")),
    };
    if format == FileFormat::Parquet {
        let compressed = match compression {
            Compression::Gzip | Compression::Zstd => true,
            Compression::None => false,
            Compression::Auto => {
                let mut head = [0u8; 4];
                let n = f.read(&mut head).unwrap_or(0);
                if let Err(e) = f.seek(SeekFrom::Start(0)) {
                    return RowIter::failed(name, format!("cannot read the file: {e}"));
                }
                sniff(head.get(..n).unwrap_or_default()) != Compression::None
            }
        };
        if !compressed {
            return read_parquet_file(f, name);
        }
    }
    read_rows_blocking(Box::new(f), name, format, compression, csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lines_of(data: Vec<u8>, compression: Compression) -> Vec<Result<Row, RowError>> {
        read_rows_blocking(
            Box::new(io::Cursor::new(data)),
            Arc::from("f"),
            FileFormat::Jsonl,
            compression,
            &CsvOptions::default(),
        )
        .collect()
    }

    #[test]
    fn row_iter_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<RowIter>();
    }

    #[test]
    fn compression_is_sniffed_when_auto() {
        let plain = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
        let z = zstd::encode_all(&plain[..], 1).unwrap();
        for (data, c) in [
            (plain.clone(), Compression::Auto),
            (gzip(&plain), Compression::Auto),
            (gzip(&plain), Compression::Gzip),
            (z.clone(), Compression::Auto),
            (z, Compression::Zstd),
        ] {
            let rows = lines_of(data, c);
            assert_eq!(rows.len(), 2, "{c:?}");
            assert!(rows.iter().all(Result::is_ok), "{c:?}");
        }
        // Tiny and empty inputs are not mistaken for compressed ones.
        assert!(lines_of(b"{}".to_vec(), Compression::Auto)[0].is_ok());
        assert!(lines_of(Vec::new(), Compression::Auto).is_empty());
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let mut data = gzip(b"{\"a\":1}\n");
        data.extend(gzip(b"{\"a\":2}\n"));
        let rows = lines_of(data, Compression::Gzip);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].as_ref().unwrap().provenance.line, 2);
    }

    #[test]
    fn option_errors_are_file_errors() {
        let bad = |csv: CsvOptions| -> RowError {
            let mut rows = read_rows_blocking(
                Box::new(io::Cursor::new(b"a\n1\n".to_vec())),
                Arc::from("f.csv"),
                FileFormat::Csv,
                Compression::None,
                &csv,
            );
            let e = rows.next().unwrap().unwrap_err();
            assert!(rows.next().is_none());
            e
        };
        let e = bad(CsvOptions {
            encoding: "klingon".into(),
            ..CsvOptions::default()
        });
        assert_eq!(e.provenance.line, 0);
        assert!(
            e.message.contains("unknown encoding 'klingon'"),
            "{}",
            e.message
        );
        let e = bad(CsvOptions {
            delimiter: '§',
            ..CsvOptions::default()
        });
        assert!(e.message.contains("delimiter"), "{}", e.message);
    }
}
