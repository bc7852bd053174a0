//! `kind = "basic"`: `Authorization: Basic base64(username:password)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};

use crate::token::BuildError;
use crate::wire::headers::ForwardHeaders;

/// The header value, computed once at load and marked sensitive.
#[derive(Debug)]
pub struct Basic {
    value: HeaderValue,
}

impl Basic {
    pub fn new(username: &SecretString, password: &SecretString) -> Result<Basic, BuildError> {
        let encoded = STANDARD.encode(format!(
            "{}:{}",
            username.expose_secret(),
            password.expose_secret()
        ));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            .map_err(|_| BuildError::Invalid("basic credentials do not form a header".into()))?;
        value.set_sensitive(true);
        Ok(Basic { value })
    }

    pub fn apply(&self, headers: &mut ForwardHeaders) {
        headers.insert(AUTHORIZATION, self.value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::h1::fields::RawFields;

    #[test]
    fn copilot_document_example() {
        // Copilot.cx Server API, "Example".
        let basic = Basic::new(
            &SecretString::from("ABABABABQQIRZ"),
            &SecretString::from("k9H2Nd3T5j5EW2Fu160l11Hal3x3oa"),
        )
        .unwrap();
        let client =
            b"Authorization: Basic Y2xpZW50OmNvcHk=\r\nAuthorization: Bearer other\r\n\r\n";
        let mut forward = ForwardHeaders::new(RawFields::parse(client).unwrap());
        basic.apply(&mut forward);
        let headers = forward.to_header_map();
        let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(
            values,
            ["Basic QUJBQkFCQUJRUUlSWjprOUgyTmQzVDVqNUVXMkZ1MTYwbDExSGFsM3gzb2E="]
        );
        assert!(values[0].is_sensitive());
        assert!(
            !format!("{basic:?}").contains("QUJB"),
            "Debug must not print the value"
        );
    }
}
