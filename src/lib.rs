//! sidekey: a local authenticating proxy.
//!
//! Legacy applications send plain HTTP requests to sidekey; it matches each
//! one to a route by its upstream host, adds the route's credential and
//! forwards it over verified TLS.
//!
//! ## Layers
//!
//! The crate is built in layers, each of which may use only the layers
//! below it (and the leaf modules at the bottom); nothing imports upward,
//! so there is no cycle between modules. From the bottom up:
//!
//! | layer | holds | may use |
//! | --- | --- | --- |
//! | [`cause`], [`target`], [`traffic`], [`tls`], [`access_log`] | leaves: error causes, the upstream URL and its query edits, per-route traffic counters for the status views, the local CA and its leaf certificates (TLS interception), client certificates for mutual TLS upstream, the access log's line format and its writer thread | nothing of ours |
//! | [`metrics`] | the Prometheus registry (and the [`traffic::Registry`] beside it) | `traffic`, `access_log` (its dropped-lines counter) |
//! | [`wire`] | HTTP/1.1 heads, framing, bodies, both connection state machines, hop-by-hop rules, deadlines, [`wire::reply::Reply`] | nothing of ours |
//! | [`config`] | the TOML file: raw serde types, `${VAR}` expansion, validated types (the intercept CA loaded with [`tls::LocalCa`]) | `wire`, leaves |
//! | [`client`] | dialling, TLS (with a client certificate per route), `connect_to`, the corporate upstream proxy, each worker's upstream connection pools (one per client certificate), the typed [`client::pool::SendError`] | `config`, `wire`, leaves |
//! | [`token`] | token sources: fetched, cached, one-time, from files, OAuth2, printed by a command; shared by replicas through Redis (`[proxy.shared_cache]`) | `client`, `config`, `wire`, leaves |
//! | [`credential`] | the injectors: `basic`, `header`, `query`, `signed_url`, `aws_sigv4` | `token` and below |
//! | [`route`] | the route matcher ([`route::RouteTable::find`]) and the `[[route.allow]]` check | `credential` and below |
//! | [`proxy`] | a client connection's requests (HTTP/1.1, HTTP/2, the connection inside a tunnel); one request: route, rewrite, inject, forward, clean the response; every error → status + JSON ([`proxy::error`]) | `route` and below |
//! | [`redact`] | what `check` and logs may print of a config | `config`, `target` |
//! | [`app`], [`authorize`] | the composition root: building a runtime from a config, listeners, reload, shutdown, worker threads, the admin listener; `sidekey authorize` | everything above |
//!
//! `src/main.rs` (the CLI) sits on top of `app`.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod access_log;
pub mod app;
pub mod authorize;
pub(crate) mod cause;
pub(crate) mod client;
pub mod config;
pub mod credential;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod route;
pub mod target;
pub mod tls;
pub mod token;
pub mod traffic;
pub mod wire;

pub use config::Config;
