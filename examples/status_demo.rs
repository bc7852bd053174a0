//! The status page with something to show: local stand-ins of the seed
//! APIs and every other kind of token source (the set the status tests
//! use), Algonomy's token endpoint down and the token file empty, and a
//! trickle of requests through sidekey. Prints the admin listener's URL
//! and runs until Ctrl-C.
//!
//! `cargo run --example status_demo`, then open the URL, or take the
//! README's screenshot:
//! `chromium --headless --no-sandbox --window-size=1280,800 --screenshot=docs/status-page.png URL`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use http::StatusCode;
use support::status::AllSources;
use support::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let sources = AllSources::new(&env, false);
    sources
        .apis
        .algonomy
        .go_down(StatusCode::SERVICE_UNAVAILABLE);
    let proxy = sidekey::app::RunningProxy::start(sources.config(&env)).await?;
    std::fs::write(&sources.token_file, "")?;
    let admin = proxy
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?;
    println!("status page: http://{admin}/  (Ctrl-C to stop)");
    let addr = proxy.proxy_addr();
    let traffic = async {
        let mut round = 0u64;
        loop {
            // A varying load: every route now and then, the fixed one often.
            if round % 3 == 0 {
                sources.traffic(addr).await;
            }
            for _ in 0..(round % 7) {
                let _ = get(addr, "http://fixed.example.test/items").await;
                let _ = get(addr, "http://api.copilot.cx/v1/users").await;
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    };
    tokio::select! {
        _ = traffic => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    proxy.shutdown().await;
    Ok(())
}
