//! `kind = "header"`: a header set to a template with `{token}` replaced.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::{Applied, CredentialError};
use crate::token::{BuildError, TokenSource};
use crate::wire::headers::ForwardHeaders;

#[derive(Debug)]
pub struct HeaderInjector {
    name: HeaderName,
    prefix: String,
    suffix: String,
    source: TokenSource,
    /// For a static token: the whole value, computed at load.
    fixed: Option<HeaderValue>,
    /// For a fetched token: the value built for the token last seen, so a
    /// cached token is formatted and validated once, not per request.
    last: ArcSwapOption<(Arc<SecretString>, HeaderValue)>,
}

impl HeaderInjector {
    pub fn new(
        name: HeaderName,
        template: Option<&str>,
        source: TokenSource,
    ) -> Result<HeaderInjector, BuildError> {
        let (prefix, suffix) = template
            .and_then(|t| t.split_once("{token}"))
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .unwrap_or_default();
        let mut injector = HeaderInjector {
            name,
            prefix,
            suffix,
            source,
            fixed: None,
            last: ArcSwapOption::empty(),
        };
        if let TokenSource::Static(token) = &injector.source {
            let value = injector
                .value(token.value.expose_secret())
                .map_err(|_| BuildError::Invalid("the token cannot be sent in a header".into()))?;
            injector.fixed = Some(value);
        }
        Ok(injector)
    }

    fn value(&self, token: &str) -> Result<HeaderValue, CredentialError> {
        let mut value = HeaderValue::try_from(format!("{}{}{}", self.prefix, token, self.suffix))
            .map_err(|_| CredentialError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(value)
    }

    pub(crate) fn name(&self) -> &HeaderName {
        &self.name
    }

    pub(crate) fn source(&self) -> &TokenSource {
        &self.source
    }

    /// The token this injector put in `headers` (its value without the
    /// template around it), to keep it out of what comes back.
    pub(crate) fn token_in<'a>(&self, headers: &'a ForwardHeaders) -> Option<&'a str> {
        let value = headers.added(&self.name)?.to_str().ok()?;
        let token = value
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!token.is_empty()).then_some(token)
    }

    pub async fn apply(&self, headers: &mut ForwardHeaders) -> Result<Applied, CredentialError> {
        if let Some(fixed) = &self.fixed {
            headers.insert(self.name.clone(), fixed.clone());
            return Ok(Applied::default());
        }
        let token = self.source.token().await?;
        let value = match self.last.load().as_deref() {
            Some((seen, value)) if Arc::ptr_eq(seen, &token.value) => value.clone(),
            _ => {
                let value = self.value(token.value.expose_secret())?;
                self.last
                    .store(Some(Arc::new((token.value.clone(), value.clone()))));
                value
            }
        };
        headers.insert(self.name.clone(), value);
        Ok(Applied { token: Some(token) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::h1::fields::RawFields;
    use secrecy::SecretString;

    #[tokio::test]
    async fn replaces_the_clients_header_with_the_template() {
        let source = TokenSource::fixed(SecretString::from("tok"));
        let injector = HeaderInjector::new(
            HeaderName::from_static("authorization"),
            Some("Bearer {token}"),
            source,
        )
        .unwrap();
        let client = b"authorization: Bearer client\r\nAuthorization: Bearer client2\r\n\r\n";
        let mut forward = ForwardHeaders::new(RawFields::parse(client).unwrap());
        injector.apply(&mut forward).await.unwrap();
        let headers = forward.to_header_map();
        let values: Vec<_> = headers.get_all("authorization").iter().collect();
        assert_eq!(values, ["Bearer tok"]);
        assert!(values[0].is_sensitive());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_value_is_a_load_error() {
        let source = TokenSource::fixed(SecretString::from("a\nb"));
        assert!(HeaderInjector::new(HeaderName::from_static("x-key"), None, source).is_err());
    }
}
