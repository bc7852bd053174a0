//! Spare buffers, per thread: what connections give back when they go
//! idle, for the next request on the same worker to take without an
//! allocation.
//!
//! An idle keep-alive connection holds neither a read buffer nor a
//! response buffer (10,000 idle clients would otherwise hold 20 MB); a
//! connection allocating both again for every request would pay two
//! allocations and frees per request. Here a worker keeps at most
//! [`MAX_SPARE`] of each, so what idles costs nothing per connection and
//! what is busy reuses what the idle ones left.

use std::cell::RefCell;

use bytes::BytesMut;

/// The most spare buffers of each kind a thread keeps.
const MAX_SPARE: usize = 64;
/// Buffers larger than this many times their kind's size (after a large
/// head or body) are freed rather than kept.
const MAX_GROWTH: usize = 4;

#[derive(Default)]
struct Spare {
    reads: Vec<BytesMut>,
    outs: Vec<Vec<u8>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// Runs `f` on this thread's spare buffers (`None` while the thread is
/// exiting, or if they are borrowed already).
fn with_spare<R>(f: impl FnOnce(&mut Spare) -> R) -> Option<R> {
    SPARE
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// Keeps `item` in `list` unless it holds [`MAX_SPARE`] already.
fn keep<T>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_SPARE {
        list.push(item);
    }
}

/// An empty read buffer with room for at least `size` bytes.
pub(crate) fn read_buffer(size: usize) -> BytesMut {
    with_spare(|s| s.reads.pop())
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Takes back an empty read buffer of `size`. One that still shares its
/// memory with bytes handed out (a request head still alive) is dropped:
/// the memory is freed when they are.
pub(crate) fn give_read(mut buf: BytesMut, size: usize) {
    if !buf.is_empty() || buf.capacity() > size * MAX_GROWTH || !buf.try_reclaim(size) {
        return;
    }
    with_spare(|s| keep(&mut s.reads, buf));
}

/// An empty response buffer with room for at least `size` bytes.
pub(crate) fn out_buffer(size: usize) -> Vec<u8> {
    with_spare(|s| s.outs.pop())
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(size))
}

/// Takes back a response buffer of `size`.
pub(crate) fn give_out(mut out: Vec<u8>, size: usize) {
    if out.capacity() < size || out.capacity() > size * MAX_GROWTH {
        return;
    }
    out.clear();
    with_spare(|s| keep(&mut s.outs, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_without_its_contents() {
        let mut buf = read_buffer(1024);
        assert!(buf.capacity() >= 1024);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split().freeze();
        let start = head.as_ptr() as usize;
        // Still shared with `head`: not kept (what follows would be handed
        // out inside the memory `head` still holds).
        give_read(std::mem::take(&mut buf), 1024);
        let again = read_buffer(1024);
        assert!(!(start..start + 1024).contains(&(again.as_ptr() as usize)));
        drop(head);
        // Alone, empty: kept, and handed out whole.
        let ptr = again.as_ptr();
        give_read(again, 1024);
        let taken = read_buffer(1024);
        assert_eq!(taken.as_ptr(), ptr);
        assert!(taken.is_empty() && taken.capacity() >= 1024);

        let mut out = out_buffer(1024);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let ptr = out.as_ptr();
        give_out(out, 1024);
        let out = out_buffer(1024);
        assert_eq!(out.as_ptr(), ptr);
        assert!(out.is_empty());
        // Grown far past its size: freed, not kept.
        give_out(Vec::with_capacity(64 * 1024), 1024);
        assert!(out_buffer(1024).capacity() < 64 * 1024);
    }
}
