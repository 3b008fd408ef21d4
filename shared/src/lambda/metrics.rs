//! CloudWatch Embedded Metric Format: one JSON line on stdout per run, which CloudWatch turns
//! into metrics per destination without an API call.

use crate::report::RunSummary;

pub const DEFAULT_NAMESPACE: &str = "PipefySync";

/// The EMF document for a run.
pub fn emf_line(namespace: &str, summary: &RunSummary, duration_ms: u64) -> serde_json::Value {
    let c = &summary.counts;
    let metrics = [
        ("RowsRead", c.read),
        ("RowsCreated", c.created),
        ("RowsUpdated", c.updated),
        ("RowsUnchanged", c.unchanged),
        ("RowsFailed", c.failed_rows()),
        ("Requests", c.requests),
        ("Throttles", c.throttles),
    ];
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Destination"]],
                "Metrics": metrics.iter().map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
                    .chain(std::iter::once(serde_json::json!({"Name": "DurationMs", "Unit": "Milliseconds"})))
                    .collect::<Vec<_>>(),
            }],
        },
        "Destination": summary.destination,
        "RunId": summary.run_id,
        "DurationMs": duration_ms,
    });
    if let Some(obj) = doc.as_object_mut() {
        for (name, value) in metrics {
            obj.insert(name.to_string(), serde_json::Value::from(value));
        }
    }
    doc
}

/// Prints the EMF line to stdout (not through tracing: CloudWatch reads it as is).
pub fn emit(namespace: &str, summary: &RunSummary, duration_ms: u64) {
    println!("{}", emf_line(namespace, summary, duration_ms));
}
