//! Stage 3d, attachments: the files a row's attachment fields name in S3 are uploaded to
//! Pipefy (docs/pipefy-api.md §11), and their storage paths take their place in the row,
//! which then goes out with its other fields in the same create or update.
//!
//! ```text
//!   the window's files not uploaded before (uploads/ in the state, per key and ETag)
//!     -> content type of each (the object's, else by extension)
//!     -> createPresignedUrl, batched like any mutation (they count against the rate limit)
//!     -> PUT each, streamed from S3, `limits.upload_concurrency` at once; a URL with less
//!        than 30 s of its lifetime (`X-Amz-Expires`, 300 s) left is replaced first, and an upload that failed on the way or
//!        found its URL expired is tried again with a fresh one
//!     -> the row's field gets the paths; a row with a file that could not be uploaded
//!        fails alone, before anything of it is written
//! ```
//!
//! Whether a file is uploaded at all is decided earlier, by the row's fingerprint: it holds
//! each file's ETag, so an unchanged file leaves its field unchanged and nothing is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::config::Destination;
use crate::failure::{FailureCode, RowFailure};
use crate::mapping::{FieldValue, FileRef, Mapper, Schema};
use crate::pipefy::{OpError, PresignedUrl, UploadBody, UploadError, UploadRequest};
use crate::state::{StateStore, UploadedFile, UploadedFiles};
use crate::store::{media_type, ObjectStore};

use super::pipefy_api::PipefyApi;
use super::plan::ItemKind;
use super::window::{failure_code, Outcome, Slot};
use super::{EngineError, RunContext, RunShared};

/// Attempts of one file's upload, each with a fresh URL.
const UPLOAD_ATTEMPTS: u32 = 3;

/// A URL is replaced when less than this is left of its lifetime as its upload begins.
const URL_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What the run's uploads need: where the files are, the organization they go to, how many
/// at once, and what was uploaded before.
pub(crate) struct Attachments {
    organization_id: String,
    /// The store of each attach bucket (`None`: the source's).
    stores: HashMap<Option<String>, Arc<dyn ObjectStore>>,
    state: StateStore,
    /// Uploads at once (`limits.upload_concurrency`), over all windows in flight.
    concurrency: usize,
    permits: Semaphore,
    /// Read on the first window that uploads.
    uploaded: tokio::sync::OnceCell<Mutex<UploadedFiles>>,
    /// Names this invocation's parts apart from those of the run's other invocations.
    invocation: String,
    parts: AtomicU64,
    pub files_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

/// Lists each attach location of the mapping, so that rows map to the versions of their
/// files, and (for a run that writes) finds the organization uploads go to. `None`: the
/// mapping uploads nothing.
pub(super) async fn prepare(
    ctx: &RunContext,
    dest: &Destination,
    api: &dyn PipefyApi,
    schema: &Schema,
    mapper: &Mapper,
    state: &StateStore,
    dry_run: bool,
) -> Result<Option<Attachments>, EngineError> {
    let sources = mapper.attach_sources();
    if sources.is_empty() {
        return Ok(None);
    }
    let mut stores: HashMap<Option<String>, Arc<dyn ObjectStore>> = HashMap::new();
    for source in &sources {
        let store = match (&source.bucket, &ctx.attachment_buckets) {
            (None, _) => ctx.source_store.clone(),
            (Some(b), Some(buckets)) => buckets.bucket(b),
            (Some(b), None) => {
                source.set_listing(Err(format!(
                    "this run reads no bucket but the source's, and attach.bucket is '{b}'"
                )));
                continue;
            }
        };
        let listing = match store.list(&source.prefix).await {
            Ok(objects) => Ok(objects
                .into_iter()
                .map(|o| {
                    let stat = crate::mapping::attach::ObjectStat {
                        etag: o.etag,
                        size: o.size,
                    };
                    (o.key, stat)
                })
                .collect()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = &listing {
            tracing::warn!(location = %source.describe(), error = %why, "cannot list an attach location; rows that name files there fail");
        }
        source.set_listing(listing);
        stores.insert(source.bucket.clone(), store);
    }
    if dry_run {
        return Ok(None);
    }
    let (id, found) = match (&dest.sync.organization_id, schema) {
        (Some(id), _) => return Ok(Some(Attachments::new(dest, id.clone(), stores, state))),
        (None, Schema::Pipe(p)) => (format!("pipe {}", p.id), p.organization_id.clone()),
        (None, Schema::Table(t)) => (
            format!("table {}", t.id),
            api.table_organization(&t.id).await?,
        ),
    };
    let organization_id = found.ok_or_else(|| EngineError::Mapping {
        destination: dest.name.clone(),
        issues: format!(
            "  - sync.organization_id: Pipefy names no organization for {id} that this token sees, and attachments are uploaded for one; set sync.organization_id"
        ),
    })?;
    Ok(Some(Attachments::new(dest, organization_id, stores, state)))
}

impl Attachments {
    pub(super) fn new(
        dest: &Destination,
        organization_id: String,
        stores: HashMap<Option<String>, Arc<dyn ObjectStore>>,
        state: &StateStore,
    ) -> Attachments {
        Attachments {
            organization_id,
            stores,
            state: state.clone(),
            concurrency: dest.limits.upload_concurrency.max(1) as usize,
            permits: Semaphore::new(dest.limits.upload_concurrency.max(1) as usize),
            uploaded: tokio::sync::OnceCell::new(),
            invocation: uuid::Uuid::new_v4().simple().to_string(),
            parts: AtomicU64::new(0),
            files_uploaded: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
        }
    }
}

/// One file of the window to upload, for one card or record.
struct Wanted {
    file: FileRef,
    key_hash: u64,
    content_type: String,
}

/// Uploads the window's files and puts their paths in the rows; a row whose file could not
/// be uploaded fails on its own.
pub(super) async fn upload_attachments(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<(), EngineError> {
    let Some(att) = &shared.attachments else {
        return Ok(());
    };
    // The files the window's rows send, each (key, object, version) once.
    let mut wanted: Vec<Wanted> = Vec::new();
    for slot in slots.iter() {
        if slot.outcome.is_some() {
            continue;
        }
        let ItemKind::Send { mapped, .. } = &slot.item.kind else {
            continue;
        };
        for f in &mapped.fields {
            let FieldValue::Files(files) = &f.value else {
                continue;
            };
            for file in files {
                let key_hash = slot.item.key_hash;
                if !wanted
                    .iter()
                    .any(|w| w.file == *file && w.key_hash == key_hash)
                {
                    wanted.push(Wanted {
                        file: file.clone(),
                        key_hash,
                        content_type: String::new(),
                    });
                }
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let uploaded = att
        .uploaded
        .get_or_try_init(|| async { att.state.load_uploads().await.map(Mutex::new) })
        .await?;
    let mut paths: HashMap<(u64, FileRef), Uploaded> = HashMap::new();
    {
        let known = uploaded.lock().await;
        wanted.retain(|w| {
            let id = (w.key_hash, w.file.location(), w.file.etag.clone());
            match known.get(&id) {
                Some(path) => {
                    paths.insert((w.key_hash, w.file.clone()), Ok(path.clone()));
                    false
                }
                None => true,
            }
        });
    }
    let outcomes = upload_all(shared, att, &mut wanted).await?;
    let mut new_entries = Vec::new();
    for (w, outcome) in wanted.iter().zip(outcomes) {
        if let Ok(path) = &outcome {
            new_entries.push(UploadedFile {
                key_hash: w.key_hash,
                object: w.file.location(),
                etag: w.file.etag.clone(),
                path: path.clone(),
            });
        }
        paths.insert((w.key_hash, w.file.clone()), outcome);
    }
    if !new_entries.is_empty() {
        let part = att.parts.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{}-{part:05}", shared.run_id, att.invocation);
        if let Err(e) = att.state.put_uploads(&name, &new_entries).await {
            // The cards still get their files; a later rewrite of the field uploads again.
            tracing::warn!(error = %e, "could not record the uploaded files");
        }
        uploaded.lock().await.extend(
            new_entries
                .into_iter()
                .map(|f| ((f.key_hash, f.object, f.etag), f.path)),
        );
    }
    place_paths(slots, &paths);
    Ok(())
}

/// Puts each file's path into its row, or fails the row with the first file that has none.
fn place_paths(slots: &mut [Slot], paths: &HashMap<(u64, FileRef), Uploaded>) {
    for slot in slots.iter_mut().filter(|s| s.outcome.is_none()) {
        let key_hash = slot.item.key_hash;
        let provenance = slot.item.provenance.clone();
        let ItemKind::Send { mapped, .. } = &mut slot.item.kind else {
            continue;
        };
        let mut failure = None;
        for f in mapped.fields.iter_mut() {
            let FieldValue::Files(files) = &f.value else {
                continue;
            };
            let mut storage = Vec::with_capacity(files.len());
            for file in files {
                match paths.get(&(key_hash, file.clone())) {
                    Some(Ok(path)) => storage.push(serde_json::Value::String(path.clone())),
                    Some(Err(why)) => {
                        failure.get_or_insert_with(|| {
                            RowFailure::new(
                                provenance.clone(),
                                why.code,
                                format!("{}: {}", file.location(), why.message),
                            )
                            .with_field(f.field_id.clone())
                        });
                    }
                    None => {
                        failure.get_or_insert_with(|| {
                            RowFailure::new(
                                provenance.clone(),
                                FailureCode::PipefyUnavailable,
                                format!("{}: was not uploaded", file.location()),
                            )
                            .with_field(f.field_id.clone())
                        });
                    }
                }
            }
            f.value = FieldValue::Json(serde_json::Value::Array(storage));
        }
        if let Some(failure) = failure {
            slot.outcome = Some(Outcome::Failed {
                failure,
                clear_intent: false,
            });
        }
    }
}

/// Why a file got no storage path: the code its row fails with, and what to say.
#[derive(Debug, Clone)]
struct UploadFailure {
    code: FailureCode,
    message: String,
}

impl UploadFailure {
    fn new(code: FailureCode, message: impl Into<String>) -> Self {
        UploadFailure {
            code,
            message: message.into(),
        }
    }

    /// The file could not be read from its store.
    fn unreadable(why: impl std::fmt::Display) -> Self {
        UploadFailure::new(
            FailureCode::NotFound,
            format!("cannot read the file: {why}"),
        )
    }
}

/// A file's storage path in Pipefy, or why it has none.
type Uploaded = Result<String, UploadFailure>;

/// Content types, upload URLs (batched), then the uploads, bounded; one outcome per file.
async fn upload_all(
    shared: &RunShared,
    att: &Attachments,
    wanted: &mut [Wanted],
) -> Result<Vec<Uploaded>, EngineError> {
    // The content type each URL is signed for.
    // Boxed, collected futures: a stream over a borrowing closure makes the window task's
    // `Send` bound higher-ranked, which `tokio::spawn` cannot satisfy.
    let lookups: Vec<BoxFuture<'_, String>> = wanted
        .iter()
        .map(|w| Box::pin(content_type_of(att, &w.file)) as BoxFuture<'_, String>)
        .collect();
    let types = futures::stream::iter(lookups)
        .buffered(att.concurrency * 2)
        .collect::<Vec<_>>()
        .await;
    for (w, t) in wanted.iter_mut().zip(types) {
        w.content_type = t;
    }
    let requests: Vec<UploadRequest> = wanted.iter().map(|w| request_of(att, w)).collect();
    let minted_at = Instant::now();
    let urls = shared
        .client
        .presigned_urls(&requests, shared.gate())
        .await
        .map_err(EngineError::Pipefy)?;
    let uploads: Vec<BoxFuture<'_, Uploaded>> = wanted
        .iter()
        .zip(urls)
        .map(|(w, url)| {
            Box::pin(upload_one(
                shared,
                att,
                w,
                url.map_err(|e| no_url(&e)),
                minted_at,
            )) as BoxFuture<'_, Uploaded>
        })
        .collect();
    Ok(futures::stream::iter(uploads)
        .buffered(att.concurrency)
        .collect()
        .await)
}

fn request_of(att: &Attachments, w: &Wanted) -> UploadRequest {
    UploadRequest {
        organization_id: att.organization_id.clone(),
        file_name: w.file.file_name().to_string(),
        content_type: w.content_type.clone(),
        content_length: w.file.size,
    }
}

/// The object's own media type, unless it is S3's "unknown" default; else by extension.
async fn content_type_of(att: &Attachments, file: &FileRef) -> String {
    let stored = match att.stores.get(&file.bucket) {
        Some(store) => store.content_type(&file.key).await.ok().flatten(),
        None => None,
    };
    stored
        .filter(|t| {
            !matches!(
                t.as_str(),
                "binary/octet-stream" | "application/octet-stream"
            )
        })
        .or_else(|| media_type(&file.key).map(str::to_string))
        .unwrap_or_else(|| "application/octet-stream".to_string())
}

/// One file: its PUT, with a fresh URL when the first is old or did not take.
async fn upload_one(
    shared: &RunShared,
    att: &Attachments,
    w: &Wanted,
    first: Result<PresignedUrl, UploadFailure>,
    minted_at: Instant,
) -> Uploaded {
    let _permit = att
        .permits
        .acquire()
        .await
        .map_err(|_| UploadFailure::new(FailureCode::PipefyUnavailable, "the run stopped"))?;
    let Some(store) = att.stores.get(&w.file.bucket) else {
        return Err(UploadFailure::unreadable(
            "its bucket is not readable by this run",
        ));
    };
    // A URL minted with the window's batch may have waited for a permit.
    let mut url = Some(first?).filter(|u| minted_at.elapsed() + URL_MARGIN < u.lifetime);
    let mut last = String::new();
    for _ in 0..UPLOAD_ATTEMPTS {
        let target = match url.take() {
            Some(u) => u,
            None => fresh_url(shared, att, w).await?,
        };
        let (_, reader) = store
            .get_stream(&w.file.key)
            .await
            .map_err(UploadFailure::unreadable)?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
        match shared
            .client
            .put_upload(
                &target,
                UploadBody {
                    content_type: &w.content_type,
                    length: w.file.size,
                    body,
                },
            )
            .await
        {
            Ok(()) => {
                att.files_uploaded.fetch_add(1, Ordering::Relaxed);
                att.bytes_uploaded.fetch_add(w.file.size, Ordering::Relaxed);
                return Ok(target.storage_path);
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(file = %w.file.location(), error = %e, "upload did not complete; trying again with a new URL");
                last = e.to_string();
            }
            Err(e @ UploadError::Refused { .. }) => {
                return Err(UploadFailure::new(
                    FailureCode::PipefyRejected,
                    format!("Pipefy refused the file: {e}"),
                ))
            }
            Err(e) => {
                return Err(UploadFailure::new(
                    FailureCode::PipefyUnavailable,
                    e.to_string(),
                ))
            }
        }
    }
    Err(UploadFailure::new(
        FailureCode::PipefyUnavailable,
        format!("{last} (gave up after {UPLOAD_ATTEMPTS} attempts; the next run retries it)"),
    ))
}

async fn fresh_url(
    shared: &RunShared,
    att: &Attachments,
    w: &Wanted,
) -> Result<PresignedUrl, UploadFailure> {
    let request = request_of(att, w);
    let answer = shared
        .client
        .presigned_urls(std::slice::from_ref(&request), shared.gate())
        .await;
    match answer {
        Ok(mut urls) => match urls.pop() {
            Some(Ok(u)) => Ok(u),
            Some(Err(e)) => Err(no_url(&e)),
            None => Err(UploadFailure::new(
                FailureCode::PipefyUnavailable,
                "Pipefy gave no upload URL",
            )),
        },
        Err(e) => Err(UploadFailure::new(
            FailureCode::PipefyUnavailable,
            format!("Pipefy gave no upload URL: {e}"),
        )),
    }
}

/// Why `createPresignedUrl` gave no URL for a file.
fn no_url(e: &OpError) -> UploadFailure {
    let message = match &e.code {
        Some(c) => format!("Pipefy refused the upload: {c}: {}", e.message),
        None => format!("Pipefy gave no upload URL: {}", e.message),
    };
    UploadFailure::new(failure_code(e.class), message)
}
