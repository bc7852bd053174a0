//! `sidekey status`'s side: read `/status` from a running sidekey's admin
//! listener (a blocking HTTP/1.1 `GET`, bounded in time and size).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::model::Status;

/// The largest `/status` document read.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StatusError {
    #[error("cannot resolve the admin address {0}")]
    Resolve(String),
    #[error("cannot connect to the admin listener at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading /status from {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer /status with HTTP 200 ({line})")]
    Status { addr: SocketAddr, line: String },
    #[error("{addr} answered /status with something that is not sidekey's status JSON: {cause}")]
    Invalid { addr: SocketAddr, cause: String },
}

/// Where to reach an admin listener configured as `addr`: an unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        other => other.ip(),
    };
    SocketAddr::new(ip, addr.port())
}

/// Resolves `host:port` (also written as `http://host:port/`).
pub fn resolve(text: &str) -> Result<SocketAddr, StatusError> {
    let bare = text.strip_prefix("http://").unwrap_or(text);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    bare.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(reachable)
        .ok_or_else(|| StatusError::Resolve(text.to_string()))
}

/// `GET /status` from `addr`: the JSON as sent, and parsed.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<(String, Status), StatusError> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| StatusError::Connect { addr, source })?;
    let io = |source| StatusError::Io { addr, source };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left())).map_err(io)?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Read until the head and the whole Content-Length body are in (or
    // the server closes).
    loop {
        stream.set_read_timeout(Some(left())).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() as u64 > MAX_BYTES {
            return Err(StatusError::Invalid {
                addr,
                cause: "the answer is too large".into(),
            });
        }
        if let Some((head_len, Some(len))) = head_and_length(&raw) {
            if raw.len() >= head_len + len {
                raw.truncate(head_len + len);
                break;
            }
        }
    }
    let invalid = |cause: &str| StatusError::Invalid {
        addr,
        cause: cause.to_string(),
    };
    let (head_len, _) = head_and_length(&raw).ok_or_else(|| invalid("no complete HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..head_len]);
    let line = head.lines().next().unwrap_or_default().to_string();
    if line.split(' ').nth(1) != Some("200") {
        return Err(StatusError::Status { addr, line });
    }
    let body = String::from_utf8(raw[head_len..].to_vec())
        .map_err(|_| invalid("the body is not UTF-8"))?;
    let status: Status = serde_json::from_str(&body).map_err(|e| invalid(&e.to_string()))?;
    Ok((body, status))
}

/// The length of the head (through its blank line) and its
/// `Content-Length`, once the head is complete.
fn head_and_length(raw: &[u8]) -> Option<(usize, Option<usize>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]);
    let len = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    Some((end, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_admin_address_is_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9901".parse().unwrap()),
            "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("[::]:9901".parse().unwrap()),
            "[::1]:9901".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.1:9901".parse().unwrap()),
            "10.0.0.1:9901".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn an_admin_url_is_taken_for_its_address() {
        let want: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        for text in ["127.0.0.1:9901", "http://127.0.0.1:9901/", "0.0.0.0:9901"] {
            assert_eq!(resolve(text).unwrap(), want, "{text}");
        }
        assert!(matches!(resolve("nowhere"), Err(StatusError::Resolve(_))));
    }

    #[test]
    fn the_head_ends_at_its_blank_line_and_names_the_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(head_and_length(raw), Some((raw.len() - 2, Some(2))));
        assert_eq!(head_and_length(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
