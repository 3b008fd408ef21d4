//! Measurements that need a process of their own (peak memory, CPU time) run in a child:
//! this same binary with a `child-*` subcommand. The child prints one JSON object as the
//! last line of its standard output; its logs go to standard error, which the bench passes
//! through.

use std::process::Stdio;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// Runs this binary with `args` and parses the JSON object on the last line of its output.
pub async fn run<T: DeserializeOwned>(what: &str, args: &[String]) -> Result<T> {
    let exe = std::env::current_exe().map_err(BenchError::io("finding the bench binary"))?;
    let child_err = |message: String| BenchError::Child {
        what: what.to_string(),
        message,
    };
    let out = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| child_err(format!("could not start: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(child_err(format!(
            "exited with {}; output: {}",
            out.status,
            stdout.trim()
        )));
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| child_err("printed nothing".into()))?;
    serde_json::from_str(last).map_err(|e| {
        child_err(format!(
            "printed something that is not its result ({e}): {last}"
        ))
    })
}

/// What a child prints as its result.
pub fn print<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
