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
pub struct FileConfig {
    #[serde(default)]
    pub proxy: FileProxy,
    #[serde(default, rename = "route")]
    pub routes: Vec<FileRoute>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProxy {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub unmatched: Option<String>,
    #[serde(default)]
    pub connect_to: BTreeMap<String, String>,
    // Keys beyond the seed contract (see README "Configuration reference").
    pub drain_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub forwarded: Option<String>,
    pub retry_body_limit: Option<String>,
    pub ready_requires_tokens: Option<bool>,
    pub workers: Option<usize>,
    /// `[proxy.intercept]`: TLS interception with a local CA.
    pub intercept: Option<FileIntercept>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIntercept {
    pub ca_cert: String,
    pub ca_key: String,
    pub listen: Option<String>,
    pub leaf_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    pub host: String,
    pub upstream: Option<String>,
    pub listen: Option<String>,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<FileAuth>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileAuth {
    Basic(FileBasic),
    Header(FileHeaderAuth),
    Query(FileQueryAuth),
    SignedUrl(FileSignedUrl),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBasic {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderAuth {
    pub name: String,
    pub value: Option<String>,
    pub token: Option<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQueryAuth {
    pub param: String,
    pub token: Option<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSignedUrl {
    pub key: String,
    pub secret: String,
    pub key_param: Option<String>,
    pub timestamp_param: Option<String>,
    pub signature_param: Option<String>,
    pub algorithm: Option<String>,
}

/// `token = "..."` (a static token) or a `[route.auth.token]` table naming
/// its `source`.
pub enum FileToken {
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
pub enum FileTokenSource {
    Static(FileStaticToken),
    File(FileFileToken),
    Endpoint(FileEndpointToken),
    #[serde(rename = "oauth2_code")]
    OAuth2Code(FileOAuth2Code),
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(FileOAuth2ClientCredentials),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStaticToken {
    pub token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFileToken {
    pub path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBasicPair {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEndpointToken {
    pub method: Option<String>,
    pub url: String,
    pub basic: Option<FileBasicPair>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub json: Option<toml::Value>,
    pub form: Option<BTreeMap<String, String>>,
    pub token_pointer: Option<String>,
    pub expires_in_pointer: Option<String>,
    pub ttl: Option<String>,
    pub refresh_before: Option<String>,
    pub one_time: Option<bool>,
    pub pool_size: Option<usize>,
    pub pool_max_age: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOAuth2Code {
    pub authorize_url: String,
    pub token_url: String,
    pub token_request: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub store: String,
    pub scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOAuth2ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
    pub client_auth: Option<String>,
    pub refresh_before: Option<String>,
    pub timeout: Option<String>,
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
