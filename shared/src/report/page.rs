//! The run page (`report.html`, beside a run's `summary.json`) and the destination history
//! (`<reports>/<destination>/index.html`) as HTML a person opens in a browser.
//!
//! Each page is one self-contained file: its CSS, script and chart are inline, nothing is
//! fetched from elsewhere, so a page opens the same from S3 (a presigned link), a local
//! folder or an email attachment. Everything is rendered here, on the server side: without
//! JavaScript the page shows every count and every embedded row; the script only adds the
//! search box over the failed rows (its query also comes from the address, `#q=<key>`).
//! A large run stays a page that opens fast: at most [`PAGE_ROWS`] failed rows are embedded,
//! and the page links the report's JSON Lines parts for the rest.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::history::HistoryEntry;
use super::{Counts, RowResult, RunStatus, RunSummary};

/// The most failed rows a run page embeds.
pub const PAGE_ROWS: usize = 500;

/// The runs the history page draws in its chart.
pub const CHART_RUNS: usize = 30;

/// What a run page shows of its failed rows.
#[derive(Debug, Clone, Default)]
pub struct FailedRows {
    /// The first [`PAGE_ROWS`] failed rows, in report order.
    pub rows: Vec<RowResult>,
    /// Every failed row the report holds.
    pub total: u64,
    /// The report's parts, as links from the run's folder
    /// (`../../results/<date>/<run-id>-part-00001.jsonl`, `failed/part-00001.jsonl`).
    pub result_parts: Vec<String>,
    pub failed_parts: Vec<String>,
}

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A status as a person reads it, and its colour class.
fn status_words(status: RunStatus) -> (&'static str, &'static str) {
    match status {
        RunStatus::Completed => ("completed", "ok"),
        RunStatus::Stopped => ("stopped at a failed row", "bad"),
        RunStatus::HandedOff => ("continues in a new invocation", "warn"),
        RunStatus::Deferred => ("deferred to the run in progress", "warn"),
        RunStatus::Failed => ("failed", "bad"),
        RunStatus::LeaseLost => ("lost its lease", "bad"),
    }
}

/// Seconds between two instants, as `1 h 02 min`, `3 min 05 s` or `4.2 s`.
pub fn duration_words(started: DateTime<Utc>, finished: Option<DateTime<Utc>>) -> String {
    let Some(finished) = finished else {
        return "—".into();
    };
    let ms = (finished - started).num_milliseconds().max(0);
    let s = ms / 1000;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--ink:#1f2328;--dim:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:#fff}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.35em;margin:.2em 0}
h2{font-size:1.1em;margin:1.4em 0 .5em}
.dim{color:var(--dim)}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600;font-size:.9em}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.5em 0}
dl.facts dt{color:var(--dim)}dl.facts dd{margin:0;overflow-wrap:anywhere}
.counts{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:8px;margin:0;padding:0;list-style:none}
.counts li{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:8px}
.counts .n{display:block;font-size:1.4em;font-weight:650}
.counts .failed .n{color:var(--bad)}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);position:sticky;top:0}
td.msg{min-width:18em}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
input[type=search]{width:100%;max-width:28em;padding:8px;font-size:1em;border:1px solid var(--line);border-radius:6px;margin:0 0 8px}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px;margin:.6em 0}
svg text{font:11px system-ui,sans-serif;fill:var(--dim)}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-.05em}
.created{fill:#2da44e;background:#2da44e}.updated{fill:#0969da;background:#0969da}.failed-bar{fill:#cf222e;background:#cf222e}.duration{fill:#8250df;background:#8250df}
@media (max-width:600px){main{padding:10px}th,td{padding:5px}}
"#;

/// Filters the failed rows by the search box; the query also comes from `#q=...`.
const SEARCH_SCRIPT: &str = r#"
(function(){
  var box=document.getElementById('search'), rows=[].slice.call(document.querySelectorAll('tr.failed-row')),
      shown=document.getElementById('shown');
  if(!box) return;
  box.hidden=false;
  function apply(){
    var q=box.value.trim().toLowerCase(), n=0;
    rows.forEach(function(r){var hit=!q||r.getAttribute('data-search').indexOf(q)>=0;r.hidden=!hit;if(hit)n++;});
    if(shown) shown.textContent=q?(n+' of '+rows.length+' rows match'):'';
  }
  var m=/[#&]q=([^&]*)/.exec(location.hash);
  if(m) box.value=decodeURIComponent(m[1].replace(/\+/g,' '));
  box.addEventListener('input',function(){
    apply();
    if(history.replaceState) history.replaceState(null,'','#q='+encodeURIComponent(box.value));
  });
  apply();
})();
"#;

fn open_page(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"generator\" content=\"pipefy-sync\">\
<title>{}</title><style>{STYLE}</style></head><body><main>\n",
        escape(title)
    );
}

fn close_page(out: &mut String, script: Option<&str>) {
    out.push_str("</main>");
    if let Some(script) = script {
        let _ = write!(out, "<script>{script}</script>");
    }
    out.push_str("</body></html>\n");
}

/// The counts a page shows, in order, with the words for a dry run.
fn count_items(c: &Counts, dry_run: bool) -> Vec<(&'static str, &'static str, u64)> {
    let (created, updated, removed) = super::outcome_words(dry_run);
    let mut items = vec![
        ("read", "read", c.read),
        ("created", created, c.created),
        ("updated", updated, c.updated),
        ("unchanged", "unchanged", c.unchanged),
        ("failed", "failed rows", c.failed_rows()),
        ("removed", removed, c.removed),
    ];
    // The rarer outcomes only when they happened, so the common page stays short.
    for (id, label, n) in [
        ("recreated", "recreated", c.recreated),
        ("exists", "exists (left alone)", c.exists),
        ("kept_edits", "kept people's edits", c.kept_edits),
        (
            "recovered_creates",
            "recovered creates",
            c.recovered_creates,
        ),
    ] {
        if n > 0 {
            items.push((id, label, n));
        }
    }
    items
}

/// A run's page.
pub fn render_run_page(summary: &RunSummary, failed: &FailedRows) -> String {
    let s = summary;
    let c = &s.counts;
    let mut out = String::with_capacity(16 * 1024 + failed.rows.len() * 400);
    open_page(
        &mut out,
        &format!("{} · run {} · pipefy-sync", s.destination, s.run_id),
    );
    let (status, class) = status_words(s.status);
    let _ = write!(
        out,
        "<p class=\"dim\"><a href=\"../../index.html\">{dest} history</a></p>\
<h1>{dest}{dry}</h1>\
<p><span class=\"badge {class}\" id=\"status\" data-status=\"{status_id}\">{status}</span> \
<span class=\"dim\">run <code>{run}</code></span></p>\n<dl class=\"facts\">",
        dest = escape(&s.destination),
        dry = if s.dry_run { " (dry run)" } else { "" },
        status_id = s.status.name(),
        run = escape(&s.run_id),
    );
    let facts = [
        ("trigger", escape(&s.trigger)),
        (
            "started",
            s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        (
            "finished",
            s.finished_at
                .map(|f| f.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "—".into()),
        ),
        ("duration", duration_words(s.started_at, s.finished_at)),
        ("invocations", s.invocations.to_string()),
        ("files", s.source_files.len().to_string()),
    ];
    for (k, v) in facts {
        let _ = write!(out, "<dt>{k}</dt><dd>{v}</dd>");
    }
    out.push_str("</dl>\n");
    for (label, text) in [
        ("error", s.error.as_deref()),
        ("removal skipped", s.removal_skipped.as_deref()),
    ] {
        if let Some(text) = text {
            let _ = write!(
                out,
                "<p class=\"note\"><strong>{label}:</strong> {}</p>",
                escape(text)
            );
        }
    }
    if let Some(stop) = &s.stopped_at {
        let _ = write!(
            out,
            "<p class=\"note\"><strong>stopped at</strong> <code>{}:{}</code>: {} (partial success is off, so the rows after it were not attempted)</p>",
            escape(&stop.file),
            stop.line,
            escape(stop.error_message.as_deref().unwrap_or(""))
        );
    }
    out.push_str("<h2>Rows</h2><ul class=\"counts\">");
    for (id, label, n) in count_items(c, s.dry_run) {
        let _ = write!(
            out,
            "<li class=\"{id}\" data-count=\"{id}\"><span class=\"n\">{n}</span>{label}</li>"
        );
    }
    out.push_str("</ul>\n");
    if c.failed_rows() > 0 {
        let _ = write!(
            out,
            "<p class=\"dim\">failed rows: {} at preflight (the row did not read or map, never sent), {} refused by Pipefy, {} not attempted (partial success off). Each row's code says which.</p>",
            c.skipped_by_preflight, c.failed, c.not_attempted
        );
    }
    out.push_str("<h2>Pipefy API</h2><ul class=\"counts\">");
    for (id, label, n) in [
        ("requests", "requests", c.requests),
        ("requests_avoided", "requests avoided", s.requests_avoided),
        (
            "current_value_reads",
            "cards read before update",
            c.current_value_reads,
        ),
        ("retries", "retries", c.retries),
        ("throttles", "throttled (429)", c.throttles),
        ("files_uploaded", "files uploaded", c.files_uploaded),
        ("bytes_uploaded", "bytes uploaded", c.bytes_uploaded),
    ] {
        let _ = write!(
            out,
            "<li class=\"{id}\" data-count=\"{id}\"><span class=\"n\">{n}</span>{label}</li>"
        );
    }
    out.push_str("</ul><p class=\"dim\">requests avoided: unchanged rows were not sent; the figure is what sending them would have taken at the destination's mutations per request.</p>\n");
    render_failed_rows(&mut out, failed);
    out.push_str("<h2>Files</h2><ul>");
    for f in &s.source_files {
        let _ = write!(out, "<li><code>{}</code></li>", escape(f));
    }
    out.push_str(
        "</ul>\n<h2>Report files</h2><ul><li><a href=\"summary.json\">summary.json</a></li>",
    );
    for part in failed.result_parts.iter().chain(&failed.failed_parts) {
        let _ = write!(out, "<li><a href=\"{p}\">{p}</a></li>", p = escape(part));
    }
    out.push_str("</ul>");
    if !failed.failed_parts.is_empty() {
        out.push_str("<p class=\"dim\">The <code>failed/</code> parts hold the failed rows with their original columns: fix them and put them back as a source to replay them.</p>");
    }
    close_page(&mut out, Some(SEARCH_SCRIPT));
    out
}

fn render_failed_rows(out: &mut String, failed: &FailedRows) {
    let _ = write!(out, "<h2 id=\"failed\">Failed rows ({})</h2>", failed.total);
    if failed.total == 0 {
        out.push_str("<p>No row failed.</p>");
        return;
    }
    if (failed.rows.len() as u64) < failed.total {
        let _ = write!(
            out,
            "<p class=\"note\" id=\"capped\">This page shows the first {} of {} failed rows; all of them are in the <code>results/</code> parts listed below.</p>",
            failed.rows.len(),
            failed.total
        );
    }
    out.push_str("<input type=\"search\" id=\"search\" placeholder=\"Search by key, file, field or code\" aria-label=\"Search failed rows\" hidden> <span id=\"shown\" class=\"dim\"></span>\
<div class=\"scroll\"><table><thead><tr><th>file:line</th><th>key</th><th>field</th><th>code</th><th>reason</th></tr></thead><tbody id=\"failed-rows\">");
    for r in &failed.rows {
        let key = r.key.as_deref().unwrap_or("");
        let field = r.field.as_deref().unwrap_or("");
        let code = r.error_code.as_deref().unwrap_or("");
        let search = format!("{key} {}:{} {field} {code}", r.file, r.line).to_lowercase();
        let _ = write!(
            out,
            "<tr class=\"failed-row\" data-key=\"{k}\" data-search=\"{search}\"><td><code>{file}:{line}</code></td><td><code>{k}</code></td><td>{field}</td><td><code>{code}</code></td><td class=\"msg\">{msg}</td></tr>",
            k = escape(key),
            search = escape(&search),
            file = escape(&r.file),
            line = r.line,
            field = escape(field),
            code = escape(code),
            msg = escape(r.error_message.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// The destination's history page: the last [`CHART_RUNS`] runs drawn, every entry listed,
/// newest first (as `entries` are).
pub fn render_history(destination: &str, entries: &[HistoryEntry]) -> String {
    let mut out = String::with_capacity(8 * 1024 + entries.len() * 300);
    open_page(&mut out, &format!("{destination} · runs · pipefy-sync"));
    let _ = writeln!(
        out,
        "<h1>{}</h1><p class=\"dim\">{} run(s), newest first. Each run links to its page.</p>",
        escape(destination),
        entries.len()
    );
    if !entries.is_empty() {
        render_chart(&mut out, &entries[..entries.len().min(CHART_RUNS)]);
    }
    out.push_str("<h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th>started</th><th>status</th><th>trigger</th><th>created</th><th>updated</th><th>unchanged</th><th>failed</th><th>removed</th><th>requests</th><th>duration</th></tr></thead><tbody>");
    for e in entries {
        let (status, class) = status_words(e.status);
        let _ = write!(
            out,
            "<tr class=\"run\" data-run=\"{run}\"><td><a href=\"{page}\">{at}</a>{dry}</td><td><span class=\"badge {class}\">{status}</span></td><td>{trigger}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.created,
            e.updated,
            e.unchanged,
            e.failed,
            e.removed,
            e.requests,
            duration_words(e.started_at, e.finished_at),
            run = escape(&e.run_id),
            page = escape(&e.page),
            at = e.started_at.format("%Y-%m-%d %H:%M UTC"),
            dry = if e.dry_run { " <span class=\"dim\">(dry run)</span>" } else { "" },
            trigger = escape(&e.trigger),
        );
    }
    out.push_str("</tbody></table></div>\n");
    close_page(&mut out, None);
    out
}

/// Two small bar charts, oldest run on the left: rows created, updated and failed (stacked),
/// and the run's duration.
fn render_chart(out: &mut String, newest_first: &[HistoryEntry]) {
    const W: f64 = 720.0;
    const H: f64 = 120.0;
    let runs: Vec<&HistoryEntry> = newest_first.iter().rev().collect();
    let slot = W / CHART_RUNS as f64;
    let bar = (slot * 0.7).max(2.0);
    let max_rows = runs
        .iter()
        .map(|e| e.created + e.updated + e.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_secs = runs
        .iter()
        .map(|e| e.seconds())
        .fold(0.0, f64::max)
        .max(0.001);
    out.push_str("<h2>Last runs</h2><p class=\"legend\"><span><i class=\"created\"></i>created</span><span><i class=\"updated\"></i>updated</span><span><i class=\"failed-bar\"></i>failed</span><span><i class=\"duration\"></i>duration</span></p>");
    let _ = write!(
        out,
        "<svg id=\"rows-chart\" viewBox=\"0 0 {W} {h}\" width=\"100%\" role=\"img\" aria-label=\"rows per run\">",
        h = H + 14.0
    );
    for (i, e) in runs.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut top = H;
        for (series, class, n) in [
            ("created", "created", e.created),
            ("updated", "updated", e.updated),
            ("failed", "failed-bar", e.failed),
        ] {
            let h = n as f64 / max_rows * (H - 4.0);
            top -= h;
            let _ = write!(
                out,
                "<rect class=\"bar {class}\" data-series=\"{series}\" data-run=\"{run}\" data-value=\"{n}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\"><title>{at}: {n} {series}</title></rect>",
                run = escape(&e.run_id),
                at = e.started_at.format("%Y-%m-%d %H:%M"),
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{}\">{} rows at most</text></svg>",
        H + 12.0,
        max_rows as u64
    );
    let _ = write!(
        out,
        "<svg id=\"duration-chart\" viewBox=\"0 0 {W} {h}\" width=\"100%\" role=\"img\" aria-label=\"duration per run\">",
        h = H / 2.0 + 14.0
    );
    for (i, e) in runs.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let h = e.seconds() / max_secs * (H / 2.0 - 4.0);
        let _ = write!(
            out,
            "<rect class=\"bar duration\" data-series=\"duration\" data-run=\"{run}\" data-value=\"{secs:.1}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\"><title>{at}: {d}</title></rect>",
            run = escape(&e.run_id),
            secs = e.seconds(),
            y = H / 2.0 - h,
            at = e.started_at.format("%Y-%m-%d %H:%M"),
            d = duration_words(e.started_at, e.finished_at),
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{}\">{:.1} s at most</text></svg>",
        H / 2.0 + 12.0,
        max_secs
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RowAction;

    fn summary() -> RunSummary {
        let mut s = crate::lambda::fakes::summary("customers", "schedule", RunStatus::Completed);
        s.finished_at = Some(s.started_at + chrono::Duration::seconds(75));
        s.source_files = vec!["refined/customers/a.csv".into()];
        s.counts = Counts {
            read: 3,
            created: 1,
            failed: 2,
            ..Counts::default()
        };
        s
    }

    fn failed_row(key: &str, message: &str) -> RowResult {
        RowResult {
            file: "a.csv".into(),
            line: 4,
            key: Some(key.into()),
            action: RowAction::Failed,
            id: None,
            error_code: Some("INVALID_VALUE".into()),
            error_message: Some(message.into()),
            field: Some("mrr".into()),
            column: None,
            kept_edits: Vec::new(),
        }
    }

    #[test]
    fn a_run_page_escapes_what_rows_hold_and_says_when_it_caps() {
        let failed = FailedRows {
            rows: vec![failed_row("<k1>", "\"bad\" & <script>")],
            total: 2,
            result_parts: vec!["results/part-00001.jsonl".into()],
            failed_parts: vec!["failed/part-00001.jsonl".into()],
        };
        let page = render_run_page(&summary(), &failed);
        assert!(page.contains("&quot;bad&quot; &amp; &lt;script&gt;"));
        assert!(!page.contains("<k1>"));
        assert!(page.contains("id=\"capped\""), "one of two rows shown");
        assert!(page.contains("<span class=\"n\">2</span>failed rows"));
        assert!(page.contains("1 min 15 s"));
        assert!(page.contains("href=\"failed/part-00001.jsonl\""));
        // Self-contained: nothing is loaded from elsewhere.
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }

    #[test]
    fn a_dry_run_page_says_would() {
        let mut s = summary();
        s.dry_run = true;
        let page = render_run_page(&s, &FailedRows::default());
        assert!(page.contains("would create") && page.contains("(dry run)"));
        assert!(page.contains("No row failed."));
    }

    #[test]
    fn durations_read_as_words() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let after = |s| Some(at + chrono::Duration::milliseconds(s));
        assert_eq!(duration_words(at, after(4_200)), "4.2 s");
        assert_eq!(duration_words(at, after(185_000)), "3 min 05 s");
        assert_eq!(duration_words(at, after(3_720_000)), "1 h 02 min");
        assert_eq!(duration_words(at, None), "—");
    }
}
