//! OAuth2 token sources.
//!
//! - `oauth2_code`: the token `sidekey authorize` obtained once (see
//!   [`crate::authorize`]) and wrote to `store`, renewed with its refresh
//!   token by [`super::code`].
//! - `oauth2_client_credentials` (RFC 6749 4.4): a token request built
//!   here ([`client_credentials_fetcher`]) and cached like any fetched
//!   token, its lifetime taken from `expires_in`.
//!
//! [`code_exchange`] builds the authorization-code exchange (RFC 6749
//! 4.1.3, or Copernica's GET variant) that `authorize` sends.

use std::sync::Arc;

use http::{Method, Uri};
use secrecy::{ExposeSecret, SecretString};

use super::endpoint::{form_encode, HttpFetcher, PreparedRequest, ResponseSpec};
use super::BuildError;
use crate::client::pool::Upstreams;
use crate::config::{
    ClientAuth, OAuth2ClientCredentialsConfig, OAuth2CodeConfig, TokenRequestStyle,
};
use crate::target::encode_query_component;

/// `Authorization: Basic` for an OAuth2 client (RFC 6749 2.3.1: id and
/// secret form-encoded first).
fn client_basic(
    req: &mut PreparedRequest,
    client_id: &str,
    secret: &SecretString,
) -> Result<(), BuildError> {
    req.basic(
        &encode_query_component(client_id),
        &encode_query_component(secret.expose_secret()),
    )
}

/// The fetcher of an `oauth2_client_credentials` source: `POST token_url`
/// with `grant_type=client_credentials` (and `scope`), the client
/// authenticated by Basic or in the form; `access_token` and `expires_in`
/// read from the JSON answer.
pub(crate) fn client_credentials_fetcher(
    upstreams: Arc<Upstreams>,
    config: &OAuth2ClientCredentialsConfig,
) -> Result<HttpFetcher, BuildError> {
    let mut req = PreparedRequest::new(Method::POST, config.token_url.clone());
    req.identity = super::endpoint::identity(&upstreams, config.client_tls.as_ref())?;
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &config.scope {
        form.push(("scope", scope));
    }
    match config.client_auth {
        ClientAuth::Basic => client_basic(&mut req, &config.client_id, &config.client_secret)?,
        ClientAuth::Form => {
            form.push(("client_id", &config.client_id));
            form.push(("client_secret", config.client_secret.expose_secret()));
        }
    }
    req.form(form);
    let spec = ResponseSpec {
        token_pointer: "/access_token".into(),
        expires_in_pointer: Some("/expires_in".into()),
        ttl: None,
    };
    Ok(HttpFetcher::new(upstreams, req, spec, config.timeout))
}

/// What reads the answer to a code exchange (the `refresh_token`, when
/// there is one, is read by [`super::code::refresh_token_of`]).
pub(crate) fn code_exchange_spec() -> ResponseSpec {
    ResponseSpec {
        token_pointer: "/access_token".into(),
        expires_in_pointer: Some("/expires_in".into()),
        ttl: None,
    }
}

/// The request that trades an authorization `code` for a token:
/// - `get_query` (Copernica): `GET token_url?client_id&client_secret&redirect_uri&code`;
/// - `post_form` (RFC 6749 4.1.3): `POST token_url` with the form
///   `grant_type=authorization_code&code&redirect_uri&client_id&client_secret`.
pub(crate) fn code_exchange(
    config: &OAuth2CodeConfig,
    code: &SecretString,
) -> Result<PreparedRequest, BuildError> {
    let redirect_uri = config.redirect_uri.to_string();
    match config.token_request {
        TokenRequestStyle::GetQuery => {
            let params = form_encode([
                ("client_id", config.client_id.as_str()),
                ("client_secret", config.client_secret.expose_secret()),
                ("redirect_uri", redirect_uri.as_str()),
                ("code", code.expose_secret()),
            ]);
            let uri = with_query(&config.token_url, &params)?;
            Ok(PreparedRequest::new(Method::GET, uri))
        }
        TokenRequestStyle::PostForm => {
            let mut req = PreparedRequest::new(Method::POST, config.token_url.clone());
            req.form([
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri.as_str()),
                ("client_id", config.client_id.as_str()),
                ("client_secret", config.client_secret.expose_secret()),
            ]);
            Ok(req)
        }
    }
}

/// `uri` with `params` appended to its query.
pub(crate) fn with_query(uri: &Uri, params: &str) -> Result<Uri, BuildError> {
    let mut text = uri.to_string();
    text.push(if uri.query().is_some() { '&' } else { '?' });
    text.push_str(params);
    text.parse()
        .map_err(|_| BuildError::Invalid("cannot add parameters to the URL".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn copernica(store: PathBuf) -> OAuth2CodeConfig {
        OAuth2CodeConfig {
            authorize_url: "https://www.copernica.com/en/authorize".parse().unwrap(),
            token_url: "https://api.copernica.com/v1/token".parse().unwrap(),
            token_request: TokenRequestStyle::GetQuery,
            client_id: "client key".into(),
            client_secret: SecretString::from("s3cr&t"),
            redirect_uri: "http://127.0.0.1:8765/callback".parse().unwrap(),
            store,
            scope: None,
            client_tls: None,
        }
    }

    #[test]
    fn copernica_exchanges_the_code_with_a_get_query() {
        let cfg = copernica(PathBuf::from("x"));
        let req = code_exchange(&cfg, &SecretString::from("c0de")).unwrap();
        assert_eq!(req.method, Method::GET);
        assert_eq!(
            req.uri.to_string(),
            "https://api.copernica.com/v1/token?client_id=client%20key&client_secret=s3cr%26t&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&code=c0de"
        );
        assert!(req.body.is_empty());
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("s3cr") && !debug.contains("c0de"),
            "{debug}"
        );
    }

    #[test]
    fn rfc6749_exchanges_the_code_with_a_post_form() {
        let mut cfg = copernica(PathBuf::from("x"));
        cfg.token_request = TokenRequestStyle::PostForm;
        let req = code_exchange(&cfg, &SecretString::from("c0de")).unwrap();
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.uri.query(), None);
        assert_eq!(
            req.headers[http::header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            std::str::from_utf8(&req.body).unwrap(),
            "grant_type=authorization_code&code=c0de&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&client_id=client%20key&client_secret=s3cr%26t"
        );
    }
}
