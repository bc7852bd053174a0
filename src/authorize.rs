//! `sidekey authorize ROUTE`: the OAuth2 authorization-code flow, run once
//! for an `oauth2_code` route.
//!
//! 1. Listen on the route's `redirect_uri` (a loopback address).
//! 2. Hand out the authorization URL (`client_id`, `redirect_uri`,
//!    `response_type=code`, a random `state`, `scope` if set) for the
//!    operator to open in a browser.
//! 3. Take the callback at the `redirect_uri` path: a missing or wrong
//!    `state` is refused (possible forgery) and nothing is written.
//! 4. Exchange the `code` at `token_url` ([`oauth2::code_exchange`]), through
//!    the same client as the proxy (`ca_file`, `connect_to`).
//! 5. Write the `access_token`, and the `refresh_token` and expiry when the
//!    provider gives them, to `store` ([`store::write_tokens`]: atomic,
//!    0600), and, with `[proxy.shared_cache]`, sealed to Redis, where the
//!    replicas renewing the token look for the newest refresh token.
//!
//! The browser gets a page saying what happened either way. The whole
//! flow is bounded by a timeout. Neither logs nor errors ever hold the
//! code, the token or the client secret.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode, Uri};
use http_body_util::Full;
use percent_encoding::percent_decode_str;
use secrecy::SecretString;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::client::connector::{Connector, UpstreamError};
use crate::client::pool::Upstreams;
use crate::config::{Config, OAuth2CodeConfig, TokenConfig};
use crate::metrics::Metrics;
use crate::redact::url_without_query;
use crate::token::code::{self, SharedRecord};
use crate::token::endpoint::{self, FetchError};
use crate::token::shared::SharedCache;
use crate::token::store::{self, StoreError, Tokens};
use crate::token::{oauth2, BuildError};
use crate::wire::h1::request::RequestError;
use crate::wire::h1::server::{serve_once_spoken, ClientRequest, Limits};
use crate::wire::reply::Reply;

/// The callback listener's limits: a browser's request, nothing more.
fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        body_idle_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        max_headers: 64,
        stalls: Default::default(),
    }
}

fn bad_request(_: &RequestError) -> Reply<Full<Bytes>> {
    page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "sidekey could not read this request.",
    )
    .into()
}

/// Bound on the code exchange request.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum AuthorizeError {
    #[error("no route named \"{0}\" in the config")]
    NoRoute(String),
    #[error("route \"{0}\" does not get its token from an oauth2_code source")]
    NotOAuth2Code(String),
    #[error("redirect_uri {0} is not a loopback http:// address with a port")]
    RedirectUri(String),
    #[error("cannot listen on {addr} (the redirect_uri): {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] UpstreamError),
    #[error("no authorization callback arrived within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the authorization server answered with error \"{0}\" (access denied?)")]
    Denied(String),
    #[error("the callback carried no state: refused (possible forgery); nothing was written")]
    MissingState,
    #[error("the callback's state is not the one sidekey sent: refused (possible forgery); nothing was written")]
    WrongState,
    #[error("the callback carried no code; nothing was written")]
    MissingCode,
    // The cause is in the message (the browser page shows it), so it is
    // not also a `source`, which would print it twice.
    #[error("exchanging the code for a token failed: {0}")]
    Exchange(FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("proxy.shared_cache: {0}")]
    SharedCache(#[from] crate::token::shared::SetupError),
}

impl AuthorizeError {
    fn status(&self) -> StatusCode {
        match self {
            AuthorizeError::Denied(_)
            | AuthorizeError::MissingState
            | AuthorizeError::WrongState
            | AuthorizeError::MissingCode => StatusCode::BAD_REQUEST,
            AuthorizeError::Exchange(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A fresh `state`: 128 random bits as 32 hex characters.
pub(crate) fn new_state() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The URL the operator opens: `authorize_url` plus `client_id`,
/// `redirect_uri`, `state`, `response_type=code` and `scope` if set, each
/// percent-encoded.
pub(crate) fn authorization_url(config: &OAuth2CodeConfig, state: &str) -> String {
    let mut url = config.authorize_url.to_string();
    url.push(if config.authorize_url.query().is_some() {
        '&'
    } else {
        '?'
    });
    let redirect_uri = config.redirect_uri.to_string();
    let mut params = vec![
        ("client_id", config.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("state", state),
        ("response_type", "code"),
    ];
    if let Some(scope) = &config.scope {
        params.push(("scope", scope));
    }
    url.push_str(&endpoint::form_encode(params));
    url
}

/// The address to listen on for `redirect_uri` (validated at load as
/// `http://127.0.0.1|localhost|[::1]:PORT/...`).
pub(crate) fn listen_addr(redirect_uri: &Uri) -> Result<SocketAddr, AuthorizeError> {
    let bad = || AuthorizeError::RedirectUri(url_without_query(redirect_uri));
    let port = redirect_uri.port_u16().ok_or_else(bad)?;
    let host = redirect_uri.host().ok_or_else(bad)?;
    let ip: IpAddr = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad())?,
    };
    if !ip.is_loopback() {
        return Err(bad());
    }
    Ok(SocketAddr::new(ip, port))
}

/// Runs the flow for `route`; `show_url` is given the authorization URL
/// once sidekey listens. Returns the path of the written store.
pub async fn run(
    config: &Config,
    route: &str,
    timeout: Duration,
    show_url: impl FnOnce(&str),
) -> Result<PathBuf, AuthorizeError> {
    let route_config = config
        .route(route)
        .ok_or_else(|| AuthorizeError::NoRoute(route.to_string()))?;
    let (token_config, code_config) = match route_config.auth.token() {
        Some(t @ TokenConfig::OAuth2Code(c)) => (t, c.clone()),
        _ => return Err(AuthorizeError::NotOAuth2Code(route.to_string())),
    };
    let shared = match &config.proxy.shared_cache {
        None => None,
        Some(settings) => {
            let cache = SharedCache::new(settings, &config.proxy.extra_roots, &Metrics::new())?;
            cache.key(route, token_config).map(|key| SharedRecord {
                key: format!("{key}:refresh"),
                cache: Arc::new(cache),
            })
        }
    };
    let upstreams = Upstreams::new(
        Connector::new(&config.proxy, config.client_identities())?,
        config.proxy.pool_idle_timeout,
        config.proxy.pool_max_idle_per_thread(),
    );
    let addr = listen_addr(&code_config.redirect_uri)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| AuthorizeError::Bind { addr, cause })?;
    let state = new_state();
    show_url(&authorization_url(&code_config, &state));
    tracing::info!(
        route,
        redirect_uri = %url_without_query(&code_config.redirect_uri),
        "waiting for the authorization callback"
    );

    let flow = Arc::new(Flow {
        route: route.to_string(),
        config: code_config,
        state,
        upstreams,
        shared,
        claimed: AtomicBool::new(false),
    });
    let (done_tx, mut done_rx) = mpsc::channel(1);
    let accept = tokio::spawn(accept_loop(listener, flow, done_tx));
    let outcome = tokio::select! {
        outcome = done_rx.recv() => outcome.unwrap_or(Err(AuthorizeError::Timeout(timeout))),
        _ = tokio::time::sleep(timeout) => Err(AuthorizeError::Timeout(timeout)),
    };
    accept.abort();
    outcome
}

type Outcome = Result<PathBuf, AuthorizeError>;

/// One run of the flow.
struct Flow {
    route: String,
    config: OAuth2CodeConfig,
    state: String,
    upstreams: Upstreams,
    /// Where the replicas keep the tokens in Redis, when configured.
    shared: Option<SharedRecord>,
    /// Set by the first callback; any later one is turned away.
    claimed: AtomicBool,
}

/// Serves the callback listener with sidekey's own HTTP/1.1 server, one
/// request per connection.
async fn accept_loop(listener: TcpListener, flow: Arc<Flow>, done: mpsc::Sender<Outcome>) {
    // Never stopped: the flow ends by aborting this task.
    let (_keep, stop) = watch::channel(false);
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // E.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let flow = flow.clone();
        let done = done.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // What the callback on this connection decided, reported once
            // the browser has its page (the connection is not kept alive).
            let slot: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
            let service = |req: ClientRequest| {
                let (flow, slot) = (flow.clone(), slot.clone());
                async move { Reply::from(answer(&flow, &req.uri, &slot).await) }
            };
            serve_once_spoken(stream, limits(), stop, bad_request, service).await;
            let outcome = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(outcome) = outcome {
                let _ = done.send(outcome).await;
            }
        });
    }
}

/// Answers one browser request; a callback's outcome goes to `slot`.
async fn answer(flow: &Flow, uri: &Uri, slot: &Mutex<Option<Outcome>>) -> Response<Full<Bytes>> {
    if uri.path() != flow.config.redirect_uri.path() {
        return page(
            StatusCode::NOT_FOUND,
            "Not here",
            &format!(
                "sidekey is waiting for the authorization callback at {}.",
                flow.config.redirect_uri.path()
            ),
        );
    }
    if flow.claimed.swap(true, Ordering::SeqCst) {
        return page(
            StatusCode::CONFLICT,
            "Already handled",
            "This authorization was already handled. You can close this window.",
        );
    }
    tracing::info!(route = %flow.route, "authorization callback received");
    let outcome = callback(flow, uri.query().unwrap_or("")).await;
    let response = match &outcome {
        Ok(_) => page(
            StatusCode::OK,
            "sidekey is authorized",
            &format!(
                "The token for route \"{}\" is stored. You can close this window.",
                flow.route
            ),
        ),
        Err(e) => page(e.status(), "sidekey authorization failed", &e.to_string()),
    };
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    response
}

/// Checks the callback's query, exchanges the code and writes the store.
async fn callback(flow: &Flow, query: &str) -> Outcome {
    let params = decode_query(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(error) = param("error") {
        return Err(AuthorizeError::Denied(error_code(error)));
    }
    match param("state") {
        None | Some("") => return Err(AuthorizeError::MissingState),
        Some(state) if !same(state.as_bytes(), flow.state.as_bytes()) => {
            return Err(AuthorizeError::WrongState)
        }
        Some(_) => {}
    }
    let code = match param("code") {
        Some(code) if !code.is_empty() => SecretString::from(code.to_string()),
        _ => return Err(AuthorizeError::MissingCode),
    };
    let mut request = oauth2::code_exchange(&flow.config, &code)?;
    request.identity = endpoint::identity(&flow.upstreams, flow.config.client_tls.as_ref())?;
    let (status, body) = endpoint::send(&flow.upstreams, &request, EXCHANGE_TIMEOUT)
        .await
        .map_err(AuthorizeError::Exchange)?;
    let fetched = endpoint::parse_response(
        &request.host(),
        status,
        &body,
        &oauth2::code_exchange_spec(),
    )
    .map_err(AuthorizeError::Exchange)?;
    let now_ms = store::now_ms();
    let tokens = Tokens {
        access_token: fetched.value,
        refresh_token: code::refresh_token_of(&body),
        expires_at: fetched.lifetime.map(|l| now_ms / 1000 + l.as_secs()),
        updated_at_ms: now_ms,
    };
    let path = flow.config.store.clone();
    store::write_tokens(&path, &tokens)?;
    let in_redis = match &flow.shared {
        Some(shared) => {
            let saved = shared.save(&tokens).await;
            if !saved {
                tracing::warn!(
                    route = %flow.route,
                    "could not store the token in the shared cache (Redis): replicas read it from their own store file"
                );
            }
            saved
        }
        None => false,
    };
    tracing::info!(
        route = %flow.route,
        store = %path.display(),
        refresh_token = tokens.refresh_token.is_some(),
        in_redis,
        "token stored"
    );
    Ok(path)
}

/// A query string's pairs, percent- and `+`-decoded.
fn decode_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// An RFC 6749 error code as received, if it is one (a short word), else
/// a placeholder: free text from the callback is never repeated.
fn error_code(error: &str) -> String {
    let ok = !error.is_empty()
        && error.len() <= 40
        && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        error.to_string()
    } else {
        "unrecognised".to_string()
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn page(status: StatusCode, title: &str, message: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>\n",
        escape(message)
    );
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // One request per connection.
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenRequestStyle;

    fn config(scope: Option<&str>) -> OAuth2CodeConfig {
        OAuth2CodeConfig {
            authorize_url: "https://www.copernica.com/en/authorize".parse().unwrap(),
            token_url: "https://api.copernica.com/v1/token".parse().unwrap(),
            token_request: TokenRequestStyle::GetQuery,
            client_id: "client&key".into(),
            client_secret: SecretString::from("secret"),
            redirect_uri: "http://127.0.0.1:8765/callback".parse().unwrap(),
            store: PathBuf::from("copernica.token"),
            scope: scope.map(str::to_string),
            client_tls: None,
        }
    }

    #[test]
    fn the_authorization_url_is_one_encoded_line() {
        let state = new_state();
        assert_eq!(state.len(), 32);
        assert!(state.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(state, new_state());
        let url = authorization_url(&config(Some("read write")), &state);
        assert_eq!(
            url,
            format!(
                "https://www.copernica.com/en/authorize?client_id=client%26key&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&state={state}&response_type=code&scope=read%20write"
            )
        );
        assert!(!url.contains('\n'));
        let url = authorization_url(&config(None), &state);
        assert!(!url.contains("scope"));
    }

    #[test]
    fn an_authorize_url_with_a_query_keeps_it() {
        let mut c = config(None);
        c.authorize_url = "https://id.example/auth?tenant=x".parse().unwrap();
        assert!(
            authorization_url(&c, "s").starts_with("https://id.example/auth?tenant=x&client_id=")
        );
    }

    #[test]
    fn listens_on_the_loopback_redirect_address() {
        let addr = |u: &str| listen_addr(&u.parse().unwrap());
        assert_eq!(
            addr("http://127.0.0.1:8765/callback").unwrap(),
            "127.0.0.1:8765".parse().unwrap()
        );
        assert_eq!(
            addr("http://localhost:9000/").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            addr("http://[::1]:9000/cb").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert!(addr("http://10.0.0.1:9000/cb").is_err());
        assert!(addr("http://127.0.0.1/cb").is_err());
    }

    #[test]
    fn callback_queries_are_decoded() {
        assert_eq!(
            decode_query("state=a%20b&code=c%2Bd+e&flag"),
            vec![
                ("state".into(), "a b".into()),
                ("code".into(), "c+d e".into()),
                ("flag".into(), String::new())
            ]
        );
    }

    #[test]
    fn only_error_codes_are_repeated() {
        assert_eq!(error_code("access_denied"), "access_denied");
        assert_eq!(error_code("<script>"), "unrecognised");
        assert_eq!(error_code("secret value 123"), "unrecognised");
    }

    #[test]
    fn state_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[tokio::test]
    async fn pages_escape_their_message() {
        use http_body_util::BodyExt;
        let p = page(StatusCode::BAD_REQUEST, "t", "<b>&");
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        let body = p.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("<p>&lt;b&gt;&amp;</p>"), "{body}");
    }
}
