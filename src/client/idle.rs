//! [`IdlePool`]: one worker thread's idle upstream connections, as a
//! value: which connection a request may take, which go back, and which
//! are dropped (idle too long, closed by the upstream, or kept by an
//! older config).
//!
//! It is generic over the two kinds of connection it holds (HTTP/1.1
//! connections, lent to one request at a time, and HTTP/2 senders,
//! shared), so that its rules are tested here on plain values.
//! [`super::pool`] keeps one per thread.

use std::time::{Duration, Instant};

use foldhash::HashMap;
use std::sync::Arc;

/// The pool key: the upstream's `host[:port]`, shared by its entries.
pub(crate) type Key = Arc<str>;

/// An HTTP/1.1 connection that can sit idle.
pub(crate) trait Lent {
    /// Whether it can no longer be used (closed, reset, or sent something
    /// unasked). Must not wait.
    fn is_closed(&mut self) -> bool;
}

/// An HTTP/2 connection's sender, shared by the requests of a thread.
pub(crate) trait Shared: Clone {
    fn is_closed(&self) -> bool;
}

/// Which config a pool entry belongs to: a reload that connects another
/// way gets a new generation, whose requests do not use the old one's
/// connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pub generation: u64,
    pub idle_timeout: Duration,
    /// At most this many idle HTTP/1.1 connections are kept per upstream
    /// (by this thread); more are closed when their response ends.
    pub max_idle: usize,
}

/// A connection taken from the pool.
pub(crate) enum Pooled<C, S> {
    H1(C),
    H2(S),
}

struct Host<C, S> {
    key: Key,
    /// Idle HTTP/1.1 connections and since when; the most recent last.
    h1: Vec<(C, Instant)>,
    h2: Option<S>,
    last_used: Instant,
}

impl<C, S> Host<C, S> {
    fn new(key: Key, now: Instant) -> Host<C, S> {
        Host {
            key,
            h1: Vec::new(),
            h2: None,
            last_used: now,
        }
    }
}

/// One thread's idle connections, for one config (generation) at a time.
pub(crate) struct IdlePool<C, S> {
    generation: u64,
    idle_timeout: Duration,
    http: HashMap<Key, Host<C, S>>,
    https: HashMap<Key, Host<C, S>>,
}

impl<C, S> Default for IdlePool<C, S> {
    fn default() -> Self {
        IdlePool {
            generation: 0,
            idle_timeout: Duration::ZERO,
            http: HashMap::default(),
            https: HashMap::default(),
        }
    }
}

impl<C: Lent, S: Shared> IdlePool<C, S> {
    /// The connections of `owner`'s generation, emptied first if they
    /// were another's. `None` for an older generation than the pool's:
    /// a request still in flight after a reload keeps off the new pool.
    fn of(&mut self, owner: Owner, https: bool) -> Option<&mut HashMap<Key, Host<C, S>>> {
        if self.generation != owner.generation {
            if owner.generation < self.generation {
                return None;
            }
            self.generation = owner.generation;
            self.idle_timeout = owner.idle_timeout;
            self.http.clear();
            self.https.clear();
        }
        Some(if https {
            &mut self.https
        } else {
            &mut self.http
        })
    }

    /// An open connection to `authority`: the shared HTTP/2 one if there
    /// is one, else the most recently used HTTP/1.1 one that has not been
    /// idle past its timeout (those found closed or too old are dropped).
    pub(crate) fn checkout(
        &mut self,
        owner: Owner,
        https: bool,
        authority: &str,
        now: Instant,
    ) -> Option<(Key, Pooled<C, S>)> {
        let host = self.of(owner, https)?.get_mut(authority)?;
        if let Some(h2) = &host.h2 {
            if !h2.is_closed() {
                host.last_used = now;
                return Some((host.key.clone(), Pooled::H2(h2.clone())));
            }
            host.h2 = None;
        }
        while let Some((mut conn, since)) = host.h1.pop() {
            if now.duration_since(since) < owner.idle_timeout && !conn.is_closed() {
                return Some((host.key.clone(), Pooled::H1(conn)));
            }
        }
        None
    }

    /// Gives back an HTTP/1.1 connection whose exchange ended cleanly (it
    /// is closed instead when `owner.max_idle` are idle already, or if its
    /// config is gone).
    pub(crate) fn put_h1(&mut self, owner: Owner, https: bool, key: Key, conn: C, now: Instant) {
        if let Some(pool) = self.of(owner, https) {
            let host = pool
                .entry(key.clone())
                .or_insert_with(|| Host::new(key, now));
            if host.h1.len() < owner.max_idle {
                host.h1.push((conn, now));
            }
        }
    }

    /// Keeps a new HTTP/2 connection's sender for the thread's next
    /// requests to `key`.
    pub(crate) fn put_h2(&mut self, owner: Owner, https: bool, key: Key, sender: S, now: Instant) {
        if let Some(pool) = self.of(owner, https) {
            let host = pool
                .entry(key.clone())
                .or_insert_with(|| Host::new(key, now));
            host.h2 = Some(sender);
            host.last_used = now;
        }
    }

    /// Drops what has been idle longer than the config allows or has
    /// closed.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        for pool in [&mut self.http, &mut self.https] {
            pool.retain(|_, host| {
                host.h1.retain_mut(|(conn, since)| {
                    now.duration_since(*since) < timeout && !conn.is_closed()
                });
                if host.h2.as_ref().is_some_and(|h2| {
                    h2.is_closed() || now.duration_since(host.last_used) >= timeout
                }) {
                    host.h2 = None;
                }
                !host.h1.is_empty() || host.h2.is_some()
            });
        }
    }

    /// How many connections are idle (HTTP/2 senders count once).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        [&self.http, &self.https]
            .iter()
            .flat_map(|pool| pool.values())
            .map(|host| host.h1.len() + usize::from(host.h2.is_some()))
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A connection that the test can close.
    #[derive(Debug)]
    struct Conn {
        id: u32,
        closed: Rc<Cell<bool>>,
    }

    impl Lent for Conn {
        fn is_closed(&mut self) -> bool {
            self.closed.get()
        }
    }

    #[derive(Clone, Debug)]
    struct Sender(Rc<Cell<bool>>);

    impl Shared for Sender {
        fn is_closed(&self) -> bool {
            self.0.get()
        }
    }

    const IDLE: Duration = Duration::from_secs(90);
    const MAX_IDLE: usize = 8;

    fn owner(generation: u64) -> Owner {
        Owner {
            generation,
            idle_timeout: IDLE,
            max_idle: MAX_IDLE,
        }
    }

    fn conn(id: u32) -> (Conn, Rc<Cell<bool>>) {
        let closed = Rc::new(Cell::new(false));
        (
            Conn {
                id,
                closed: closed.clone(),
            },
            closed,
        )
    }

    fn taken_h1(got: Option<(Key, Pooled<Conn, Sender>)>) -> Option<u32> {
        match got {
            Some((_, Pooled::H1(c))) => Some(c.id),
            Some((_, Pooled::H2(_))) => panic!("an HTTP/2 sender, not a connection"),
            None => None,
        }
    }

    #[test]
    fn the_most_recent_connection_is_lent_and_only_to_its_upstream_and_scheme() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let now = Instant::now();
        pool.put_h1(owner(1), true, Arc::from("a:443"), conn(1).0, now);
        pool.put_h1(owner(1), true, Arc::from("a:443"), conn(2).0, now);
        assert_eq!(pool.len(), 2);
        assert_eq!(taken_h1(pool.checkout(owner(1), false, "a:443", now)), None);
        assert_eq!(taken_h1(pool.checkout(owner(1), true, "b:443", now)), None);
        assert_eq!(
            taken_h1(pool.checkout(owner(1), true, "a:443", now)),
            Some(2)
        );
        assert_eq!(
            taken_h1(pool.checkout(owner(1), true, "a:443", now)),
            Some(1)
        );
        assert_eq!(taken_h1(pool.checkout(owner(1), true, "a:443", now)), None);
    }

    #[test]
    fn closed_and_stale_connections_are_never_lent() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let t0 = Instant::now();
        let (c1, _) = conn(1);
        let (c2, closed2) = conn(2);
        pool.put_h1(owner(1), false, Arc::from("a:80"), c1, t0);
        pool.put_h1(
            owner(1),
            false,
            Arc::from("a:80"),
            c2,
            t0 + Duration::from_secs(60),
        );
        closed2.set(true);
        // c2 is closed; c1 has been idle past the timeout by then.
        let later = t0 + IDLE + Duration::from_secs(1);
        assert_eq!(
            taken_h1(pool.checkout(owner(1), false, "a:80", later)),
            None
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn a_newer_generation_takes_the_pool_over_and_an_older_one_keeps_off() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let now = Instant::now();
        pool.put_h1(owner(1), false, Arc::from("a:80"), conn(1).0, now);
        // A reload that connects another way: generation 2 starts empty.
        assert_eq!(taken_h1(pool.checkout(owner(2), false, "a:80", now)), None);
        pool.put_h1(owner(2), false, Arc::from("a:80"), conn(2).0, now);
        // A request of generation 1, still in flight, neither takes nor
        // gives back.
        pool.put_h1(owner(1), false, Arc::from("a:80"), conn(3).0, now);
        assert_eq!(taken_h1(pool.checkout(owner(1), false, "a:80", now)), None);
        assert_eq!(
            taken_h1(pool.checkout(owner(2), false, "a:80", now)),
            Some(2)
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn at_most_max_idle_connections_are_kept_per_upstream() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let now = Instant::now();
        for id in 0..(MAX_IDLE as u32 + 10) {
            pool.put_h1(owner(1), false, Arc::from("a:80"), conn(id).0, now);
            pool.put_h1(owner(1), false, Arc::from("b:80"), conn(id).0, now);
        }
        assert_eq!(pool.len(), 2 * MAX_IDLE, "each upstream keeps its own");
        let none = Owner {
            max_idle: 0,
            ..owner(1)
        };
        pool.put_h1(none, false, Arc::from("c:80"), conn(0).0, now);
        assert_eq!(pool.len(), 2 * MAX_IDLE, "0 keeps none");
    }

    #[test]
    fn an_open_http2_sender_is_shared_and_a_closed_one_dropped() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let now = Instant::now();
        let closed = Rc::new(Cell::new(false));
        pool.put_h2(
            owner(1),
            true,
            Arc::from("a:443"),
            Sender(closed.clone()),
            now,
        );
        for _ in 0..3 {
            assert!(matches!(
                pool.checkout(owner(1), true, "a:443", now),
                Some((_, Pooled::H2(_)))
            ));
        }
        closed.set(true);
        assert!(pool.checkout(owner(1), true, "a:443", now).is_none());
        assert!(pool.is_empty());
    }

    #[test]
    fn sweep_drops_what_is_idle_too_long_or_closed_and_keeps_the_rest() {
        let mut pool = IdlePool::<Conn, Sender>::default();
        let t0 = Instant::now();
        let (old, _) = conn(1);
        let (fresh, _) = conn(2);
        let (dead, dead_flag) = conn(3);
        pool.put_h1(owner(1), false, Arc::from("a:80"), old, t0);
        pool.put_h1(owner(1), false, Arc::from("b:80"), fresh, t0 + IDLE);
        pool.put_h1(owner(1), false, Arc::from("c:80"), dead, t0 + IDLE);
        let sender_closed = Rc::new(Cell::new(false));
        pool.put_h2(
            owner(1),
            true,
            Arc::from("d:443"),
            Sender(sender_closed),
            t0,
        );
        dead_flag.set(true);
        pool.sweep(t0 + IDLE + Duration::from_secs(1));
        // Only the fresh, open HTTP/1.1 connection is left.
        assert_eq!(pool.len(), 1);
        assert_eq!(
            taken_h1(pool.checkout(owner(1), false, "b:80", t0 + IDLE + Duration::from_secs(1))),
            Some(2)
        );
    }
}
