//! Pipefy's own Python SDK (PyPI `pipefy`) against the emulator: runs
//! `tests/sdk/conformance.py` with the workspace's `.venv` python and checks that every
//! SDK call it makes passes or is declared "not modelled" in tests/emulator/README.md.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pipefy_emulator::EmulatorConfig;

/// Fewest `passed` lines a healthy run prints (the script makes more).
const MIN_PASSED: usize = 35;
const TIMEOUT: Duration = Duration::from_secs(180);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// The names under "## Not modelled" in the emulator's README (`- \`name\`: ...`).
fn readme_not_modelled() -> Vec<String> {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = text
        .split("\n## Not modelled")
        .nth(1)
        .expect("README has a \"Not modelled\" section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_conforms() {
    let root = workspace_root();
    let python = root.join(".venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run `make tools` to create the workspace's Python venv with the Pipefy SDK",
        python.display()
    );
    let script = root.join("tests").join("sdk").join("conformance.py");
    let e = emu_with(EmulatorConfig::with_fixture(fixture_with_attachments())).await;
    let url = e.h.graphql_url();

    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(&url)
            .current_dir(&root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python starts");
        let started = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let timed_out = started.elapsed() > TIMEOUT;
        (child.wait_with_output().expect("output"), timed_out)
    })
    .await
    .expect("join");
    let (out, timed_out) = out;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !timed_out,
        "the SDK suite timed out after {TIMEOUT:?}\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the SDK suite failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let passed = stdout.lines().filter(|l| l.starts_with("passed ")).count();
    assert!(
        passed >= MIN_PASSED,
        "only {passed} SDK calls passed (want >= {MIN_PASSED})\n{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");

    let declared = readme_not_modelled();
    let printed: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("not modelled "))
        .map(|l| l.split(':').next().unwrap_or_default().trim().to_string())
        .collect();
    assert!(
        !printed.is_empty(),
        "the suite printed no not-modelled calls\n{stdout}"
    );
    for name in &printed {
        assert!(
            declared.contains(name),
            "`{name}` is printed as not modelled but not listed under \"Not modelled\" in tests/emulator/README.md"
        );
    }
    for name in &declared {
        assert!(
            printed.contains(name),
            "`{name}` is listed as not modelled in the README but the suite did not report it\n{stdout}"
        );
    }
}
