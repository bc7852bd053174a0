//! The route matcher: which route a request belongs to.
//!
//! Exact hosts are found in a hash map (O(1) in the number of routes);
//! wildcard routes (`*.example.com`) by looking up each suffix of the host
//! (O(labels)). Among routes of one host, the longest matching
//! `path_prefix` wins; a prefix matches on segment boundaries (`/v1`
//! matches `/v1` and `/v1/x`, not `/v1x`). Once routed, a request must
//! pass the route's `[[route.allow]]` rules ([`allow`]).

mod allow;

use foldhash::HashMap;
use std::sync::Arc;

use crate::client::connector::Identity;
use http::HeaderValue;

use crate::config::{HostPattern, RouteConfig};
use crate::credential::Credential;
use crate::metrics::{Metrics, RequestCounter, RouteLabels, RouteName};
use crate::traffic::RouteTraffic;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// A route ready to serve: its config, its built credential and its
/// metric label.
pub struct Route {
    pub(crate) config: RouteConfig,
    pub(crate) credential: Credential,
    pub(crate) label: RouteName,
    /// This route's series of `sidekey_upstream_duration_seconds`, looked
    /// up once (see [`Route::with_metrics`]).
    pub(crate) upstream_latency: Option<Histogram>,
    /// This route's `sidekey_requests_total` series.
    pub(crate) requests: RequestCounter,
    /// This route's counters for the status views (atomics only; see
    /// [`crate::traffic`]).
    pub(crate) traffic: Arc<RouteTraffic>,
    /// The `Host` header of the route's upstream, when the route names one
    /// (wildcard routes without `upstream` go to the request's host).
    pub(crate) host_header: Option<HeaderValue>,
    /// This route's `sidekey_requests_not_allowed_total` series.
    pub(crate) not_allowed: Option<Counter>,
    /// `[[route.allow]]`, indexed.
    allow: allow::AllowIndex,
    /// The client certificate its upstream connections present
    /// (`[route.tls]`), as the connector numbers it.
    pub(crate) identity: Identity,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("config", &self.config)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Whether `path` is under this route's `path_prefix` (any path when
    /// it has none).
    pub(crate) fn serves_path(&self, path: &str) -> bool {
        prefix_matches(self.config.path_prefix.as_deref(), path)
    }

    pub fn new(config: RouteConfig, credential: Credential) -> Route {
        let label = RouteName::new(&config.name);
        let requests = RequestCounter::new(label.clone());
        let host_header = config
            .upstream
            .as_ref()
            .and_then(|u| HeaderValue::try_from(&*u.authority).ok());
        let allow = allow::AllowIndex::new(&config.allow);
        Route {
            allow,
            config,
            credential,
            label,
            upstream_latency: None,
            identity: Identity::NONE,
            requests,
            // Replaced by the registry's (kept across reloads) in
            // `with_metrics`.
            traffic: Arc::new(RouteTraffic::new(0)),
            host_header,
            not_allowed: None,
        }
    }

    /// Whether the route's `[[route.allow]]` rules let `method` and `path`
    /// through; a refusal is counted.
    pub fn allows(&self, method: &http::Method, path: &str) -> bool {
        let allowed = self.allow.allows(method, path);
        if !allowed {
            if let Some(counter) = &self.not_allowed {
                counter.inc();
            }
        }
        allowed
    }

    /// Sets the client certificate its upstream connections present.
    pub(crate) fn with_identity(mut self, identity: Identity) -> Route {
        self.identity = identity;
        self
    }

    /// Attaches the route's per-request metric series.
    pub(crate) fn with_metrics(mut self, metrics: &Metrics) -> Route {
        let histogram = metrics
            .upstream_latency
            .get_or_create(&self.labels())
            .clone();
        self.upstream_latency = Some(histogram);
        self.not_allowed = Some(metrics.not_allowed.get_or_create(&self.labels()).clone());
        self.traffic = metrics.traffic.route(&self.config.name);
        self
    }

    /// `{route="name"}`, for per-route metrics.
    pub(crate) fn labels(&self) -> RouteLabels {
        RouteLabels {
            route: self.label.clone(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }
}

/// All routes, indexed for lookup.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// host → route indices, longest `path_prefix` first.
    exact: HashMap<String, Vec<usize>>,
    /// ".suffix" → route indices, longest `path_prefix` first.
    wildcard: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, usize>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, route) in routes.into_iter().enumerate() {
            let map = match &route.config.host {
                HostPattern::Exact(h) => table.exact.entry(h.clone()),
                HostPattern::Wildcard(s) => table.wildcard.entry(s.clone()),
            };
            map.or_default().push(i);
            table.by_name.insert(route.config.name.clone(), i);
            table.routes.push(Arc::new(route));
        }
        let routes = &table.routes;
        let prefix_len = |i: &usize| {
            std::cmp::Reverse(routes[*i].config.path_prefix.as_deref().map_or(0, str::len))
        };
        for list in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            list.sort_by_key(prefix_len);
        }
        table
    }

    pub(crate) fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name).map(|i| &self.routes[*i])
    }

    /// Whether some route serves `host` (any case, no port), whatever its
    /// path: what a `CONNECT` to that host may be intercepted for (each
    /// request inside is then routed by its path).
    pub fn serves_host(&self, host: &str) -> bool {
        self.find_with(host, |_| true).is_some()
    }

    /// The route for `host` (any case, no port) and request `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.find_with(host, |r| r.serves_path(path))
    }

    fn find_with(&self, host: &str, serves: impl Fn(&Route) -> bool) -> Option<&Arc<Route>> {
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            &lowered
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(found) = self
            .exact
            .get(host)
            .and_then(|l| self.first_serving(l, &serves))
        {
            return Some(found);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // Longest suffix first: "a.b.example.com" tries ".b.example.com",
        // then ".example.com", then ".com".
        host.match_indices('.').find_map(|(i, _)| {
            self.wildcard
                .get(&host[i..])
                .and_then(|l| self.first_serving(l, &serves))
        })
    }

    fn first_serving(
        &self,
        candidates: &[usize],
        serves: &impl Fn(&Route) -> bool,
    ) -> Option<&Arc<Route>> {
        candidates
            .iter()
            .map(|i| &self.routes[*i])
            .find(|r| serves(r))
    }
}

fn prefix_matches(prefix: Option<&str>, path: &str) -> bool {
    let Some(prefix) = prefix else {
        return true;
    };
    match path.strip_prefix(prefix) {
        Some(rest) => {
            (rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')) && !climbs(rest)
        }
        None => false,
    }
}

/// Whether `rest` holds a `.` or `..` segment, written plainly or
/// percent-encoded (`%2e%2e`, `..%2f`): most upstreams resolve those, so
/// `/v1/../admin` is not under `/v1` whatever its spelling.
fn climbs(rest: &str) -> bool {
    if !rest.contains('.') && !rest.contains('%') {
        return false;
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
    decoded
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|segment| segment == b"." || segment == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, UpstreamUrl};

    fn route(name: &str, host: HostPattern, prefix: Option<&str>) -> Route {
        Route::new(
            RouteConfig {
                name: name.into(),
                upstream: Some(UpstreamUrl::https("x")),
                host,
                listen: None,
                path_prefix: prefix.map(Into::into),
                headers: vec![],
                auth: AuthConfig::None,
                allow: vec![],
                tls: None,
            },
            Credential::None,
        )
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("api", HostPattern::Exact("api.example.com".into()), None),
            route(
                "v1",
                HostPattern::Exact("api.example.com".into()),
                Some("/v1"),
            ),
            route(
                "v1-users",
                HostPattern::Exact("api.example.com".into()),
                Some("/v1/users"),
            ),
            route("wild", HostPattern::Wildcard(".example.com".into()), None),
            route(
                "deep",
                HostPattern::Wildcard(".eu.example.com".into()),
                None,
            ),
        ])
    }

    fn find<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        t.find(host, path).map(|r| r.name())
    }

    #[test]
    fn exact_host_longest_prefix_wins() {
        let t = table();
        assert_eq!(find(&t, "api.example.com", "/v1/users/7"), Some("v1-users"));
        assert_eq!(find(&t, "API.Example.COM", "/v1/x"), Some("v1"));
        assert_eq!(find(&t, "api.example.com", "/v1"), Some("v1"));
        assert_eq!(
            find(&t, "api.example.com", "/v1x"),
            Some("api"),
            "segment boundary"
        );
        assert_eq!(
            find(&t, "api.example.com.", "/"),
            Some("api"),
            "trailing dot"
        );
    }

    #[test]
    fn dot_segments_do_not_climb_out_of_a_prefix() {
        let t = table();
        for path in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/..%2fadmin",
            "/v1/./../admin",
            "/v1/users/../../admin",
        ] {
            assert_eq!(find(&t, "api.example.com", path), Some("api"), "{path}");
        }
        assert_eq!(find(&t, "api.example.com", "/v1/a..b/.c"), Some("v1"));
        assert_eq!(find(&t, "api.example.com", "/v1/users/7"), Some("v1-users"));
    }

    #[test]
    fn wildcards_match_subdomains_most_specific_first() {
        let t = table();
        assert_eq!(find(&t, "other.example.com", "/"), Some("wild"));
        assert_eq!(find(&t, "a.b.example.com", "/"), Some("wild"));
        assert_eq!(find(&t, "x.eu.example.com", "/"), Some("deep"));
        assert_eq!(
            find(&t, "example.com", "/"),
            None,
            "the apex is not a subdomain"
        );
        assert_eq!(find(&t, "example.org", "/"), None);
        assert_eq!(find(&t, "evil-example.com", "/"), None);
    }

    #[test]
    fn by_name() {
        assert_eq!(table().by_name("deep").map(|r| r.name()), Some("deep"));
    }
}
