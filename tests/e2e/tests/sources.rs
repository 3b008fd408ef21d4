//! Table sources end to end: listing, every format and compression, encodings, provenance,
//! each kind of bad input, resume and a large file — through the same `open_rows` the
//! engine uses. Files are read both in place (local folder) and as a byte stream (the S3
//! path: a store that offers no local path), so the bridge and the Parquet spill run too.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone};
use pipefy_sync::config::{Compression, CsvOptions, FileFormat, SourceConfig};
use pipefy_sync::source::formats::{arrow_array, arrow_schema, flate2, parquet, zstd};
use pipefy_sync::source::{
    detect_format, is_marker, list_table_files, open_rows, read_rows_blocking, Row, RowError,
};
use pipefy_sync::store::{
    LocalStore, ObjectMeta, ObjectReader, ObjectStore, StoreError, WriteCondition,
};
use pipefy_sync::value::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/sources")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn source() -> SourceConfig {
    SourceConfig {
        bucket: None,
        path: None,
        layer: "refined".into(),
        table: "t".into(),
        format: None,
        compression: Compression::Auto,
        csv: CsvOptions::default(),
    }
}

/// A local folder seen only through `get_stream`, as an S3 bucket is. (Written out without
/// `#[async_trait]`: the trait's methods return boxed `Send` futures.)
struct StreamOnly(LocalStore);

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl ObjectStore for StreamOnly {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn list<'a, 'b, 'c>(&'a self, prefix: &'b str) -> Fut<'c, Vec<ObjectMeta>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.list(prefix)
    }
    fn head<'a, 'b, 'c>(&'a self, key: &'b str) -> Fut<'c, ObjectMeta>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.head(key)
    }
    fn get_stream<'a, 'b, 'c>(&'a self, key: &'b str) -> Fut<'c, (ObjectMeta, ObjectReader)>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.get_stream(key)
    }
    fn get_bytes<'a, 'b, 'c>(&'a self, key: &'b str) -> Fut<'c, (ObjectMeta, Bytes)>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.get_bytes(key)
    }
    fn put_bytes<'a, 'b, 'c>(
        &'a self,
        key: &'b str,
        body: Bytes,
        condition: WriteCondition,
    ) -> Fut<'c, String>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.put_bytes(key, body, condition)
    }
    fn delete<'a, 'b, 'c>(&'a self, key: &'b str, condition: WriteCondition) -> Fut<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.delete(key, condition)
    }
}

struct Table {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Table {
    fn new() -> Table {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Table { _dir: dir, root }
    }

    /// Writes `refined/t/<name>` and returns its key.
    fn put(&self, name: &str, data: &[u8]) -> String {
        let key = format!("refined/t/{name}");
        let path = self.root.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        key
    }

    fn store(&self, in_place: bool) -> Arc<dyn ObjectStore> {
        let local = LocalStore::new(&self.root);
        if in_place {
            Arc::new(local)
        } else {
            Arc::new(StreamOnly(local))
        }
    }
}

async fn read_with(
    store: Arc<dyn ObjectStore>,
    key: &str,
    source: &SourceConfig,
    start_after_line: u64,
) -> Vec<Result<Row, RowError>> {
    let meta = store.head(key).await.unwrap_or(ObjectMeta {
        key: key.to_string(),
        size: 0,
        etag: String::new(),
        version_id: None,
    });
    let mut stream = open_rows(store, &meta, source, start_after_line).await;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item);
    }
    out
}

/// Reads one file both in place and as a stream; both must give the same rows.
async fn read_file(name: &str, data: &[u8], source: &SourceConfig) -> Vec<Result<Row, RowError>> {
    let table = Table::new();
    let key = table.put(name, data);
    let streamed = read_with(table.store(false), &key, source, 0).await;
    let in_place = read_with(table.store(true), &key, source, 0).await;
    assert_eq!(
        streamed, in_place,
        "{name}: streamed and in-place reads differ"
    );
    streamed
}

fn ok(item: &Result<Row, RowError>) -> &Row {
    match item {
        Ok(r) => r,
        Err(e) => panic!("expected a row, got error {e}"),
    }
}

fn err(item: &Result<Row, RowError>) -> &RowError {
    match item {
        Ok(r) => panic!("expected an error, got row {r:?}"),
        Err(e) => e,
    }
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn text(row: &Row, column: &str) -> String {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
        .to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[tokio::test]
async fn csv_quoting_and_embedded_newlines_keep_physical_line_numbers() {
    let rows = read_file(
        "customers.csv",
        &fixture("embedded_newlines.csv"),
        &source(),
    )
    .await;
    assert_eq!(rows.len(), 4);
    let lines: Vec<u64> = rows.iter().map(|r| ok(r).provenance.line).collect();
    assert_eq!(lines, [2, 3, 6, 7]);
    let r = ok(&rows[1]);
    assert_eq!(&*r.provenance.file, "refined/t/customers.csv");
    assert_eq!(text(r, "name"), "Bruno \"Bu\" Lima");
    assert_eq!(
        text(r, "notes"),
        "first line\r\nsecond line\r\nthird, with comma"
    );
    assert_eq!(
        ok(&rows[2]).get("notes"),
        Some(&s("")),
        "blank cell is empty text"
    );
    assert_eq!(ok(&rows[3]).get("name"), Some(&s("Davi")));
    let names: Vec<&str> = r.values.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(names, ["id", "name", "notes"]);
}

#[tokio::test]
async fn csv_bom_delimiter_tsv_and_headerless() {
    let rows = read_file("bom.csv", &fixture("bom.csv"), &source()).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        ok(&rows[0]).values[0].0.as_ref(),
        "id",
        "BOM not part of the name"
    );
    assert_eq!(ok(&rows[0]).get("id"), Some(&s("1")));

    let mut semi = source();
    semi.csv.delimiter = ';';
    let rows = read_file("semicolon.csv", &fixture("semicolon.csv"), &semi).await;
    assert_eq!(ok(&rows[0]).get("city"), Some(&s("Rio; RJ")));
    assert_eq!(ok(&rows[1]).get("city"), Some(&s("Recife")));

    let rows = read_file("people.tsv", &fixture("people.tsv"), &source()).await;
    assert_eq!(ok(&rows[0]).get("name"), Some(&s("Ana Maria")));
    assert_eq!(ok(&rows[1]).get("name"), Some(&s("Bruno\tB")));

    let mut headerless = source();
    headerless.csv.header = false;
    let rows = read_file("bom.csv", &fixture("bom.csv"), &headerless).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(ok(&rows[0]).provenance.line, 1);
    assert_eq!(ok(&rows[0]).get("column_1"), Some(&s("id")));
    assert_eq!(ok(&rows[2]).get("column_2"), Some(&s("Bruno")));
}

#[tokio::test]
async fn csv_latin1_encoding_and_the_error_without_it() {
    let mut latin1 = source();
    latin1.csv.encoding = "latin1".into();
    let rows = read_file("latin1.csv", &fixture("latin1.csv"), &latin1).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(ok(&rows[0]).get("name"), Some(&s("José")));
    assert_eq!(ok(&rows[0]).get("city"), Some(&s("São Paulo")));
    assert_eq!(ok(&rows[1]).get("city"), Some(&s("Curaçao")));

    // Read as UTF-8 (the default), each row names the column that is not UTF-8.
    let rows = read_file("latin1.csv", &fixture("latin1.csv"), &source()).await;
    assert_eq!(rows.len(), 2);
    let e = err(&rows[0]);
    assert_eq!((e.provenance.line, e.column.as_deref()), (2, Some("name")));
    assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
    assert!(
        e.message.contains("latin1"),
        "suggests the option: {}",
        e.message
    );
    assert_eq!(err(&rows[1]).column.as_deref(), Some("name"));

    // UTF-16 with a BOM, through a WHATWG label.
    let mut utf16 = source();
    utf16.csv.encoding = "utf-16le".into();
    let mut data = vec![0xFF, 0xFE];
    for unit in "id,name\n1,Zoë\n".encode_utf16() {
        data.extend(unit.to_le_bytes());
    }
    let rows = read_file("u16.csv", &data, &utf16).await;
    assert_eq!(ok(&rows[0]).get("name"), Some(&s("Zoë")));
}

#[tokio::test]
async fn csv_bad_records_are_reported_and_reading_goes_on() {
    let rows = read_file("bad.csv", &fixture("bad_rows.csv"), &source()).await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert_eq!(ok(&rows[0]).provenance.line, 2);

    let e = err(&rows[1]);
    assert_eq!(&*e.provenance.file, "refined/t/bad.csv");
    assert_eq!(e.provenance.line, 3);
    assert_eq!(e.message, "expected 3 fields as in the header, found 2");
    assert_eq!(e.raw.as_deref(), Some("2,Bruno"));
    assert_eq!(
        e.to_string(),
        "refined/t/bad.csv:3: expected 3 fields as in the header, found 2"
    );

    let e = err(&rows[2]);
    assert_eq!(e.provenance.line, 4);
    assert!(
        e.message.starts_with("bad quoting in field 2"),
        "{}",
        e.message
    );
    assert_eq!(e.raw.as_deref(), Some("3,\"Carla\"x,Recife"));

    let e = err(&rows[3]);
    assert_eq!(e.provenance.line, 5);
    assert_eq!(e.column.as_deref(), Some("name"));
    assert!(
        e.message.contains("column 'name' is not valid UTF-8"),
        "{}",
        e.message
    );

    let e = err(&rows[4]);
    assert_eq!(e.provenance.line, 6);
    assert_eq!(e.message, "expected 3 fields as in the header, found 4");

    let r = ok(&rows[5]);
    assert_eq!(
        (r.provenance.line, text(r, "city")),
        (7, "Manaus".to_string())
    );
}

#[tokio::test]
async fn csv_unterminated_quote_loses_no_rows() {
    let data = b"id,name\n1,\"Ana\n2,Bruno\n3,Carla\n";
    let rows = read_file("open_quote.csv", data, &source()).await;
    assert_eq!(rows.len(), 3);
    let e = err(&rows[0]);
    assert_eq!(e.provenance.line, 2);
    assert!(
        e.message.contains("unterminated quoted field"),
        "{}",
        e.message
    );
    assert_eq!(ok(&rows[1]).provenance.line, 3);
    assert_eq!(text(ok(&rows[2]), "name"), "Carla");
}

#[tokio::test]
async fn json_lines_rows_and_bad_lines() {
    let rows = read_file("events.jsonl", &fixture("events.jsonl"), &source()).await;
    assert_eq!(rows.len(), 5);
    let r = ok(&rows[0]);
    assert_eq!(r.provenance.line, 1);
    assert_eq!(r.get("id"), Some(&Value::Int(1)));
    assert_eq!(r.get("tags"), Some(&Value::List(vec![s("a"), s("b")])));
    assert_eq!(r.get("amount"), Some(&Value::Float(10.5)));
    assert_eq!(r.get("meta"), Some(&s("{\"src\":\"web\"}")));
    let r = ok(&rows[1]);
    assert_eq!(
        (r.provenance.line, r.get("amount")),
        (3, Some(&Value::Null))
    );
    let e = err(&rows[2]);
    assert_eq!(e.provenance.line, 4);
    assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
    assert_eq!(e.raw.as_deref(), Some("{\"id\": 3, \"kind\":"));
    let e = err(&rows[3]);
    assert_eq!(e.provenance.line, 5);
    assert_eq!(e.message, "the line is a JSON array, not an object");
    assert_eq!(ok(&rows[4]).provenance.line, 6);
}

#[tokio::test]
async fn json_array_elements_and_a_non_object_element() {
    let rows = read_file("events.json", &fixture("events.json"), &source()).await;
    assert_eq!(rows.len(), 4);
    let r = ok(&rows[0]);
    assert_eq!(r.provenance.line, 1, "element index");
    assert_eq!(r.get("note"), Some(&s("comma, ] and } inside")));
    let e = err(&rows[2]);
    assert_eq!(e.provenance.line, 3);
    assert_eq!(e.message, "the element is a JSON string, not an object");
    assert_eq!(e.raw.as_deref(), Some("\"just a string\""));
    let r = ok(&rows[3]);
    assert_eq!((r.provenance.line, r.get("id")), (4, Some(&Value::Int(4))));

    // Spark writes JSON Lines under `.json`: read as lines.
    let rows = read_file("part-0.json", b"{\"a\":1}\n{\"a\":2}\n", &source()).await;
    assert_eq!(ok(&rows[1]).provenance.line, 2);
}

#[tokio::test]
async fn compression_by_extension_and_by_option() {
    let csv = fixture("embedded_newlines.csv");
    let expect = read_file("plain.csv", &csv, &source()).await;
    assert_eq!(expect.len(), 4);
    for (name, data) in [
        ("a.csv.gz", gzip(&csv)),
        ("a.csv.zst", zst(&csv)),
        ("a.csv.zstd", zst(&csv)),
        // No extension says so: recognised by the magic bytes.
        ("a.csv", gzip(&csv)),
    ] {
        let rows = read_file(name, &data, &source()).await;
        assert_eq!(rows.len(), expect.len(), "{name}");
        for (a, b) in rows.iter().zip(expect.iter()) {
            assert_eq!(ok(a).values, ok(b).values, "{name}");
            assert_eq!(ok(a).provenance.line, ok(b).provenance.line, "{name}");
        }
    }
    let rows = read_file("e.jsonl.gz", &gzip(&fixture("events.jsonl")), &source()).await;
    assert_eq!(rows.len(), 5);
    let rows = read_file("e.json.zst", &zst(&fixture("events.json")), &source()).await;
    assert_eq!(rows.len(), 4);
    let rows = read_file("p.tsv.gz", &gzip(&fixture("people.tsv")), &source()).await;
    assert_eq!(ok(&rows[1]).get("name"), Some(&s("Bruno\tB")));

    // Options instead of extensions.
    let mut opts = source();
    opts.format = Some(FileFormat::Jsonl);
    opts.compression = Compression::Zstd;
    let rows = read_file("part-00000", &zst(&fixture("events.jsonl")), &opts).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(
        detect_format("x/part-00000", &opts),
        Ok((FileFormat::Jsonl, Compression::Zstd))
    );
}

/// The last item is a line-0 error naming the file, and nothing follows it.
fn assert_file_error<'a>(rows: &'a [Result<Row, RowError>], file: &str) -> &'a RowError {
    let e = err(rows.last().expect("at least the file error"));
    assert_eq!(e.provenance.line, 0, "{e}");
    assert_eq!(&*e.provenance.file, file);
    assert!(
        rows.iter().filter(|r| r.is_err()).count() == 1,
        "only one error: {rows:#?}"
    );
    e
}

#[tokio::test]
async fn unreadable_files_end_with_one_file_error() {
    // Truncated gzip: rows before the cut may come, then the file error.
    let big: String = (0..5000).map(|i| format!("{i},name {i}\n")).collect();
    let mut gz = gzip(format!("id,name\n{big}").as_bytes());
    gz.truncate(gz.len() / 2);
    let rows = read_file("cut.csv.gz", &gz, &source()).await;
    let e = assert_file_error(&rows, "refined/t/cut.csv.gz");
    assert!(e.message.contains("cannot read the file"), "{}", e.message);
    assert!(rows.len() < 5001);
    for (i, r) in rows.iter().take(rows.len() - 1).enumerate() {
        assert_eq!(ok(r).provenance.line, i as u64 + 2);
    }

    // Garbage that claims to be gzip.
    let rows = read_file("bad.jsonl.gz", b"\x1f\x8b not really gzip", &source()).await;
    assert_eq!(rows.len(), 1);
    assert_file_error(&rows, "refined/t/bad.jsonl.gz");

    // Corrupt Parquet: bad footer.
    let rows = read_file(
        "broken.parquet",
        b"PAR1 this is not a parquet file PAR1",
        &source(),
    )
    .await;
    assert_eq!(rows.len(), 1);
    let e = assert_file_error(&rows, "refined/t/broken.parquet");
    assert!(
        e.message.contains("not a readable Parquet file"),
        "{}",
        e.message
    );

    // Empty CSV: no header.
    let rows = read_file("empty.csv", b"", &source()).await;
    assert_eq!(rows.len(), 1);
    let e = assert_file_error(&rows, "refined/t/empty.csv");
    assert!(e.message.contains("empty file"), "{}", e.message);

    // A JSON array cut short.
    let rows = read_file("cut.json", b"[{\"a\": 1}, {\"a\": 2}, {\"a\"", &source()).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(ok(&rows[1]).provenance.line, 2);
    assert_file_error(&rows, "refined/t/cut.json");

    // An extension that says nothing.
    let rows = read_file("notes.txt", b"hello", &source()).await;
    assert_eq!(rows.len(), 1);
    let e = assert_file_error(&rows, "refined/t/notes.txt");
    assert!(e.message.contains("source.format"), "{}", e.message);

    // Missing object, through both store paths.
    let table = Table::new();
    for in_place in [true, false] {
        let rows = read_with(table.store(in_place), "refined/t/gone.csv", &source(), 0).await;
        assert_eq!(rows.len(), 1);
        let e = assert_file_error(&rows, "refined/t/gone.csv");
        assert!(e.message.contains("cannot open the file"), "{}", e.message);
    }
}

#[tokio::test]
async fn header_only_csv_is_no_rows_and_no_error() {
    let rows = read_file("h.csv", &fixture("header_only.csv"), &source()).await;
    assert!(rows.is_empty(), "{rows:?}");
    let rows = read_file("h.csv.gz", &gzip(&fixture("header_only.csv")), &source()).await;
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test]
async fn resume_skips_rows_up_to_the_checkpointed_line() {
    let table = Table::new();
    let key = table.put("c.csv", &fixture("embedded_newlines.csv"));
    for in_place in [true, false] {
        let rows = read_with(table.store(in_place), &key, &source(), 3).await;
        let lines: Vec<u64> = rows.iter().map(|r| ok(r).provenance.line).collect();
        assert_eq!(lines, [6, 7]);
        let rows = read_with(table.store(in_place), &key, &source(), 7).await;
        assert!(rows.is_empty());
    }
    // Errors before the checkpoint were reported by the earlier run; later ones still come.
    let key = table.put("bad.csv", &fixture("bad_rows.csv"));
    let rows = read_with(table.store(false), &key, &source(), 4).await;
    let lines: Vec<(u64, bool)> = rows
        .iter()
        .map(|r| match r {
            Ok(r) => (r.provenance.line, true),
            Err(e) => (e.provenance.line, false),
        })
        .collect();
    assert_eq!(lines, [(5, false), (6, false), (7, true)]);
}

#[tokio::test]
async fn large_file_streams_through_the_bounded_channel() {
    const ROWS: u64 = 150_000;
    let table = Table::new();
    let path = table.root.join("refined/t/big.csv.gz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut w =
            flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
        writeln!(w, "id,name,city,amount").unwrap();
        for i in 0..ROWS {
            writeln!(w, "{i},\"name {i}\",city {},{}.{:02}", i % 97, i, i % 100).unwrap();
        }
        w.finish().unwrap().flush().unwrap();
    }
    let store = table.store(false);
    let meta = store.head("refined/t/big.csv.gz").await.unwrap();
    let mut stream = open_rows(store, &meta, &source(), 0).await;
    let (mut count, mut last_line, mut errors) = (0u64, 0u64, 0u64);
    while let Some(item) = stream.next().await {
        match item {
            Ok(r) => {
                count += 1;
                last_line = r.provenance.line;
            }
            Err(_) => errors += 1,
        }
        // A slow consumer now and then: the reader must wait, not pile rows up.
        if count % 50_000 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!((count, errors, last_line), (ROWS, 0, ROWS + 1));
}

#[tokio::test]
async fn dropping_a_stream_early_stops_the_reader() {
    let table = Table::new();
    let data: String = std::iter::once("id\n".to_string())
        .chain((0..20_000).map(|i| format!("{i}\n")))
        .collect();
    let key = table.put("many.csv", data.as_bytes());
    let store = table.store(false);
    let meta = store.head(&key).await.unwrap();
    let mut stream = open_rows(store.clone(), &meta, &source(), 0).await;
    assert_eq!(ok(&stream.next().await.unwrap()).provenance.line, 2);
    drop(stream);
    // The store stays usable and a new stream reads from the start.
    let rows = read_with(store, &key, &source(), 19_990).await;
    assert_eq!(rows.len(), 11);
}

#[tokio::test]
async fn listing_skips_markers_and_empty_objects() {
    let table = Table::new();
    for (name, data) in [
        ("part-0001.csv", &b"a\n1\n"[..]),
        ("part-0000.csv.gz", &b"x"[..]),
        ("dt=2024-01-02/part-0.parquet", &b"x"[..]),
        ("_SUCCESS", &b""[..]),
        ("_committed_123", &b"x"[..]),
        ("_delta_log/00000.json", &b"{}"[..]),
        ("_temporary/0/part-9.csv", &b"a"[..]),
        (".part-0001.csv.crc", &b"x"[..]),
        ("part-0002.csv.crc", &b"x"[..]),
        ("part-0003.csv.tmp", &b"x"[..]),
        ("dt=2024-01-02/.hidden.csv", &b"x"[..]),
        ("zero.csv", &b""[..]),
    ] {
        table.put(name, data);
    }
    // Another table with a common name prefix is not part of this one.
    std::fs::create_dir_all(table.root.join("refined/t2")).unwrap();
    std::fs::write(table.root.join("refined/t2/x.csv"), "a\n1\n").unwrap();

    for in_place in [true, false] {
        let files = list_table_files(table.store(in_place).as_ref(), &source())
            .await
            .unwrap();
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "refined/t/dt=2024-01-02/part-0.parquet",
                "refined/t/part-0000.csv.gz",
                "refined/t/part-0001.csv",
            ]
        );
        assert_eq!(files[2].size, 4);
        assert!(files[2].etag.starts_with('"'));
    }
    assert!(is_marker("_SUCCESS") && !is_marker("part-0.csv"));
    // A missing table folder is an empty table, not an error.
    let mut other = source();
    other.table = "nothing-here".into();
    assert!(list_table_files(table.store(true).as_ref(), &other)
        .await
        .unwrap()
        .is_empty());
}

/// A Parquet file with every type the readers promise, in several row groups.
fn parquet_fixture() -> Vec<u8> {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::types::Int64Type;
    use arrow_array::*;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    let ts = |h: u32| {
        NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(h, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("vip");
    tags.values().append_value("new");
    tags.append(true);
    tags.append(false);
    tags.append(true);
    let tags = tags.finish();

    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "name",
            Arc::new(StringArray::from(vec![Some("Ana"), None, Some("Ção")])),
        ),
        (
            "small",
            Arc::new(Int32Array::from(vec![Some(-7), Some(0), None])),
        ),
        (
            "big",
            Arc::new(Int64Array::from(vec![
                Some(9_007_199_254_740_993),
                None,
                Some(-1),
            ])),
        ),
        (
            "unsigned",
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), Some(5), None])),
        ),
        (
            "ratio",
            Arc::new(Float64Array::from(vec![Some(0.25), None, Some(-1.5)])),
        ),
        (
            "ratio32",
            Arc::new(Float32Array::from(vec![Some(0.1f32), None, Some(2.5)])),
        ),
        (
            "active",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        (
            "born",
            Arc::new(Date32Array::from(vec![Some(19_792), None, Some(0)])),
        ),
        (
            "seen_utc",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(ts(12)), None, Some(ts(0))])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "seen_sp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(ts(12)), None, None])
                    .with_timezone("America/Sao_Paulo"),
            ),
        ),
        (
            "local_time",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(ts(8) / 1000),
                None,
                None,
            ])),
        ),
        (
            "price",
            Arc::new(
                Decimal128Array::from(vec![Some(123_450), Some(-5), None])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "scores",
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
                Some(vec![Some(1), Some(2), None]),
                None,
                Some(vec![]),
            ])),
        ),
        ("tags", Arc::new(tags)),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    assert!(matches!(
        schema.field_with_name("local_time").unwrap().data_type(),
        DataType::Timestamp(TimeUnit::Millisecond, None)
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_size(2)
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test]
async fn parquet_types_in_place_streamed_and_compressed() {
    let data = parquet_fixture();
    let rows = read_file("people.parquet", &data, &source()).await;
    assert_eq!(rows.len(), 3);
    let lines: Vec<u64> = rows.iter().map(|r| ok(r).provenance.line).collect();
    assert_eq!(lines, [1, 2, 3], "row index across row groups");
    let (r0, r1, r2) = (ok(&rows[0]), ok(&rows[1]), ok(&rows[2]));

    assert_eq!(r0.get("name"), Some(&s("Ana")));
    assert_eq!(r1.get("name"), Some(&Value::Null));
    assert_eq!(r2.get("name"), Some(&s("Ção")));
    assert_eq!(r0.get("small"), Some(&Value::Int(-7)));
    assert_eq!(r0.get("big"), Some(&Value::Int(9_007_199_254_740_993)));
    assert_eq!(
        r0.get("unsigned"),
        Some(&Value::Decimal("18446744073709551615".into()))
    );
    assert_eq!(r1.get("unsigned"), Some(&Value::Int(5)));
    assert_eq!(r0.get("ratio"), Some(&Value::Float(0.25)));
    assert_eq!(r0.get("ratio32"), Some(&Value::Float(0.1)));
    assert_eq!(r1.get("active"), Some(&Value::Bool(false)));
    assert_eq!(r2.get("active"), Some(&Value::Null));
    assert_eq!(
        r0.get("born"),
        Some(&Value::Date(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap()))
    );
    assert_eq!(
        r2.get("born"),
        Some(&Value::Date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()))
    );
    let utc = chrono::FixedOffset::east_opt(0).unwrap();
    assert_eq!(
        r0.get("seen_utc"),
        Some(&Value::DateTime(
            utc.with_ymd_and_hms(2024, 3, 10, 12, 30, 0).unwrap()
        ))
    );
    match r0.get("seen_sp") {
        Some(Value::DateTime(dt)) => assert_eq!(dt.to_rfc3339(), "2024-03-10T09:30:00-03:00"),
        other => panic!("seen_sp: {other:?}"),
    }
    assert_eq!(
        r0.get("local_time"),
        Some(&Value::NaiveDateTime(
            NaiveDate::from_ymd_opt(2024, 3, 10)
                .unwrap()
                .and_hms_opt(8, 30, 0)
                .unwrap()
        ))
    );
    assert_eq!(r0.get("price"), Some(&Value::Decimal("1234.50".into())));
    assert_eq!(r1.get("price"), Some(&Value::Decimal("-0.05".into())));
    assert_eq!(r2.get("price"), Some(&Value::Null));
    assert_eq!(
        r0.get("scores"),
        Some(&Value::List(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Null
        ]))
    );
    assert_eq!(r1.get("scores"), Some(&Value::Null));
    assert_eq!(r2.get("scores"), Some(&Value::List(vec![])));
    assert_eq!(r0.get("tags"), Some(&Value::List(vec![s("vip"), s("new")])));
    assert_eq!(r1.get("tags"), Some(&Value::Null));
    let names: Vec<&str> = r0.values.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(names.first(), Some(&"name"));
    assert_eq!(names.len(), 14);

    for (name, packed) in [("p.parquet.gz", gzip(&data)), ("p.pq.zst", zst(&data))] {
        let again = read_file(name, &packed, &source()).await;
        assert_eq!(again, {
            // Same rows; only the file name differs.
            rows.iter()
                .map(|r| {
                    let mut r = ok(r).clone();
                    r.provenance.file = Arc::from(format!("refined/t/{name}").as_str());
                    Ok(r)
                })
                .collect::<Vec<_>>()
        });
    }

    // Resume inside a Parquet file.
    let table = Table::new();
    let key = table.put("p.parquet", &data);
    let rows = read_with(table.store(true), &key, &source(), 2).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(ok(&rows[0]).get("name"), Some(&s("Ção")));
}

#[test]
fn the_blocking_core_reads_without_a_runtime() {
    let rows: Vec<_> = read_rows_blocking(
        Box::new(std::io::Cursor::new(fixture("embedded_newlines.csv"))),
        Arc::from("mem.csv"),
        FileFormat::Csv,
        Compression::None,
        &CsvOptions::default(),
    )
    .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(&*ok(&rows[0]).provenance.file, "mem.csv");
    let rows: Vec<_> = read_rows_blocking(
        Box::new(std::io::Cursor::new(parquet_fixture())),
        Arc::from("mem.parquet"),
        FileFormat::Parquet,
        Compression::Auto,
        &CsvOptions::default(),
    )
    .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(ok(&rows[2]).provenance.line, 3);
}
