//! The events the functions receive, parsed strictly so a malformed event is a clear error
//! rather than a half-run.

use serde::{Deserialize, Serialize};

/// What `sync-scheduled` takes: EventBridge Scheduler's input as is (no envelope), a manual
/// run from the AWS CLI, or a hand-off continuation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledEvent {
    pub destination: String,
    /// `<aws.scheduler.scheduled-time>`; present on scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub full_resync: bool,
    /// Only these object keys of the destination's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Set by the function itself when it hands a long run over to a new invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_run: Option<String>,
}

impl ScheduledEvent {
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
    let event: aws_lambda_events::event::s3::S3Event = serde_json::from_value(payload.clone())
        .map_err(|e| format!("not an S3 event notification: {e}"))?;
    if event.records.is_empty() {
        return Err("the S3 event has no Records".into());
    }
    let mut out = Vec::new();
    for (i, record) in event.records.iter().enumerate() {
        let bucket = record
            .s3
            .bucket
            .name
            .clone()
            .ok_or_else(|| format!("Records[{i}].s3.bucket.name is missing"))?;
        let raw_key = record
            .s3
            .object
            .key
            .clone()
            .ok_or_else(|| format!("Records[{i}].s3.object.key is missing"))?;
        let size = record.s3.object.size.unwrap_or(0);
        out.push(UploadedObject {
            bucket,
            key: decode_s3_key(&raw_key)?,
            size: u64::try_from(size).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Lambda's asynchronous invocation record, sent to `notify` as on-success / on-failure
/// destination of the sync functions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub request_context: RequestContext,
    #[serde(default)]
    pub request_payload: serde_json::Value,
    #[serde(default)]
    pub response_context: Option<ResponseContext>,
    #[serde(default)]
    pub response_payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub function_arn: Option<String>,
    /// `Success`, `RetriesExhausted`, `EventAgeExceeded`.
    pub condition: String,
    #[serde(default)]
    pub approximate_invoke_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub executed_version: Option<String>,
    /// `Unhandled` or `Handled` when the function failed.
    #[serde(default)]
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
