//! Which objects of a table are data files, and how each one is read.

use crate::config::{Compression, CsvOptions, FileFormat, SourceConfig};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// True for objects that are not data: job markers (`_SUCCESS`, `_committed_*`), metadata
/// folders (`_delta_log/`, `_temporary/`), hidden files (`.x`), temporary and checksum
/// files (`*.tmp`, `*.crc`), EMR folder placeholders (`x_$folder$`) and folder keys (`x/`).
/// Every `/`-separated segment is checked, so pass the key relative to the table prefix
/// (a layer named `_staging` must not hide its own tables).
pub fn is_marker(key: &str) -> bool {
    if key.is_empty() || key.ends_with('/') {
        return true;
    }
    let hidden = key
        .split('/')
        .filter(|s| !s.is_empty())
        .any(|s| s.starts_with('.') || s.starts_with('_'));
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    hidden
        || name.ends_with(".tmp")
        || name.ends_with(".crc")
        || name.ends_with("$folder$")
        || name.ends_with(".inprogress")
}

/// The data files of a table, sorted by key: every object under `<layer>/<table>/` that is
/// neither a marker ([`is_marker`]) nor empty.
pub async fn list_table_files(
    store: &dyn ObjectStore,
    source: &SourceConfig,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let prefix = source.prefix();
    let mut files: Vec<ObjectMeta> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| {
            let rel = o.key.strip_prefix(prefix.as_str()).unwrap_or(&o.key);
            o.size > 0 && !is_marker(rel)
        })
        .collect();
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(files)
}

/// Compression named by the extension, and the name without it.
fn compression_ext(name: &str) -> (Option<Compression>, &str) {
    let lower = name.to_ascii_lowercase();
    for (ext, c) in [
        (".gz", Compression::Gzip),
        (".gzip", Compression::Gzip),
        (".zst", Compression::Zstd),
        (".zstd", Compression::Zstd),
    ] {
        if lower.ends_with(ext) {
            return (Some(c), name.get(..name.len() - ext.len()).unwrap_or(name));
        }
    }
    (None, name)
}

fn extension(name: &str) -> Option<String> {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())
}

/// The format and compression of one file: the `format` / `compression` options when set,
/// otherwise the extension (`.csv`, `.tsv`, `.jsonl`, `.ndjson`, `.json`, `.parquet`, `.pq`,
/// after `.gz` / `.zst` / `.zstd`). A name that says nothing about compression gives
/// [`Compression::Auto`]: the reader then recognises gzip and zstd by their magic bytes.
pub fn detect_format(
    key: &str,
    source: &SourceConfig,
) -> Result<(FileFormat, Compression), String> {
    let (by_ext, stem) = compression_ext(key);
    let compression = match source.compression {
        Compression::Auto => by_ext.unwrap_or(Compression::Auto),
        explicit => explicit,
    };
    let format =
        match source.format {
            Some(f) => f,
            None => match extension(stem).as_deref() {
                Some("csv" | "tsv") => FileFormat::Csv,
                Some("jsonl" | "ndjson") => FileFormat::Jsonl,
                Some("json") => FileFormat::Json,
                Some("parquet" | "pq") => FileFormat::Parquet,
                other => {
                    return Err(format!(
                    "cannot tell the format of {key} from its extension ({}); set source.format \
                     to csv, jsonl, json or parquet",
                    other.map(|e| format!("'.{e}'")).unwrap_or_else(|| "none".to_string())
                ))
                }
            },
        };
    Ok((format, compression))
}

/// The CSV options for one file: a `.tsv` file is tab-separated unless a delimiter other
/// than the default comma was configured.
pub fn csv_options_for(key: &str, source: &SourceConfig) -> CsvOptions {
    let mut csv = source.csv.clone();
    let (_, stem) = compression_ext(key);
    if extension(stem).as_deref() == Some("tsv") && csv.delimiter == ',' {
        csv.delimiter = '\t';
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceConfig {
        SourceConfig {
            bucket: Some("b".into()),
            path: None,
            layer: "refined".into(),
            table: "customers".into(),
            format: None,
            compression: Compression::Auto,
            csv: CsvOptions::default(),
        }
    }

    #[test]
    fn markers() {
        for m in [
            "_SUCCESS",
            "_delta_log/00000.json",
            "_temporary/0/part-1.csv",
            ".hidden.csv",
            "dt=2024/.part-1.csv.crc",
            "part-1.csv.tmp",
            "part-1.csv.crc",
            "x_$folder$",
            "sub/",
            "_committed_123",
        ] {
            assert!(is_marker(m), "{m} is a marker");
        }
        for d in [
            "part-0001.csv",
            "dt=2024-01-01/part-1.parquet",
            "col=__HIVE_DEFAULT_PARTITION__/a.csv",
            "data.v2.json",
        ] {
            assert!(!is_marker(d), "{d} is data");
        }
    }

    #[test]
    fn formats_by_extension() {
        let s = source();
        let cases = [
            ("a/b.csv", FileFormat::Csv, Compression::Auto),
            ("a/b.CSV.GZ", FileFormat::Csv, Compression::Gzip),
            ("a/b.tsv.zst", FileFormat::Csv, Compression::Zstd),
            ("a/b.jsonl.zstd", FileFormat::Jsonl, Compression::Zstd),
            ("a/b.ndjson", FileFormat::Jsonl, Compression::Auto),
            ("a/b.json.gz", FileFormat::Json, Compression::Gzip),
            ("a/b.snappy.parquet", FileFormat::Parquet, Compression::Auto),
            ("a/b.pq", FileFormat::Parquet, Compression::Auto),
        ];
        for (key, f, c) in cases {
            assert_eq!(detect_format(key, &s), Ok((f, c)), "{key}");
        }
        let err = detect_format("a/part-0000", &s).unwrap_err();
        assert!(
            err.contains("a/part-0000") && err.contains("source.format"),
            "{err}"
        );
        assert!(detect_format("a/b.txt", &s).unwrap_err().contains("'.txt'"));
    }

    #[test]
    fn options_override_extension() {
        let mut s = source();
        s.format = Some(FileFormat::Jsonl);
        s.compression = Compression::None;
        assert_eq!(
            detect_format("a/part-0000.gz", &s),
            Ok((FileFormat::Jsonl, Compression::None))
        );
    }

    #[test]
    fn tsv_is_tab_separated() {
        let s = source();
        assert_eq!(csv_options_for("a/b.tsv.gz", &s).delimiter, '\t');
        assert_eq!(csv_options_for("a/b.csv", &s).delimiter, ',');
        let mut semi = source();
        semi.csv.delimiter = ';';
        assert_eq!(csv_options_for("a/b.tsv", &semi).delimiter, ';');
    }
}
