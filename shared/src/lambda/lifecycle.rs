//! Runs' lifecycle events on the user's EventBridge bus (`PIPEFY_SYNC_EVENT_BUS`), so that
//! their own jobs can follow a run: source `pipefy-sync`, detail-type `run started`,
//! `run completed` or `run failed`, and the run's [`RunEvent`] as detail.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::engine::{RunEvent, RunEvents};

/// Every event's `source`.
pub const EVENT_SOURCE: &str = "pipefy-sync";

/// How long a put may take before the run goes on without it: an event is worth less than the
/// run's time budget.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts run events on one bus.
pub struct EventBridgeEvents {
    client: aws_sdk_eventbridge::Client,
    /// A bus name or ARN, as PutEvents takes it.
    bus: String,
}

impl EventBridgeEvents {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgeEvents {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl RunEvents for EventBridgeEvents {
    async fn publish(&self, event: &RunEvent) {
        let detail_type = event.kind.detail_type();
        let detail = match serde_json::to_string(event) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, detail_type, "a lifecycle event could not be encoded");
                return;
            }
        };
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let put = self.client.put_events().entries(entry).send();
        match tokio::time::timeout(PUT_TIMEOUT, put).await {
            Ok(Ok(out)) if out.failed_entry_count() == 0 => {
                tracing::info!(bus = %self.bus, detail_type, run_id = %event.run_id, "lifecycle event sent");
            }
            Ok(Ok(out)) => {
                let reason = out
                    .entries()
                    .iter()
                    .filter_map(|e| {
                        e.error_code()
                            .map(|c| format!("{c}: {}", e.error_message().unwrap_or("")))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(bus = %self.bus, detail_type, run_id = %event.run_id, reason, "EventBridge refused the lifecycle event");
            }
            Ok(Err(e)) => {
                let e = aws_sdk_eventbridge::error::DisplayErrorContext(e);
                tracing::error!(bus = %self.bus, detail_type, run_id = %event.run_id, error = %e, "the lifecycle event could not be put");
            }
            Err(_) => {
                tracing::error!(bus = %self.bus, detail_type, run_id = %event.run_id, "putting the lifecycle event timed out; the run goes on");
            }
        }
    }
}
