//! Dialling an upstream's TCP connection ([`Dialer`]: `connect_to`,
//! resolution, each address in turn within `connect_timeout`) and why a
//! connection could not be opened ([`ConnectError`]), for the
//! [`super::connector`] and the [`super::upstream_proxy`] alike.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;

/// Why an upstream connection could not be opened.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    #[error("the upstream host is not a valid host[:port]")]
    BadAuthority,
    #[error("cannot resolve the upstream host: {0}")]
    Resolve(#[source] io::Error),
    #[error("the upstream host resolved to no address")]
    NoAddress,
    #[error("{}", crate::cause::describe_cause(.0))]
    Dial(#[source] io::Error),
    #[error("connect timed out")]
    DialTimeout,
    #[error("internal error: no such client certificate")]
    UnknownIdentity,
    #[error("TLS handshake failed: {}", crate::cause::innermost_cause(.0))]
    Tls(#[source] io::Error),
    #[error("cannot reach the upstream proxy {proxy}: {cause}")]
    ProxyUnreachable {
        proxy: String,
        #[source]
        cause: Box<ConnectError>,
    },
    #[error("the upstream proxy {proxy} answered HTTP {status} to CONNECT {target}")]
    ProxyRefused {
        proxy: String,
        status: u16,
        target: String,
    },
    /// The proxy asked for (other) credentials for a plain HTTP request it
    /// was to forward: its own answer, not the upstream's.
    #[error("the upstream proxy {proxy} answered HTTP 407 to the request for {target}")]
    ProxyAuthRequired { proxy: String, target: String },
    #[error("the upstream proxy {proxy} did not answer CONNECT with an HTTP response head")]
    ProxyBadAnswer { proxy: String },
}

/// Dials TCP: `connect_to[host:port]` instead of resolving `host`, when
/// set (the TLS layer above still uses the original host for SNI and
/// certificate verification); each resolved address in turn, all within
/// `connect_timeout`.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    timeout: Duration,
    connect_to: Arc<HashMap<String, String>>,
}

impl Dialer {
    /// A dialer giving up after `timeout`, dialling `connect_to`'s address
    /// instead of a `host:port` it names.
    pub(crate) fn new(timeout: Duration, connect_to: HashMap<String, String>) -> Dialer {
        Dialer {
            timeout,
            connect_to: Arc::new(connect_to),
        }
    }

    /// `connect_timeout`.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The address to dial instead of `host:port`, if `connect_to` has one.
    fn redirect(&self, host: &str, port: u16) -> Option<&str> {
        if self.connect_to.is_empty() {
            return None;
        }
        let key = format!("{}:{port}", host.to_ascii_lowercase());
        self.connect_to.get(&key).map(String::as_str)
    }

    pub(crate) async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let connect = async {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match self.redirect(host, port) {
                Some(to) => tokio::net::lookup_host(to)
                    .await
                    .map_err(ConnectError::Resolve)?
                    .collect(),
                None => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(ConnectError::Resolve)?
                    .collect(),
            };
            let mut last = ConnectError::NoAddress;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        return Ok(tcp);
                    }
                    Err(e) => last = ConnectError::Dial(e),
                }
            }
            Err(last)
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .unwrap_or(Err(ConnectError::DialTimeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_keeps_the_url_but_changes_the_dial_address() {
        let dialer = Dialer::new(
            Duration::from_secs(1),
            HashMap::from([(
                "api.copilot.cx:443".to_string(),
                "127.0.0.1:8443".to_string(),
            )]),
        );
        assert_eq!(
            dialer.redirect("API.copilot.cx", 443),
            Some("127.0.0.1:8443")
        );
        assert!(dialer.redirect("api.copilot.cx", 80).is_none());
    }
}
