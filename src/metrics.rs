//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Labels are route names, status codes and outcomes only: never a host
//! from a request (unbounded) and never a credential.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One route's `sidekey_requests_total` counting, with the counter of the
/// last status seen kept at hand: most requests of a route end with the
/// same status, and then counting skips the family's lock and the hashing
/// of the labels.
pub(crate) struct RequestCounter {
    route: RouteName,
    last: ArcSwapOption<(u16, Counter)>,
}

impl RequestCounter {
    pub(crate) fn new(route: RouteName) -> RequestCounter {
        RequestCounter {
            route,
            last: ArcSwapOption::empty(),
        }
    }

    /// Counts one request of this route answered with `status`.
    pub(crate) fn inc(&self, metrics: &Metrics, status: u16) {
        if let Some(last) = &*self.last.load() {
            if last.0 == status {
                last.1.inc();
                return;
            }
        }
        let counter = metrics.request_counter(&self.route, status);
        counter.inc();
        self.last.store(Some(Arc::new((status, counter))));
    }
}

/// A route name as a label value: built once per route, so labelling a
/// request clones a pointer instead of allocating a string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct RouteName(Arc<str>);

impl RouteName {
    pub(crate) fn new(name: &str) -> RouteName {
        RouteName(Arc::from(name))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: RouteName,
    pub(crate) status: u16,
    pub(crate) class: &'static str,
}

/// "1xx" .. "5xx".
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: RouteName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) route: RouteName,
    pub(crate) outcome: &'static str,
}

/// `sidekey_config_reloads_total`: per outcome only (a reload is not a
/// route's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandshakeLabels {
    /// `connect` (inside a CONNECT tunnel) or `tls` (the TLS listener).
    pub(crate) listener: &'static str,
    /// `ok`, `refused` (e.g. an SNI no route names) or `timeout`.
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StallLabels {
    /// `upstream` (a response body's source went silent) or `client` (it
    /// sent nothing of its request body, or read nothing of its response).
    pub(crate) side: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric sidekey exports. Created once per process; survives reloads.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) upstream_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub active_connections: Gauge,
    pub(crate) token_fetches: Family<OutcomeLabels, Counter>,
    pub(crate) token_cache_hits: Family<RouteLabels, Counter>,
    pub(crate) token_wait: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) token_expiry_seconds: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub(crate) body_stalls: Family<StallLabels, Counter>,
    pub(crate) tls_handshakes: Family<HandshakeLabels, Counter>,
    pub(crate) leaves_minted: Counter,
    pub(crate) tunnels_open: Gauge,
    pub(crate) upgrades_open: Gauge,
    pub(crate) not_allowed: Family<RouteLabels, Counter>,
    /// Per-route traffic for the status views (not exported to Prometheus).
    pub(crate) traffic: crate::traffic::Registry,
    /// `[proxy.shared_cache]`: Redis commands that failed or timed out.
    pub(crate) shared_cache_errors: Counter,
    /// `oauth2_code` routes whose refresh token was refused (`invalid_grant`):
    /// 1 until `sidekey authorize` runs again.
    pub(crate) token_needs_authorize: Family<RouteLabels, Gauge>,
    /// Client header fields left out because their name holds `_`.
    pub(crate) header_fields_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sidekey");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route (\"-\" when none matched) and status",
            requests.clone(),
        );
        let upstream_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Client connections open on the proxy listeners",
            active_connections.clone(),
        );
        let token_fetches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_fetches",
            "Token fetches by route and outcome (ok, error)",
            token_fetches.clone(),
        );
        let token_cache_hits = Family::<RouteLabels, Counter>::default();
        registry.register(
            "token_cache_hits",
            "Requests served with a cached token",
            token_cache_hits.clone(),
        );
        let token_wait = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "token_wait_seconds",
            "Time requests spent waiting for a token",
            token_wait.clone(),
        );
        let token_expiry_seconds = Family::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until the cached token of a route expires, as of its last fetch",
            token_expiry_seconds.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by outcome",
            reloads.clone(),
        );
        let body_stalls = Family::<StallLabels, Counter>::default();
        registry.register(
            "body_idle_timeouts",
            "Exchanges ended by proxy.body_idle_timeout, by who was silent (upstream, client)",
            body_stalls.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes of intercepted connections, by listener (connect, tls) and outcome (ok, refused, timeout)",
            tls_handshakes.clone(),
        );
        let leaves_minted = Counter::default();
        registry.register(
            "leaf_certificates_minted",
            "Leaf certificates minted by the local CA",
            leaves_minted.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "tunnels_open",
            "Intercepted CONNECT tunnels open",
            tunnels_open.clone(),
        );
        let upgrades_open = Gauge::default();
        registry.register(
            "upgrades_open",
            "Upgraded connections (WebSocket) open: bytes flowing both ways after a 101",
            upgrades_open.clone(),
        );
        let not_allowed = Family::<RouteLabels, Counter>::default();
        registry.register(
            "requests_not_allowed",
            "Requests refused by a route's [[route.allow]] rules (403, nothing forwarded)",
            not_allowed.clone(),
        );
        let shared_cache_errors = Counter::default();
        registry.register(
            "shared_cache_errors",
            "Redis commands of [proxy.shared_cache] that failed or timed out (each replica then used its own cache)",
            shared_cache_errors.clone(),
        );
        let token_needs_authorize = Family::<RouteLabels, Gauge>::default();
        registry.register(
            "token_needs_authorize",
            "1 while an oauth2_code route's refresh token is refused (invalid_grant): run `sidekey authorize ROUTE`",
            token_needs_authorize.clone(),
        );
        let header_fields_dropped = Counter::default();
        registry.register(
            "header_fields_dropped",
            "Client request header fields left out because their name holds '_' (underscores_in_headers), or folds to a framing, hop-by-hop or injected name",
            header_fields_dropped.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because stderr did not keep up (the process's, over all reloads)",
            crate::access_log::dropped().clone(),
        );
        Metrics {
            not_allowed,
            header_fields_dropped,
            registry,
            traffic: Default::default(),
            shared_cache_errors,
            token_needs_authorize,
            upgrades_open,
            body_stalls,
            tls_handshakes,
            leaves_minted,
            tunnels_open,
            requests,
            upstream_latency,
            active_connections,
            token_fetches,
            token_cache_hits,
            token_wait,
            token_expiry_seconds,
            reloads,
        }
    }

    /// Counts one answered request.
    fn request_counter(&self, route: &RouteName, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
                class: status_class(status),
            })
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_requests_by_route_and_status() {
        let m = Metrics::new();
        let copilot = RouteName::new("copilot");
        let counter = RequestCounter::new(copilot);
        // The status changes and changes back: each gets its own series.
        for status in [200, 200, 503, 200] {
            counter.inc(&m, status);
        }
        RequestCounter::new(RouteName::new("-")).inc(&m, 403);
        let text = m.encode();
        assert!(
            text.contains(
                "sidekey_requests_total{route=\"copilot\",status=\"200\",class=\"2xx\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sidekey_requests_total{route=\"copilot\",status=\"503\",class=\"5xx\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("sidekey_requests_total{route=\"-\",status=\"403\",class=\"4xx\"} 1"));
    }
}
