//! `sidekey status` as a terminal table: one line per route (state,
//! credential, token timing, the last minute's traffic and latency), a
//! line under any route whose token last failed, and a closing verdict.

use std::fmt::Write;

use super::model::{human_secs, RouteStatus, Status};

/// Whether every route has a usable credential (the exit status).
pub fn healthy(status: &Status) -> bool {
    status.routes.iter().all(|r| r.usable)
}

/// The table for `status`, fetched from `admin`.
pub fn render(status: &Status, admin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sidekey at {admin}: up {}, config {} (loaded {}){}",
        human_secs(status.uptime_s as f64),
        status.config.file.as_deref().unwrap_or("(not from a file)"),
        status.config.loaded_at,
        status
            .config
            .last_reload
            .as_ref()
            .map_or(String::new(), |r| format!(
                ", last reload {} at {}",
                r.outcome, r.at
            ))
    );
    if let Some(cache) = &status.shared_cache {
        let text = |key: &str| clean(cache.get(key).and_then(|v| v.as_str()).unwrap_or("?"));
        let errors = cache
            .get("errors_total")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "shared token cache {}: {} ({errors} failed commands)",
            text("redis"),
            text("state")
        );
    }
    let header = [
        "ROUTE",
        "STATE",
        "CREDENTIAL",
        "TOKEN",
        "1 MIN REQ/ERR",
        "P50/P99 MS",
    ];
    let rows: Vec<[String; 6]> = status.routes.iter().map(cells).collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    line(&mut out, &header.map(String::from), &widths);
    for (row, route) in rows.iter().zip(&status.routes) {
        line(&mut out, row, &widths);
        if let Some(f) = route.token.as_ref().and_then(|t| {
            t.last_failure
                .as_ref()
                .filter(|_| t.consecutive_failures > 0 || !t.usable)
                .map(|f| (t.consecutive_failures, f))
        }) {
            let (n, failure) = f;
            let _ = match n {
                0 => writeln!(out, "  {:w$}  {}", "", clean(&failure.cause), w = widths[0]),
                n => writeln!(
                    out,
                    "  {:w$}  {n} failure{}, last {} ago: {}",
                    "",
                    if n == 1 { "" } else { "s" },
                    human_secs(failure.ago_s),
                    clean(&failure.cause),
                    w = widths[0]
                ),
            };
        }
    }
    let bad: Vec<&str> = status
        .routes
        .iter()
        .filter(|r| !r.usable)
        .map(|r| r.name.as_str())
        .collect();
    if bad.is_empty() {
        let _ = writeln!(
            out,
            "ok: all {} routes have a usable credential",
            status.routes.len()
        );
    } else {
        let _ = writeln!(
            out,
            "NOT OK: no usable credential for {}",
            bad.iter().map(|n| clean(n)).collect::<Vec<_>>().join(", ")
        );
    }
    out
}

fn line(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
    let mut text = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            text.push_str(cell);
        } else {
            let _ = write!(text, "{cell:w$}  ");
        }
    }
    let _ = writeln!(out, "{}", text.trim_end());
}

/// Text for a terminal: control characters (escape sequences) shown as `?`.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn cells(r: &RouteStatus) -> [String; 6] {
    let credential = match &r.token {
        Some(t) => format!(
            "{}/{}{}",
            r.credential,
            t.source,
            if t.one_time { " one-time" } else { "" }
        ),
        None => r.credential.clone(),
    };
    let token = match &r.token {
        None => "fixed".to_string(),
        Some(t) => {
            let mut parts = Vec::new();
            match t.expires_in_s {
                Some(s) if s > 0.0 => parts.push(format!("expires in {}", human_secs(s))),
                Some(_) => parts.push("expired".to_string()),
                None => {}
            }
            if let Some(p) = &t.pool {
                parts.push(format!("pool {}/{}", p.ready, p.size));
            }
            if parts.is_empty() {
                parts.push(if r.usable { "no expiry" } else { "none" }.to_string());
            }
            parts.join(", ")
        }
    };
    let m = &r.traffic.last_minute;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    [
        clean(&r.name),
        r.state.as_str().to_string(),
        credential,
        token,
        format!("{}/{}", m.requests, m.errors),
        format!(
            "{}/{}",
            ms(r.traffic.latency_ms.p50),
            ms(r.traffic.latency_ms.p99)
        ),
    ]
}
