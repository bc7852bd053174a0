//! The `/status` document: one [`Status`] per request, collected from the
//! running config's routes, their token sources' snapshots and their
//! traffic counters. The same types are read back by `sidekey status`.
//!
//! The schema is versioned ([`SCHEMA_VERSION`]) and documented in the
//! README; fields are only ever added. Nothing in it is a secret: names,
//! hosts, URLs (which cannot carry userinfo or a query), kinds, states,
//! times, counts, and failure causes as a client's 503 names them.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ProcessInfo;
use crate::config::{AuthConfig, TokenConfig};
use crate::metrics::Metrics;
use crate::proxy::Runtime;
use crate::route::Route;
use crate::token::snapshot::{TokenSnapshot, TokenState};
use crate::traffic::{Totals, WINDOW_SECS};

/// Bumped only if a field changes meaning or goes away (never so far).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    /// When this document was made (RFC 3339, UTC).
    pub generated_at: String,
    pub started_at: String,
    pub uptime_s: u64,
    pub config: ConfigStatus,
    pub listeners: Vec<ListenerStatus>,
    /// The shared token cache's state (`redis`, `state`, `errors_total`);
    /// `null` when none is configured.
    pub shared_cache: Option<serde_json::Value>,
    /// Whether every route has a usable credential (`sidekey status`
    /// exits 0 exactly then).
    pub all_usable: bool,
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The config file (`null` when sidekey was started from text, as
    /// tests do).
    pub file: Option<String>,
    /// When the running config was loaded: at start or by the last good
    /// reload.
    pub loaded_at: String,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub at: String,
    /// `ok`, `invalid` (the file did not load) or `rejected` (it loaded
    /// but could not be applied, e.g. a listener could not be bound).
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// The config key that asks for it: `proxy.listen`, `proxy.admin`,
    /// `proxy.intercept.listen`, `route "NAME" listen`.
    pub role: String,
    pub addr: String,
}

/// A route's state, for colour and for `sidekey status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Valid,
    Refreshing,
    Failing,
    Missing,
    NeedsAuthorize,
    /// A state this build does not know (a newer sidekey's).
    #[serde(other)]
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Valid => "valid",
            State::Refreshing => "refreshing",
            State::Failing => "failing",
            State::Missing => "missing",
            State::NeedsAuthorize => "needs_authorize",
            State::Unknown => "unknown",
        }
    }
}

impl From<TokenState> for State {
    fn from(s: TokenState) -> State {
        match s {
            TokenState::Valid => State::Valid,
            TokenState::Refreshing => State::Refreshing,
            TokenState::Failing => State::Failing,
            TokenState::Missing => State::Missing,
            TokenState::NeedsAuthorize => State::NeedsAuthorize,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    /// The host patterns the route matches (`*.example.com` for a
    /// wildcard).
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    /// Where requests go; `https://{request host}` for a wildcard route
    /// without `upstream`.
    pub upstream: String,
    /// `none`, `basic`, `header`, `query`, `signed_url` or `aws_sigv4`.
    pub credential: String,
    /// The token's state for token routes, else `valid` (a fixed
    /// credential is always usable).
    pub state: State,
    /// Whether a request would get its credential now.
    pub usable: bool,
    /// Token routes only.
    pub token: Option<TokenStatus>,
    pub traffic: TrafficStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenStatus {
    /// `static`, `file`, `endpoint`, `oauth2_code`,
    /// `oauth2_client_credentials`.
    pub source: String,
    /// `endpoint` with `one_time = true`.
    pub one_time: bool,
    pub state: State,
    /// Whether a request would get a token now (a failing source may
    /// still hold a valid one).
    pub usable: bool,
    pub fetched_at: Option<String>,
    pub expires_at: Option<String>,
    pub expires_in_s: Option<f64>,
    pub next_refresh_at: Option<String>,
    pub next_refresh_in_s: Option<f64>,
    pub last_failure: Option<FailureStatus>,
    pub consecutive_failures: u32,
    pub pool: Option<PoolStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureStatus {
    pub at: String,
    pub ago_s: f64,
    /// The cause as a client's 503 names it.
    pub cause: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PoolStatus {
    pub ready: usize,
    pub minting: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficStatus {
    pub last_minute: Counts,
    pub since_start: Counts,
    /// Upstream latency over the last minute (request sent → response
    /// head), from a histogram; `null` without requests.
    pub latency_ms: Latency,
    /// Requests retried once with a fresh token after a 401.
    pub retries_401: Retries,
    /// The last 60 seconds, oldest first.
    pub per_second: Series,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// 5xx and 401 answers.
    pub errors: u64,
    #[serde(rename = "1xx")]
    pub c1xx: u64,
    #[serde(rename = "2xx")]
    pub c2xx: u64,
    #[serde(rename = "3xx")]
    pub c3xx: u64,
    #[serde(rename = "4xx")]
    pub c4xx: u64,
    #[serde(rename = "5xx")]
    pub c5xx: u64,
    #[serde(rename = "401")]
    pub c401: u64,
}

impl From<&Totals> for Counts {
    fn from(t: &Totals) -> Counts {
        Counts {
            requests: t.requests(),
            errors: t.errors(),
            c1xx: t.classes[0],
            c2xx: t.classes[1],
            c3xx: t.classes[2],
            c4xx: t.classes[3],
            c5xx: t.classes[4],
            c401: t.unauthorized,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Retries {
    pub last_minute: u64,
    pub since_start: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
}

/// Monotonic instants as wall-clock times, both read once.
struct Clock {
    mono: Instant,
    wall: SystemTime,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.mono {
            self.wall + (at - self.mono)
        } else {
            self.wall
                .checked_sub(self.mono - at)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    fn rfc3339(&self, at: Instant) -> String {
        rfc3339(self.wall(at))
    }

    /// Seconds from now to `at` (negative when past), to the millisecond.
    fn secs_until(&self, at: Instant) -> f64 {
        let s = if at >= self.mono {
            (at - self.mono).as_secs_f64()
        } else {
            -(self.mono - at).as_secs_f64()
        };
        (s * 1000.0).round() / 1000.0
    }
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Collects the status of the running proxy.
pub(crate) fn collect(runtime: &Runtime, metrics: &Metrics, process: &ProcessInfo) -> Status {
    let clock = Clock::now();
    let second = metrics.traffic.second();
    let routes: Vec<RouteStatus> = runtime
        .table
        .routes()
        .iter()
        .map(|r| route_status(r, &clock, second))
        .collect();
    let p = process.lock().clone();
    Status {
        version: SCHEMA_VERSION,
        generated_at: rfc3339(clock.wall),
        started_at: rfc3339(process.started),
        uptime_s: clock.mono.duration_since(process.started_mono).as_secs(),
        config: ConfigStatus {
            file: p.config_file.map(|f| f.display().to_string()),
            loaded_at: rfc3339(p.loaded_at),
            last_reload: p.last_reload.map(|(at, outcome)| ReloadStatus {
                at: rfc3339(at),
                outcome: outcome.to_string(),
            }),
        },
        listeners: p
            .listeners
            .iter()
            .map(|(role, addr)| ListenerStatus {
                role: role.clone(),
                addr: addr.to_string(),
            })
            .collect(),
        shared_cache: runtime.shared_cache.as_ref().map(|cache| cache.status()),
        all_usable: routes.iter().all(|r| r.usable),
        routes,
    }
}

fn route_status(route: &Route, clock: &Clock, second: u64) -> RouteStatus {
    let config = &route.config;
    let token = match (config.auth.token(), route.credential.token_source()) {
        (Some(token_config), Some(source)) => {
            Some(token_status(token_config, &source.snapshot(), clock))
        }
        _ => None,
    };
    let (state, usable) = match &token {
        Some(t) => (t.state, t.usable),
        None => (State::Valid, true),
    };
    let window = route.traffic.window(second);
    let minute = &window.last_minute;
    RouteStatus {
        name: config.name.clone(),
        hosts: vec![config.host.to_string()],
        path_prefix: config.path_prefix.clone(),
        upstream: config
            .upstream
            .as_ref()
            .map_or_else(|| "https://{request host}".to_string(), |u| u.to_string()),
        credential: credential_kind(&config.auth).to_string(),
        state,
        usable,
        token,
        traffic: TrafficStatus {
            last_minute: Counts::from(minute),
            since_start: Counts::from(&window.since_start),
            latency_ms: Latency {
                p50: minute.latency_quantile_ms(0.5).map(round2),
                p99: minute.latency_quantile_ms(0.99).map(round2),
            },
            retries_401: Retries {
                last_minute: minute.retries,
                since_start: window.since_start.retries,
            },
            per_second: Series {
                requests: window.requests_per_second,
                errors: window.errors_per_second,
            },
        },
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn credential_kind(auth: &AuthConfig) -> &'static str {
    match auth {
        AuthConfig::None => "none",
        AuthConfig::Basic { .. } => "basic",
        AuthConfig::Header { .. } => "header",
        AuthConfig::Query { .. } => "query",
        AuthConfig::SignedUrl(_) => "signed_url",
        AuthConfig::AwsSigV4(_) => "aws_sigv4",
    }
}

/// The source kind as the config names it (`source = "..."`).
fn source_kind(token: &TokenConfig) -> (&'static str, bool) {
    match token {
        TokenConfig::Static(_) => ("static", false),
        TokenConfig::File(_) => ("file", false),
        TokenConfig::Endpoint(e) => ("endpoint", e.one_time),
        TokenConfig::OAuth2Code(_) => ("oauth2_code", false),
        TokenConfig::OAuth2ClientCredentials(_) => ("oauth2_client_credentials", false),
        TokenConfig::Exec(_) => ("exec", false),
    }
}

fn token_status(config: &TokenConfig, snap: &TokenSnapshot, clock: &Clock) -> TokenStatus {
    let (source, one_time) = source_kind(config);
    TokenStatus {
        source: source.to_string(),
        one_time,
        state: snap.state.into(),
        usable: snap.usable,
        fetched_at: snap.fetched_at.map(|t| clock.rfc3339(t)),
        expires_at: snap.expires_at.map(|t| clock.rfc3339(t)),
        expires_in_s: snap.expires_at.map(|t| clock.secs_until(t)),
        next_refresh_at: snap.next_refresh_at.map(|t| clock.rfc3339(t)),
        next_refresh_in_s: snap.next_refresh_at.map(|t| clock.secs_until(t)),
        last_failure: snap.last_failure.as_ref().map(|f| FailureStatus {
            at: clock.rfc3339(f.at),
            ago_s: -clock.secs_until(f.at),
            cause: f.cause.clone(),
        }),
        consecutive_failures: snap.consecutive_failures,
        pool: snap.pool.map(|p| PoolStatus {
            ready: p.ready,
            minting: p.minting,
            size: p.size,
        }),
    }
}

/// A duration for people: `45s`, `12m 3s`, `2h 5m`, `3d 4h`; negative
/// as `-`.
pub fn human_secs(secs: f64) -> String {
    if secs < 0.0 {
        return format!("-{}", human_secs(-secs));
    }
    let s = secs.floor() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The window the traffic counts cover, for labels.
pub fn window_label() -> String {
    human_secs(Duration::from_secs(WINDOW_SECS).as_secs_f64())
}
