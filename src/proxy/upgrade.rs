//! HTTP/1.1 `Upgrade` (WebSocket): an upgrade request is routed, checked
//! and credentialed like any other, and forwarded with `Connection:
//! upgrade` and the client's `Upgrade` (see
//! [`crate::wire::h1::server::ClientRequest::upgrade`]). When the upstream
//! answers `101`, the client gets that `101` (its headers cleaned like any
//! response's, its `Upgrade` kept), then bytes flow both ways between the
//! two connections until either side closes, or both stay silent for
//! `body_idle_timeout`. Any other answer is passed back as usual.

use std::time::Duration;

use http::header::{self, HeaderMap};
use http::StatusCode;
use prometheus_client::metrics::gauge::Gauge;

use super::error::ProxyError;
use super::Reply;
use crate::metrics::Metrics;
use crate::wire::h1::response::HeadError;
use crate::wire::headers::strip_hop_by_hop;
use crate::wire::io::{splice, Spliced, Upgraded};
use crate::wire::reply::ReplyHead;

/// Makes an upstream's `101` the client's: its head cleaned (hop-by-hop
/// fields out, the upstream's `Upgrade` back in) and, once it is written,
/// the client's connection spliced with the upstream's. Any other reply
/// is returned as it is.
pub(crate) fn take_over(
    mut reply: Reply,
    idle: Duration,
    metrics: &Metrics,
) -> Result<Reply, ProxyError> {
    if reply.status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(reply);
    }
    let Some(switched) = reply.body.take_switched() else {
        return Ok(reply);
    };
    let mut headers = match std::mem::replace(&mut reply.head, ReplyHead::Map(HeaderMap::new())) {
        ReplyHead::Map(headers) => headers,
        ReplyHead::Upstream(raw) => raw
            .to_header_map(1)
            .ok_or(ProxyError::UpstreamHead(HeadError::Header))?,
    };
    strip_hop_by_hop(&mut headers);
    if let Some(protocol) = switched.protocol {
        headers.insert(header::UPGRADE, protocol);
    }
    reply.head = ReplyHead::Map(headers);
    let open = metrics.upgrades_open.clone();
    let mut upstream = switched.io;
    reply.upgrade = Some(Box::new(move |mut client: Upgraded| {
        Box::pin(async move {
            let _open = OpenUpgrade::new(open);
            if splice(&mut client, &mut upstream, idle).await == Spliced::Idle {
                tracing::debug!("upgraded connection idle past body_idle_timeout; closed");
            }
        })
    }));
    Ok(reply)
}

/// Counts an upgraded connection in `sidekey_upgrades_open` while it is
/// open.
struct OpenUpgrade(Gauge);

impl OpenUpgrade {
    fn new(gauge: Gauge) -> OpenUpgrade {
        gauge.inc();
        OpenUpgrade(gauge)
    }
}

impl Drop for OpenUpgrade {
    fn drop(&mut self) {
        self.0.dec();
    }
}
