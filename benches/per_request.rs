//! Micro-benchmarks of the work sidekey does for every request, through the
//! library's public API: route lookup, credential injection (Basic header,
//! query parameter, URL signing), a token cache hit and building the
//! upstream request.
//!
//! `cargo bench --bench per_request` (add `-- route` etc. to filter). The
//! end-to-end comparison with nginx is `bench/compare.sh`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, HOST, USER_AGENT};
use http::uri::Scheme;
use secrecy::SecretString;
use sidekey::config::{
    AuthConfig, HostPattern, RouteConfig, SignAlgorithm, SignedUrlConfig, UpstreamUrl,
};
use sidekey::credential::{Basic, Credential, HeaderInjector, SignedUrl};
use sidekey::metrics::Metrics;
use sidekey::route::{Route, RouteTable};
use sidekey::target::Target;
use sidekey::token::cache::TokenCache;
use sidekey::token::endpoint::{FetchFuture, Fetched, TokenFetcher};
use sidekey::token::{TokenSource, TokenStats};
use sidekey::wire::h1::fields::RawFields;
use sidekey::wire::headers::{strip_hop_by_hop, ForwardHeaders};

fn route(i: usize) -> Route {
    let host = format!("api{i}.example.com");
    Route::new(
        RouteConfig {
            name: format!("route{i}"),
            upstream: Some(UpstreamUrl::https(&host)),
            host: HostPattern::Exact(host),
            listen: None,
            path_prefix: None,
            headers: vec![],
            auth: AuthConfig::None,
            allow: vec![],
            tls: None,
        },
        Credential::None,
    )
}

fn target(query: &str) -> Target {
    Target::new(
        Scheme::HTTPS,
        "consumer.kouponmedia.com".into(),
        "/v2/consumer/offers",
        query,
    )
}

/// Route lookup among 1,000 exact-host routes.
fn route_lookup(c: &mut Criterion) {
    let table = RouteTable::new((0..1000).map(route).collect());
    let mut g = c.benchmark_group("route_find_1000_exact");
    g.bench_function("hit", |b| {
        b.iter(|| table.find(black_box("api517.example.com"), black_box("/v1/items")))
    });
    g.bench_function("hit_mixed_case", |b| {
        b.iter(|| table.find(black_box("API517.Example.com"), black_box("/v1/items")))
    });
    g.bench_function("miss", |b| {
        b.iter(|| table.find(black_box("unknown.example.org"), black_box("/v1/items")))
    });
    g.finish();
}

/// `signed_url`: append key and timestamp, HMAC the URL, append the signature.
fn url_signing(c: &mut Criterion) {
    let signer = |algorithm| {
        SignedUrl::new(&SignedUrlConfig {
            key: SecretString::from("6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5"),
            secret: SecretString::from("4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE"),
            key_param: "identifier".into(),
            timestamp_param: "timestamp".into(),
            signature_param: "authSignature".into(),
            algorithm,
        })
    };
    let mut g = c.benchmark_group("signed_url_apply");
    for (name, algorithm) in [
        ("hmac_sha1", SignAlgorithm::HmacSha1),
        ("hmac_sha256", SignAlgorithm::HmacSha256),
    ] {
        let s = signer(algorithm);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || target("zip=10001&radius=25"),
                |t| s.apply(t, black_box(1_700_000_000)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// `query`: percent-encode and append `param=<token>`.
fn query_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("target_append_param");
    g.bench_function("plain_token", |b| {
        b.iter_batched_ref(
            || target("a=1&b=2"),
            |t| {
                t.append_param(
                    black_box("access_token"),
                    black_box("ed430a95c58fd7d2830c9dc453396cf5"),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("token_needing_escapes", |b| {
        b.iter_batched_ref(
            || target("a=1&b=2"),
            |t| t.append_param(black_box("access_token"), black_box("a/b+c=d&e f~g")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A typical client request's headers.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_static("api.copilot.cx"));
    h.insert(USER_AGENT, HeaderValue::from_static("legacy-app/1.0"));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic Y2xpZW50OmNvcHk="),
    );
    h
}

/// The same client fields as the upstream request starts from.
fn forward_headers() -> ForwardHeaders {
    let client = b"Host: api.copilot.cx\r\nUser-Agent: legacy-app/1.0\r\n\
                   Accept: application/json\r\nAuthorization: Basic Y2xpZW50OmNvcHk=\r\n\r\n";
    ForwardHeaders::new(RawFields::parse(client).expect("valid fields"))
}

/// `basic`: replace the client's Authorization with the precomputed value.
fn header_injection(c: &mut Criterion) {
    let basic = Basic::new(
        &SecretString::from("ABABABABQQIRZ"),
        &SecretString::from("k9H2Nd3T5j5EW2Fu160l11Hal3x3oa"),
    )
    .expect("valid credentials");
    c.bench_function("basic_apply", |b| {
        b.iter_batched_ref(forward_headers, |h| basic.apply(h), BatchSize::SmallInput)
    });
}

/// A token endpoint that always answers at once with a 15-minute token.
struct FixedEndpoint;

impl TokenFetcher for FixedEndpoint {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async {
            Ok(Fetched {
                value: SecretString::from("ed430a95c58fd7d2830c9dc453396cf5"),
                lifetime: Some(Duration::from_secs(900)),
            })
        })
    }
}

/// A cached token (`source = "endpoint"`) once it is fetched: the lock-free
/// hit, and the whole `Authorization: Bearer {token}` injection (which also
/// pays for `block_on`, the credential API being async).
fn token_cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let stats = TokenStats::new("bench", Arc::new(Metrics::new()));
    let cache = Arc::new(TokenCache::new(
        Box::new(FixedEndpoint),
        Duration::from_secs(60),
        stats,
    ));
    runtime
        .block_on(cache.token())
        .expect("the first fetch succeeds");
    let bearer = HeaderInjector::new(
        AUTHORIZATION,
        Some("Bearer {token}"),
        TokenSource::Provider(cache.clone()),
    )
    .expect("a valid template");
    let mut g = c.benchmark_group("token_cache_hit");
    g.bench_function("cached", |b| b.iter(|| black_box(&cache).cached()));
    g.bench_function("bearer_header_apply", |b| {
        b.iter_batched_ref(
            forward_headers,
            |h| runtime.block_on(bearer.apply(h)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The rest of building the upstream request: hop-by-hop hygiene (on a
/// request without and a response with `Connection`) and the request URI.
fn upstream_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("upstream_request");
    g.bench_function("strip_hop_by_hop_none", |b| {
        b.iter_batched_ref(request_headers, strip_hop_by_hop, BatchSize::SmallInput)
    });
    g.bench_function("strip_hop_by_hop_keep_alive", |b| {
        b.iter_batched_ref(
            || {
                let mut h = request_headers();
                h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
                h
            },
            strip_hop_by_hop,
            BatchSize::SmallInput,
        )
    });
    // What each request does: the upstream target built from the route's
    // base path and the client's path and query, its origin form handed
    // to the connection.
    let authority: std::sync::Arc<str> = "consumer.kouponmedia.com".into();
    g.bench_function("target_build", |b| {
        b.iter(|| {
            let mut t = Target::joined(
                Scheme::HTTPS,
                authority.clone(),
                &["/base", black_box("/v2/consumer/offers")],
                black_box("zip=10001&radius=25"),
            );
            t.take_origin_form()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    route_lookup,
    url_signing,
    query_append,
    header_injection,
    token_cache_hit,
    upstream_request
);
criterion_main!(benches);
