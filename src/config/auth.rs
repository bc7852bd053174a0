//! `[route.auth]` and `[route.auth.token]`: validated credential settings.
//!
//! Secrets are [`SecretString`]s from here on: their `Debug` prints a
//! placeholder and their value is read only through `expose_secret()`.

use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, Uri};
use secrecy::SecretString;

use super::client_tls::{client_tls, ClientTls};
use super::file::{
    FileAuth, FileAwsSigV4, FileEndpointToken, FileExecToken, FileOAuth2ClientCredentials,
    FileOAuth2Code, FileToken, FileTokenSource,
};
use super::Ctx;
use crate::wire::headers::is_hop_by_hop;

/// How a route authenticates its requests.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No credential (the route only adds `headers`).
    None,
    Basic {
        username: SecretString,
        password: SecretString,
    },
    Header {
        name: HeaderName,
        /// Template with `{token}`; `None` means the token itself.
        template: Option<String>,
        token: TokenConfig,
    },
    Query {
        param: String,
        token: TokenConfig,
    },
    SignedUrl(SignedUrlConfig),
    AwsSigV4(AwsSigV4Config),
}

impl AuthConfig {
    /// The client certificate of the token endpoint, if it has one.
    pub(crate) fn token_client_tls(&self) -> Option<&ClientTls> {
        match self.token()? {
            TokenConfig::Endpoint(e) => e.client_tls.as_ref(),
            TokenConfig::OAuth2ClientCredentials(c) => c.client_tls.as_ref(),
            TokenConfig::OAuth2Code(c) => c.client_tls.as_ref(),
            _ => None,
        }
    }

    /// The token source, for kinds that take one.
    pub(crate) fn token(&self) -> Option<&TokenConfig> {
        match self {
            AuthConfig::Header { token, .. } | AuthConfig::Query { token, .. } => Some(token),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlgorithm {
    HmacSha1,
    HmacSha256,
}

#[derive(Debug, Clone)]
pub struct SignedUrlConfig {
    pub key: SecretString,
    pub secret: SecretString,
    pub key_param: String,
    pub timestamp_param: String,
    pub signature_param: String,
    pub algorithm: SignAlgorithm,
}

/// What `kind = "aws_sigv4"` puts in `X-Amz-Content-Sha256` and signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSigning {
    /// The body's SHA-256: the body is read (up to `max_signed_body`)
    /// before anything is sent.
    Signed,
    /// `UNSIGNED-PAYLOAD`: the body streams (S3).
    Unsigned,
}

/// `kind = "aws_sigv4"`: AWS Signature Version 4.
#[derive(Debug, Clone)]
pub struct AwsSigV4Config {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub region: String,
    pub service: String,
    pub payload: PayloadSigning,
    /// The largest body read and hashed for `payload = "signed"`.
    pub max_signed_body: usize,
}

/// The default `max_signed_body`.
pub const DEFAULT_MAX_SIGNED_BODY: usize = 8 * 1024 * 1024;

/// Where a `header` or `query` credential gets its token.
#[derive(Debug, Clone)]
pub enum TokenConfig {
    Static(SecretString),
    /// Read from a file, re-read when it changes.
    File(PathBuf),
    Endpoint(EndpointConfig),
    OAuth2Code(OAuth2CodeConfig),
    OAuth2ClientCredentials(OAuth2ClientCredentialsConfig),
    /// Printed by a command (`source = "exec"`).
    Exec(ExecConfig),
}

/// `source = "exec"`: a command run without a shell, whose standard
/// output is the token (one bare line) or JSON holding it.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// `command[0]`: a name looked up on `PATH`, or a path (one with a
    /// `/`, resolved against the config file's folder).
    pub(crate) program: PathBuf,
    /// `command[1..]`. Kept secret: `${VAR}` may have put one there.
    pub(crate) args: Vec<SecretString>,
    /// Added to (or replacing in) the environment sidekey runs with.
    pub(crate) env: Vec<(String, SecretString)>,
    /// JSON pointer to the token; `None`: the output is one bare line.
    pub(crate) token_pointer: Option<String>,
    /// JSON pointer to a lifetime in seconds (JSON output only).
    pub(crate) expires_in_pointer: Option<String>,
    /// Lifetime when the output carries none; `None` = until rejected.
    pub(crate) ttl: Option<Duration>,
    pub(crate) refresh_before: Duration,
    /// Bound on one run; past it the command is killed.
    pub(crate) timeout: Duration,
}

/// The body of a token endpoint request.
#[derive(Debug, Clone)]
pub(crate) enum TokenBody {
    /// Sent as `application/json`. May hold secrets: never printed.
    Json(SecretJson),
    /// Sent as `application/x-www-form-urlencoded`.
    Form(Vec<(String, SecretString)>),
}

/// A JSON value whose `Debug` does not print it.
#[derive(Clone)]
pub(crate) struct SecretJson(pub serde_json::Value);

impl std::fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretJson([REDACTED])")
    }
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub(crate) method: Method,
    pub(crate) url: Uri,
    pub(crate) basic: Option<(SecretString, SecretString)>,
    pub(crate) headers: Vec<(HeaderName, SecretString)>,
    pub(crate) body: Option<TokenBody>,
    /// JSON pointer to the token in the response ("/token").
    pub(crate) token_pointer: String,
    /// JSON pointer to a lifetime in seconds, if the response carries one.
    pub(crate) expires_in_pointer: Option<String>,
    /// Lifetime when the response carries none; `None` = until rejected.
    pub(crate) ttl: Option<Duration>,
    pub(crate) refresh_before: Duration,
    /// Mint a fresh token for every forwarded request.
    pub(crate) one_time: bool,
    /// One-time tokens minted ahead (0 = mint on the request path).
    pub(crate) pool_size: usize,
    /// Pooled one-time tokens older than this are discarded.
    pub(crate) pool_max_age: Duration,
    /// Bound on one token request.
    pub(crate) timeout: Duration,
    /// Mutual TLS to the token endpoint.
    pub(crate) client_tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRequestStyle {
    /// `GET token_url?client_id&client_secret&redirect_uri&code` (Copernica).
    GetQuery,
    /// RFC 6749 4.1.3: `POST` form with `grant_type=authorization_code`.
    PostForm,
}

#[derive(Debug, Clone)]
pub struct OAuth2CodeConfig {
    pub(crate) authorize_url: Uri,
    pub(crate) token_url: Uri,
    pub(crate) token_request: TokenRequestStyle,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) redirect_uri: Uri,
    pub(crate) store: PathBuf,
    pub(crate) scope: Option<String>,
    /// Mutual TLS to the token endpoint (the code exchange).
    pub(crate) client_tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// `Authorization: Basic` (RFC 6749 2.3.1, the default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Form,
}

#[derive(Debug, Clone)]
pub struct OAuth2ClientCredentialsConfig {
    pub(crate) token_url: Uri,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) scope: Option<String>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) refresh_before: Duration,
    pub(crate) timeout: Duration,
    /// Mutual TLS to the token endpoint.
    pub(crate) client_tls: Option<ClientTls>,
}

fn secret(ctx: &mut Ctx, key: &str, raw: &str) -> Option<SecretString> {
    ctx.expand_nonempty(key, raw).map(SecretString::from)
}

fn param_name(ctx: &mut Ctx, key: &str, raw: Option<&str>, default: &str) -> Option<String> {
    let value = match raw {
        Some(raw) => ctx.expand_nonempty(key, raw)?,
        None => default.to_string(),
    };
    if value.contains(['&', '=', '#', ' ']) {
        ctx.problem(
            key,
            "a query parameter name cannot hold '&', '=', '#' or spaces",
        );
        return None;
    }
    Some(value)
}

/// Parses an absolute http(s) URL without `user:password@` (credentials
/// go in `basic` or the form, where they are kept secret; in the URL they
/// would end up in the `Host` header).
pub(super) fn http_url(ctx: &mut Ctx, key: &str, raw: &str) -> Option<Uri> {
    let value = ctx.expand_nonempty(key, raw)?;
    match value.parse::<Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
            ctx.problem(key, "must not carry user:password@ (use `basic`)");
            None
        }
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(uri)
        }
        _ => {
            ctx.problem(key, "must be an absolute http:// or https:// URL");
            None
        }
    }
}

impl AuthConfig {
    pub(super) fn from_file(raw: FileAuth, ctx: &mut Ctx) -> Option<AuthConfig> {
        match raw {
            FileAuth::Basic(b) => {
                let username = ctx.expand_nonempty("auth.username", &b.username);
                if username.as_deref().is_some_and(|u| u.contains(':')) {
                    ctx.problem("auth.username", "a Basic username cannot contain ':'");
                }
                let password = secret(ctx, "auth.password", &b.password);
                Some(AuthConfig::Basic {
                    username: SecretString::from(username?),
                    password: password?,
                })
            }
            FileAuth::Header(h) => {
                let name = ctx.expand_nonempty("auth.name", &h.name).and_then(|n| {
                    match HeaderName::try_from(n.as_str()) {
                        Ok(name) if is_hop_by_hop(&name) || name == http::header::HOST => {
                            ctx.problem("auth.name", "cannot inject a hop-by-hop or Host header");
                            None
                        }
                        Ok(name) => Some(name),
                        Err(_) => {
                            ctx.problem("auth.name", "not a valid header name");
                            None
                        }
                    }
                });
                let template = ctx.expand_opt("auth.value", h.value.as_deref());
                let token = match h.token {
                    Some(t) => TokenConfig::from_file(t, ctx),
                    None => {
                        ctx.problem(
                            "auth.token",
                            "missing: give `token = \"...\"` or a [route.auth.token] table",
                        );
                        None
                    }
                };
                let template = match template? {
                    Some(t) if !t.contains("{token}") => {
                        ctx.problem("auth.value", "must contain {token}");
                        return None;
                    }
                    other => other,
                };
                Some(AuthConfig::Header {
                    name: name?,
                    template,
                    token: token?,
                })
            }
            FileAuth::Query(q) => {
                let param = param_name(ctx, "auth.param", Some(&q.param), "");
                let token = match q.token {
                    Some(t) => TokenConfig::from_file(t, ctx),
                    None => {
                        ctx.problem(
                            "auth.token",
                            "missing: give `token = \"...\"` or a [route.auth.token] table",
                        );
                        None
                    }
                };
                Some(AuthConfig::Query {
                    param: param?,
                    token: token?,
                })
            }
            FileAuth::SignedUrl(s) => {
                let key = secret(ctx, "auth.key", &s.key);
                let secret_key = secret(ctx, "auth.secret", &s.secret);
                let key_param =
                    param_name(ctx, "auth.key_param", s.key_param.as_deref(), "identifier");
                let timestamp_param = param_name(
                    ctx,
                    "auth.timestamp_param",
                    s.timestamp_param.as_deref(),
                    "timestamp",
                );
                let signature_param = param_name(
                    ctx,
                    "auth.signature_param",
                    s.signature_param.as_deref(),
                    "authSignature",
                );
                let algorithm = ctx.choice(
                    "auth.algorithm",
                    s.algorithm.as_deref(),
                    SignAlgorithm::HmacSha1,
                    &[
                        ("hmac-sha1", SignAlgorithm::HmacSha1),
                        ("hmac-sha256", SignAlgorithm::HmacSha256),
                    ],
                );
                let (key_param, timestamp_param, signature_param) =
                    (key_param?, timestamp_param?, signature_param?);
                if key_param == timestamp_param
                    || key_param == signature_param
                    || timestamp_param == signature_param
                {
                    ctx.problem(
                        "auth",
                        "key_param, timestamp_param and signature_param must differ",
                    );
                    return None;
                }
                Some(AuthConfig::SignedUrl(SignedUrlConfig {
                    key: key?,
                    secret: secret_key?,
                    key_param,
                    timestamp_param,
                    signature_param,
                    algorithm: algorithm?,
                }))
            }
            FileAuth::AwsSigV4(a) => aws_sigv4(a, ctx).map(AuthConfig::AwsSigV4),
        }
    }
}

impl TokenConfig {
    fn from_file(raw: FileToken, ctx: &mut Ctx) -> Option<TokenConfig> {
        let source = match raw {
            FileToken::Static(t) => return secret(ctx, "auth.token", &t).map(TokenConfig::Static),
            FileToken::Source(source) => *source,
        };
        match source {
            FileTokenSource::Static(t) => {
                secret(ctx, "auth.token.token", &t.token).map(TokenConfig::Static)
            }
            FileTokenSource::File(f) => {
                let path = ctx.path("auth.token.path", &f.path)?;
                if !path.is_file() {
                    ctx.problem(
                        "auth.token.path",
                        format!("{} is not a readable file", path.display()),
                    );
                    return None;
                }
                Some(TokenConfig::File(path))
            }
            FileTokenSource::Endpoint(e) => endpoint(e, ctx).map(TokenConfig::Endpoint),
            FileTokenSource::OAuth2Code(c) => oauth2_code(c, ctx).map(TokenConfig::OAuth2Code),
            FileTokenSource::OAuth2ClientCredentials(c) => {
                client_credentials(c, ctx).map(TokenConfig::OAuth2ClientCredentials)
            }
            FileTokenSource::Exec(e) => exec(e, ctx).map(TokenConfig::Exec),
        }
    }
}

fn json_pointer(ctx: &mut Ctx, key: &str, raw: &str) -> Option<String> {
    let value = ctx.expand(key, raw)?;
    if !value.is_empty() && !value.starts_with('/') {
        ctx.problem(key, "a JSON pointer starts with '/', e.g. \"/token\"");
        return None;
    }
    Some(value)
}

fn endpoint(e: FileEndpointToken, ctx: &mut Ctx) -> Option<EndpointConfig> {
    const K: &str = "auth.token";
    let method = match ctx.expand_opt("auth.token.method", e.method.as_deref())? {
        None => Some(Method::POST),
        Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                ctx.problem("auth.token.method", "not an HTTP method");
                None
            }
        },
    };
    let url = http_url(ctx, "auth.token.url", &e.url);
    let basic = match &e.basic {
        None => Some(None),
        Some(b) => {
            let u = secret(ctx, "auth.token.basic.username", &b.username);
            let p = secret(ctx, "auth.token.basic.password", &b.password);
            u.zip(p).map(Some)
        }
    };
    let mut headers = Vec::new();
    for (k, v) in &e.headers {
        let key = format!("auth.token.headers.\"{k}\"");
        let value = secret(ctx, &key, v);
        match (HeaderName::try_from(k.as_str()), value) {
            (Ok(name), Some(value)) => headers.push((name, value)),
            (Err(_), _) => ctx.problem(&key, "not a valid header name"),
            _ => {}
        }
    }
    let body = match (e.json, e.form) {
        (Some(_), Some(_)) => {
            ctx.problem(K, "give either `json` or `form`, not both");
            None
        }
        (Some(json), None) => {
            toml_to_json(ctx, "auth.token.json", json).map(|v| Some(TokenBody::Json(SecretJson(v))))
        }
        (None, Some(form)) => {
            let mut pairs = Vec::new();
            for (k, v) in form {
                let key = format!("auth.token.form.{k}");
                if let Some(v) = ctx.expand(&key, &v) {
                    pairs.push((k, SecretString::from(v)));
                }
            }
            Some(Some(TokenBody::Form(pairs)))
        }
        (None, None) => Some(None),
    };
    let token_pointer = json_pointer(
        ctx,
        "auth.token.token_pointer",
        e.token_pointer.as_deref().unwrap_or("/access_token"),
    );
    let expires_in_pointer = match &e.expires_in_pointer {
        None => Some(None),
        Some(p) => json_pointer(ctx, "auth.token.expires_in_pointer", p).map(Some),
    };
    let ttl = match &e.ttl {
        None => Some(None),
        Some(t) => ctx
            .duration("auth.token.ttl", Some(t), Duration::ZERO)
            .map(Some),
    };
    let refresh_before = ctx.duration(
        "auth.token.refresh_before",
        e.refresh_before.as_deref(),
        Duration::from_secs(60),
    );
    let pool_max_age = ctx.duration(
        "auth.token.pool_max_age",
        e.pool_max_age.as_deref(),
        Duration::from_secs(60),
    );
    let timeout = ctx.duration(
        "auth.token.timeout",
        e.timeout.as_deref(),
        Duration::from_secs(10),
    );
    let one_time = e.one_time.unwrap_or(false);
    let pool_size = e.pool_size.unwrap_or(0);
    if pool_size > 0 && !one_time {
        ctx.problem(
            "auth.token.pool_size",
            "only one-time tokens (one_time = true) are pooled",
        );
    }
    if pool_size > 64 {
        ctx.problem("auth.token.pool_size", "at most 64");
    }
    if let (Some(Some(ttl)), Some(before)) = (&ttl, &refresh_before) {
        if ttl.is_zero() {
            ctx.problem("auth.token.ttl", "must be longer than 0s");
        } else if before >= ttl {
            ctx.warning(
                "auth.token.refresh_before",
                "is not shorter than ttl: the token will be refreshed at half its lifetime instead",
            );
        }
    }
    let tls = client_tls(
        ctx,
        "auth.token.",
        e.client_cert.as_deref(),
        e.client_key.as_deref(),
    );
    Some(EndpointConfig {
        client_tls: tls?,
        method: method?,
        url: url?,
        basic: basic?,
        headers,
        body: body?,
        token_pointer: token_pointer?,
        expires_in_pointer: expires_in_pointer?,
        ttl: ttl?,
        refresh_before: refresh_before?,
        one_time,
        pool_size,
        pool_max_age: pool_max_age?,
        timeout: timeout?,
    })
}

/// Converts a TOML `json = {...}` table to JSON, expanding every string.
fn toml_to_json(ctx: &mut Ctx, key: &str, value: toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match value {
        toml::Value::String(s) => J::String(ctx.expand(key, &s)?),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map(J::Number)?,
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(toml_to_json(ctx, key, item)?);
            }
            J::Array(out)
        }
        toml::Value::Table(table) => {
            let mut out = serde_json::Map::new();
            for (k, v) in table {
                let v = toml_to_json(ctx, &format!("{key}.{k}"), v)?;
                out.insert(k, v);
            }
            J::Object(out)
        }
    })
}

fn oauth2_code(c: FileOAuth2Code, ctx: &mut Ctx) -> Option<OAuth2CodeConfig> {
    let authorize_url = http_url(ctx, "auth.token.authorize_url", &c.authorize_url);
    let token_url = http_url(ctx, "auth.token.token_url", &c.token_url);
    let token_request = ctx.choice(
        "auth.token.token_request",
        c.token_request.as_deref(),
        TokenRequestStyle::PostForm,
        &[
            ("get_query", TokenRequestStyle::GetQuery),
            ("post_form", TokenRequestStyle::PostForm),
        ],
    );
    let client_id = ctx.expand_nonempty("auth.token.client_id", &c.client_id);
    let client_secret = secret(ctx, "auth.token.client_secret", &c.client_secret);
    let redirect_uri = http_url(ctx, "auth.token.redirect_uri", &c.redirect_uri);
    if let Some(uri) = &redirect_uri {
        let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if uri.scheme_str() != Some("http") || !loopback || uri.port_u16().is_none() {
            ctx.problem(
                "auth.token.redirect_uri",
                "must be http://127.0.0.1:PORT/... (or localhost): `sidekey authorize` listens there",
            );
        }
    }
    let store = ctx.path("auth.token.store", &c.store);
    if let Some(store) = &store {
        if !store.exists() {
            ctx.warning(
                "auth.token.store",
                format!(
                    "{} does not exist yet: run `sidekey authorize` for this route",
                    store.display()
                ),
            );
        }
    }
    let scope = ctx.expand_opt("auth.token.scope", c.scope.as_deref())?;
    let tls = client_tls(
        ctx,
        "auth.token.",
        c.client_cert.as_deref(),
        c.client_key.as_deref(),
    );
    Some(OAuth2CodeConfig {
        client_tls: tls?,
        authorize_url: authorize_url?,
        token_url: token_url?,
        token_request: token_request?,
        client_id: client_id?,
        client_secret: client_secret?,
        redirect_uri: redirect_uri?,
        store: store?,
        scope,
    })
}

fn client_credentials(
    c: FileOAuth2ClientCredentials,
    ctx: &mut Ctx,
) -> Option<OAuth2ClientCredentialsConfig> {
    let token_url = http_url(ctx, "auth.token.token_url", &c.token_url);
    let client_id = ctx.expand_nonempty("auth.token.client_id", &c.client_id);
    let client_secret = secret(ctx, "auth.token.client_secret", &c.client_secret);
    let scope = ctx.expand_opt("auth.token.scope", c.scope.as_deref())?;
    let client_auth = ctx.choice(
        "auth.token.client_auth",
        c.client_auth.as_deref(),
        ClientAuth::Basic,
        &[("basic", ClientAuth::Basic), ("form", ClientAuth::Form)],
    );
    let refresh_before = ctx.duration(
        "auth.token.refresh_before",
        c.refresh_before.as_deref(),
        Duration::from_secs(60),
    );
    let timeout = ctx.duration(
        "auth.token.timeout",
        c.timeout.as_deref(),
        Duration::from_secs(10),
    );
    let tls = client_tls(
        ctx,
        "auth.token.",
        c.client_cert.as_deref(),
        c.client_key.as_deref(),
    );
    Some(OAuth2ClientCredentialsConfig {
        client_tls: tls?,
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scope,
        client_auth: client_auth?,
        refresh_before: refresh_before?,
        timeout: timeout?,
    })
}

/// A region or service name as it goes into the credential scope:
/// lowercase letters, digits and '-'.
fn scope_part(ctx: &mut Ctx, key: &str, raw: &str) -> Option<String> {
    let value = ctx.expand_nonempty(key, raw)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        ctx.problem(
            key,
            "use lowercase letters, digits and '-' (e.g. \"eu-west-1\", \"s3\")",
        );
        return None;
    }
    Some(value)
}

fn aws_sigv4(a: FileAwsSigV4, ctx: &mut Ctx) -> Option<AwsSigV4Config> {
    let access_key_id = ctx.expand_nonempty("auth.access_key_id", &a.access_key_id);
    if access_key_id
        .as_deref()
        .is_some_and(|k| !k.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        ctx.problem(
            "auth.access_key_id",
            "an access key ID is letters and digits",
        );
    }
    let secret_access_key = secret(ctx, "auth.secret_access_key", &a.secret_access_key);
    // "" (e.g. `${AWS_SESSION_TOKEN:-}` unset) means long-term keys.
    let session_token = match ctx.expand_opt("auth.session_token", a.session_token.as_deref()) {
        Some(Some(t)) if t.is_empty() => Some(None),
        Some(Some(t)) if http::HeaderValue::from_str(&t).is_err() => {
            ctx.problem("auth.session_token", "cannot be sent in a header");
            None
        }
        Some(t) => Some(t.map(SecretString::from)),
        None => None,
    };
    let region = scope_part(ctx, "auth.region", &a.region);
    let service = scope_part(ctx, "auth.service", &a.service);
    let payload = ctx.choice(
        "auth.payload",
        a.payload.as_deref(),
        PayloadSigning::Signed,
        &[
            ("signed", PayloadSigning::Signed),
            ("unsigned", PayloadSigning::Unsigned),
        ],
    );
    let max_signed_body = match ctx.expand_opt("auth.max_signed_body", a.max_signed_body.as_deref())
    {
        Some(None) => Some(DEFAULT_MAX_SIGNED_BODY),
        Some(Some(v)) => match super::proxy::parse_size(&v) {
            Some(n) => Some(n),
            None => {
                ctx.problem(
                    "auth.max_signed_body",
                    "not a size; write e.g. \"8MiB\" or \"512KiB\"",
                );
                None
            }
        },
        None => None,
    };
    // `max_signed_body` with `payload = "unsigned"` is accepted silently
    // (the contract's own S3 route sets both): it applies only to signed
    // payloads.
    Some(AwsSigV4Config {
        access_key_id: SecretString::from(access_key_id?),
        secret_access_key: secret_access_key?,
        session_token: session_token?,
        region: region?,
        service: service?,
        payload: payload?,
        max_signed_body: max_signed_body?,
    })
}
fn exec(e: FileExecToken, ctx: &mut Ctx) -> Option<ExecConfig> {
    let program = match e.command.first() {
        None => {
            ctx.problem(
                "auth.token.command",
                "must name a program: command = [\"program\", \"arg\", ...]",
            );
            None
        }
        Some(first) => {
            let first = ctx.expand_nonempty("auth.token.command", first)?;
            if first.contains('/') {
                ctx.path("auth.token.command", &first)
            } else {
                Some(PathBuf::from(first))
            }
        }
    };
    if let Some(program) = &program {
        if !program_exists(program) {
            ctx.warning(
                "auth.token.command",
                format!(
                    "{} is not an executable file{}: fetching the token will fail until it is",
                    program.display(),
                    if program.components().count() == 1 {
                        " on PATH"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    let mut args = Vec::new();
    for (i, arg) in e.command.iter().enumerate().skip(1) {
        let key = format!("auth.token.command[{i}]");
        if let Some(arg) = ctx.expand(&key, arg) {
            args.push(SecretString::from(arg));
        }
    }
    let mut env = Vec::new();
    for (name, value) in &e.env {
        let key = format!("auth.token.env.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            ctx.problem(&key, "not a valid environment variable name");
            continue;
        }
        if let Some(value) = ctx.expand(&key, value) {
            env.push((name.clone(), SecretString::from(value)));
        }
    }
    let token_pointer = match &e.token_pointer {
        None => Some(None),
        Some(p) => json_pointer(ctx, "auth.token.token_pointer", p).map(Some),
    };
    let expires_in_pointer = match &e.expires_in_pointer {
        None => Some(None),
        Some(p) => json_pointer(ctx, "auth.token.expires_in_pointer", p).map(Some),
    };
    if e.expires_in_pointer.is_some() && e.token_pointer.is_none() {
        ctx.problem(
            "auth.token.expires_in_pointer",
            "needs token_pointer (JSON output); a bare line carries no lifetime, use ttl",
        );
    }
    let ttl = match &e.ttl {
        None => Some(None),
        Some(t) => ctx
            .duration("auth.token.ttl", Some(t), Duration::ZERO)
            .map(Some),
    };
    if ttl.is_some_and(|t| t.is_some_and(|t| t.is_zero())) {
        ctx.problem("auth.token.ttl", "must be longer than 0s");
    }
    let refresh_before = ctx.duration(
        "auth.token.refresh_before",
        e.refresh_before.as_deref(),
        Duration::from_secs(60),
    );
    let timeout = ctx.duration(
        "auth.token.timeout",
        e.timeout.as_deref(),
        Duration::from_secs(10),
    );
    if timeout.is_some_and(|t| t.is_zero()) {
        ctx.problem("auth.token.timeout", "must be longer than 0s");
    }
    Some(ExecConfig {
        program: program?,
        args,
        env,
        token_pointer: token_pointer?,
        expires_in_pointer: expires_in_pointer?,
        ttl: ttl?,
        refresh_before: refresh_before?,
        timeout: timeout?,
    })
}

/// Whether `program` names an executable file: as a path when it has
/// more than one component, else somewhere on `PATH`.
fn program_exists(program: &std::path::Path) -> bool {
    fn executable(path: &std::path::Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            meta.is_file() && meta.permissions().mode() & 0o111 != 0
        }
        #[cfg(not(unix))]
        {
            meta.is_file()
        }
    }
    if program.components().count() > 1 {
        return executable(program);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}
