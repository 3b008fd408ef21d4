//! Debian's Chromium, headless, for the tests of the HTML pages (installed by
//! `scripts/setup-tools.sh`). A page is loaded from a file, its scripts run, and what the
//! browser then holds is read back as serialized DOM, or as a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser: `CHROMIUM` if set, else Debian's `/usr/bin/chromium`. A missing browser fails
/// the test (it is a tool of the suite, like moto), with what to do about it.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: run `make tools` (scripts/setup-tools.sh installs Debian's chromium)",
        path.display()
    );
    path
}

/// What the page is loaded with.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    pub page: &'a Path,
    /// Appended to the page's address (`#q=K2`).
    pub fragment: &'a str,
    pub javascript: bool,
    /// Width and height of the window, CSS pixels.
    pub window: (u32, u32),
}

fn browser(load: &Load, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    // Headless as root, with nothing reaching out to the network at start-up.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={},{}", load.window.0, load.window.1));
    cmd
}

fn url(load: &Load) -> String {
    format!("file://{}{}", load.page.display(), load.fragment)
}

/// The page's DOM after it loaded and its scripts ran. Without JavaScript, the page is
/// loaded with its scripts taken out: Chromium's switch that turns scripts off also stops
/// `--dump-dom` from reading the DOM back.
pub fn dom(load: &Load) -> String {
    let profile = tempfile::tempdir().expect("browser profile");
    let scriptless = profile.path().join("page.html");
    let page = if load.javascript {
        load.page.to_path_buf()
    } else {
        let html = std::fs::read_to_string(load.page).expect("read the page");
        std::fs::write(&scriptless, without_scripts(&html)).expect("write the page");
        scriptless
    };
    let load = &Load {
        page: &page,
        ..*load
    };
    let out = browser(load, profile.path())
        .arg("--dump-dom")
        .arg(url(load))
        .output()
        .expect("start chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium rendered nothing for {} ({}, {} bytes of DOM): {}",
        url(load),
        out.status,
        dom.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The page without its `<script>` elements.
fn without_scripts(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("</script>") {
            Some(end) => &rest[start + end + "</script>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// A PNG of the page as the window shows it, at `to`.
pub fn screenshot(load: &Load, to: &Path) {
    let profile = tempfile::tempdir().expect("browser profile");
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    let out = browser(load, profile.path())
        .arg(format!("--screenshot={}", to.display()))
        .arg(url(load))
        .output()
        .expect("start chromium");
    let png = std::fs::read(to).unwrap_or_default();
    assert!(
        out.status.success() && png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "no screenshot of {} at {}: {}",
        url(load),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a test keeps what it produced for people to look at:
/// `target/test-output/<test>/`.
pub fn output_dir(test: &str) -> PathBuf {
    crate::tools::workspace_root()
        .join("target/test-output")
        .join(test)
}

/// The opening tags of the elements whose opening tag contains `marker`.
pub fn tags_with<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    dom.match_indices(marker)
        .filter_map(|(at, _)| {
            let start = dom[..at].rfind('<')?;
            let end = at + dom[at..].find('>')?;
            Some(&dom[start..=end])
        })
        .collect()
}
