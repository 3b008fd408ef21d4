//! moto in server mode: real HTTP S3 and Secrets Manager for the aws-sdk-rust clients.
//!
//! One server per test binary (starting one takes about a second); tests isolate themselves
//! with unique bucket and secret names ([`unique`]). The server is a child that dies with the
//! test process (PR_SET_PDEATHSIG), so an aborted run leaves nothing behind.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{Region, SdkConfig};

use crate::tools::{free_port, spawn_tied, tool, wait_for_port};

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

impl Moto {
    /// The moto server of this test binary, started on first use.
    pub fn shared() -> &'static Moto {
        MOTO.get_or_init(|| Moto::start().expect("start moto_server (run scripts/setup-tools.sh)"))
    }

    /// [`Moto::shared`], started from a thread that lives as long as the process: the
    /// server is asked to die with the thread that spawned it (PR_SET_PDEATHSIG is per
    /// thread), and under `cargo test` every test runs on a thread of its own.
    pub fn kept_alive() -> &'static Moto {
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = Moto::shared();
                let _ = tx.send(());
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("moto started");
        });
        Moto::shared()
    }

    pub fn start() -> std::io::Result<Moto> {
        let port = free_port();
        let mut cmd = Command::new(tool("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(cmd)?;
        if !wait_for_port(port, Duration::from_secs(30)) {
            return Err(std::io::Error::other(
                "moto_server did not start within 30 s",
            ));
        }
        Ok(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        })
    }

    /// An SDK config pointing every service at this server, with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        pipefy_sync::aws::config_loader()
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        pipefy_sync::aws::s3_client(&self.sdk_config().await)
    }

    pub async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        pipefy_sync::aws::secrets_client(&self.sdk_config().await)
    }

    pub async fn eventbridge(&self) -> aws_sdk_eventbridge::Client {
        pipefy_sync::aws::eventbridge_client(&self.sdk_config().await)
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    /// An EventBridge bus whose events matching `pattern` reach a new SQS queue; the queue's
    /// URL.
    pub async fn bus_to_queue(&self, bus: &str, pattern: &serde_json::Value) -> String {
        let sqs = self.sqs().await;
        let name = unique("events");
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
        let events = self.eventbridge().await;
        let rule = unique("rule");
        events
            .put_rule()
            .name(&rule)
            .event_bus_name(bus)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .expect("put rule");
        events
            .put_targets()
            .rule(&rule)
            .event_bus_name(bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("put targets");
        url
    }

    /// Every message the queue holds within `wait` (read, then deleted), as JSON.
    pub async fn drain_queue(
        &self,
        url: &str,
        wait: std::time::Duration,
        want: usize,
    ) -> Vec<serde_json::Value> {
        let sqs = self.sqs().await;
        let until = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < want && std::time::Instant::now() < until {
            let got = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            for m in got.messages() {
                if let Some(body) = m.body() {
                    out.push(serde_json::from_str(body).expect("an event as JSON"));
                }
                if let Some(h) = m.receipt_handle() {
                    let _ = sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(h)
                        .send()
                        .await;
                }
            }
            if got.messages().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        out
    }

    /// Environment for a child process (a function under cargo lambda) to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ]
    }
}

/// A name unique within this machine, valid as an S3 bucket name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(63)
        .collect()
}

/// Creates a bucket with a unique name and returns it.
pub async fn new_bucket(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = unique(prefix);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket in moto");
    bucket
}
