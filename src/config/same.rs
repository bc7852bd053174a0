//! When two configs ask for the same thing: what a reload may keep.
//!
//! A reload keeps the upstream connections when the new `[proxy]` section
//! connects the same way ([`ProxySettings::connects_like`]), and a route's
//! token source (its cached token, its pool of one-time tokens) when the
//! route keeps its name and its token settings compare equal
//! ([`TokenConfig`]'s `PartialEq`). Secrets are compared by value: a
//! rotated client secret is a different token source.
//!
//! The comparisons destructure every field, so a field added to one of
//! these types cannot be forgotten here: the build fails until it is
//! compared.

use secrecy::{ExposeSecret, SecretString};

use super::auth::{
    EndpointConfig, ExecConfig, OAuth2ClientCredentialsConfig, OAuth2CodeConfig, TokenBody,
    TokenConfig,
};
use super::ProxySettings;

fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

fn same_pairs<K: PartialEq>(a: &[(K, SecretString)], b: &[(K, SecretString)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_secret(va, vb))
}

impl ProxySettings {
    /// Whether upstream connections opened under `self` are as good under
    /// `other`: the same trusted roots, `connect_to` map and connection
    /// timeouts, through the same upstream proxy. (The built-in roots are
    /// compiled in.)
    pub(crate) fn connects_like(&self, other: &ProxySettings) -> bool {
        self.extra_roots == other.extra_roots
            && self.connect_to == other.connect_to
            && self.upstream_proxy == other.upstream_proxy
            && self.connect_timeout == other.connect_timeout
            && self.pool_idle_timeout == other.pool_idle_timeout
            && self.pool_max_idle_per_thread() == other.pool_max_idle_per_thread()
    }

    /// Whether the interception set up under `self` (CA, leaf cache, TLS
    /// listener) is as good under `other`; when not, the intercept
    /// listener and leaf cache are rebuilt.
    pub fn intercepts_like(&self, other: &ProxySettings) -> bool {
        match (&self.intercept, &other.intercept) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        }
    }
}

impl PartialEq for TokenConfig {
    fn eq(&self, other: &TokenConfig) -> bool {
        match (self, other) {
            (TokenConfig::Static(a), TokenConfig::Static(b)) => same_secret(a, b),
            (TokenConfig::File(a), TokenConfig::File(b)) => a == b,
            (TokenConfig::Endpoint(a), TokenConfig::Endpoint(b)) => a == b,
            (TokenConfig::OAuth2Code(a), TokenConfig::OAuth2Code(b)) => a == b,
            (TokenConfig::OAuth2ClientCredentials(a), TokenConfig::OAuth2ClientCredentials(b)) => {
                a == b
            }
            (TokenConfig::Exec(a), TokenConfig::Exec(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq for ExecConfig {
    fn eq(&self, other: &ExecConfig) -> bool {
        let ExecConfig {
            program,
            args,
            env,
            token_pointer,
            expires_in_pointer,
            ttl,
            refresh_before,
            timeout,
        } = self;
        *program == other.program
            && args.len() == other.args.len()
            && args.iter().zip(&other.args).all(|(a, b)| same_secret(a, b))
            && same_pairs(env, &other.env)
            && *token_pointer == other.token_pointer
            && *expires_in_pointer == other.expires_in_pointer
            && *ttl == other.ttl
            && *refresh_before == other.refresh_before
            && *timeout == other.timeout
    }
}

impl PartialEq for EndpointConfig {
    fn eq(&self, other: &EndpointConfig) -> bool {
        let EndpointConfig {
            method,
            url,
            basic,
            headers,
            body,
            token_pointer,
            expires_in_pointer,
            ttl,
            refresh_before,
            one_time,
            pool_size,
            pool_max_age,
            timeout,
            client_tls,
        } = self;
        let same_basic = match (basic, &other.basic) {
            (None, None) => true,
            (Some((ua, pa)), Some((ub, pb))) => same_secret(ua, ub) && same_secret(pa, pb),
            _ => false,
        };
        *method == other.method
            && *url == other.url
            && same_basic
            && same_pairs(headers, &other.headers)
            && *body == other.body
            && *token_pointer == other.token_pointer
            && *expires_in_pointer == other.expires_in_pointer
            && *ttl == other.ttl
            && *refresh_before == other.refresh_before
            && *one_time == other.one_time
            && *pool_size == other.pool_size
            && *pool_max_age == other.pool_max_age
            && *timeout == other.timeout
            && *client_tls == other.client_tls
    }
}

impl PartialEq for TokenBody {
    fn eq(&self, other: &TokenBody) -> bool {
        match (self, other) {
            (TokenBody::Json(a), TokenBody::Json(b)) => a.0 == b.0,
            (TokenBody::Form(a), TokenBody::Form(b)) => same_pairs(a, b),
            _ => false,
        }
    }
}

impl PartialEq for OAuth2CodeConfig {
    fn eq(&self, other: &OAuth2CodeConfig) -> bool {
        let OAuth2CodeConfig {
            authorize_url,
            token_url,
            token_request,
            client_id,
            client_secret,
            redirect_uri,
            store,
            scope,
            client_tls,
        } = self;
        *authorize_url == other.authorize_url
            && *token_url == other.token_url
            && *token_request == other.token_request
            && *client_id == other.client_id
            && same_secret(client_secret, &other.client_secret)
            && *redirect_uri == other.redirect_uri
            && *store == other.store
            && *scope == other.scope
            && *client_tls == other.client_tls
    }
}

impl PartialEq for OAuth2ClientCredentialsConfig {
    fn eq(&self, other: &OAuth2ClientCredentialsConfig) -> bool {
        let OAuth2ClientCredentialsConfig {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
            refresh_before,
            timeout,
            client_tls,
        } = self;
        *token_url == other.token_url
            && *client_id == other.client_id
            && same_secret(client_secret, &other.client_secret)
            && *scope == other.scope
            && *client_auth == other.client_auth
            && *refresh_before == other.refresh_before
            && *timeout == other.timeout
            && *client_tls == other.client_tls
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, TokenConfig};

    /// The token config of the only route of `toml`, with `SECRET` set to
    /// `secret`.
    fn token(toml: &str, secret: &str) -> TokenConfig {
        let lookup = |name: &str| (name == "SECRET").then(|| secret.to_string());
        let config = Config::parse(toml, Path::new("."), &lookup).expect("valid config");
        config.routes[0]
            .auth
            .token()
            .cloned()
            .expect("a route with a token source")
    }

    const ENDPOINT: &str = r#"
[[route]]
name = "api"
host = "api.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "https://auth.example.test/token"
headers = { key_secret = "${SECRET}" }
json = { resource = ["basic"] }
token_pointer = "/token"
ttl = "TTL"
"#;

    const CLIENT_CREDENTIALS: &str = r#"
[[route]]
name = "api"
host = "api.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "oauth2_client_credentials"
token_url = "https://auth.example.test/token"
client_id = "sidekey"
client_secret = "${SECRET}"
"#;

    #[test]
    fn the_same_endpoint_settings_are_the_same_token_source() {
        let a = ENDPOINT.replace("TTL", "15m");
        assert_eq!(token(&a, "s3cret"), token(&a, "s3cret"));
    }

    #[test]
    fn a_changed_secret_or_setting_is_another_token_source() {
        let a = ENDPOINT.replace("TTL", "15m");
        assert_ne!(token(&a, "s3cret"), token(&a, "rotated"));
        assert_ne!(
            token(&a, "s3cret"),
            token(&ENDPOINT.replace("TTL", "10m"), "s3cret")
        );
        let body = a.replace(r#"["basic"]"#, r#"["basic", "segments"]"#);
        assert_ne!(token(&a, "s3cret"), token(&body, "s3cret"));
        assert_eq!(
            token(CLIENT_CREDENTIALS, "s3cret"),
            token(CLIENT_CREDENTIALS, "s3cret")
        );
        assert_ne!(
            token(CLIENT_CREDENTIALS, "s3cret"),
            token(CLIENT_CREDENTIALS, "rotated")
        );
        assert_ne!(token(&a, "s3cret"), token(CLIENT_CREDENTIALS, "s3cret"));
    }
}
