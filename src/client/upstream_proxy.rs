//! Reaching upstreams through a corporate HTTP proxy (`[proxy]
//! upstream_proxy`): an `https://` upstream (and a blind tunnel) through
//! a `CONNECT` tunnel, inside which TLS to the upstream is verified as on
//! a direct connection; an `http://` upstream by sending each request to
//! the proxy in absolute form. `Proxy-Authorization` goes to the proxy
//! and nowhere else; errors name the proxy's address and status, never
//! its credential.

use std::sync::Arc;

use http::header::HeaderValue;
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connector::{ConnectError, Dialer};
use crate::config::UpstreamProxy;

/// The longest `CONNECT` answer head read from the proxy.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The proxy, ready to use: its settings and the `Proxy-Authorization`
/// value, encoded once (marked sensitive).
#[derive(Clone, Debug)]
pub(crate) struct Via {
    settings: Arc<UpstreamProxy>,
    authorization: Option<HeaderValue>,
}

impl Via {
    pub(crate) fn new(settings: &UpstreamProxy) -> Via {
        let authorization = settings.authorization.as_ref().and_then(|a| {
            let mut value = HeaderValue::from_str(a.expose_secret()).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Via {
            settings: Arc::new(settings.clone()),
            authorization,
        }
    }

    /// Whether connections to `host` go through the proxy.
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        self.settings.applies_to(host)
    }

    /// `Proxy-Authorization` for requests sent to the proxy in absolute
    /// form, when the proxy URL had a user.
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Opens a TCP connection to the proxy itself (for absolute-form
    /// requests, or before `CONNECT`).
    pub(crate) async fn dial_proxy(&self, dialer: &Dialer) -> Result<TcpStream, ConnectError> {
        dialer
            .dial(&self.settings.host, self.settings.port)
            .await
            .map_err(|e| ConnectError::ProxyUnreachable {
                proxy: self.settings.address(),
                cause: Box::new(e),
            })
    }

    /// A tunnel to `host:port` through the proxy: the TCP connection to
    /// the proxy once it answered `2xx` to `CONNECT`. Bounded by the
    /// dialer's connect timeout.
    pub(crate) async fn tunnel(
        &self,
        dialer: &Dialer,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, ConnectError> {
        let exchange = async {
            let mut tcp = self.dial_proxy(dialer).await?;
            let target = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
            if let Some(auth) = &self.authorization {
                head.extend_from_slice(b"Proxy-Authorization: ");
                head.extend_from_slice(auth.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            tcp.write_all(&head).await.map_err(|_| self.bad_answer())?;
            let status = self.read_answer(&mut tcp).await?;
            if !(200..300).contains(&status) {
                return Err(ConnectError::ProxyRefused {
                    proxy: self.settings.address(),
                    status,
                    target,
                });
            }
            Ok(tcp)
        };
        tokio::time::timeout(dialer.timeout(), exchange)
            .await
            .unwrap_or(Err(ConnectError::DialTimeout))
    }

    /// Reads the proxy's answer head to `CONNECT` and returns its status.
    /// Nothing may follow the head: the upstream speaks only after our
    /// TLS ClientHello.
    async fn read_answer(&self, tcp: &mut TcpStream) -> Result<u16, ConnectError> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = tcp.read(&mut chunk).await.map_err(|_| self.bad_answer())?;
            if n == 0 {
                return Err(self.bad_answer());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut answer = httparse::Response::new(&mut headers);
            match answer.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = answer.code.ok_or_else(|| self.bad_answer())?;
                    if (200..300).contains(&status) && len != buf.len() {
                        return Err(self.bad_answer());
                    }
                    return Ok(status);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_BYTES => {}
                _ => return Err(self.bad_answer()),
            }
        }
    }

    fn bad_answer(&self) -> ConnectError {
        ConnectError::ProxyBadAnswer {
            proxy: self.settings.address(),
        }
    }
}
