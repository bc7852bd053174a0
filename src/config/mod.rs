//! Validated configuration.
//!
//! Loading is two steps: [`file`](mod@file) parses the TOML into raw types (syntax and
//! shape errors, with line and column), then [`Config::from_file`] expands
//! `${VAR}` ([`env`](mod@env)), parses durations, URLs, addresses and header names,
//! loads CA files and checks cross-route rules (duplicate names, hosts and
//! listeners). Every problem is collected, so `sidekey check` lists them all
//! at once; each names its route and key, never a value.

mod allow;
mod auth;
mod client_tls;
pub(crate) mod env;
pub(crate) mod file;
mod intercept;
mod problems;
mod proxy;
mod route;
mod same;
mod shared_cache;
mod upstream_proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub(crate) use allow::Segment;
pub use allow::{AllowRule, PathPattern};
pub use auth::{
    AuthConfig, AwsSigV4Config, ExecConfig, PayloadSigning, SignAlgorithm, SignedUrlConfig,
    DEFAULT_MAX_SIGNED_BODY,
};
pub(crate) use auth::{
    ClientAuth, EndpointConfig, OAuth2ClientCredentialsConfig, OAuth2CodeConfig, TokenBody,
    TokenConfig, TokenRequestStyle,
};
pub use client_tls::ClientTls;
pub(crate) use intercept::InterceptSettings;
pub(crate) use problems::{Ctx, Problem};
pub(crate) use proxy::{Forwarded, ProxySettings, Underscores, Unmatched};
pub use route::{HostPattern, RouteConfig, UpstreamUrl};
pub use shared_cache::SharedCacheSettings;
pub use upstream_proxy::UpstreamProxy;

/// A loaded, fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxySettings,
    pub routes: Vec<RouteConfig>,
    /// Things worth telling the operator that do not stop sidekey from
    /// running (for example an OAuth2 token store that `authorize` has not
    /// written yet).
    pub warnings: Vec<Problem>,
}

/// Why a config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The cause is in the message and deliberately not a `source`: the
    /// CLI prints error chains, and would print it twice.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config syntax error: {0}")]
    Syntax(String),
    #[error("invalid config ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, problems::list(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, one per line, for `check` and for reload errors.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`, expanding variables from the
    /// process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, base, &env::process_env)
    }

    /// Parses and validates config text. Relative file paths are resolved
    /// against `base_dir`; variables are looked up with `lookup`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: file::FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(syntax_error(text, &e)))?;
        Config::from_file(raw, base_dir, lookup)
    }

    /// Validates raw config: see the module documentation.
    pub(crate) fn from_file(
        raw: file::FileConfig,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut ctx = Ctx::new(lookup, base_dir);
        let proxy = ProxySettings::from_file(raw.proxy, &mut ctx);
        let routes: Vec<RouteConfig> = raw
            .routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| RouteConfig::from_file(i, r, &mut ctx))
            .collect();
        if let Some(proxy) = &proxy {
            check_unique(proxy, &routes, &mut ctx);
        }
        let (problems, warnings) = ctx.finish();
        match proxy {
            Some(proxy) if problems.is_empty() => Ok(Config {
                proxy,
                routes,
                warnings,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Every distinct client certificate the config presents (routes'
    /// `[route.tls]`, then token endpoints'), in order of first use.
    pub(crate) fn client_identities(&self) -> Vec<std::sync::Arc<crate::tls::ClientIdentity>> {
        let mut out: Vec<std::sync::Arc<crate::tls::ClientIdentity>> = Vec::new();
        let used = self
            .routes
            .iter()
            .flat_map(|r| r.tls.as_ref().into_iter().chain(r.auth.token_client_tls()));
        for tls in used {
            if !out.iter().any(|i| **i == *tls.identity) {
                out.push(tls.identity.clone());
            }
        }
        out
    }

    /// The route with this name.
    pub(crate) fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// A TOML error as "line L, column C: message". Not `toml`'s own
/// rendering, which quotes the offending source line (an unterminated
/// `password = "...` would be printed whole), and with the string values
/// that serde quotes in its messages (`invalid type: string "..."`) hidden.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = redact_numbers(&redact_quoted_strings(e.message()));
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return format!("TOML parse error: {message}");
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

/// Replaces the value in serde's ``integer `...` `` and ``floating point
/// `...` `` (a secret written without quotes is one of these).
fn redact_numbers(message: &str) -> String {
    let mut out = message.to_string();
    for mark in ["integer `", "floating point `"] {
        let mut from = 0;
        while let Some(i) = out[from..].find(mark) {
            let start = from + i + mark.len();
            let Some(len) = out[start..].find('`') else {
                break;
            };
            out.replace_range(start..start + len, "[REDACTED]");
            from = start + "[REDACTED]".len() + 1;
        }
    }
    out
}

/// Replaces each `string "..."` (serde's rendering of an unexpected string
/// value, `Debug`-escaped) with `string "[REDACTED]"`.
fn redact_quoted_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i + MARK.len()]);
        out.push_str("[REDACTED]\"");
        let value = &rest[i + MARK.len()..];
        let mut escaped = false;
        let end = value.char_indices().find_map(|(j, c)| match c {
            '\\' if !escaped => {
                escaped = true;
                None
            }
            '"' if !escaped => Some(j),
            _ => {
                escaped = false;
                None
            }
        });
        rest = end.map_or("", |j| &value[j + 1..]);
    }
    out.push_str(rest);
    out
}

/// Cross-route rules: unique names, unique (host, path_prefix) pairs and
/// unique listen addresses (port 0, "any free port", never collides).
fn check_unique(proxy: &ProxySettings, routes: &[RouteConfig], ctx: &mut Ctx) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut hosts: HashMap<(String, Option<&str>), &str> = HashMap::new();
    let mut listeners: HashMap<SocketAddr, String> = HashMap::new();
    listeners.insert(proxy.listen, "proxy.listen".to_string());
    if let Some(listen) = proxy
        .intercept
        .as_ref()
        .and_then(|i| i.listen)
        .filter(|a| a.port() != 0)
    {
        if let Some(other) = listeners.insert(listen, "proxy.intercept.listen".to_string()) {
            ctx.problem_in(
                "proxy",
                "intercept.listen",
                format!("address {listen} is also {other}"),
            );
        }
    }
    if let Some(admin) = proxy.admin.filter(|a| a.port() != 0) {
        if let Some(other) = listeners.insert(admin, "proxy.admin".to_string()) {
            ctx.problem_in("proxy", "admin", format!("address {admin} is also {other}"));
        }
    }
    for route in routes {
        if names.insert(&route.name, 0).is_some() {
            ctx.problem_in(
                &route.scope(),
                "name",
                "another route has the same name".to_string(),
            );
        }
        let key = (route.host.to_string(), route.path_prefix.as_deref());
        if let Some(other) = hosts.insert(key, &route.name) {
            ctx.problem_in(
                &route.scope(),
                "host",
                format!(
                    "route \"{other}\" already matches host {} with the same path_prefix",
                    route.host
                ),
            );
        }
        if let Some(listen) = route.listen.filter(|a| a.port() != 0) {
            if let Some(other) =
                listeners.insert(listen, format!("route \"{}\" listen", route.name))
            {
                ctx.problem_in(
                    &route.scope(),
                    "listen",
                    format!("address {listen} is also {other}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
