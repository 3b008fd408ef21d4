//! The real functions under `cargo lambda watch` (the Lambda Runtime API), invoked with
//! `cargo lambda invoke --data-file`, against moto and the Pipefy emulator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tools::{free_port, spawn_tied, tool, wait_for_port, workspace_root};

pub const FUNCTIONS: [&str; 3] = ["sync-scheduled", "sync-upload", "notify"];

/// A `cargo lambda watch` process serving the three functions.
pub struct LambdaWatch {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

/// What an invocation answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's JSON answer, when it succeeded.
    pub ok: Option<serde_json::Value>,
    /// `(errorType, errorMessage)` when the function failed.
    pub error: Option<(String, String)>,
    pub raw: String,
}

impl Invocation {
    pub fn expect_ok(&self) -> &serde_json::Value {
        self.ok
            .as_ref()
            .unwrap_or_else(|| panic!("invocation failed: {:?}\n{}", self.error, self.raw))
    }
}

/// Builds the function binaries once, so the first invocation does not wait for a compile.
pub fn build_functions() {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            "sync-scheduled",
            "-p",
            "sync-upload",
            "-p",
            "notify",
        ])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the functions failed");
}

impl LambdaWatch {
    /// Starts `cargo lambda watch` with `env` passed to every function.
    pub fn start(env: &[(String, String)]) -> LambdaWatch {
        build_functions();
        let port = free_port();
        let mut env_vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env_vars.push(format!("AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:{port}"));
        let log = std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(tool("cargo-lambda"));
        cmd.current_dir(workspace_root())
            .args([
                "lambda",
                "watch",
                "-q",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "--concurrency",
                "6",
            ])
            .stdout(Stdio::from(log_file.try_clone().expect("log")))
            .stderr(Stdio::from(log_file));
        for v in env_vars {
            cmd.args(["--env-var", &v]);
        }
        let child = spawn_tied(cmd).expect("start cargo lambda watch (run scripts/setup-tools.sh)");
        assert!(
            wait_for_port(port, Duration::from_secs(120)),
            "cargo lambda watch did not listen on {port}; see {}",
            log.display()
        );
        LambdaWatch { port, child, log }
    }

    /// `cargo lambda invoke <function> --data-file <file>`, bounded by a timeout.
    pub fn invoke(&self, function: &str, payload: &serde_json::Value) -> Invocation {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), serde_json::to_vec(payload).expect("payload"))
            .expect("write payload");
        self.invoke_file(function, file.path())
    }

    pub fn invoke_file(&self, function: &str, data_file: &std::path::Path) -> Invocation {
        let out = Command::new("timeout")
            .arg("300")
            .arg(tool("cargo-lambda"))
            .current_dir(workspace_root())
            .args([
                "lambda",
                "invoke",
                function,
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--output-format",
                "json",
                "--data-file",
            ])
            .arg(data_file)
            .output()
            .expect("run cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let raw = format!("{stdout}{stderr}");
        if out.status.success() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(stdout.trim()) {
                return Invocation {
                    ok: Some(v),
                    error: None,
                    raw,
                };
            }
        }
        Invocation {
            ok: None,
            error: Some(parse_error(&raw)),
            raw,
        }
    }

    /// Everything the functions logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The error type and message of a failed invocation, as cargo lambda reports it:
///
/// ```text
/// Error: PipefyUnauthorized
///
///   × Pipefy: Pipefy rejected the credentials: HTTP 401 even with freshly
///   │ fetched credentials: ...
/// ```
///
/// or, in other versions, as JSON with `errorType` and `errorMessage`.
fn parse_error(raw: &str) -> (String, String) {
    if let Some(error_type) = raw.lines().find_map(|l| l.trim().strip_prefix("Error: ")) {
        let mut message = Vec::new();
        let mut in_message = false;
        for line in raw.lines() {
            let line = line.trim();
            if let Some(first) = line.strip_prefix('×') {
                in_message = true;
                message.push(first.trim().to_string());
            } else if in_message {
                match line.strip_prefix('│') {
                    Some(more) => message.push(more.trim().to_string()),
                    None => break,
                }
            }
        }
        // miette wraps at spaces and after hyphens: a piece ending in '-' continues the word.
        let mut joined = String::new();
        for piece in message {
            if !joined.is_empty() && !joined.ends_with('-') {
                joined.push(' ');
            }
            joined.push_str(&piece);
        }
        return (error_type.trim().to_string(), joined);
    }
    let json_field = |name: &str| -> String {
        let needle = format!("\"{name}\"");
        raw.find(&needle)
            .and_then(|i| raw.get(i + needle.len()..))
            .and_then(|rest| rest.trim_start_matches([':', ' ']).strip_prefix('"'))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    (json_field("errorType"), json_field("errorMessage"))
}

impl Drop for LambdaWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
