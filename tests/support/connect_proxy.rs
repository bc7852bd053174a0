//! A corporate HTTP proxy stand-in: `CONNECT` tunnels and absolute-form
//! requests, each recorded with the `Proxy-Authorization` it carried.
//! Given a credential, it answers `407` to anything without exactly that
//! one. It reaches hosts through its own map (`host:port` → local
//! address), as a real proxy resolves names its clients never dial; a
//! host not in the map gets `502`. Forwarded requests lose their
//! `Proxy-Authorization`, as behind a real proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Through {
    /// `CONNECT`, `GET`, ...
    pub method: String,
    /// `host:port` for `CONNECT`, the absolute URL otherwise.
    pub target: String,
    pub proxy_authorization: Option<String>,
    /// What the proxy answered (200 for a tunnel it opened).
    pub status: u16,
}

pub struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Through>>>,
    task: JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Rules {
    required: Option<String>,
    hosts: Vec<(String, SocketAddr)>,
}

impl ConnectProxy {
    /// A proxy requiring `Proxy-Authorization: {required}` (when given)
    /// and reaching each `host:port` of `hosts` at its address.
    pub async fn spawn(required: Option<&str>, hosts: &[(&str, SocketAddr)]) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy stand-in: bind");
        let addr = listener.local_addr().expect("proxy stand-in: address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Rules {
            required: required.map(str::to_string),
            hosts: hosts.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
        });
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, rules.clone(), log.clone()));
            }
        });
        ConnectProxy { addr, seen, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything that went through so far.
    pub fn seen(&self) -> Vec<Through> {
        self.seen.lock().expect("proxy log").clone()
    }
}

async fn serve(mut conn: TcpStream, rules: Arc<Rules>, log: Arc<Mutex<Vec<Through>>>) {
    let mut buf = Vec::new();
    let head_len = loop {
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    let rest = buf[head_len..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let fields: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let proxy_authorization = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.clone());
    let record = |status: u16| {
        log.lock().expect("proxy log").push(Through {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: proxy_authorization.clone(),
            status,
        })
    };
    if rules.required.is_some() && proxy_authorization != rules.required {
        record(407);
        let _ = conn
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    // Where the request goes: `host:port`, and the request line to send.
    let (host_port, forward_head) = if method == "CONNECT" {
        (target.clone(), None)
    } else {
        let Some(rest_of_url) = target.strip_prefix("http://") else {
            record(400);
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let (authority, path) = match rest_of_url.find('/') {
            Some(i) => rest_of_url.split_at(i),
            None => (rest_of_url, "/"),
        };
        let host_port = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &fields {
            if !k.eq_ignore_ascii_case("proxy-authorization")
                && !k.eq_ignore_ascii_case("connection")
            {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        (host_port, Some(head))
    };
    let Some(addr) = rules
        .hosts
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(&host_port))
        .map(|(_, a)| *a)
    else {
        record(502);
        let _ = conn
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(addr).await else {
        record(502);
        return;
    };
    record(200);
    match forward_head {
        None => {
            if conn
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        Some(head) => {
            if upstream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
    }
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}
