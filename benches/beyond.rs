//! Micro-benchmarks of the per-request work of issue 14's credentials and
//! rules: the `[[route.allow]]` check with 20 rules against a route
//! without rules, and `aws_sigv4` signing (unsigned payload) beside
//! `basic`. Criterion wall time; run with `cargo bench --bench beyond`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::uri::Scheme;
use http::Method;
use secrecy::SecretString;
use sidekey::config::{
    AllowRule, AuthConfig, AwsSigV4Config, HostPattern, PayloadSigning, RouteConfig, UpstreamUrl,
};
use sidekey::credential::{Basic, Credential, SigV4};
use sidekey::route::Route;
use sidekey::target::Target;
use sidekey::wire::h1::fields::RawFields;
use sidekey::wire::headers::ForwardHeaders;

fn route(allow: Vec<AllowRule>) -> Route {
    let host = "api.partner.example";
    Route::new(
        RouteConfig {
            name: "partner".into(),
            upstream: Some(UpstreamUrl::https(host)),
            host: HostPattern::Exact(host.into()),
            listen: None,
            path_prefix: None,
            headers: vec![],
            auth: AuthConfig::None,
            allow,
            tls: None,
        },
        Credential::None,
    )
}

/// 20 rules of two patterns each; `/v19/...` matches only the last.
fn twenty_rules() -> Vec<AllowRule> {
    (0..20)
        .map(|i| {
            let orders = format!("/v{i}/orders/*");
            let catalog = format!("/v{i}/catalog/**");
            AllowRule::new(&["GET", "HEAD"], &[&orders, &catalog]).expect("valid rule")
        })
        .collect()
}

fn allow_check(c: &mut Criterion) {
    let none = route(vec![]);
    let twenty = route(twenty_rules());
    let mut g = c.benchmark_group("allow_check");
    g.bench_function("no_rules", |b| {
        b.iter(|| none.allows(black_box(&Method::GET), black_box("/v19/catalog/shoes/red")))
    });
    g.bench_function("20_rules_last_matches", |b| {
        b.iter(|| twenty.allows(black_box(&Method::GET), black_box("/v19/catalog/shoes/red")))
    });
    g.bench_function("20_rules_first_matches", |b| {
        b.iter(|| twenty.allows(black_box(&Method::GET), black_box("/v0/orders/42")))
    });
    g.bench_function("20_rules_none_match", |b| {
        b.iter(|| twenty.allows(black_box(&Method::GET), black_box("/admin/users/1")))
    });
    g.finish();
}

fn forward_headers() -> ForwardHeaders {
    let client = b"User-Agent: legacy-app/1.0\r\nAccept: */*\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n";
    ForwardHeaders::new(RawFields::parse(client).expect("valid fields"))
}

fn s3_target() -> Target {
    Target::new(
        Scheme::HTTPS,
        "my-bucket.s3.eu-west-1.amazonaws.com".into(),
        "/photos/2024/06/a%20b.jpg",
        "versionId=3",
    )
}

fn signing(c: &mut Criterion) {
    let sigv4 = SigV4::new(&AwsSigV4Config {
        access_key_id: SecretString::from("AKIAIOSFODNN7EXAMPLE"),
        secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        session_token: None,
        region: "eu-west-1".into(),
        service: "s3".into(),
        payload: PayloadSigning::Unsigned,
        max_signed_body: 0,
    })
    .expect("signer");
    let basic =
        Basic::new(&SecretString::from("user"), &SecretString::from("pass")).expect("basic");
    let now = 1_700_000_000;
    let mut g = c.benchmark_group("signing");
    g.bench_function("sigv4_s3_unsigned_apply", |b| {
        b.iter_batched(
            || (s3_target(), forward_headers()),
            |(target, mut headers)| {
                sigv4
                    .apply(&Method::PUT, &target, &mut headers, None, now)
                    .expect("signed");
                headers
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("basic_apply", |b| {
        b.iter_batched(
            forward_headers,
            |mut headers| {
                basic.apply(&mut headers);
                headers
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, allow_check, signing);
criterion_main!(benches);
