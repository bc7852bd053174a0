//! The config file as written: raw serde types, strings not yet expanded.
//!
//! Every struct denies unknown fields, so a misspelt key is an error with its
//! line and column rather than a silently ignored setting. Values are kept as
//! strings here because any of them may hold `${VAR}`; [`super::Config`]
//! expands and validates them.
//!
//! None of these types implements `Debug`: they hold secrets as plain
//! strings, and must never be printed.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) proxy: FileProxy,
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<FileRoute>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileProxy {
    pub(crate) listen: Option<String>,
    pub(crate) admin: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) request_timeout: Option<String>,
    pub(crate) unmatched: Option<String>,
    #[serde(default)]
    pub(crate) connect_to: BTreeMap<String, String>,
    // Keys beyond the seed contract (see README "Configuration reference").
    pub(crate) drain_timeout: Option<String>,
    pub(crate) header_read_timeout: Option<String>,
    pub(crate) body_idle_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) pool_idle_timeout: Option<String>,
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) forwarded: Option<String>,
    pub(crate) retry_body_limit: Option<String>,
    pub(crate) ready_requires_tokens: Option<bool>,
    pub(crate) workers: Option<usize>,
    pub(crate) underscores_in_headers: Option<String>,
    pub(crate) max_request_body: Option<String>,
    pub(crate) pool_max_idle_per_host: Option<usize>,
    /// `[proxy.intercept]`: TLS interception with a local CA.
    pub(crate) intercept: Option<FileIntercept>,
    /// A corporate HTTP proxy every upstream connection goes through.
    pub(crate) upstream_proxy: Option<String>,
    /// Hosts reached directly, not through `upstream_proxy`.
    pub(crate) no_upstream_proxy: Option<Vec<String>>,
    /// `[proxy.shared_cache]`: replicas share tokens through Redis.
    pub(crate) shared_cache: Option<FileSharedCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSharedCache {
    pub(crate) url: String,
    pub(crate) password: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) encryption_key: String,
    pub(crate) timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileIntercept {
    pub(crate) ca_cert: String,
    pub(crate) ca_key: String,
    pub(crate) listen: Option<String>,
    pub(crate) leaf_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRoute {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) upstream: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) path_prefix: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) auth: Option<FileAuth>,
    /// `[[route.allow]]`: the requests the route forwards (none = all).
    #[serde(default)]
    pub(crate) allow: Vec<FileAllow>,
    /// `[route.tls]`: mutual TLS to the upstream.
    pub(crate) tls: Option<FileRouteTls>,
}

/// One `[[route.allow]]` rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAllow {
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRouteTls {
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum FileAuth {
    Basic(FileBasic),
    Header(FileHeaderAuth),
    Query(FileQueryAuth),
    SignedUrl(FileSignedUrl),
    #[serde(rename = "aws_sigv4")]
    AwsSigV4(FileAwsSigV4),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAwsSigV4 {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) region: String,
    pub(crate) service: String,
    pub(crate) payload: Option<String>,
    pub(crate) max_signed_body: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBasic {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHeaderAuth {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    pub(crate) token: Option<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQueryAuth {
    pub(crate) param: String,
    pub(crate) token: Option<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSignedUrl {
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) key_param: Option<String>,
    pub(crate) timestamp_param: Option<String>,
    pub(crate) signature_param: Option<String>,
    pub(crate) algorithm: Option<String>,
}

/// `token = "..."` (a static token) or a `[route.auth.token]` table naming
/// its `source`.
pub(crate) enum FileToken {
    Static(String),
    Source(Box<FileTokenSource>),
}

impl<'de> Deserialize<'de> for FileToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TokenVisitor;
        impl<'de> Visitor<'de> for TokenVisitor {
            type Value = FileToken;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token string or a table with a `source` key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileToken, E> {
                Ok(FileToken::Static(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileToken, A::Error> {
                FileTokenSource::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|s| FileToken::Source(Box::new(s)))
            }
        }
        deserializer.deserialize_any(TokenVisitor)
    }
}

#[derive(Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub(crate) enum FileTokenSource {
    Static(FileStaticToken),
    File(FileFileToken),
    Endpoint(FileEndpointToken),
    #[serde(rename = "oauth2_code")]
    OAuth2Code(FileOAuth2Code),
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(FileOAuth2ClientCredentials),
    Exec(FileExecToken),
}

/// `source = "exec"`: a token printed by a command.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileExecToken {
    pub(crate) command: Vec<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) token_pointer: Option<String>,
    pub(crate) expires_in_pointer: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) refresh_before: Option<String>,
    pub(crate) timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStaticToken {
    pub(crate) token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFileToken {
    pub(crate) path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBasicPair {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEndpointToken {
    pub(crate) method: Option<String>,
    pub(crate) url: String,
    pub(crate) basic: Option<FileBasicPair>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) json: Option<toml::Value>,
    pub(crate) form: Option<BTreeMap<String, String>>,
    pub(crate) token_pointer: Option<String>,
    pub(crate) expires_in_pointer: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) refresh_before: Option<String>,
    pub(crate) one_time: Option<bool>,
    pub(crate) pool_size: Option<usize>,
    pub(crate) pool_max_age: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOAuth2Code {
    pub(crate) authorize_url: String,
    pub(crate) token_url: String,
    pub(crate) token_request: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_uri: String,
    pub(crate) store: String,
    pub(crate) scope: Option<String>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOAuth2ClientCredentials {
    pub(crate) token_url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) scope: Option<String>,
    pub(crate) client_auth: Option<String>,
    pub(crate) refresh_before: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_routes_parse() {
        let text = include_str!("../../config/examples/seed-routes.toml");
        let file: FileConfig = toml::from_str(text).expect("seed routes parse");
        assert_eq!(file.routes.len(), 5);
        assert!(matches!(file.routes[0].auth, Some(FileAuth::Basic(_))));
        assert!(matches!(file.routes[1].auth, Some(FileAuth::SignedUrl(_))));
        match &file.routes[2].auth {
            Some(FileAuth::Query(q)) => assert!(matches!(
                q.token.as_ref(),
                Some(FileToken::Source(s)) if matches!(**s, FileTokenSource::OAuth2Code(_))
            )),
            _ => panic!("copernica auth is not a query auth"),
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let err = toml::from_str::<FileConfig>(
            "[[route]]\nname = \"a\"\nhost = \"h\"\nupstraem = \"x\"\n",
        )
        .err()
        .expect("an unknown key is an error");
        let msg = err.to_string();
        assert!(msg.contains("upstraem"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn a_token_table_with_an_unknown_key_is_rejected() {
        let text = "[[route]]\nname = \"a\"\nhost = \"h\"\n[route.auth]\nkind = \"query\"\nparam = \"t\"\n[route.auth.token]\nsource = \"endpoint\"\nurl = \"https://x\"\ntoken_pointr = \"/t\"\n";
        let msg = toml::from_str::<FileConfig>(text)
            .err()
            .expect("rejected")
            .to_string();
        assert!(msg.contains("token_pointr"), "{msg}");
    }

    #[test]
    fn a_static_token_is_a_plain_string() {
        let text = "[[route]]\nname = \"a\"\nhost = \"h\"\n[route.auth]\nkind = \"query\"\nparam = \"t\"\ntoken = \"abc\"\n";
        let file: FileConfig = toml::from_str(text).unwrap();
        match &file.routes[0].auth {
            Some(FileAuth::Query(q)) => {
                assert!(matches!(&q.token, Some(FileToken::Static(s)) if s == "abc"))
            }
            _ => panic!("not a query auth"),
        }
    }
}
