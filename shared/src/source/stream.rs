//! The async face of the readers: a blocking reader thread fed by the object's byte stream,
//! handing rows over through a bounded channel, so memory stays flat and the async side
//! never blocks on parsing.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use super::listing::{csv_options_for, detect_format};
use super::reader::{read_local_file, read_rows_blocking, RowIter};
use super::{Provenance, Row, RowError};
use crate::config::SourceConfig;
use crate::store::{ObjectMeta, ObjectStore};

/// Rows per hand-over between threads: one channel operation per batch, not per row.
const BATCH_ROWS: usize = 128;
/// Batches in flight: with [`BATCH_ROWS`], at most ~1024 rows wait in the channel.
const CHANNEL_BATCHES: usize = 8;

type Item = Result<Row, RowError>;

/// The rows of one file, in order. Ends after the last row, or after a line-0 error when
/// the file could not be read (any further).
pub struct RowStream {
    file: Arc<str>,
    rx: Option<mpsc::Receiver<Vec<Item>>>,
    current: std::vec::IntoIter<Item>,
    task: Option<JoinHandle<()>>,
}

impl RowStream {
    fn failed(file: Arc<str>, message: String) -> RowStream {
        RowStream {
            current: vec![Err(RowError {
                provenance: Provenance {
                    file: file.clone(),
                    line: 0,
                },
                column: None,
                message,
                raw: None,
            })]
            .into_iter(),
            file,
            rx: None,
            task: None,
        }
    }

    /// The file the rows come from, as listed.
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub async fn next(&mut self) -> Option<Result<Row, RowError>> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Some(batch) => self.current = batch.into_iter(),
                None => {
                    self.rx = None;
                    // The reader is done; if it died instead of finishing, say so rather
                    // than pretend the file ended there.
                    let task = self.task.take()?;
                    return match task.await {
                        Ok(()) => None,
                        Err(e) => Some(Err(RowError {
                            provenance: Provenance {
                                file: self.file.clone(),
                                line: 0,
                            },
                            column: None,
                            message: format!("the file reader stopped unexpectedly: {e}"),
                            raw: None,
                        })),
                    };
                }
            }
        }
    }
}

/// Sends the rows after `start_after_line` in batches; stops early when the stream is dropped.
fn pump(rows: RowIter, tx: mpsc::Sender<Vec<Item>>, start_after_line: u64) {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for item in rows {
        let line = match &item {
            Ok(r) => r.provenance.line,
            Err(e) => e.provenance.line,
        };
        // Line 0 is the file as a whole: always reported.
        if line != 0 && line <= start_after_line {
            continue;
        }
        batch.push(item);
        if batch.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if tx.blocking_send(full).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        // A receiver gone by now no longer wants the rows.
        let _ = tx.blocking_send(batch);
    }
}

/// Opens one file of a table as a stream of rows. Rows whose line is `<= start_after_line`
/// are read but not emitted (resuming a checkpointed run). Never fails: a file that cannot
/// be opened is a stream of one line-0 error.
pub async fn open_rows(
    store: Arc<dyn ObjectStore>,
    object: &ObjectMeta,
    source: &SourceConfig,
    start_after_line: u64,
) -> RowStream {
    let file: Arc<str> = Arc::from(object.key.as_str());
    let (format, compression) = match detect_format(&object.key, source) {
        Ok(fc) => fc,
        Err(message) => return RowStream::failed(file, message),
    };
    let csv = csv_options_for(&object.key, source);
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let name = file.clone();
    let task = match store.local_path(&object.key) {
        Some(path) => tokio::task::spawn_blocking(move || {
            let rows = read_local_file(&path, name, format, compression, &csv);
            pump(rows, tx, start_after_line);
        }),
        None => match store.get_stream(&object.key).await {
            Ok((_, reader)) => {
                // Created here, on the runtime, so the blocking thread can drive the stream.
                let bridge = SyncIoBridge::new(reader);
                tokio::task::spawn_blocking(move || {
                    let rows =
                        read_rows_blocking(Box::new(bridge), name, format, compression, &csv);
                    pump(rows, tx, start_after_line);
                })
            }
            Err(e) => return RowStream::failed(file, format!("cannot open the file: {e}")),
        },
    };
    RowStream {
        file,
        rx: Some(rx),
        current: Vec::new().into_iter(),
        task: Some(task),
    }
}
