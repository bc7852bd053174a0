//! `CONNECT`: what an `https://` client behind `HTTPS_PROXY` sends. A
//! host some route names is intercepted (with `[proxy.intercept]`): the
//! client gets `200`, then a TLS handshake with a leaf for that host from
//! sidekey's local CA, and each request inside is served like a plain
//! one. A host no route names gets `403` (nothing is dialled), or, only
//! with `unmatched = "passthrough"`, a blind TCP tunnel that carries no
//! credential. Without `[proxy.intercept]`, a routed host gets `501`
//! saying how to fix it.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::error::ProxyError;
use super::{Reply, Runtime};
use crate::client::pool::ReplyBody;
use crate::config::Unmatched;
use crate::wire::h1::server::ClientRequest;
use crate::wire::io::{splice, Spliced, Takeover, Upgraded};
use crate::wire::reply::ReplyHead;

/// A `CONNECT` that sidekey accepts.
pub enum Tunnel {
    /// Bytes both ways to `host:port`, untouched (`unmatched =
    /// "passthrough"` only).
    Blind { host: String, port: u16 },
}

/// Decides what a `CONNECT` gets: a tunnel, or the error that refuses it.
pub fn open(runtime: &Runtime, req: &ClientRequest) -> Result<Tunnel, ProxyError> {
    debug_assert_eq!(req.method, Method::CONNECT);
    let authority = req
        .uri
        .authority()
        .ok_or(ProxyError::BadRequest("CONNECT needs host:port"))?;
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT needs host:port"))?;
    if runtime.table.serves_host(&host) {
        return Err(ProxyError::Connect);
    }
    match runtime.settings.unmatched {
        Unmatched::Reject => Err(ProxyError::NoRoute { host }),
        Unmatched::Passthrough => Ok(Tunnel::Blind { host, port }),
    }
}

impl Tunnel {
    /// The `200` that opens the tunnel, and what runs on the connection
    /// after it.
    pub fn into_reply(self, runtime: Arc<Runtime>) -> Reply {
        let takeover: Takeover = match self {
            Tunnel::Blind { host, port } => Box::new(move |mut client: Upgraded| {
                Box::pin(async move {
                    let idle = runtime.settings.body_idle_timeout;
                    let connector = runtime.upstreams.connector().clone();
                    drop(runtime);
                    match connector.dial(&host, port).await {
                        Ok(mut upstream) => {
                            if splice(&mut client, &mut upstream, idle).await == Spliced::Idle {
                                tracing::debug!(%host, "blind tunnel idle past body_idle_timeout; closed");
                            }
                        }
                        Err(e) => tracing::info!(%host, error = %e, "blind tunnel: cannot connect"),
                    }
                })
            }),
        };
        Reply {
            status: StatusCode::OK,
            head: ReplyHead::Map(http::HeaderMap::new()),
            body: ReplyBody::empty(),
            close: false,
            upgrade: Some(takeover),
        }
    }
}
