//! sidekey: a local authenticating proxy.
//!
//! Legacy applications send plain HTTP requests to sidekey; it matches each
//! one to a route by its upstream host, adds the route's credential and
//! forwards it over verified TLS.
//!
//! A map of the crate, in the order a request meets it:
//!
//! | module | holds |
//! | --- | --- |
//! | [`config`] | the TOML file: raw serde types ([`config::file`]), `${VAR}` expansion ([`config::env`]), validated types |
//! | [`proxy::server`] | listeners, graceful shutdown, reload |
//! | [`proxy::workers`] | the worker threads (one single-threaded runtime per core) that serve client connections |
//! | [`proxy::handler`] | one request: route, rewrite, inject, forward, clean the response |
//! | [`route`] | the route matcher ([`route::RouteTable::find`]) |
//! | [`credential`] | the injectors: `basic`, `header`, `query`, `signed_url` |
//! | [`token`] | token sources for `header` and `query` credentials: fetched, cached, one-time, from files |
//! | [`target`] | the upstream URL being built and its query-string edits |
//! | [`proxy::pool`] | each worker thread's upstream connections (HTTP/1.1 kept alive, HTTP/2 shared) |
//! | [`proxy::upstream`] | the TLS connector, `connect_to`, and the token fetches' client |
//! | [`proxy::headers`] | hop-by-hop header hygiene |
//! | [`error`] | every request error → status + JSON body, in one place |
//! | [`admin`], [`metrics`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`redact`] | what `check` and logs may print of a config |
//! | [`authorize`] | `sidekey authorize`: the OAuth2 authorization-code flow for `oauth2_code` routes |
#![forbid(unsafe_code)]

pub mod admin;
pub mod authorize;
pub mod config;
pub mod credential;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod route;
pub mod target;
pub mod token;

pub use config::Config;
pub use proxy::server::RunningProxy;
