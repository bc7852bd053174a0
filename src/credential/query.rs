//! `kind = "query"`: `param=<token>` appended to the query string.

use secrecy::ExposeSecret;

use super::{Applied, CredentialError};
use crate::target::Target;
use crate::token::TokenSource;

#[derive(Debug)]
pub struct QueryInjector {
    param: String,
    source: TokenSource,
}

impl QueryInjector {
    pub(crate) fn new(param: String, source: TokenSource) -> QueryInjector {
        QueryInjector { param, source }
    }

    pub(crate) fn param(&self) -> &String {
        &self.param
    }

    pub(crate) fn source(&self) -> &TokenSource {
        &self.source
    }

    pub(crate) async fn apply(&self, target: &mut Target) -> Result<Applied, CredentialError> {
        let token = self.source.token().await?;
        target.remove_params(std::slice::from_ref(&self.param));
        target.append_param(&self.param, token.value.expose_secret());
        let token = match &self.source {
            TokenSource::Static(_) => None,
            TokenSource::Provider(_) => Some(token),
        };
        Ok(Applied { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::Scheme;
    use secrecy::SecretString;

    #[tokio::test]
    async fn copernica_style_access_token() {
        let source = TokenSource::fixed(SecretString::from("ed430a95c58fd7d2830c9dc453396cf5"));
        let q = QueryInjector::new("access_token".into(), source);
        let mut t = Target::new(
            Scheme::HTTPS,
            "api.copernica.com".into(),
            "/v1/profile/123456",
            "access_token=from-client",
        );
        q.apply(&mut t).await.unwrap();
        // The Copernica document's own example call.
        assert_eq!(
            t.url(),
            "https://api.copernica.com/v1/profile/123456?access_token=ed430a95c58fd7d2830c9dc453396cf5"
        );
    }
}
