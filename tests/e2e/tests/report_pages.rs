//! The run page and the destination history, rendered in a real browser (Debian's headless
//! Chromium): a run with failed rows against the Pipefy emulator writes `report.html`, a
//! second run adds itself to `index.html`, and the pages are read back as the browser holds
//! them: the counts, a failed row found by searching its key, the chart's bars, and the page
//! without JavaScript. Screenshots are kept under `target/test-output/report-pages/`.

use pipefy_sync::config::Destination;
use pipefy_sync::report::RunSummary;
use pipefy_sync_tests::browser::{dom, output_dir, screenshot, tags_with, Load};
use pipefy_sync_tests::sync::{assert_counts_add_up, Harness};

const FILE: &str = "refined/customers/part-0001.csv";

fn destination(h: &Harness) -> Destination {
    h.destination(
        "name: pages\npipe_id: \"301\"\noperation: upsert_card\nkey: { columns: [cid], field: external_id }\n\
         source:\n  path: ${DATA}\n  layer: refined\n  table: customers\n\
         mapping:\n  title: name\n  customer_name: name\n  plan: plan\n",
    )
}

/// The number a page shows for the count `id` (`<li data-count="created"><span class="n">3`).
fn shown_count(dom: &str, id: &str) -> u64 {
    let marker = format!("data-count=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no count {id} on the page"));
    let rest = &dom[at..];
    let open = "<span class=\"n\">";
    let start = rest.find(open).expect("the count's number") + open.len();
    let end = start + rest[start..].find('<').expect("end of the number");
    rest[start..end].parse().expect("a number")
}

/// The failed rows of a page's DOM: (key, whether the browser hides it).
fn failed_rows(dom: &str) -> Vec<(String, bool)> {
    tags_with(dom, "class=\"failed-row\"")
        .into_iter()
        .map(|tag| {
            let key = tag
                .split("data-key=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string();
            (key, tag.contains(" hidden"))
        })
        .collect()
}

fn page_of(h: &Harness, s: &RunSummary) -> std::path::PathBuf {
    h.report_dir(s).join("report.html")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pages_and_the_history_show_what_happened_in_a_browser() {
    let h = Harness::new().await;
    let dest = destination(&h);
    h.write_file(
        FILE,
        "cid,name,plan\nK1,One,Pro\nK2,Two,Gold\nK3,Three,Free\nK4,Four,Silver\nK5,Five,Pro\n",
    );
    let first = h.run(&dest).await;
    assert_counts_add_up(&first);
    assert_eq!((first.counts.created, first.counts.failed_rows()), (3, 2));
    let page = page_of(&h, &first);
    assert_eq!(
        first.report_page.as_deref(),
        Some(format!("{}", page.display()).as_str()),
        "the summary says where its page is"
    );
    assert_eq!(h.summary_file(&first).report_page, first.report_page);

    // The browser's view of the first run's page, searched for one failed row's key.
    let shots = output_dir("report-pages");
    // A phone-sized window, tall enough to show the failed rows below the counts.
    let phone = (412, 1700);
    let searched = dom(&Load {
        page: &page,
        fragment: "#q=k4",
        javascript: true,
        window: phone,
    });
    assert_eq!(shown_count(&searched, "created"), 3);
    assert_eq!(shown_count(&searched, "failed"), 2);
    assert_eq!(shown_count(&searched, "read"), 5);
    assert_eq!(
        failed_rows(&searched),
        [("K2".to_string(), true), ("K4".to_string(), false)],
        "searching K4 leaves only its row"
    );
    assert!(searched.contains("1 of 2 rows match"), "{searched}");
    assert!(searched.contains("NOT_AN_OPTION") && searched.contains(&format!("{FILE}:5")));
    screenshot(
        &Load {
            page: &page,
            fragment: "#q=k4",
            javascript: true,
            window: phone,
        },
        &shots.join("run-page-phone-search.png"),
    );
    // Without JavaScript every row and count is there, and no search box is offered.
    let plain = dom(&Load {
        page: &page,
        fragment: "",
        javascript: false,
        window: (1280, 900),
    });
    assert_eq!(
        failed_rows(&plain),
        [("K2".to_string(), false), ("K4".to_string(), false)]
    );
    let search = tags_with(&plain, "id=\"search\"");
    assert_eq!(search.len(), 1, "one search box");
    assert!(search[0].contains(" hidden"), "{search:?}");
    assert_eq!(shown_count(&plain, "failed"), 2);

    // A second run: K2 fixed, K1 renamed.
    h.write_file(
        FILE,
        "cid,name,plan\nK1,One again,Pro\nK2,Two,Free\nK3,Three,Free\nK4,Four,Silver\nK5,Five,Pro\n",
    );
    let second = h.run(&dest).await;
    assert_eq!(
        (
            second.counts.created,
            second.counts.updated,
            second.counts.failed_rows()
        ),
        (1, 1, 1)
    );
    let index = h.reports_root().join("pages/index.html");
    let history = dom(&Load {
        page: &index,
        fragment: "",
        javascript: true,
        window: (1280, 900),
    });
    let runs = tags_with(&history, "class=\"run\"");
    assert_eq!(runs.len(), 2, "both runs are listed");
    assert!(
        runs[0].contains(&second.run_id) && runs[1].contains(&first.run_id),
        "newest first: {runs:?}"
    );
    let bars = |series: &str| -> Vec<String> {
        tags_with(&history, &format!("data-series=\"{series}\""))
            .iter()
            .filter_map(|t| t.split("data-value=\"").nth(1)?.split('"').next())
            .map(str::to_string)
            .collect()
    };
    // Oldest on the left.
    assert_eq!(bars("created"), ["3", "1"]);
    assert_eq!(bars("updated"), ["0", "1"]);
    assert_eq!(bars("failed"), ["2", "1"]);
    assert_eq!(bars("duration").len(), 2);
    // Each run links to its page, and that page exists.
    for s in [&first, &second] {
        let link = format!(
            "href=\"{}/{}/report.html\"",
            s.started_at.format("%Y-%m-%d"),
            s.run_id
        );
        assert!(history.contains(&link), "{link}");
        assert!(page_of(&h, s).exists());
    }
    screenshot(
        &Load {
            page: &index,
            fragment: "",
            javascript: true,
            window: (1280, 900),
        },
        &shots.join("history.png"),
    );
    screenshot(
        &Load {
            page: &page_of(&h, &second),
            fragment: "",
            javascript: true,
            window: (1280, 1400),
        },
        &shots.join("run-page-desktop.png"),
    );
}
