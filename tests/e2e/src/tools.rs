//! Where the pinned Python tools live: `.venv/bin` of the workspace (see scripts/setup-tools.sh).

use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    // tests/e2e -> workspace root
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// A tool from `.venv/bin`, or from PATH when the venv does not have it.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// A free TCP port on loopback. The port is released before the caller binds it; the window
/// for another process to take it is tiny on a test machine.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_for_port(port: u16, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Spawns a helper process that dies with this test process.
///
/// PR_SET_PDEATHSIG fires when the *thread* that spawned the child ends, and every
/// `#[tokio::test]` runs on a thread of its own; so the child is spawned from a thread that
/// lives as long as the process.
pub fn spawn_tied(mut cmd: std::process::Command) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when its
    // parent thread (the parked thread below) dies, which is when this process exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spawned = cmd.spawn();
        let ok = spawned.is_ok();
        let _ = tx.send(spawned);
        if ok {
            // Live as long as the process, so the child is killed only when it exits.
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("spawner thread died")))
}

/// Builds the `pipefy-sync` command-line tool and returns the executable cargo reports for
/// this build, wherever its target directory is.
pub fn cli_binary() -> std::path::PathBuf {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            "pipefy-sync",
            "--bin",
            "pipefy-sync",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "building pipefy-sync failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "pipefy-sync")
        .filter_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .next_back()
        .expect("cargo names the pipefy-sync executable it built")
}

/// The number the command line printed at the end of the summary line starting with
/// `label` (`  in sync   1`), if there is one.
pub fn printed_count(stdout: &str, label: &str) -> Option<u64> {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
}
