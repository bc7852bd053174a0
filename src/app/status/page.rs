//! The status page (`GET /` on the admin listener): one self-contained
//! HTML document, no external assets. The server renders it whole (it
//! works with JavaScript off, and then reloads itself every 10 s); a small
//! script re-reads `/status` every 2 s and updates the cells in place
//! with `textContent` (never `innerHTML`), reloading the page when the
//! routes change. Every text the server writes goes through [`esc`].
//!
//! The page is served with a Content-Security-Policy that allows only
//! its own inline style and script (by hash) and `fetch` to itself.

use std::fmt::Write;
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::model::{human_secs, Counts, RouteStatus, State, Status, TokenStatus};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
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

/// The page's `Content-Security-Policy`.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = |text: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
        };
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    })
}

/// The whole page for `status`.
pub fn render(status: &Status) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<title>sidekey status</title>");
    out.push_str("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>");
    let _ = write!(out, "<style>{STYLE}</style></head><body>");
    header(&mut out, status);
    out.push_str("<main><table id=\"routes\"><thead><tr><th>Route</th><th>State</th><th>Token</th><th>Last minute</th><th>Latency (1 min)</th><th>Requests / errors, 60 s</th></tr></thead><tbody>");
    for route in &status.routes {
        row(&mut out, route);
    }
    if status.routes.is_empty() {
        out.push_str("<tr><td colspan=\"6\">No routes configured.</td></tr>");
    }
    out.push_str("</tbody></table></main>");
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

fn summary(status: &Status) -> (String, &'static str) {
    let total = status.routes.len();
    let bad = status.routes.iter().filter(|r| !r.usable).count();
    if bad == 0 {
        (
            format!("Every route ({total}) has a usable credential"),
            "ok",
        )
    } else {
        (
            format!("No usable credential: {bad} of {total} routes"),
            "bad",
        )
    }
}

fn header(out: &mut String, status: &Status) {
    let (text, class) = summary(status);
    let _ = write!(
        out,
        "<header><h1>sidekey</h1><p id=\"summary\" class=\"{class}\">{}</p><dl class=\"meta\">",
        esc(&text)
    );
    let reload = status.config.last_reload.as_ref().map_or_else(
        || "none".to_string(),
        |r| format!("{} at {}", r.outcome, r.at),
    );
    let listeners = status
        .listeners
        .iter()
        .map(|l| format!("{} {}", l.role, l.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let shared = match &status.shared_cache {
        None => "none".to_string(),
        Some(v) => {
            let text = |key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_string);
            match (text("redis"), text("state")) {
                (Some(redis), Some(state)) => format!("{redis}: {state}"),
                (None, Some(state)) => state,
                _ => "configured".to_string(),
            }
        }
    };
    for (label, id, value) in [
        ("Up", "uptime", human_secs(status.uptime_s as f64)),
        (
            "Config",
            "config",
            format!(
                "{}, loaded {}",
                status.config.file.as_deref().unwrap_or("(not from a file)"),
                status.config.loaded_at
            ),
        ),
        ("Last reload", "reload", reload),
        ("Listeners", "listeners", listeners),
        ("Shared cache", "shared", shared),
    ] {
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd id=\"{id}\">{}</dd></div>",
            esc(&value)
        );
    }
    let _ = write!(
        out,
        "</dl><p class=\"stamp\">As of <span id=\"generated\">{}</span><span class=\"js\"> · refreshed every 2 s</span></p></header>",
        esc(&status.generated_at)
    );
}

fn row(out: &mut String, r: &RouteStatus) {
    let state = r.state.as_str();
    let _ = write!(
        out,
        "<tr data-route=\"{}\" class=\"st-{state}\"><td data-label=\"Route\"><b class=\"name\">{}</b>",
        esc(&r.name),
        esc(&r.name)
    );
    let prefix = r.path_prefix.as_deref().unwrap_or("");
    let _ = write!(
        out,
        "<div class=\"sub\">{}{} → {}</div><div class=\"sub\">{}</div></td>",
        esc(&r.hosts.join(", ")),
        esc(prefix),
        esc(&r.upstream),
        esc(&credential_text(r)),
    );
    let _ = write!(
        out,
        "<td data-label=\"State\"><span class=\"badge\" data-f=\"state\">{}</span></td>",
        esc(&state.replace('_', " "))
    );
    out.push_str("<td data-label=\"Token\" data-f=\"token\">");
    for (class, line) in token_lines(r.token.as_ref()) {
        let _ = write!(out, "<div class=\"{class}\">{}</div>", esc(&line));
    }
    out.push_str("</td>");
    let (minute, classes) = minute_text(&r.traffic.last_minute, r.traffic.retries_401.last_minute);
    let _ = write!(
        out,
        "<td data-label=\"Last minute\"><div data-f=\"minute\">{}</div><div class=\"sub\" data-f=\"classes\">{}</div></td>",
        esc(&minute),
        esc(&classes)
    );
    let _ = write!(
        out,
        "<td data-label=\"Latency\" data-f=\"latency\">{}</td>",
        esc(&latency_text(
            r.traffic.latency_ms.p50,
            r.traffic.latency_ms.p99
        ))
    );
    let (req, err) = sparkline_points(&r.traffic.per_second.requests, &r.traffic.per_second.errors);
    let m = &r.traffic.last_minute;
    let _ = write!(
        out,
        "<td data-label=\"60 s\"><svg class=\"spark\" viewBox=\"0 0 120 28\" width=\"120\" height=\"28\" role=\"img\"><title data-f=\"spark\">{} requests, {} errors in the last minute</title><polyline class=\"req\" points=\"{req}\"/><path class=\"err\" d=\"{err}\"/></svg></td></tr>",
        m.requests, m.errors
    );
}

/// `header · endpoint` etc.
fn credential_text(r: &RouteStatus) -> String {
    match &r.token {
        Some(t) => format!(
            "{} · {}{}",
            r.credential,
            t.source,
            if t.one_time { " (one-time)" } else { "" }
        ),
        None => r.credential.clone(),
    }
}

/// The token cell, one (class, text) per line.
fn token_lines(t: Option<&TokenStatus>) -> Vec<(&'static str, String)> {
    let Some(t) = t else {
        return vec![("", "fixed credential".to_string())];
    };
    let mut lines = Vec::new();
    let mut first = Vec::new();
    if let Some(s) = t.expires_in_s {
        first.push(if s > 0.0 {
            format!("expires in {}", human_secs(s))
        } else {
            "expired".to_string()
        });
    }
    if let Some(s) = t.next_refresh_in_s {
        first.push(format!("next fetch in {}", human_secs(s.max(0.0))));
    }
    if first.is_empty() && t.state == State::Valid {
        first.push("no expiry".to_string());
    }
    if !first.is_empty() {
        lines.push(("", first.join(" · ")));
    }
    if let Some(p) = &t.pool {
        lines.push((
            "",
            format!("pool {}/{} ({} minting)", p.ready, p.size, p.minting),
        ));
    }
    if let Some(f) = &t.last_failure {
        // A problem now (no usable token, or failing) in red; a past one
        // in grey.
        let class = if !t.usable || t.consecutive_failures > 0 {
            "fail"
        } else {
            "old"
        };
        let ago = human_secs(f.ago_s);
        lines.push((
            class,
            match t.consecutive_failures {
                // Nothing failed in a row (a missing file, no stored
                // token): the cause alone.
                0 if !t.usable => f.cause.clone(),
                0 => format!("last failure {ago} ago: {}", f.cause),
                1 => format!("1 failure, {ago} ago: {}", f.cause),
                n => format!("{n} failures, last {ago} ago: {}", f.cause),
            },
        ));
    }
    if lines.is_empty() {
        lines.push(("", "no token yet".to_string()));
    }
    lines
}

/// The last minute's cell: requests and errors, then the classes.
fn minute_text(m: &Counts, retries: u64) -> (String, String) {
    (
        format!("{} requests · {} errors", m.requests, m.errors),
        format!(
            "2xx {} · 4xx {} · 5xx {} · 401 {} · retried {}",
            m.c2xx, m.c4xx, m.c5xx, m.c401, retries
        ),
    )
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(v) if v < 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn latency_text(p50: Option<f64>, p99: Option<f64>) -> String {
    format!("p50 {} · p99 {}", ms(p50), ms(p99))
}

/// A sparkline (120×28) on one scale: the requests' polyline points,
/// and the errors' path (a bar for each second with errors).
fn sparkline_points(requests: &[u64], errors: &[u64]) -> (String, String) {
    let max = requests
        .iter()
        .chain(errors)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = 120.0 / (requests.len().max(errors.len()).max(2) - 1) as f64;
    let y = |v: u64| 27.0 - v as f64 / max * 25.0;
    let line = requests
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let bars = errors
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(i, v)| format!("M{:.1},27V{:.1}", i as f64 * step, y(*v)))
        .collect::<String>();
    (line, bars)
}

const STYLE: &str = r#"
:root{--valid:#1a7f37;--refreshing:#0969da;--failing:#cf222e;--missing:#9a6700;--needs_authorize:#8250df;--unknown:#6e7781;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
body{margin:0;padding:1rem 1.5rem}
h1{font-size:1.4rem;margin:0 0 .25rem}
#summary{font-weight:600;margin:.25rem 0 .75rem}
#summary.ok{color:var(--valid)}#summary.bad{color:var(--failing)}
dl.meta{display:flex;flex-wrap:wrap;gap:.25rem 1.5rem;margin:0;font-size:.85rem}
dl.meta div{min-width:0}dl.meta dt{color:#59636e;font-size:.75rem}dl.meta dd{margin:0;overflow-wrap:anywhere}
.stamp{color:#59636e;font-size:.75rem;margin:.5rem 0 1rem}
.js{display:none}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d1d9e0;font-size:.85rem}
th,td{text-align:left;vertical-align:top;padding:.5rem .6rem;border-bottom:1px solid #d1d9e0}
th{background:#eef1f4;font-weight:600;font-size:.75rem;color:#59636e}
tr>td:first-child{border-left:5px solid var(--st)}
.name{font-size:.95rem}.sub{color:#59636e;font-size:.75rem;overflow-wrap:anywhere}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;color:#fff;background:var(--st);font-weight:600;white-space:nowrap}
.fail{color:var(--failing)}.old{color:#59636e}
td[data-f=token]{overflow-wrap:anywhere;max-width:28rem}
.spark polyline,.spark path{fill:none;stroke-width:1.5}.spark .req{stroke:#0969da}.spark .err{stroke:#cf222e;stroke-width:2}
.st-valid{--st:var(--valid)}.st-refreshing{--st:var(--refreshing)}.st-failing{--st:var(--failing)}.st-missing{--st:var(--missing)}.st-needs_authorize{--st:var(--needs_authorize)}.st-unknown{--st:var(--unknown)}
@media (max-width:720px){body{padding:.5rem}table,thead,tbody{display:block;width:auto;border:0;background:none}thead{display:none}tr{display:grid;grid-template-columns:1fr 1fr;margin:0 0 .75rem;border:1px solid #d1d9e0;border-left:5px solid var(--st);background:#fff}tr>td:first-child{border-left:0}td{display:block;border-bottom:1px solid #eef1f4;padding:.35rem .5rem}td:first-child,td[data-f=token]{grid-column:1/3}td::before{content:attr(data-label);display:block;color:#59636e;font-size:.7rem;font-weight:600}td[data-f=token]{max-width:none}}
"#;

const SCRIPT: &str = r#"
(function(){
document.querySelectorAll('.js').forEach(function(e){e.style.display='inline'});
function hs(s){if(s<0)return '-'+hs(-s);s=Math.floor(s);if(s<60)return s+'s';if(s<3600)return Math.floor(s/60)+'m '+(s%60)+'s';if(s<86400)return Math.floor(s/3600)+'h '+Math.floor(s%3600/60)+'m';return Math.floor(s/86400)+'d '+Math.floor(s%86400/3600)+'h'}
function ms(v){return v==null?'\u2013':(v<10?v.toFixed(1):v.toFixed(0))+' ms'}
function tokenLines(t){
 if(!t)return [['','fixed credential']];
 var l=[],f=[];
 if(t.expires_in_s!=null)f.push(t.expires_in_s>0?'expires in '+hs(t.expires_in_s):'expired');
 if(t.next_refresh_in_s!=null)f.push('next fetch in '+hs(Math.max(0,t.next_refresh_in_s)));
 if(!f.length&&t.state==='valid')f.push('no expiry');
 if(f.length)l.push(['',f.join(' \u00b7 ')]);
 if(t.pool)l.push(['','pool '+t.pool.ready+'/'+t.pool.size+' ('+t.pool.minting+' minting)']);
 if(t.last_failure){var n=t.consecutive_failures,a=hs(t.last_failure.ago_s),c=t.last_failure.cause;
  l.push([(!t.usable||n>0)?'fail':'old',n===0?(t.usable?'last failure '+a+' ago: '+c:c):(n===1?'1 failure, '+a+' ago: '+c:n+' failures, last '+a+' ago: '+c)])}
 if(!l.length)l.push(['','no token yet']);
 return l}
function pts(a,max){var step=120/(Math.max(a.length,2)-1);return a.map(function(v,i){return (i*step).toFixed(1)+','+(27-v/max*25).toFixed(1)}).join(' ')}
function bars(a,max){var step=120/(Math.max(a.length,2)-1);return a.map(function(v,i){return v>0?'M'+(i*step).toFixed(1)+',27V'+(27-v/max*25).toFixed(1):''}).join('')}
function set(row,f,text){var e=row.querySelector('[data-f='+f+']');if(e&&e.textContent!==text)e.textContent=text}
function update(s){
 var rows=document.querySelectorAll('#routes tbody tr[data-route]');
 if(rows.length!==s.routes.length){location.reload();return}
 for(var i=0;i<rows.length;i++){if(rows[i].dataset.route!==s.routes[i].name){location.reload();return}}
 s.routes.forEach(function(r,i){
  var row=rows[i],st=r.state;row.className='st-'+st;
  set(row,'state',st.replace('_',' '));
  var cell=row.querySelector('[data-f=token]');cell.textContent='';
  tokenLines(r.token).forEach(function(x){var d=document.createElement('div');d.className=x[0];d.textContent=x[1];cell.appendChild(d)});
  var m=r.traffic.last_minute;
  set(row,'minute',m.requests+' requests \u00b7 '+m.errors+' errors');
  set(row,'classes','2xx '+m['2xx']+' \u00b7 4xx '+m['4xx']+' \u00b7 5xx '+m['5xx']+' \u00b7 401 '+m['401']+' \u00b7 retried '+r.traffic.retries_401.last_minute);
  set(row,'latency','p50 '+ms(r.traffic.latency_ms.p50)+' \u00b7 p99 '+ms(r.traffic.latency_ms.p99));
  set(row,'spark',m.requests+' requests, '+m.errors+' errors in the last minute');
  var q=r.traffic.per_second.requests,e=r.traffic.per_second.errors,max=Math.max(1,Math.max.apply(null,q.concat(e)));
  row.querySelector('.req').setAttribute('points',pts(q,max));row.querySelector('.err').setAttribute('d',bars(e,max));
 });
 var bad=s.routes.filter(function(r){return !r.usable}).length,n=s.routes.length,sum=document.getElementById('summary');
 sum.textContent=bad===0?'Every route ('+n+') has a usable credential':'No usable credential: '+bad+' of '+n+' routes';
 sum.className=bad===0?'ok':'bad';
 document.getElementById('uptime').textContent=hs(s.uptime_s);
 document.getElementById('generated').textContent=s.generated_at;
 document.body.setAttribute('data-refreshed',s.generated_at);
 var rl=s.config.last_reload;document.getElementById('reload').textContent=rl?rl.outcome+' at '+rl.at:'none';
}
function tick(){fetch('status',{cache:'no-store'}).then(function(r){return r.json()}).then(update).catch(function(){}).then(function(){setTimeout(tick,2000)})}
setTimeout(tick,2000);
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_csp_pins_the_inline_style_and_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(0.4), "0s");
        assert_eq!(human_secs(61.0), "1m 1s");
        assert_eq!(human_secs(7322.0), "2h 2m");
        assert_eq!(human_secs(90061.0), "1d 1h");
        assert_eq!(human_secs(-5.0), "-5s");
    }

    #[test]
    fn sparklines_share_one_scale() {
        let (req, err) = sparkline_points(&[0, 4, 2], &[0, 2, 0]);
        assert_eq!(req, "0.0,27.0 60.0,2.0 120.0,14.5");
        assert_eq!(err, "M60.0,27V14.5");
        let (_, none) = sparkline_points(&[1, 1], &[0, 0]);
        assert_eq!(none, "", "no errors, no bars");
    }

    /// A document whose every text field holds markup.
    fn hostile_status() -> Status {
        let evil = "<script>alert(1)</script>\"'&";
        let counts = serde_json::json!({"requests": 3, "errors": 1, "1xx": 0, "2xx": 2,
            "3xx": 0, "4xx": 0, "5xx": 1, "401": 0});
        serde_json::from_value(serde_json::json!({
            "version": 1, "generated_at": evil, "started_at": evil, "uptime_s": 5,
            "config": {"file": evil, "loaded_at": evil,
                       "last_reload": {"at": evil, "outcome": evil}},
            "listeners": [{"role": evil, "addr": evil}],
            "shared_cache": {"state": evil},
            "all_usable": false,
            "routes": [{
                "name": evil, "hosts": [evil], "path_prefix": evil, "upstream": evil,
                "credential": evil, "state": "failing", "usable": false,
                "token": {"source": evil, "one_time": false, "state": "failing",
                    "usable": false, "fetched_at": evil, "expires_at": evil,
                    "expires_in_s": 3.0, "next_refresh_at": evil, "next_refresh_in_s": 1.0,
                    "last_failure": {"at": evil, "ago_s": 2.0, "cause": evil},
                    "consecutive_failures": 2, "pool": null},
                "traffic": {"last_minute": counts, "since_start": counts,
                    "latency_ms": {"p50": 1.5, "p99": 20.0},
                    "retries_401": {"last_minute": 0, "since_start": 0},
                    "per_second": {"requests": [0, 3], "errors": [0, 1]}}
            }]
        }))
        .expect("a valid document")
    }

    #[test]
    fn every_text_on_the_page_is_escaped() {
        let page = render(&hostile_status());
        // The page's own script is the only one.
        assert_eq!(page.matches("<script>").count(), 1, "{page}");
        assert!(!page.contains("alert(1)</script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(
            page.contains("data-route=\"&lt;script&gt;"),
            "attributes too"
        );
        assert!(page.contains("class=\"st-failing\""));
        assert!(page.contains("2 failures, last 2s ago: &lt;script&gt;"));
        assert!(page.contains("No usable credential: 1 of 1 routes"));
    }

    #[test]
    fn the_table_shows_no_control_characters_and_says_when_unhealthy() {
        let mut status = hostile_status();
        status.routes[0].name = "a\u{1b}[31mred".to_string();
        status.shared_cache = Some(serde_json::json!({
            "redis": "redis://10.0.0.5:6379/0\u{1b}[2J", "state": "unreachable", "errors_total": 3
        }));
        let table = super::super::table::render(&status, "127.0.0.1:9901");
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(
            table.contains(
                "shared token cache redis://10.0.0.5:6379/0?[2J: unreachable (3 failed commands)"
            ),
            "{table}"
        );
        assert!(table.contains("a?[31mred"), "{table}");
        assert!(table.contains("2 failures, last 2s ago"), "{table}");
        assert!(
            table.ends_with("NOT OK: no usable credential for a?[31mred\n"),
            "{table}"
        );
        assert!(!super::super::table::healthy(&status));
        status.routes[0].usable = true;
        assert!(super::super::table::healthy(&status));
    }
}
