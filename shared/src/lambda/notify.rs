//! `notify`: receives the sync functions' asynchronous invocation records and posts to a
//! Slack incoming webhook when a run fails, when it lost its lease, when it skipped its removal
//! pass (`REMOVAL_GUARD`, a file it could not read), when its failed rows exceed the
//! destination's threshold, and when a destination recovers. Without a webhook it only logs.
//!
//! A message about a run links to its page (`report.html`) through a presigned S3 URL
//! ([`PageLinks`]), valid for `PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS` (default 168, a week,
//! the longest S3 signs). The link is a credential for that object: it goes to Slack only,
//! never to the log or the function's response, which name the page's `s3://` location.
//!
//! Whether a destination is currently failing is kept in `state/<destination>/notify.json`,
//! so "recovered" is said once, on the first good run after a bad one.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aws::{secret_string, SecretReadError};
use crate::report::{RunStatus, RunSummary};
use crate::store::{ObjectStore, WriteCondition};

use super::catalog::Catalog;
use super::deps::Deps;
use super::error::{HandlerError, NotifyError};
use super::events::InvocationRecord;

/// Where notifications go.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Posts one message; an error means it was not delivered.
    async fn post(&self, text: &str) -> Result<(), HandlerError>;
}

/// Turns the `s3://` location of a run page into a link a person can open.
#[async_trait]
pub trait PageLinks: Send + Sync {
    /// `None` when no link can be made (the page is not in S3, signing failed).
    async fn link(&self, location: &str) -> Option<String>;
}

/// What a notification says: the words, and the run's page (or its report folder) to point
/// at, which the message links when a link can be made.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    text: String,
    page: Option<String>,
}

impl Message {
    fn plain(text: String) -> Message {
        Message { text, page: None }
    }

    fn about(text: String, summary: &RunSummary) -> Message {
        Message {
            text,
            page: summary
                .report_page
                .clone()
                .or_else(|| summary.report_location.clone()),
        }
    }

    /// The message with the page as `link` (Slack's `<url|text>`), or as its location.
    fn render(&self, link: Option<&str>) -> String {
        match (&self.page, link) {
            (_, Some(url)) => format!("{} <{url}|Open the run page>", self.text),
            (Some(page), None) => format!("{} Run page: {page}", self.text),
            (None, None) => self.text.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NotifyState {
    failing: bool,
}

#[derive(Debug, Serialize)]
pub struct NotifyResult {
    pub destination: String,
    /// `failed`, `lease_lost`, `removal_skipped` (the guard or an unreadable file kept a
    /// run from removing), `failed_rows`, `recovered`, or `ok` (nothing to say).
    pub event: String,
    pub message: Option<String>,
    /// Whether a webhook post was made.
    pub posted: bool,
}

/// What a record means for its destination.
fn classify(record: &InvocationRecord) -> (String, Option<RunSummary>, Option<String>) {
    let destination = record
        .request_payload
        .get("destination")
        .and_then(|d| d.as_str())
        .map(str::to_string);
    let succeeded = record.request_context.condition == "Success"
        && record
            .response_context
            .as_ref()
            .is_none_or(|r| r.function_error.is_none());
    if succeeded {
        // sync-scheduled answers a summary; sync-upload answers {"runs": [...]}.
        let summary: Option<RunSummary> = serde_json::from_value(record.response_payload.clone())
            .ok()
            .or_else(|| {
                record
                    .response_payload
                    .get("runs")
                    .and_then(|r| r.get(0))
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
            });
        let name = destination
            .or_else(|| summary.as_ref().map(|s| s.destination.clone()))
            .unwrap_or_else(|| "(unknown)".into());
        (name, summary, None)
    } else {
        let error_type = record
            .response_payload
            .get("errorType")
            .and_then(|v| v.as_str())
            .unwrap_or("Error");
        let error_message = record
            .response_payload
            .get("errorMessage")
            .and_then(|v| v.as_str())
            .unwrap_or("no message");
        let name = destination.unwrap_or_else(|| "(upload)".into());
        (
            name,
            None,
            Some(format!(
                "{error_type}: {error_message} (condition {}, {} attempt(s))",
                record.request_context.condition,
                record.request_context.approximate_invoke_count.unwrap_or(1)
            )),
        )
    }
}

/// What a run's outcome means for its destination: the event name, the message (none
/// for `ok`), and whether the destination is failing after it.
fn decide(
    destination: &str,
    failure: Option<&str>,
    summary: Option<&RunSummary>,
    threshold: u64,
    was_failing: bool,
) -> (&'static str, Option<Message>, bool) {
    match (failure, summary) {
        (Some(f), _) => (
            "failed",
            Some(Message::plain(format!(
                ":red_circle: pipefy-sync: destination `{destination}` failed: {f}"
            ))),
            true,
        ),
        (None, Some(s)) if s.status == RunStatus::LeaseLost => (
            "lease_lost",
            Some(Message::about(format!(
                ":warning: pipefy-sync: destination `{destination}` run {} lost its lease and stopped sending; the next run syncs the rest.",
                s.run_id,
            ), s)),
            true,
        ),
        (None, Some(s)) if s.removal_skipped.is_some() => (
            "removal_skipped",
            Some(Message::about(format!(
                ":warning: pipefy-sync: destination `{destination}` run {} removed no cards: {}.",
                s.run_id,
                s.removal_skipped.as_deref().unwrap_or_default(),
            ), s)),
            true,
        ),
        (None, Some(s)) if s.counts.failed_rows() > threshold => (
            "failed_rows",
            Some(Message::about(format!(
                ":warning: pipefy-sync: destination `{destination}` run {}: {} of {} rows failed (threshold {threshold}).",
                s.run_id,
                s.counts.failed_rows(),
                s.counts.read,
            ), s)),
            true,
        ),
        (None, _) if was_failing => (
            "recovered",
            Some(Message::plain(format!(
                ":large_green_circle: pipefy-sync: destination `{destination}` recovered"
            ))),
            false,
        ),
        (None, _) => ("ok", None, false),
    }
}

/// Where `notify` sends and what it keeps: its destination catalog, the store of its
/// failing state (under `<state_prefix><destination>/notify.json`), the webhook (when there
/// is one) and the maker of run page links (when pages are in S3).
pub struct NotifyDeps<'a> {
    pub catalog: &'a dyn Catalog,
    pub store: &'a dyn ObjectStore,
    pub notifier: Option<&'a dyn Notifier>,
    pub links: Option<&'a dyn PageLinks>,
    pub state_prefix: &'a str,
}

/// One invocation record: the destination's failing state, and a message to the notifier
/// (when there is one) if the record says something worth saying.
pub async fn handle(
    deps: NotifyDeps<'_>,
    payload: serde_json::Value,
) -> Result<serde_json::Value, HandlerError> {
    let NotifyDeps {
        catalog,
        store,
        notifier,
        links,
        state_prefix,
    } = deps;
    let record: InvocationRecord = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!("not a Lambda asynchronous invocation record: {e}"))
    })?;
    let (destination, summary, failure) = classify(&record);
    let state_key = format!("{state_prefix}{destination}/notify.json");
    // A missing or unreadable state is "not failing": at worst one "recovered" is not said.
    let previous: NotifyState = match store.get_bytes(&state_key).await {
        Ok((_, bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => NotifyState::default(),
    };
    // An unknown or invalid destination alerts on any failed row.
    let threshold = match catalog.get(&destination).await {
        Ok(d) => d.sync.failed_rows_alert_threshold,
        Err(_) => 0,
    };
    let (event, message, failing) = decide(
        &destination,
        failure.as_deref(),
        summary.as_ref(),
        threshold,
        previous.failing,
    );
    if failing != previous.failing {
        let body =
            bytes::Bytes::from(serde_json::to_vec(&NotifyState { failing }).unwrap_or_default());
        store
            .put_bytes(&state_key, body, WriteCondition::None)
            .await
            .map_err(|e| HandlerError::storage("saving notify state", e))?;
    }
    let mut posted = false;
    if let Some(message) = &message {
        let text = message.render(None);
        tracing::warn!(destination = %destination, event, message = %text, "notification");
        if let Some(notifier) = notifier {
            let link = match (links, message.page.as_deref()) {
                (Some(links), Some(page)) if page.ends_with(".html") => links.link(page).await,
                _ => None,
            };
            notifier.post(&message.render(link.as_deref())).await?;
            posted = true;
        }
    } else {
        tracing::info!(destination = %destination, "run ok; nothing to notify");
    }
    serde_json::to_value(NotifyResult {
        destination,
        event: event.into(),
        message: message.map(|m| m.render(None)),
        posted,
    })
    .map_err(|e| HandlerError::Setup(e.to_string()))
}

/// Presigned S3 GET links to run pages, signed with the function's own credentials.
pub struct PresignedLinks {
    s3: aws_sdk_s3::Client,
    expiry: std::time::Duration,
}

impl Deps {
    pub fn page_links(&self) -> PresignedLinks {
        PresignedLinks {
            s3: self.s3.clone(),
            expiry: self.settings.report_link_expiry,
        }
    }
}

#[async_trait]
impl PageLinks for PresignedLinks {
    async fn link(&self, location: &str) -> Option<String> {
        let (bucket, key) = location.strip_prefix("s3://")?.split_once('/')?;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(self.expiry).ok()?;
        match self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(config)
            .await
        {
            Ok(request) => Some(request.uri().to_string()),
            Err(e) => {
                // The link is left out; the message still names the page's location.
                tracing::warn!(page = location, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not sign a link to the run page");
                None
            }
        }
    }
}

/// Posts to the Slack incoming webhook whose URL is the secret `secret_id`.
pub struct SlackNotifier {
    secrets: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl Deps {
    /// The Slack notifier, when `PIPEFY_SYNC_SLACK_WEBHOOK_SECRET` names a webhook.
    pub fn slack_notifier(&self) -> Option<SlackNotifier> {
        self.settings
            .slack_webhook_secret
            .as_ref()
            .map(|secret_id| SlackNotifier {
                secrets: self.secrets.clone(),
                secret_id: secret_id.clone(),
            })
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn post(&self, text: &str) -> Result<(), HandlerError> {
        let secret_id = &self.secret_id;
        let url = secret_string(&self.secrets, secret_id)
            .await
            .map_err(|e| match e {
                SecretReadError::Unavailable(detail) => {
                    HandlerError::Secret(format!("webhook secret '{secret_id}': {detail}"))
                }
                SecretReadError::NoString => {
                    HandlerError::Secret(format!("webhook secret '{secret_id}' is empty"))
                }
            })?;
        // The webhook URL is a credential: it is never logged or put in an error.
        let url = url.trim();
        if url.is_empty() {
            return Err(HandlerError::Secret(format!(
                "webhook secret '{secret_id}' is empty"
            )));
        }
        let response = reqwest::Client::new()
            .post(url)
            .timeout(std::time::Duration::from_secs(10))
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .map_err(|e| NotifyError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(NotifyError::Rejected(response.status().as_u16()).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lambda::fakes::{destination, summary, FakeCatalog, FakeNotifier};
    use crate::store::memory::MemoryStore;

    fn success(summary: &RunSummary) -> serde_json::Value {
        json!({
            "requestContext": {"condition": "Success", "approximateInvokeCount": 1},
            "requestPayload": {"destination": summary.destination},
            "responseContext": {"statusCode": 200},
            "responsePayload": summary,
        })
    }

    fn failure(destination: &str) -> serde_json::Value {
        json!({
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": {"destination": destination},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": "PipefyUnauthorized", "errorMessage": "token rejected"},
        })
    }

    struct World {
        catalog: FakeCatalog,
        store: MemoryStore,
        slack: FakeNotifier,
        links: FakeLinks,
    }

    /// Signs nothing: a link is the location behind a made-up host.
    struct FakeLinks;

    #[async_trait]
    impl PageLinks for FakeLinks {
        async fn link(&self, location: &str) -> Option<String> {
            Some(format!(
                "https://signed.example/{}?X-Amz-Signature=abc",
                location.strip_prefix("s3://")?
            ))
        }
    }

    impl World {
        fn new() -> World {
            World {
                catalog: FakeCatalog::of([destination(
                    "customers",
                    "customers",
                    "sync: { failed_rows_alert_threshold: 2 }",
                )]),
                store: MemoryStore::new(),
                slack: FakeNotifier::default(),
                links: FakeLinks,
            }
        }

        async fn notify(&self, record: serde_json::Value) -> Result<(String, bool), HandlerError> {
            let out = handle(
                NotifyDeps {
                    catalog: &self.catalog,
                    store: &self.store,
                    notifier: Some(&self.slack),
                    links: Some(&self.links),
                    state_prefix: "state/",
                },
                record,
            )
            .await?;
            Ok((
                out["event"].as_str().unwrap_or_default().to_string(),
                out["posted"].as_bool().unwrap_or_default(),
            ))
        }

        async fn failing(&self, destination: &str) -> Option<bool> {
            let (_, bytes) = self
                .store
                .get_bytes(&format!("state/{destination}/notify.json"))
                .await
                .ok()?;
            serde_json::from_slice::<NotifyState>(&bytes)
                .ok()
                .map(|s| s.failing)
        }
    }

    #[tokio::test]
    async fn failure_then_quiet_then_recovered_once() {
        let w = World::new();
        let ok = summary("customers", "schedule", RunStatus::Completed);
        assert_eq!(w.notify(success(&ok)).await.unwrap(), ("ok".into(), false));
        assert_eq!(
            w.failing("customers").await,
            None,
            "nothing to remember yet"
        );

        assert_eq!(
            w.notify(failure("customers")).await.unwrap(),
            ("failed".into(), true)
        );
        assert_eq!(w.failing("customers").await, Some(true));
        let posts = w.slack.posts();
        assert!(
            posts[0].contains("`customers` failed: PipefyUnauthorized: token rejected (condition RetriesExhausted, 3 attempt(s))"),
            "{posts:?}"
        );

        assert_eq!(
            w.notify(success(&ok)).await.unwrap(),
            ("recovered".into(), true)
        );
        assert_eq!(w.failing("customers").await, Some(false));
        assert_eq!(w.notify(success(&ok)).await.unwrap(), ("ok".into(), false));
        assert_eq!(w.slack.posts().len(), 2, "recovered is said once");
    }

    #[tokio::test]
    async fn warnings_for_lease_lost_removal_skipped_and_failed_rows() {
        let w = World::new();
        let lost = summary("customers", "schedule", RunStatus::LeaseLost);
        assert_eq!(w.notify(success(&lost)).await.unwrap().0, "lease_lost");

        let mut skipped = summary("customers", "schedule", RunStatus::Completed);
        skipped.removal_skipped = Some("REMOVAL_GUARD: 90% of the keys".into());
        assert_eq!(
            w.notify(success(&skipped)).await.unwrap().0,
            "removal_skipped"
        );

        let mut rows = summary("customers", "schedule", RunStatus::Completed);
        rows.counts.read = 10;
        rows.counts.failed = 2;
        assert_eq!(
            w.notify(success(&rows)).await.unwrap().0,
            "recovered",
            "at the threshold is not over it"
        );
        rows.counts.skipped_by_preflight = 1;
        assert_eq!(w.notify(success(&rows)).await.unwrap().0, "failed_rows");
        let posts = w.slack.posts();
        assert!(
            posts[3].contains("3 of 10 rows failed (threshold 2)"),
            "{posts:?}"
        );
        assert!(
            posts[1].contains("removed no cards: REMOVAL_GUARD"),
            "{posts:?}"
        );
    }

    #[tokio::test]
    async fn a_message_links_the_run_page_in_slack_and_names_its_location_elsewhere() {
        let w = World::new();
        let mut rows = summary("customers", "schedule", RunStatus::Completed);
        rows.counts.read = 10;
        rows.counts.failed = 3;
        rows.report_page = Some("s3://b/reports/customers/1970-01-01/r/report.html".into());
        let out = handle(
            NotifyDeps {
                catalog: &w.catalog,
                store: &w.store,
                notifier: Some(&w.slack),
                links: Some(&w.links),
                state_prefix: "state/",
            },
            success(&rows),
        )
        .await
        .unwrap();
        let posts = w.slack.posts();
        assert!(
            posts[0].ends_with("<https://signed.example/b/reports/customers/1970-01-01/r/report.html?X-Amz-Signature=abc|Open the run page>"),
            "{posts:?}"
        );
        // The response (and the log) name the page, never the signed link.
        let message = out["message"].as_str().unwrap_or_default();
        assert!(
            message.ends_with("Run page: s3://b/reports/customers/1970-01-01/r/report.html"),
            "{message}"
        );
        assert!(!message.contains("Signature"), "{message}");
        // Without a page, the report folder is named and nothing is signed.
        rows.report_page = None;
        w.notify(success(&rows)).await.unwrap();
        assert!(
            w.slack.posts()[1].ends_with("Run page: s3://b/reports/customers/"),
            "{:?}",
            w.slack.posts()
        );
    }

    #[tokio::test]
    async fn upload_results_and_unknown_destinations() {
        let w = World::new();
        // sync-upload answers {"runs": [...]}: the first run's summary is the one judged.
        let mut rows = summary("other", "upload", RunStatus::Completed);
        rows.counts.failed = 1;
        let record = json!({
            "requestContext": {"condition": "Success"},
            "requestPayload": {"Records": []},
            "responsePayload": {"runs": [rows], "ignored": []},
        });
        // `other` is not in the catalog: any failed row alerts.
        assert_eq!(w.notify(record).await.unwrap().0, "failed_rows");
        assert_eq!(w.failing("other").await, Some(true));
        let failed_upload = json!({
            "requestContext": {"condition": "EventAgeExceeded"},
            "requestPayload": {"Records": []},
            "responsePayload": {},
        });
        assert_eq!(w.notify(failed_upload).await.unwrap().0, "failed");
        assert_eq!(w.failing("(upload)").await, Some(true));
    }

    #[tokio::test]
    async fn without_a_webhook_nothing_is_posted_but_the_state_is_kept() {
        let w = World::new();
        let out = handle(
            NotifyDeps {
                catalog: &w.catalog,
                store: &w.store,
                notifier: None,
                links: None,
                state_prefix: "state/",
            },
            failure("customers"),
        )
        .await
        .unwrap();
        assert_eq!(out["event"], "failed");
        assert_eq!(out["posted"], false);
        assert!(out["message"].as_str().is_some());
        assert_eq!(w.failing("customers").await, Some(true));
    }

    #[tokio::test]
    async fn a_slack_outage_is_a_notify_error() {
        let w = World {
            slack: FakeNotifier {
                down: true,
                ..FakeNotifier::default()
            },
            ..World::new()
        };
        let err = w.notify(failure("customers")).await.unwrap_err();
        assert_eq!(err.error_type(), "NotifyFailed");
        // The failing state is saved before the post is tried.
        assert_eq!(w.failing("customers").await, Some(true));
    }

    #[tokio::test]
    async fn a_record_that_is_not_an_invocation_record_is_invalid() {
        let w = World::new();
        assert!(matches!(
            w.notify(json!({"destination": "customers"})).await,
            Err(HandlerError::InvalidEvent(_))
        ));
    }
}
