//! A pair of servers (one TLS, one plain) that only count: point an unconfigured
//! host's `connect_to` at them and assert nothing ever arrived.
//! Every request that does arrive is answered 418 `{"blackhole":true}`.

use http::StatusCode;
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, StandIn};

/// Names the TLS side's certificate covers by default (plus 127.0.0.1).
pub const BLACKHOLE_HOSTS: &[&str] = &["unconfigured.example", "localhost"];

pub struct Blackhole {
    pub tls: StandIn,
    pub plain: StandIn,
}

impl Blackhole {
    pub fn spawn(ca: &TestCa) -> Blackhole {
        Self::spawn_for(ca, BLACKHOLE_HOSTS)
    }

    /// Like [`Blackhole::spawn`] with a certificate for `hosts` (so a TLS client that
    /// wrongly gets through would complete the handshake and be counted as a request).
    pub fn spawn_for(ca: &TestCa, hosts: &[&str]) -> Blackhole {
        let reply = |_: &_| json_reply(StatusCode::IM_A_TEAPOT, &json!({ "blackhole": true }));
        Blackhole {
            tls: StandIn::spawn_fn(Some(ca.server_config(hosts)), reply),
            plain: StandIn::spawn_fn(None, reply),
        }
    }

    /// TCP connections accepted by either side.
    pub fn connections(&self) -> usize {
        self.tls.connection_count() + self.plain.connection_count()
    }

    /// HTTP requests received by either side.
    pub fn requests(&self) -> usize {
        self.tls.request_count() + self.plain.request_count()
    }

    /// Panics (naming the counts) when anything reached either side.
    pub fn assert_untouched(&self) {
        assert_eq!(
            (self.connections(), self.requests()),
            (0, 0),
            "blackhole was reached: tls {} conn / {} req, plain {} conn / {} req",
            self.tls.connection_count(),
            self.tls.request_count(),
            self.plain.connection_count(),
            self.plain.request_count()
        );
    }
}
