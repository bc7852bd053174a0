//! Per-route traffic for the status views: answers by status class, 401s,
//! 401 retries and upstream latency, since start and over the last minute.
//!
//! The request path only adds to plain atomic counters ([`RouteTraffic`]:
//! one add per answer, one per latency observation; no lock, no
//! allocation). What happened *when* comes from a sampler off the request
//! path: once a second [`Registry::sample`] copies every route's totals
//! into that route's short history (61 samples), and a window is the
//! difference between the totals now and the totals a minute ago. So the
//! last minute's counts are exact (up to the sampler's one-second grain),
//! and the per-second series of the sparklines are differences between
//! consecutive samples.
//!
//! Latency is kept in a fixed histogram ([`LATENCY_BOUNDS_MS`], doubling
//! from 0.5 ms); p50 and p99 are read off it with linear interpolation
//! inside a bucket, as Prometheus' `histogram_quantile` does.
//!
//! Counters are per route *name* and survive reloads (like the Prometheus
//! series): a reload that keeps a route keeps its traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in milliseconds; a last, open
/// bucket holds everything slower.
pub const LATENCY_BOUNDS_MS: [f64; 18] = [
    0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 32768.0, 65536.0,
];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// How many seconds a window covers.
pub const WINDOW_SECS: u64 = 60;

/// Counts of one route since it was first built (survives reloads).
#[derive(Default)]
pub struct RouteTraffic {
    /// Answers by status class: 1xx .. 5xx.
    classes: [AtomicU64; 5],
    /// 401 answers (from the upstream, after any retry).
    unauthorized: AtomicU64,
    /// Requests retried once after a 401, with a fresh token.
    retries: AtomicU64,
    /// Upstream latency (request sent → response head), by bucket.
    latency: [AtomicU64; BUCKETS],
    /// Samples of the totals, oldest first, one per second at most;
    /// touched by the sampler and the status views only.
    history: Mutex<VecDeque<(u64, Totals)>>,
}

/// A copy of a route's counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub classes: [u64; 5],
    pub unauthorized: u64,
    pub retries: u64,
    pub latency: [u64; BUCKETS],
}

impl Totals {
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// What [`Window::errors`] counts: 5xx and 401 answers.
    pub fn errors(&self) -> u64 {
        self.classes[4] + self.unauthorized
    }

    /// `self - earlier` (saturating: counters only grow).
    fn minus(&self, earlier: &Totals) -> Totals {
        let mut out = *self;
        for (o, e) in out.classes.iter_mut().zip(earlier.classes) {
            *o = o.saturating_sub(e);
        }
        for (o, e) in out.latency.iter_mut().zip(earlier.latency) {
            *o = o.saturating_sub(e);
        }
        out.unauthorized = out.unauthorized.saturating_sub(earlier.unauthorized);
        out.retries = out.retries.saturating_sub(earlier.retries);
        out
    }

    /// The `q` quantile (0..1) of the latency histogram, in milliseconds;
    /// `None` without observations. Interpolated linearly inside the
    /// bucket; the open last bucket answers its lower bound.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_MS[i - 1]
                };
                let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else {
                    return Some(lower);
                };
                let into = (rank - seen as f64).max(0.0) / n as f64;
                return Some(lower + (upper - lower) * into);
            }
            seen += n;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }
}

/// What the status views show of one route's traffic at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub since_start: Totals,
    pub last_minute: Totals,
    /// Requests in each of the last [`WINDOW_SECS`] seconds, oldest first.
    pub requests_per_second: Vec<u64>,
    /// Errors (5xx and 401 answers) in each of those seconds.
    pub errors_per_second: Vec<u64>,
}

impl RouteTraffic {
    /// Counters at zero, with a first sample at `second`: before it,
    /// nothing happened.
    pub fn new(second: u64) -> RouteTraffic {
        let traffic = RouteTraffic::default();
        traffic.lock().push_back((second, Totals::default()));
        traffic
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, Totals)>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answer with `status`.
    pub fn answered(&self, status: u16) {
        let class = match status {
            0..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        if status == 401 {
            self.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one retry after a 401.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one upstream latency.
    pub fn latency(&self, elapsed: Duration) {
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            classes: self.classes.each_ref().map(load),
            unauthorized: load(&self.unauthorized),
            retries: load(&self.retries),
            latency: self.latency.each_ref().map(load),
        }
    }

    /// Records the totals as of `second` (the sampler, once a second).
    pub fn sample(&self, second: u64) {
        let totals = self.totals();
        let mut history = self.lock();
        match history.back_mut() {
            Some((last, t)) if *last >= second => *t = totals,
            _ => history.push_back((second, totals)),
        }
        while history.len() > WINDOW_SECS as usize + 1 {
            history.pop_front();
        }
    }

    /// The traffic as of `second`, counting everything up to now.
    pub fn window(&self, second: u64) -> Window {
        let now = self.totals();
        let mut points: Vec<(u64, Totals)> = self.lock().iter().copied().collect();
        points.retain(|(s, _)| *s <= second);
        points.push((second, now));
        // The totals at the end of second `t`: the last sample at or
        // before it (zero before the first).
        let at = |t: i64| -> Totals {
            points
                .iter()
                .rev()
                .find(|(s, _)| (*s as i64) <= t)
                .map_or_else(Totals::default, |(_, totals)| *totals)
        };
        let second = second as i64;
        let start = second - WINDOW_SECS as i64;
        let mut requests_per_second = Vec::with_capacity(WINDOW_SECS as usize);
        let mut errors_per_second = Vec::with_capacity(WINDOW_SECS as usize);
        let mut before = at(start);
        for t in start + 1..=second {
            let after = at(t);
            let d = after.minus(&before);
            requests_per_second.push(d.requests());
            errors_per_second.push(d.errors());
            before = after;
        }
        Window {
            since_start: now,
            last_minute: now.minus(&at(start)),
            requests_per_second,
            errors_per_second,
        }
    }
}

/// The latency bucket of `elapsed`.
fn bucket(elapsed: Duration) -> usize {
    let ms = elapsed.as_secs_f64() * 1000.0;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&upper| ms <= upper)
        .unwrap_or(BUCKETS - 1)
}

/// Every route's traffic, by route name, and the clock the samples use
/// (whole seconds since the registry was made). Looked up when a config
/// is built, never per request.
pub struct Registry {
    started: Instant,
    routes: Mutex<HashMap<String, Arc<RouteTraffic>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            started: Instant::now(),
            routes: Mutex::new(HashMap::new()),
        }
    }
}

impl Registry {
    /// Whole seconds since the registry was made.
    pub fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RouteTraffic>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of the route named `name`, made on first use.
    pub fn route(&self, name: &str) -> Arc<RouteTraffic> {
        let second = self.second();
        self.lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteTraffic::new(second)))
            .clone()
    }

    /// Samples every route's totals (see the module documentation).
    pub fn sample(&self) {
        let second = self.second();
        let routes: Vec<Arc<RouteTraffic>> = self.lock().values().cloned().collect();
        for route in routes {
            route.sample(second);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn answers_are_counted_by_class_with_401s_as_errors() {
        let t = RouteTraffic::new(0);
        for status in [200, 204, 301, 404, 401, 502, 503, 101] {
            t.answered(status);
        }
        t.retried();
        let totals = t.totals();
        assert_eq!(totals.classes, [1, 2, 1, 2, 2]);
        assert_eq!(totals.requests(), 8);
        assert_eq!(totals.unauthorized, 1);
        assert_eq!(totals.errors(), 3, "two 5xx and one 401");
        assert_eq!(totals.retries, 1);
    }

    #[test]
    fn the_last_minute_is_the_difference_to_a_minute_ago() {
        let t = RouteTraffic::new(0);
        // 5 answers in second 1, 3 in second 30, 2 (errors) in second 70.
        for _ in 0..5 {
            t.answered(200);
        }
        t.sample(1);
        for _ in 0..3 {
            t.answered(200);
        }
        t.sample(30);
        t.answered(503);
        t.answered(401);
        t.sample(70);
        let w = t.window(70);
        assert_eq!(w.since_start.requests(), 10);
        // The minute (10, 70]: seconds 30 and 70.
        assert_eq!(w.last_minute.requests(), 5);
        assert_eq!(w.last_minute.errors(), 2);
        assert_eq!(w.requests_per_second.len(), 60);
        // Oldest first: second 11 .. second 70.
        assert_eq!(w.requests_per_second[30 - 11], 3);
        assert_eq!(w.requests_per_second[59], 2);
        assert_eq!(w.errors_per_second[59], 2);
        assert_eq!(w.requests_per_second.iter().sum::<u64>(), 5);
        assert_eq!(w.errors_per_second.iter().sum::<u64>(), 2);
    }

    #[test]
    fn answers_since_the_last_sample_count_in_the_current_second() {
        let t = RouteTraffic::new(0);
        t.sample(5);
        t.answered(200);
        t.answered(200);
        let w = t.window(8);
        assert_eq!(w.last_minute.requests(), 2);
        assert_eq!(w.requests_per_second[59], 2);
        assert_eq!(w.requests_per_second[..59].iter().sum::<u64>(), 0);
    }

    #[test]
    fn a_route_made_late_counts_nothing_before_it() {
        let t = RouteTraffic::new(100);
        t.answered(200);
        let w = t.window(100);
        assert_eq!(w.last_minute.requests(), 1);
        assert_eq!(w.since_start.requests(), 1);
    }

    #[test]
    fn history_keeps_a_minute_of_samples() {
        let t = RouteTraffic::new(0);
        for s in 1..=500 {
            t.answered(200);
            t.sample(s);
        }
        assert_eq!(t.lock().len(), 61);
        let w = t.window(500);
        assert_eq!(w.last_minute.requests(), 60);
        assert!(w.requests_per_second.iter().all(|n| *n == 1));
    }

    #[test]
    fn latency_quantiles_interpolate_inside_a_bucket() {
        let t = RouteTraffic::new(0);
        assert_eq!(t.totals().latency_quantile_ms(0.5), None);
        // 98 fast answers in (8, 16] ms, 2 slow ones in (512, 1024] ms.
        for _ in 0..98 {
            t.latency(MS(10));
        }
        t.latency(MS(600));
        t.latency(MS(700));
        let totals = t.totals();
        let p50 = totals.latency_quantile_ms(0.5).unwrap();
        assert!((8.0..=16.0).contains(&p50), "{p50}");
        let p99 = totals.latency_quantile_ms(0.99).unwrap();
        assert!((512.0..=1024.0).contains(&p99), "{p99}");
        // Beyond the last bound: its lower bound.
        let slow = RouteTraffic::new(0);
        slow.latency(Duration::from_secs(100));
        assert_eq!(slow.totals().latency_quantile_ms(0.5), Some(65536.0));
    }

    #[test]
    fn buckets_hold_their_upper_bound() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(500)), 0);
        assert_eq!(bucket(Duration::from_micros(501)), 1);
        assert_eq!(bucket(MS(1024)), 11);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn the_registry_keeps_a_route_by_name() {
        let r = Registry::default();
        let a = r.route("a");
        a.answered(200);
        assert_eq!(r.route("a").totals().requests(), 1);
        assert_eq!(r.route("b").totals().requests(), 0);
        r.sample();
        assert_eq!(a.lock().back().map(|(_, t)| t.requests()), Some(1));
    }
}
