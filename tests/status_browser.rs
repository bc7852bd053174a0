//! The status page (`GET /` on the admin listener) in a real browser:
//! headless Chromium (Debian's `chromium` package) loads it, takes
//! screenshots at 1280×800 and 400 px wide into the test's folder, and
//! dumps the DOM after the script's first refresh from `/status`; the
//! page as served (what a browser without JavaScript shows) is checked
//! the same way. Through the DOM it checks that each route's
//! row and state are there (one route's token endpoint is down, another's
//! token file is empty and named with markup), and that nothing from the
//! data became markup.
//!
//! Without Chromium the test says so loudly on stderr and passes, unless
//! `SIDEKEY_REQUIRE_BROWSER=1` (set by `.ci/run`), when it fails.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use support::harness::*;
use support::status::*;
use support::*;

/// A file name that is markup if the page does not escape it.
const HOSTILE_FILE: &str = "<img src=x onerror=alert(1)>\"'.token";

/// The Chromium binary: `$SIDEKEY_CHROMIUM`, else the first of the usual
/// names on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIDEKEY_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `args`; returns its stdout.
fn run_chromium(bin: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The width and height of a PNG, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

/// The `<tr>` of route `name` in a dumped DOM.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr data-route=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("the row ends") + start;
    &dom[start..end]
}

fn check_rows(dom: &str, sources: &AllSources, what: &str) {
    for (name, _) in ROUTES {
        let row = row(dom, name);
        let state = match *name {
            "algonomy" => "failing",
            "filed" => "missing",
            other => sources.expected_state(other),
        };
        assert!(
            row.contains(&format!("class=\"st-{state}\"")),
            "{what}: {name} is not {state}: {row}"
        );
        assert!(
            row.contains(&format!(
                "data-f=\"state\">{}</span>",
                state.replace('_', " ")
            )),
            "{what}: {name}'s badge: {row}"
        );
        assert!(
            row.contains(&format!("<b class=\"name\">{name}</b>")),
            "{what}: {row}"
        );
    }
    // The cause of the endpoint that is down, as text.
    let algonomy = row(dom, "algonomy");
    assert!(
        algonomy.contains("answered HTTP 503"),
        "{what}: no cause: {algonomy}"
    );
    // The file name stays text: escaped, never an element.
    let filed = row(dom, "filed");
    assert!(
        filed.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{what}: {filed}"
    );
    assert!(!dom.contains("<img"), "{what}: markup from the data: {dom}");
    assert!(
        dom.contains("No usable credential: 2 of 10 routes"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_route_and_its_state_in_chromium() {
    let Some(bin) = chromium() else {
        let required = std::env::var_os("SIDEKEY_REQUIRE_BROWSER").is_some_and(|v| v == "1");
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED the_status_page_shows_every_route_and_its_state_in_chromium: \
             no chromium on PATH (apt-get install chromium, or set SIDEKEY_CHROMIUM) !!!\n"
        );
        assert!(
            !required,
            "SIDEKEY_REQUIRE_BROWSER=1 but chromium is missing"
        );
        return;
    };
    let env = TestEnv::new();
    let sources = AllSources::with_token_file(&env, false, HOSTILE_FILE);
    // Algonomy's token endpoint is down from the start.
    sources
        .apis
        .algonomy
        .go_down(StatusCode::SERVICE_UNAVAILABLE);
    let proxy = ::sidekey::app::RunningProxy::start(sources.config(&env))
        .await
        .expect("sidekey starts");
    sources.traffic(proxy.proxy_addr()).await;
    // The token file is emptied: the route has no token.
    std::fs::write(&sources.token_file, "").expect("empty the token file");
    wait_until(
        "the page's states are reached",
        Duration::from_secs(20),
        || async {
            let _ = get(proxy.proxy_addr(), "http://filed.example.test/x").await;
            let status = status_json(&proxy).await;
            ROUTES.iter().all(|(name, _)| {
                let want = match *name {
                    "algonomy" => "failing",
                    "filed" => "missing",
                    other => sources.expected_state(other),
                };
                route(&status, name)["state"] == want
            })
        },
    )
    .await;

    let url = format!("http://{}/", proxy.admin_addr().expect("admin"));
    let dir = env.dir().to_path_buf();
    let shot = dir.join("status-1280x800.png");
    let narrow = dir.join("status-400.png");
    let bin2 = bin.clone();
    let dom_js = tokio::task::spawn_blocking(move || {
        let profile = dir.join("chromium-profile");
        run_chromium(
            &bin2,
            &profile,
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,800",
            ],
        );
        run_chromium(
            &bin2,
            &profile,
            &url,
            &[
                &format!("--screenshot={}", narrow.display()),
                "--window-size=400,900",
            ],
        );
        // Past the script's first refresh (2 s) from /status.
        run_chromium(
            &bin2,
            &profile,
            &url,
            &[
                "--dump-dom",
                "--window-size=1280,800",
                "--virtual-time-budget=5000",
            ],
        )
    })
    .await
    .expect("chromium runs");

    assert_eq!(
        png_size(&env.dir().join("status-1280x800.png")),
        (1280, 800)
    );
    let (width, _) = png_size(&env.dir().join("status-400.png"));
    assert_eq!(width, 400);

    // With JavaScript off a browser shows the page as served (headless
    // Chromium cannot dump or shoot a page with scripts disabled).
    let served = admin_get(&proxy, "/").await;
    assert_eq!(served.status(), StatusCode::OK);
    let dom_off = String::from_utf8_lossy(served.body()).into_owned();
    check_rows(&dom_off, &sources, "as served");
    check_rows(&dom_js, &sources, "JavaScript on");
    // The script ran (the page's CSP let it): it unhides the "refreshed
    // every 2 s" note, and marks the page once it has redrawn it from
    // /status.
    assert!(
        dom_js.contains("class=\"js\" style=\"display: inline;\""),
        "the script did not run:\n{dom_js}"
    );
    assert!(
        dom_js.contains("data-refreshed=\""),
        "the script did not refresh from /status:\n{dom_js}"
    );
    assert!(!dom_off.contains("data-refreshed=\""));
    assert!(
        dom_off.contains("<span class=\"js\">"),
        "without JavaScript the note stays hidden:\n{dom_off}"
    );
    proxy.shutdown().await;
    assert_no_foreign_panic();
}
