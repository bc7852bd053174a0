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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dial::{ConnectError, Dialer};
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
    /// The proxy's `host:port`, for messages.
    pub(crate) fn address(&self) -> String {
        self.settings.address()
    }

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
            let status = read_answer(&mut tcp)
                .await
                .ok_or_else(|| self.bad_answer())?;
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

    fn bad_answer(&self) -> ConnectError {
        ConnectError::ProxyBadAnswer {
            proxy: self.settings.address(),
        }
    }
}

/// Reads the proxy's answer head to `CONNECT` and returns its status;
/// `None` when it is not an HTTP/1.x response head within
/// [`MAX_ANSWER_BYTES`], or when bytes follow a `2xx` head (the upstream
/// speaks only after our TLS ClientHello, so they cannot be its).
async fn read_answer(io: &mut (impl AsyncRead + Unpin)) -> Option<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        match answer.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = answer.code?;
                if (200..300).contains(&status) && len != buf.len() {
                    return None;
                }
                return Some(status);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_BYTES => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_answer;

    async fn answer(chunks: &[&[u8]]) -> Option<u16> {
        let mut io = tokio_test::io::Builder::new();
        for chunk in chunks {
            io.read(chunk);
        }
        read_answer(&mut io.build()).await
    }

    #[tokio::test]
    async fn a_tunnel_is_open_on_a_2xx_head_however_it_is_split() {
        assert_eq!(
            answer(&[b"HTTP/1.1 200 Connection established\r\n\r\n"]).await,
            Some(200)
        );
        assert_eq!(
            answer(&[b"HTTP/1.0 20", b"0 OK\r\nVia: corp\r", b"\n\r\n"]).await,
            Some(200)
        );
    }

    #[tokio::test]
    async fn a_refusal_gives_its_status() {
        assert_eq!(
            answer(&[b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"]).await,
            Some(407)
        );
        // A refusal's body is not read.
        assert_eq!(
            answer(&[b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!"]).await,
            Some(403)
        );
    }

    #[tokio::test]
    async fn anything_else_is_no_answer() {
        // Bytes after a 2xx head, a closed connection, not HTTP, too long.
        assert_eq!(answer(&[b"HTTP/1.1 200 OK\r\n\r\n\x16\x03"]).await, None);
        assert_eq!(answer(&[b"HTTP/1.1 200 OK\r\n"]).await, None);
        assert_eq!(answer(&[b"SSH-2.0-OpenSSH\r\n\r\n"]).await, None);
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(20_000));
        // (Read from a slice: the mock insists on being read to its end.)
        assert_eq!(read_answer(&mut long.as_bytes()).await, None);
    }
}
