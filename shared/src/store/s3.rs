//! S3 object store on aws-sdk-s3: sources, state, reports and config in Lambda.
//!
//! Conditional writes are S3's own: `If-None-Match: *` and `If-Match: <etag>` on PutObject and
//! DeleteObject. A lost race comes back as 412 PreconditionFailed, or 409
//! ConditionalRequestConflict when two conditional writes overlap; both are
//! [`StoreError::PreconditionFailed`].

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::etag_eq;
use super::{ObjectMeta, ObjectReader, ObjectStore, StoreError, StoreResult, WriteCondition};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Keys per ListObjectsV2 page; `None` is S3's default (1000).
    page_size: Option<i32>,
}

/// Any bucket the S3 client may read, one [`S3Store`] each.
pub struct S3Buckets(pub aws_sdk_s3::Client);

impl super::BucketStores for S3Buckets {
    fn bucket(&self, name: &str) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(S3Store::new(self.0.clone(), name))
    }
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            page_size: None,
        }
    }

    /// Smaller listing pages (tests exercise pagination without thousands of objects).
    pub fn with_page_size(mut self, keys_per_page: i32) -> Self {
        self.page_size = Some(keys_per_page.max(1));
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn map_err<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        match (code.as_deref(), status) {
            (Some("PreconditionFailed" | "ConditionalRequestConflict"), _)
            | (_, Some(412 | 409)) => StoreError::PreconditionFailed(key.to_string()),
            (Some("NoSuchBucket"), _) => StoreError::Other {
                key: key.to_string(),
                message: format!("bucket {} does not exist", self.bucket),
            },
            (Some("NoSuchKey" | "NotFound"), _) | (_, Some(404)) => {
                StoreError::NotFound(key.to_string())
            }
            (Some("AccessDenied"), _) | (_, Some(403)) => {
                StoreError::AccessDenied(format!("s3://{}/{key}", self.bucket))
            }
            _ => StoreError::Other {
                key: key.to_string(),
                message: DisplayErrorContext(&err).to_string(),
            },
        }
    }

    async fn head_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, StoreError> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(key, e))
    }

    /// GetObject of `key`, with the metadata its response carries (the size from
    /// Content-Length).
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<
        (
            ObjectMeta,
            aws_sdk_s3::operation::get_object::GetObjectOutput,
        ),
        StoreError,
    > {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(key, e))?;
        let meta = ObjectMeta {
            key: key.to_string(),
            size: size_of(out.content_length()),
            etag: out.e_tag().unwrap_or_default().to_string(),
            version_id: out.version_id().map(str::to_string),
        };
        Ok((meta, out))
    }
}

fn size_of(len: Option<i64>) -> u64 {
    len.and_then(|l| u64::try_from(l).ok()).unwrap_or(0)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_max_keys(self.page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(prefix, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: size_of(obj.size()),
                    etag: obj.e_tag().unwrap_or_default().to_string(),
                    version_id: None,
                });
            }
        }
        // S3 already lists in key order; sorting keeps the contract independent of that.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let out = self.head_object(key).await?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: size_of(out.content_length()),
            etag: out.e_tag().unwrap_or_default().to_string(),
            version_id: out.version_id().map(str::to_string),
        })
    }

    async fn content_type(&self, key: &str) -> StoreResult<Option<String>> {
        let out = self.head_object(key).await?;
        Ok(out.content_type().map(str::to_string))
    }

    async fn get_stream(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let (meta, out) = self.get_object(key).await?;
        Ok((meta, Box::pin(out.body.into_async_read())))
    }

    async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes), StoreError> {
        let (meta, out) = self.get_object(key).await?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Other {
                key: key.to_string(),
                message: format!("reading the body failed: {}", DisplayErrorContext(&e)),
            })?
            .into_bytes();
        Ok((
            ObjectMeta {
                size: body.len() as u64,
                ..meta
            },
            body,
        ))
    }

    async fn put_bytes(&self, key: &str, body: Bytes, when: WriteCondition) -> StoreResult<String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(super::media_type(key).map(str::to_string))
            .body(ByteStream::from(body));
        req = match &when {
            WriteCondition::None => req,
            WriteCondition::IfAbsent => req.if_none_match("*"),
            WriteCondition::IfMatch(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => match out.e_tag() {
                Some(etag) => Ok(etag.to_string()),
                None => Ok(self.head(key).await?.etag),
            },
            // If-Match on a key that is gone: the object the caller expected is not there,
            // which for the caller is the same lost race as a changed ETag.
            Err(e) => match self.map_err(key, e) {
                StoreError::NotFound(k) if matches!(when, WriteCondition::IfMatch(_)) => {
                    Err(StoreError::PreconditionFailed(k))
                }
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &str, when: WriteCondition) -> Result<(), StoreError> {
        let mut req = self.client.delete_object().bucket(&self.bucket).key(key);
        match &when {
            WriteCondition::None => {}
            WriteCondition::IfAbsent => {
                return match self.head(key).await {
                    Ok(_) => Err(StoreError::PreconditionFailed(key.to_string())),
                    Err(StoreError::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                };
            }
            WriteCondition::IfMatch(etag) => {
                // Checked here too so the contract holds on S3-compatible stores that ignore
                // If-Match on DeleteObject; on S3 the header below makes it atomic.
                match self.head(key).await {
                    Ok(meta) if !etag_eq(&meta.etag, etag) => {
                        return Err(StoreError::PreconditionFailed(key.to_string()))
                    }
                    Ok(_) => {}
                    Err(StoreError::NotFound(_)) => return Ok(()),
                    Err(e) => return Err(e),
                }
                req = req.if_match(etag);
            }
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err(key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod content_type_tests {
    use crate::store::media_type as content_type;

    #[test]
    fn pages_are_served_as_html() {
        assert_eq!(
            content_type("reports/d/index.html"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            content_type("reports/d/x/results/part-00001.jsonl"),
            Some("application/x-ndjson")
        );
        assert_eq!(content_type("state/d/ledger.seg"), None);
    }
}
