//! The `[proxy]` table: listeners, upstream TLS trust, timeouts and limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::file::FileProxy;
use super::intercept::InterceptSettings;
use super::shared_cache::SharedCacheSettings;
use super::upstream_proxy::UpstreamProxy;
use super::Ctx;

/// What to do with a request for a host that no route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmatched {
    /// 403 with a JSON error (the default: sidekey is never an open proxy).
    Reject,
    /// Forward it unchanged, with no credential.
    Passthrough,
}

/// Which forwarding headers sidekey adds to upstream requests.
// `XForwarded` names the `X-Forwarded-*` headers (the config value `x-forwarded`);
// clippy checks variant names only on crate-private enums.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// None (the default: the upstream sees the request as the app sent it).
    None,
    /// `Via: 1.1 sidekey`.
    Via,
    /// `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto`.
    XForwarded,
}

/// What to do with a client header field whose name holds `_`
/// (`underscores_in_headers`). Whatever the rule, a field whose name folds
/// to a framing, hop-by-hop or injected one is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Underscores {
    /// Leave it out and count it (the default, as nginx does).
    Drop,
    /// Forward it.
    Allow,
    /// Refuse the request (400).
    Reject,
}

/// Validated `[proxy]` settings.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Extra roots for upstream TLS, loaded from `ca_file`.
    pub(crate) extra_roots: Arc<Vec<CertificateDer<'static>>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) unmatched: Unmatched,
    /// `"host:port"` (lowercase) → address actually dialled.
    pub(crate) connect_to: HashMap<String, String>,
    pub(crate) drain_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    /// The longest silence while a body streams, either way.
    pub(crate) body_idle_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) forwarded: Forwarded,
    /// Request bodies up to this size are kept so that a request whose
    /// token was rejected (401) can be retried once with a fresh token.
    pub(crate) retry_body_limit: usize,
    /// `/readyz` fails while a token-based route has no valid token.
    pub(crate) ready_requires_tokens: bool,
    /// Worker threads serving client connections (one per core by default).
    pub(crate) workers: usize,
    pub(crate) underscores: Underscores,
    /// The largest request body forwarded; 0: no limit.
    pub(crate) max_request_body: u64,
    /// Idle HTTP/1.1 connections kept per upstream, over all workers.
    pub(crate) pool_max_idle_per_host: usize,
    /// `[proxy.intercept]`: TLS interception (CONNECT tunnels and the TLS
    /// listener), with the local CA already loaded and checked.
    pub intercept: Option<InterceptSettings>,
    /// `upstream_proxy` (with `no_upstream_proxy`): the corporate HTTP
    /// proxy upstream connections go through.
    pub upstream_proxy: Option<UpstreamProxy>,
    /// `[proxy.shared_cache]`: the Redis that replicas share tokens through.
    pub shared_cache: Option<Arc<SharedCacheSettings>>,
}

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl ProxySettings {
    pub(super) fn from_file(raw: FileProxy, ctx: &mut Ctx) -> Option<ProxySettings> {
        ctx.set_scope("proxy".to_string());
        let listen = ctx.socket_addr("listen", raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN));
        let admin = match raw.admin.as_deref() {
            None => Some(None),
            Some(a) => match ctx.expand("admin", a) {
                Some(a) if a.is_empty() => Some(None),
                Some(a) => ctx.parse_addr("admin", &a).map(Some),
                None => None,
            },
        };
        let extra_roots = load_roots(ctx, raw.ca_file.as_deref());
        let connect_timeout = ctx.duration(
            "connect_timeout",
            raw.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let request_timeout = ctx.duration(
            "request_timeout",
            raw.request_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let unmatched = ctx.choice(
            "unmatched",
            raw.unmatched.as_deref(),
            Unmatched::Reject,
            &[
                ("reject", Unmatched::Reject),
                ("passthrough", Unmatched::Passthrough),
            ],
        );
        let forwarded = ctx.choice(
            "forwarded",
            raw.forwarded.as_deref(),
            Forwarded::None,
            &[
                ("none", Forwarded::None),
                ("via", Forwarded::Via),
                ("x-forwarded", Forwarded::XForwarded),
            ],
        );
        let underscores = ctx.choice(
            "underscores_in_headers",
            raw.underscores_in_headers.as_deref(),
            Underscores::Drop,
            &[
                ("drop", Underscores::Drop),
                ("allow", Underscores::Allow),
                ("reject", Underscores::Reject),
            ],
        );
        let max_request_body = match raw.max_request_body.as_deref() {
            None => Some(0),
            Some(v) => ctx
                .expand("max_request_body", v)
                .and_then(|v| match parse_size(&v) {
                    Some(n) => Some(n as u64),
                    None => {
                        ctx.problem(
                            "max_request_body",
                            "not a size; write e.g. \"10MiB\" (0: no limit)",
                        );
                        None
                    }
                }),
        };
        let mut connect_to = HashMap::new();
        for (from, to) in &raw.connect_to {
            let key = format!("connect_to.\"{from}\"");
            let (Some(from), Some(to)) = (ctx.expand(&key, from), ctx.expand(&key, to)) else {
                continue;
            };
            if !has_port(&from) {
                ctx.problem(&key, "the key must be \"host:port\"");
                continue;
            }
            if !has_port(&to) {
                ctx.problem(&key, "the address must be \"host:port\"");
                continue;
            }
            connect_to.insert(from.to_ascii_lowercase(), to);
        }
        let drain_timeout = ctx.duration(
            "drain_timeout",
            raw.drain_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let header_read_timeout = ctx.duration(
            "header_read_timeout",
            raw.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        );
        let body_idle_timeout = ctx.duration(
            "body_idle_timeout",
            raw.body_idle_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let pool_idle_timeout = ctx.duration(
            "pool_idle_timeout",
            raw.pool_idle_timeout.as_deref(),
            Duration::from_secs(90),
        );
        if raw.idle_timeout.is_some() {
            ctx.problem(
                "idle_timeout",
                "not supported: header_read_timeout also bounds idle keep-alive connections",
            );
        }
        let retry_body_limit = match raw.retry_body_limit.as_deref() {
            None => Some(64 * 1024),
            Some(v) => ctx
                .expand("retry_body_limit", v)
                .and_then(|v| match parse_size(&v) {
                    Some(n) => Some(n),
                    None => {
                        ctx.problem(
                            "retry_body_limit",
                            "not a size; write e.g. \"64KiB\" or \"1MiB\"",
                        );
                        None
                    }
                }),
        };
        let max_header_bytes = raw.max_header_bytes.unwrap_or(64 * 1024);
        if max_header_bytes < 8192 {
            ctx.problem("max_header_bytes", "must be at least 8192");
        }
        let workers = match raw.workers {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) if (1..=1024).contains(&n) => n,
            Some(_) => {
                ctx.problem("workers", "must be between 1 and 1024");
                1
            }
        };
        let max_headers = raw.max_headers.unwrap_or(100);
        if max_headers == 0 {
            ctx.problem("max_headers", "must be at least 1");
        }
        let intercept = match &raw.intercept {
            None => Some(None),
            Some(i) => InterceptSettings::from_file(i, ctx).map(Some),
        };
        let upstream_proxy = UpstreamProxy::from_file(
            ctx,
            raw.upstream_proxy.as_deref(),
            raw.no_upstream_proxy.as_deref(),
        );
        let shared_cache = match &raw.shared_cache {
            None => Some(None),
            Some(c) => SharedCacheSettings::from_file(c, ctx).map(|c| Some(Arc::new(c))),
        };
        Some(ProxySettings {
            upstream_proxy: upstream_proxy?,
            listen: listen?,
            admin: admin?,
            extra_roots: Arc::new(extra_roots?),
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            unmatched: unmatched?,
            connect_to,
            drain_timeout: drain_timeout?,
            header_read_timeout: header_read_timeout?,
            body_idle_timeout: body_idle_timeout?,
            pool_idle_timeout: pool_idle_timeout?,
            max_header_bytes,
            max_headers,
            forwarded: forwarded?,
            retry_body_limit: retry_body_limit?,
            ready_requires_tokens: raw.ready_requires_tokens.unwrap_or(false),
            workers,
            underscores: underscores?,
            max_request_body: max_request_body?,
            pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(64),
            intercept: intercept?,
            shared_cache: shared_cache?,
        })
    }
}

impl ProxySettings {
    /// Idle upstream connections each worker thread keeps per upstream:
    /// `pool_max_idle_per_host` shared out over the threads (each keeps
    /// its own, so that a request never waits for a lock), rounded up.
    pub(crate) fn pool_max_idle_per_thread(&self) -> usize {
        self.pool_max_idle_per_host.div_ceil(self.workers)
    }
}

fn has_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// Parses "65536", "64KiB", "1MiB", "64kb".
pub(super) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Loads `ca_file`; "" (the seed default) means none.
fn load_roots(ctx: &mut Ctx, raw: Option<&str>) -> Option<Vec<CertificateDer<'static>>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    let value = ctx.expand("ca_file", raw)?;
    if value.is_empty() {
        return Some(Vec::new());
    }
    let path = ctx.path("ca_file", &value)?;
    let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(&path) {
        Ok(iter) => iter.collect(),
        Err(e) => {
            ctx.problem("ca_file", format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match certs {
        Ok(certs) if certs.is_empty() => {
            ctx.problem(
                "ca_file",
                format!("{} holds no PEM certificate", path.display()),
            );
            None
        }
        Ok(certs) => Some(certs),
        Err(e) => {
            ctx.problem("ca_file", format!("{}: bad PEM: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("1x"), None);
    }

    #[test]
    fn host_port() {
        assert!(has_port("api.copilot.cx:443"));
        assert!(has_port("[::1]:8443"));
        assert!(!has_port("api.copilot.cx"));
    }
}
