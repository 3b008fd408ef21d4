//! The events the functions receive, parsed strictly so a malformed event is a clear error
//! rather than a half-run.

use serde::{Deserialize, Serialize};

/// What `sync-scheduled` takes: EventBridge Scheduler's input as is (no envelope), a manual
/// run from the AWS CLI, or a hand-off continuation.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledEvent {
    pub destination: String,
    /// `<aws.scheduler.scheduled-time>`; present on scheduled runs.
    pub scheduled_time: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub full_resync: bool,
    /// Only these object keys of the destination's table.
    pub files: Option<Vec<String>>,
    /// Set by the function itself when it hands a long run over to a new invocation.
    pub continue_run: Option<String>,
    /// Let this run remove more than `removed_rows.max_fraction` of the destination's keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mass_removal: bool,
    /// Report drift instead of syncing: read the destination back, write nothing to Pipefy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drift: bool,
    /// Only the rows with these keys, sent even when unchanged; nothing removed.
    pub keys: Option<Vec<String>>,
}

/// Whether a payload is a hand-off continuation (`{"destination", "continue_run"}`), which
/// every sync function accepts whatever started the run.
pub fn is_continuation(payload: &serde_json::Value) -> bool {
    payload.get("continue_run").is_some_and(|v| v.is_string())
}

impl ScheduledEvent {
    /// What the run reads: `files` when given (never empty), else the whole table.
    pub fn scope(&self) -> Result<crate::state::RunScope, String> {
        match &self.files {
            None => Ok(crate::state::RunScope::WholeTable),
            Some(files) if files.is_empty() || files.iter().any(|f| f.trim().is_empty()) => Err(
                "\"files\" is empty or holds an empty key; leave it out to sync the whole table"
                    .into(),
            ),
            Some(files) => Ok(crate::state::RunScope::Files(files.clone())),
        }
    }

    /// The keys the run is limited to (empty: every row); given, never empty, blank or more
    /// than [`crate::engine::MAX_KEYS`].
    pub fn keys(&self) -> Result<Vec<String>, String> {
        match &self.keys {
            None => Ok(Vec::new()),
            Some(keys) if keys.is_empty() => {
                Err("\"keys\" is empty; leave it out to sync every row".into())
            }
            Some(keys) => crate::engine::checked_keys(keys).map_err(|e| format!("\"keys\": {e}")),
        }
    }

    /// A drift request asks for nothing else: the options of a sync would be ignored.
    pub fn check_drift(&self) -> Result<(), String> {
        let with_sync_options = self.dry_run
            || self.full_resync
            || self.files.is_some()
            || self.continue_run.is_some()
            || self.allow_mass_removal
            || self.keys.is_some();
        if self.drift && with_sync_options {
            return Err("\"drift\": true reads the destination back and writes nothing; it takes no dry_run, full_resync, files, continue_run, allow_mass_removal or keys".into());
        }
        Ok(())
    }

    pub fn trigger(&self) -> &'static str {
        if self.continue_run.is_some() {
            "hand-off"
        } else if self.scheduled_time.is_some() {
            "schedule"
        } else {
            "manual"
        }
    }
}

/// One uploaded object of an S3 ObjectCreated notification, key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// S3 sends keys URL-encoded with `+` for spaces (`part 1+ü.csv` arrives as
/// `part+1%2B%C3%BC.csv`).
pub fn decode_s3_key(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| format!("object key '{raw}' is not valid UTF-8 once decoded: {e}"))
}

/// Parses an S3 event notification (one or more records).
pub fn parse_s3_event(payload: &serde_json::Value) -> Result<Vec<UploadedObject>, String> {
    let event = S3Notification::deserialize(payload)
        .map_err(|e| format!("not an S3 event notification: {e}"))?;
    if event.records.is_empty() {
        return Err("the S3 event has no Records".into());
    }
    event
        .records
        .into_iter()
        .map(|record| {
            Ok(UploadedObject {
                bucket: record.s3.bucket.name,
                key: decode_s3_key(&record.s3.object.key)?,
                size: record.s3.object.size,
            })
        })
        .collect()
}

/// The members of an S3 event notification that a sync needs. Only these are required, so
/// a hand-written test event with just `s3.bucket.name` and `s3.object.key` works, and the
/// many members S3 adds (times, identities, sequencers) are neither required nor checked.
#[derive(Deserialize)]
struct S3Notification {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
struct S3Record {
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    #[serde(default)]
    size: u64,
}

/// Lambda's asynchronous invocation record, sent to `notify` as on-success / on-failure
/// destination of the sync functions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub version: Option<String>,
    pub timestamp: Option<String>,
    pub request_context: RequestContext,
    #[serde(default)]
    pub request_payload: serde_json::Value,
    pub response_context: Option<ResponseContext>,
    #[serde(default)]
    pub response_payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub function_arn: Option<String>,
    /// `Success`, `RetriesExhausted`, `EventAgeExceeded`.
    pub condition: String,
    pub approximate_invoke_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    pub status_code: Option<u16>,
    pub executed_version: Option<String>,
    /// `Unhandled` or `Handled` when the function failed.
    pub function_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_keys_are_decoded() {
        assert_eq!(
            decode_s3_key("refined/customers/part+1%2B%C3%BC.csv").unwrap(),
            "refined/customers/part 1+ü.csv"
        );
        assert!(decode_s3_key("bad%FF%FE").is_err());
    }

    #[test]
    fn s3_events_need_only_bucket_and_key() {
        let minimal = serde_json::json!({"Records": [
            {"s3": {"bucket": {"name": "lake"}, "object": {"key": "refined/t/a+b.csv", "size": 7}}},
            {"eventTime": "2026-01-01T00:00:00Z", "s3": {"bucket": {"name": "lake"}, "object": {"key": "refined/t/c.csv"}}}
        ]});
        let objects = parse_s3_event(&minimal).unwrap();
        assert_eq!(
            objects,
            vec![
                UploadedObject {
                    bucket: "lake".into(),
                    key: "refined/t/a b.csv".into(),
                    size: 7
                },
                UploadedObject {
                    bucket: "lake".into(),
                    key: "refined/t/c.csv".into(),
                    size: 0
                },
            ]
        );
        let no_key =
            serde_json::json!({"Records": [{"s3": {"bucket": {"name": "lake"}, "object": {}}}]});
        let err = parse_s3_event(&no_key).unwrap_err();
        assert!(err.contains("key"), "{err}");
        assert!(parse_s3_event(&serde_json::json!({"Records": []}))
            .unwrap_err()
            .contains("no Records"));
    }

    #[test]
    fn scheduled_event_rejects_unknown_keys() {
        let ok: ScheduledEvent =
            serde_json::from_str(r#"{"destination":"d","scheduled_time":"2026-01-01T00:00:00Z"}"#)
                .unwrap();
        assert_eq!(ok.trigger(), "schedule");
        let err = serde_json::from_str::<ScheduledEvent>(r#"{"destination":"d","dryrun":true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dryrun"), "{err}");
    }
}
