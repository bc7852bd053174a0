//! The streams a client connection runs on, and what becomes of one that
//! switches protocols: [`ReadHalf`] (a TCP socket's read side, or any
//! other stream's), [`WriteHalf`] (a TCP socket's write side that does
//! not shut down when dropped), [`Upgraded`] (the whole connection once a `CONNECT`
//! tunnel or an `Upgrade` was accepted, with the bytes the client already
//! sent) and [`splice`] (bytes both ways until either side closes or both
//! stay silent for the idle timeout).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// The read side of a client connection: a TCP socket's (read without a
/// lock, and waited on without a buffer while idle), or any other
/// stream's (TLS, a test's scripted stream).
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Other(Box<dyn AsyncRead + Send + Unpin>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadHalf::Other(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

/// The write side of a client's TCP socket. Unlike tokio's
/// `OwnedWriteHalf`, dropping it does not shut the socket's write side
/// down (a `shutdown` call per connection): the socket closes, FIN and
/// all, when the read side is dropped too. An explicit
/// [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown) still
/// sends the FIN at once.
///
/// `TCP_NODELAY` is turned on just before the connection's second write,
/// not at accept: a connection that gets one response (a client that
/// opens a connection per request) costs one `setsockopt` less. The first
/// write is never held back by Nagle's algorithm (nothing sent is waiting
/// for an acknowledgement yet); from the second on (a `100 Continue`'s
/// response, a streamed body, the next keep-alive response, a tunnel's
/// TLS handshake) nothing is delayed either.
pub struct WriteHalf {
    write: Option<OwnedWriteHalf>,
    nagle: Nagle,
}

/// Where a [`WriteHalf`] is in turning Nagle's algorithm off.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Nagle {
    /// Nothing written yet.
    Unwritten,
    /// Written once, with Nagle's algorithm still on.
    WrittenOnce,
    /// `TCP_NODELAY` is set (or failed to be: not tried again).
    Off,
}

impl WriteHalf {
    pub fn new(write: OwnedWriteHalf) -> WriteHalf {
        WriteHalf {
            write: Some(write),
            nagle: Nagle::Unwritten,
        }
    }

    fn inner(&mut self) -> io::Result<Pin<&mut OwnedWriteHalf>> {
        match &mut self.write {
            Some(write) => Ok(Pin::new(write)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Writes with `write`, turning Nagle's algorithm off first if this is
    /// not the connection's first write.
    fn write_with(
        &mut self,
        write: impl FnOnce(Pin<&mut OwnedWriteHalf>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.nagle == Nagle::WrittenOnce {
            if let Some(w) = &self.write {
                // Best effort, as at accept before: a socket that refuses
                // it still carries the bytes.
                let _ = w.as_ref().set_nodelay(true);
            }
            self.nagle = Nagle::Off;
        }
        let written = write(self.inner()?);
        if self.nagle == Nagle::Unwritten && matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.nagle = Nagle::WrittenOnce;
        }
        written
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        if let Some(write) = self.write.take() {
            write.forget();
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(|w| w.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(|w| w.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.write.as_ref().is_some_and(|w| w.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_shutdown(cx)
    }
}

/// A connection that switched to another protocol: a client's, handed
/// over after the reply that switched it, or an upstream's after its
/// `101`. Reads give first what the peer sent beyond the last head, then
/// the stream's bytes.
pub struct Upgraded {
    pub buffered: Bytes,
    pub read: ReadHalf,
    pub write: Box<dyn AsyncWrite + Send + Unpin>,
}

impl Upgraded {
    /// `io` with `buffered`, read from it already, in front.
    pub fn new<S>(io: S, buffered: Bytes) -> Upgraded
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        Upgraded {
            buffered,
            read: ReadHalf::Other(Box::new(read)),
            write: Box::new(write),
        }
    }
}

/// What runs on a connection once its reply has been written, in the
/// connection's own task (so shutdown drains and ends it like any other).
pub type Takeover = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffered.is_empty() {
            let n = this.buffered.len().min(buf.remaining());
            buf.put_slice(&this.buffered[..n]);
            this.buffered.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}

/// How a [`splice`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Spliced {
    /// One side closed (or failed) and the other was told.
    Closed,
    /// Neither side sent anything for the idle timeout.
    Idle,
}

/// Copies bytes both ways between `a` and `b` until either side ends, or
/// until neither has sent anything for `idle`.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity {
        inner: a,
        start,
        last: last.clone(),
    };
    let mut b = Activity {
        inner: b,
        start,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let watchdog = async {
        loop {
            let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
            let until = seen + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        _ = copy => Spliced::Closed,
        () = watchdog => Spliced::Idle,
    }
}

/// A stream that notes when bytes last moved through it.
struct Activity<'a, S: ?Sized> {
    inner: &'a mut S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S: ?Sized> Activity<'_, S> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Activity<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Activity<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn splice_copies_both_ways_until_a_side_closes() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let spliced =
            tokio::spawn(async move { splice(&mut a, &mut b, Duration::from_secs(60)).await });
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        drop(client);
        drop(server);
        assert_eq!(spliced.await.unwrap(), Spliced::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn splice_ends_when_both_sides_stay_silent_for_the_idle_timeout() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, _server) = tokio::io::duplex(64);
        let spliced =
            tokio::spawn(async move { splice(&mut a, &mut b, Duration::from_secs(5)).await });
        client.write_all(b"x").await.unwrap();
        assert_eq!(spliced.await.unwrap(), Spliced::Idle);
    }

    #[tokio::test]
    async fn write_half_turns_nagle_off_from_the_second_write_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let (read, write) = accepted.into_split();
        let mut write = WriteHalf::new(write);
        let nodelay = |w: &WriteHalf| w.write.as_ref().unwrap().as_ref().nodelay().unwrap();
        assert!(!nodelay(&write), "a fresh socket has Nagle on");
        write.write_all(b"first").await.unwrap();
        assert!(!nodelay(&write), "one response: no setsockopt");
        write.write_all(b" second").await.unwrap();
        assert!(nodelay(&write), "the second write goes out undelayed");
        // The socket closes with both halves gone.
        drop((read, write));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"first second");
    }

    #[tokio::test]
    async fn upgraded_reads_the_buffered_bytes_first() {
        let (client, server) = tokio::io::duplex(64);
        let (r, w) = tokio::io::split(server);
        let mut up = Upgraded {
            buffered: Bytes::from_static(b"early "),
            read: ReadHalf::Other(Box::new(r)),
            write: Box::new(w),
        };
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(b"late").await.unwrap();
        // Ends the client's sending side (a half's drop does not).
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        up.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early late");
        up.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        cr.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
