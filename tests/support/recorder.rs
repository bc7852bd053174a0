//! A raw HTTP/1.1 upstream on 127.0.0.1:0 that records every byte it
//! receives and every request it can frame (by `Content-Length` or
//! `Transfer-Encoding: chunked`, read with httparse), and answers each of
//! those with a fixed `200 ok`. What it cannot frame it records as
//! unparsable, and it closes that connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every framed request is answered with.
pub const RECORDER_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Recorder: 1\r\n\r\nok";

/// One request the recorder framed.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The request-target as sent (origin-form from sidekey).
    pub target: String,
    pub body: Vec<u8>,
    /// Which connection (0-based, in accept order) it came on.
    pub connection: usize,
}

impl Seen {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Seen>,
    /// Every byte received, per connection.
    bytes: Vec<Vec<u8>>,
    /// Peers of the accepted connections, and which of them have ended.
    peers: Vec<SocketAddr>,
    closed: Vec<bool>,
    unparsable: Vec<String>,
}

pub struct Recorder {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl Recorder {
    pub async fn spawn() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("recorder: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("recorder: local address");
        let state = Arc::new(Mutex::new(State::default()));
        let changed = watch::channel(()).0;
        let task = tokio::spawn(accept_loop(listener, state.clone(), changed.clone()));
        Recorder {
            addr,
            state,
            changed,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests framed so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    /// Every byte received, per connection.
    pub fn bytes(&self) -> Vec<Vec<u8>> {
        self.lock().bytes.clone()
    }

    /// Why connections were closed unparsable.
    pub fn unparsable(&self) -> Vec<String> {
        self.lock().unparsable.clone()
    }

    /// Waits (at most `limit`) until every connection opened to the
    /// recorder so far has been accepted and has ended; call it once the
    /// client side (sidekey) has closed its connections. A connection of
    /// its own, accepted after all earlier ones, marks "so far".
    pub async fn wait_until_all_closed(&self, limit: Duration) -> bool {
        let Ok(marker) = TcpStream::connect(self.addr).await else {
            return false;
        };
        let mark = marker.local_addr().ok();
        drop(marker);
        let mut changed = self.changed.subscribe();
        let settled = async {
            loop {
                {
                    let state = self.lock();
                    if state.peers.iter().any(|p| Some(*p) == mark)
                        && state.closed.iter().all(|c| *c)
                    {
                        return;
                    }
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(limit, settled).await.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("recorder state poisoned")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, changed: watch::Sender<()>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        let id = {
            let mut s = state.lock().expect("recorder state poisoned");
            s.peers.push(peer);
            s.closed.push(false);
            s.bytes.push(Vec::new());
            s.peers.len() - 1
        };
        changed.send_replace(());
        connections.spawn(serve(stream, id, state.clone(), changed.clone()));
        while connections.try_join_next().is_some() {}
    }
}

async fn serve(
    mut stream: TcpStream,
    id: usize,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<()>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    'connection: loop {
        loop {
            match frame(&buf) {
                Framed::Complete(method, target, body, len) => {
                    state
                        .lock()
                        .expect("recorder state poisoned")
                        .requests
                        .push(Seen {
                            method,
                            target,
                            body,
                            connection: id,
                        });
                    changed.send_replace(());
                    buf.drain(..len);
                    if stream.write_all(RECORDER_REPLY).await.is_err() {
                        break 'connection;
                    }
                }
                Framed::Partial => break,
                Framed::Bad(why) => {
                    state
                        .lock()
                        .expect("recorder state poisoned")
                        .unparsable
                        .push(why);
                    break 'connection;
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                state.lock().expect("recorder state poisoned").bytes[id]
                    .extend_from_slice(&chunk[..n]);
            }
        }
    }
    state.lock().expect("recorder state poisoned").closed[id] = true;
    changed.send_replace(());
}

enum Framed {
    /// Method, target, body, and the bytes the request took.
    Complete(String, String, Vec<u8>, usize),
    Partial,
    Bad(String),
}

/// The first request in `buf`.
fn frame(buf: &[u8]) -> Framed {
    if buf.is_empty() {
        return Framed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Framed::Partial,
        Err(e) => return Framed::Bad(format!("head: {e}")),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let value = |name: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let te = value("transfer-encoding");
    let cl = value("content-length");
    let rest = &buf[head_len..];
    let (body, len) = match (te.as_slice(), cl.as_slice()) {
        ([], []) => (Vec::new(), 0),
        ([], [n]) => {
            let Some(n) = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return Framed::Bad("content-length".into());
            };
            if rest.len() < n {
                return Framed::Partial;
            }
            (rest[..n].to_vec(), n)
        }
        ([te], []) if te.eq_ignore_ascii_case(b"chunked") => match dechunk(rest) {
            Ok(Some(done)) => done,
            Ok(None) => return Framed::Partial,
            Err(why) => return Framed::Bad(why),
        },
        _ => return Framed::Bad("framing headers".into()),
    };
    Framed::Complete(method, target, body, head_len + len)
}

/// A chunked body (sidekey writes plain ones: no extensions or trailers
/// expected, but trailers are read past): its data and length on the wire.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "chunk size")?;
        let size = usize::from_str_radix(line, 16).map_err(|_| format!("chunk size {line:?}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((data, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data end".into());
        }
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
