//! Hand-off: a run that needs longer than one invocation checkpoints and continues in a new
//! asynchronous invocation of the same function, with a continuation payload
//! (`{"destination", "continue_run"}`) that every sync function routes to the scheduled path.

use async_trait::async_trait;

use crate::engine::{HandOff, HandOffError};

use super::events::ScheduledEvent;

/// Starts an asynchronous (`Event`) invocation of a function.
#[async_trait]
pub trait Invoker: Send + Sync {
    /// Queues `payload` for `function_name`; the error says why it was not accepted.
    async fn invoke_event(&self, function_name: &str, payload: Vec<u8>) -> Result<(), String>;
}

#[async_trait]
impl Invoker for aws_sdk_lambda::Client {
    async fn invoke_event(&self, function_name: &str, payload: Vec<u8>) -> Result<(), String> {
        self.invoke()
            .function_name(function_name)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_smithy_types::Blob::new(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                e.as_service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("{e:?}"))
            })
    }
}

/// The payload that continues `run_id` of `destination`.
pub fn continuation_payload(destination: &str, run_id: &str) -> Result<Vec<u8>, HandOffError> {
    let event = ScheduledEvent {
        destination: destination.to_string(),
        continue_run: Some(run_id.to_string()),
        ..Default::default()
    };
    Ok(serde_json::to_vec(&event)?)
}

/// Continues a run in a new asynchronous invocation of this function.
pub struct LambdaHandOff<I = aws_sdk_lambda::Client> {
    invoker: I,
    function_name: String,
}

impl<I: Invoker> LambdaHandOff<I> {
    pub fn new(invoker: I, function_name: String) -> Self {
        LambdaHandOff {
            invoker,
            function_name,
        }
    }
}

#[async_trait]
impl<I: Invoker> HandOff for LambdaHandOff<I> {
    async fn continue_run(&self, destination: &str, run_id: &str) -> Result<(), HandOffError> {
        let payload = continuation_payload(destination, run_id)?;
        self.invoker
            .invoke_event(&self.function_name, payload)
            .await
            .map_err(|reason| HandOffError::Invoke {
                function: self.function_name.clone(),
                run_id: run_id.to_string(),
                reason,
            })?;
        tracing::info!(destination, run_id, function = %self.function_name, "run handed over to a new invocation");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it was asked to invoke; fails when `refuse` is set.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(String, serde_json::Value)>>,
        refuse: Option<String>,
    }

    #[async_trait]
    impl Invoker for Recorder {
        async fn invoke_event(&self, function_name: &str, payload: Vec<u8>) -> Result<(), String> {
            if let Some(why) = &self.refuse {
                return Err(why.clone());
            }
            let json = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
            self.calls
                .lock()
                .map_err(|e| e.to_string())?
                .push((function_name.to_string(), json));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hand_off_invokes_this_function_with_a_continuation() {
        let hand_off = LambdaHandOff::new(Recorder::default(), "pipefy-sync-upload".into());
        hand_off.continue_run("customers", "run-7").await.unwrap();
        let calls = hand_off.invoker.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![(
                "pipefy-sync-upload".to_string(),
                serde_json::json!({"destination": "customers", "dry_run": false, "full_resync": false, "continue_run": "run-7"})
            )]
        );
        assert!(super::super::events::is_continuation(&calls[0].1));
    }

    #[tokio::test]
    async fn a_refused_hand_off_says_which_function_and_run() {
        let hand_off = LambdaHandOff::new(
            Recorder {
                refuse: Some("TooManyRequestsException".into()),
                ..Recorder::default()
            },
            "f".into(),
        );
        let err = hand_off.continue_run("d", "run-1").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invoking f for run run-1: TooManyRequestsException"
        );
    }
}
