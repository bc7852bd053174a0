//! `[proxy] underscores_in_headers`: what happens to a client's header
//! field whose name holds `_`.
//!
//! Many backends (CGI, WSGI, PHP, some Rack and Node stacks) fold `_` and
//! `-` into one name, so `X_Api_Key: mine` beside an injected `X-Api-Key`,
//! or a `Content_Length`, may be read as the real field there. The request
//! parser notes whether any name holds `_` as it scans the head
//! ([`RawFields::underscored`]); only then is anything looked at here.

use http::header::HeaderName;
use prometheus_client::metrics::counter::Counter;

use crate::config::Underscores;
use crate::proxy::error::ProxyError;
use crate::route::Route;
use crate::wire::h1::fields::RawFields;
use crate::wire::headers::{folds_to, folds_to_reserved, ForwardHeaders};

/// Leaves out of `headers` the client fields of a request for `route`
/// (none: passed through) that `rule` drops, counted in `dropped`; or
/// refuses the request. Costs nothing when the parser found no `_` in the
/// header lines. Out of line: the usual request never calls it.
#[cold]
#[inline(never)]
pub(crate) fn apply(
    rule: Underscores,
    dropped: &Counter,
    headers: &mut ForwardHeaders,
    route: Option<&Route>,
) -> Result<(), ProxyError> {
    if headers.client().underscored().next().is_none() {
        return Ok(());
    }
    let mut injected = Vec::new();
    if let Some(route) = route {
        injected.extend(route.credential.header_names());
        injected.extend(route.config.headers.iter().map(|(name, _)| name.as_str()));
    }
    let names = to_drop(rule, headers.client(), &injected)?;
    dropped.inc_by(names.len() as u64);
    for name in &names {
        headers.remove(name);
    }
    Ok(())
}

/// The client fields to leave out under `rule`: with `Drop`, every one
/// whose name holds `_`; with `Allow`, those whose name folds to a
/// framing, hop-by-hop or forwarding name, `Host`, or one of `injected`
/// (the fields the route sets). `Reject` refuses a request with any.
pub(crate) fn to_drop(
    rule: Underscores,
    fields: &RawFields,
    injected: &[&str],
) -> Result<Vec<HeaderName>, ProxyError> {
    let mut dropped = Vec::new();
    for name in fields.underscored() {
        let drop = match rule {
            Underscores::Reject => {
                return Err(ProxyError::BadRequest(
                    "a header name holds '_' (underscores_in_headers = \"reject\")",
                ))
            }
            Underscores::Drop => true,
            Underscores::Allow => {
                folds_to_reserved(name) || injected.iter().any(|i| folds_to(name, i.as_bytes()))
            }
        };
        // The parser accepted the name as a token, so it is a valid one.
        if let (true, Ok(name)) = (drop, HeaderName::from_bytes(name)) {
            dropped.push(name);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(rule: Underscores, head: &str) -> Result<Vec<String>, ProxyError> {
        let fields = RawFields::parse(head.as_bytes()).unwrap();
        to_drop(rule, &fields, &["x-api-key"])
            .map(|names| names.iter().map(|n| n.as_str().to_string()).collect())
    }

    const HEAD: &str = "X_Api_Key: mine\r\nContent_Length: 5\r\nX_Trace: 1\r\n\
                        Transfer_Encoding: chunked\r\nX-Plain: 1\r\n\r\n";

    #[test]
    fn drop_leaves_out_every_underscored_name() {
        assert_eq!(
            dropped(Underscores::Drop, HEAD).unwrap(),
            [
                "x_api_key",
                "content_length",
                "x_trace",
                "transfer_encoding"
            ]
        );
    }

    #[test]
    fn allow_still_leaves_out_names_that_fold_to_injected_or_framing_ones() {
        assert_eq!(
            dropped(Underscores::Allow, HEAD).unwrap(),
            ["x_api_key", "content_length", "transfer_encoding"]
        );
    }

    #[test]
    fn reject_refuses_any_underscored_name() {
        assert!(dropped(Underscores::Reject, HEAD).is_err());
        assert!(dropped(Underscores::Reject, "X-Plain: 1\r\n\r\n")
            .unwrap()
            .is_empty());
    }
}
