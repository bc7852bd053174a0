//! The access log: one line per request, written without tracing's
//! field machinery and never blocking a request.
//!
//! A request's line is formatted into a reused per-thread buffer (the
//! timestamp's date and time formatted once per second, integers with
//! `itoa`) in the shape tracing-subscriber's `fmt` layer gives any other
//! line (text, or JSON with `--log-format json`), then appended to one
//! bounded batch. A writer thread writes the batch to stderr once
//! [`FLUSH_AT`] bytes have accumulated or [`INTERVAL`] after its first
//! line, so a line appears within a second. When stderr does not keep up
//! (a pipe nobody reads) and the batch holds [`LIMIT`] bytes, new lines are
//! dropped and counted (`sidekey_access_log_dropped_total`); the first drop
//! is logged once. Requests never wait for stderr.
//!
//! The other log lines (tracing's) go through [`Sink::make_writer`]: each
//! is written at once, after the access lines logged before it, so the log
//! keeps its order. [`flush`] writes what is pending (at shutdown).
//!
//! Whether a line is logged at all stays tracing's decision: callers ask
//! `tracing::enabled!` (a cached per-callsite answer) at their own target,
//! so `RUST_LOG` filters access lines as before. Without an installed
//! sink (the library used in-process) they log through tracing as before.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

/// The writer thread writes once this much has accumulated.
pub const FLUSH_AT: usize = 64 * 1024;
/// At most this much waits for stderr; lines beyond it are dropped.
pub const LIMIT: usize = 1024 * 1024;
/// A batch is written at the latest this long after its first line.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The line format, as `--log-format` chose it for every log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The level of an access line: `info` for an answered request, `warn`
/// for one sidekey refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// Why a request failed: its error code and cause (both already free of
/// secrets: see `proxy::error`).
pub struct Failure<'a> {
    pub code: &'static str,
    pub cause: &'a dyn Display,
}

/// One request's access line. The path is the path only: never the query,
/// which may carry credentials.
pub struct Line<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// `None` for a request refused before it was timed.
    pub latency: Option<Duration>,
    pub failure: Option<Failure<'a>>,
}

impl Line<'_> {
    pub fn level(&self) -> Level {
        match self.failure {
            None => Level::Info,
            Some(_) => Level::Warn,
        }
    }

    /// The latency in milliseconds, for the tracing fallback.
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency.map(|d| d.as_secs_f64() * 1000.0)
    }
}

/// Logs `$line` (a [`Line`] expression, at `$level`: `Info` or `Warn`)
/// as one access line with the caller's module as target: through the
/// installed sink, else as a tracing event with the same fields. The line
/// is not even built unless tracing's filter enables `$level` there.
#[macro_export]
#[doc(hidden)]
macro_rules! access_line {
    (Info, $line:expr) => {
        $crate::access_line!(@ INFO, $line)
    };
    (Warn, $line:expr) => {
        $crate::access_line!(@ WARN, $line)
    };
    (@ $level:ident, $line:expr) => {{
        if ::tracing::enabled!(::tracing::Level::$level) {
            let line: &$crate::access_log::Line<'_> = &$line;
            if !$crate::access_log::write(module_path!(), line) {
                match (&line.failure, line.latency_ms()) {
                    (None, latency_ms) => ::tracing::event!(
                        ::tracing::Level::$level,
                        route = line.route,
                        method = %line.method,
                        path = %line.path,
                        status = line.status,
                        latency_ms,
                        "request"
                    ),
                    (Some(f), Some(latency_ms)) => ::tracing::event!(
                        ::tracing::Level::$level,
                        route = line.route,
                        method = %line.method,
                        path = %line.path,
                        status = line.status,
                        latency_ms,
                        error = f.code,
                        cause = %f.cause,
                        "request"
                    ),
                    (Some(f), None) => ::tracing::event!(
                        ::tracing::Level::$level,
                        route = line.route,
                        method = %line.method,
                        path = %line.path,
                        status = line.status,
                        error = f.code,
                        cause = %f.cause,
                        "request"
                    ),
                }
            }
        }
    }};
}

/// Access lines dropped because stderr did not keep up
/// (`sidekey_access_log_dropped_total`), over the whole process.
pub fn dropped() -> &'static Counter {
    static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
    &DROPPED
}

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// Starts the writer thread on stderr and sends access lines there from
/// now on; returns the sink, whose [`Sink::make_writer`] is for tracing.
/// Once per process (a second call returns the first sink).
pub fn install(format: Format) -> std::io::Result<Arc<Sink>> {
    if let Some(sink) = SINK.get() {
        return Ok(sink.clone());
    }
    let sink = Sink::start(format, Box::new(std::io::stderr()), dropped().clone())?;
    Ok(SINK.get_or_init(|| sink).clone())
}

/// Writes `line` through the installed sink; false when there is none.
pub fn write(target: &str, line: &Line<'_>) -> bool {
    match SINK.get() {
        Some(sink) => {
            sink.write(target, line);
            true
        }
        None => false,
    }
}

/// Writes every pending access line, waiting at most `timeout` for stderr
/// to take them; false if it did not.
pub fn flush(timeout: Duration) -> bool {
    SINK.get().is_none_or(|sink| sink.flush(timeout))
}

/// The lines waiting for the writer thread.
struct Batch {
    buf: Vec<u8>,
    /// Flushes asked for so far, and whether the writer should end.
    flushes_asked: u64,
    stop: bool,
}

/// Where access lines go: a bounded batch, and the writer thread that
/// empties it into `out`.
pub struct Sink {
    format: Format,
    batch: Mutex<Batch>,
    /// The writer thread waits on it for lines and flush requests.
    wake: Condvar,
    /// The output; held while writing, so lines stay in order.
    out: Mutex<Box<dyn Write + Send>>,
    /// The last flush the writer thread completed, and its waiters.
    flushed: Mutex<u64>,
    flushed_cv: Condvar,
    dropped: Counter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding it leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    /// A sink writing to `out` from a new thread, counting drops in
    /// `dropped`.
    pub fn start(
        format: Format,
        out: Box<dyn Write + Send>,
        dropped: Counter,
    ) -> std::io::Result<Arc<Sink>> {
        let sink = Arc::new(Sink {
            format,
            batch: Mutex::new(Batch {
                buf: Vec::with_capacity(FLUSH_AT),
                flushes_asked: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            out: Mutex::new(out),
            flushed: Mutex::new(0),
            flushed_cv: Condvar::new(),
            dropped,
        });
        let writer = sink.clone();
        std::thread::Builder::new()
            .name("sidekey-access-log".into())
            .spawn(move || writer.run())?;
        Ok(sink)
    }

    /// Formats `line` and queues it (or drops and counts it when the
    /// batch is full).
    pub fn write(&self, target: &str, line: &Line<'_>) {
        let format = |local: &mut Local| {
            local.buf.clear();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            match self.format {
                Format::Text => {
                    local.clock.stamp(now, &mut local.buf);
                    format_text(&mut local.buf, target, line);
                }
                Format::Json => {
                    local.buf.extend_from_slice(b"{\"timestamp\":\"");
                    local.clock.stamp(now, &mut local.buf);
                    format_json(&mut local.buf, target, line);
                }
            }
            self.queue(&local.buf);
        };
        let done = LOCAL.try_with(|local| match local.try_borrow_mut() {
            Ok(mut local) => {
                format(&mut local);
                true
            }
            Err(_) => false,
        });
        if !matches!(done, Ok(true)) {
            // A thread being torn down: a buffer of its own, this once.
            format(&mut Local::new());
        }
    }

    fn queue(&self, line: &[u8]) {
        let mut batch = lock(&self.batch);
        let before = batch.buf.len();
        if before + line.len() > LIMIT {
            drop(batch);
            self.dropped.inc();
            return;
        }
        batch.buf.extend_from_slice(line);
        let crossed = before < FLUSH_AT && batch.buf.len() >= FLUSH_AT;
        drop(batch);
        // The writer sleeps while the batch is empty, and waits for
        // FLUSH_AT bytes (or INTERVAL) once it is not.
        if before == 0 || crossed {
            self.wake.notify_one();
        }
    }

    /// Asks the writer thread to write what is pending and waits (at most
    /// `timeout`) until it has.
    pub fn flush(&self, timeout: Duration) -> bool {
        let asked = {
            let mut batch = lock(&self.batch);
            batch.flushes_asked += 1;
            batch.flushes_asked
        };
        self.wake.notify_one();
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.flushed);
        while *done < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .flushed_cv
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A writer for tracing's own lines: each is written at once, after
    /// the access lines queued before it.
    pub fn make_writer(self: &Arc<Self>) -> LogWriter {
        LogWriter(self.clone())
    }

    /// Writes `line` now, after the pending access lines.
    fn write_through(&self, line: &[u8]) -> std::io::Result<()> {
        let mut out = lock(&self.out);
        let pending = std::mem::take(&mut lock(&self.batch).buf);
        if !pending.is_empty() {
            out.write_all(&pending)?;
        }
        out.write_all(line)?;
        out.flush()
    }

    /// The writer thread: waits for lines, lets them accumulate up to
    /// FLUSH_AT bytes or INTERVAL, writes them.
    fn run(&self) {
        let mut spare: Vec<u8> = Vec::with_capacity(FLUSH_AT);
        let mut warned = false;
        // The last flush request done.
        let mut done = 0;
        loop {
            let mut batch = lock(&self.batch);
            while batch.buf.is_empty() && batch.flushes_asked == done && !batch.stop {
                batch = self
                    .wake
                    .wait(batch)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + INTERVAL;
            while batch.buf.len() < FLUSH_AT && batch.flushes_asked == done && !batch.stop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                batch = self
                    .wake
                    .wait_timeout(batch, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(batch);
            // `out` before the batch, as write_through takes them: lines
            // reach the output in the order they were queued.
            let mut out = lock(&self.out);
            let (asked, stop) = {
                let mut batch = lock(&self.batch);
                std::mem::swap(&mut batch.buf, &mut spare);
                (batch.flushes_asked, batch.stop)
            };
            // A failed write (stderr closed) loses these lines; there is
            // nowhere to say so.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            drop(out);
            spare.clear();
            if spare.capacity() > 4 * FLUSH_AT {
                spare.shrink_to(FLUSH_AT);
            }
            done = asked;
            *lock(&self.flushed) = done;
            self.flushed_cv.notify_all();
            if !warned && self.dropped.get() > 0 {
                warned = true;
                tracing::warn!(
                    limit_bytes = LIMIT,
                    "stderr is not keeping up with the access log: access lines are being dropped (counted in sidekey_access_log_dropped_total); requests are still served"
                );
            }
            if stop {
                return;
            }
        }
    }

    /// Ends the writer thread once it has written what is pending.
    pub fn stop(&self) {
        lock(&self.batch).stop = true;
        self.wake.notify_one();
    }
}

/// tracing's writer (see [`Sink::make_writer`]).
pub struct LogWriter(Arc<Sink>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_through(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_through(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.0.clone())
    }
}

/// Per thread: the line being formatted and the time of day formatted
/// for the current second.
struct Local {
    buf: Vec<u8>,
    clock: Clock,
}

impl Local {
    const fn new() -> Local {
        Local {
            buf: Vec::new(),
            clock: Clock {
                secs: u64::MAX,
                text: [0; 19],
            },
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Local::new()) };
}

/// `YYYY-MM-DDTHH:MM:SS` of the second `secs`, formatted when it changes.
struct Clock {
    secs: u64,
    text: [u8; 19],
}

impl Clock {
    /// Appends `now` (since the epoch) as tracing-subscriber's timer
    /// writes it: RFC 3339, UTC, microseconds (`2026-12-06T11:38:45.123456Z`).
    fn stamp(&mut self, now: Duration, out: &mut Vec<u8>) {
        let secs = now.as_secs();
        if secs != self.secs {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
            if let Some(prefix) = text.as_bytes().get(..19) {
                self.text.copy_from_slice(prefix);
                self.secs = secs;
            }
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        push_padded(out, now.subsec_micros(), 6);
        out.push(b'Z');
    }
}

/// Appends `n` with at least `width` digits (zeros in front).
fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n).as_bytes();
    for _ in text.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(text);
}

/// Appends a latency in milliseconds, to the nanosecond, as tracing
/// prints the `f64` (`233.037477`, `12.5`, `3`): no trailing zeros.
fn push_ms(out: &mut Vec<u8>, latency: Duration) {
    let nanos = latency.as_nanos();
    out.extend_from_slice(itoa::Buffer::new().format(nanos / 1_000_000).as_bytes());
    // < 1_000_000: fits.
    let mut frac = (nanos % 1_000_000) as u32;
    if frac == 0 {
        return;
    }
    let mut width = 6;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    out.push(b'.');
    push_padded(out, frac, width);
}

fn push_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `s` as Rust's `{:?}` prints it (as tracing prints a `&str`
/// field): quoted, escaped.
fn push_debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// The text line, as tracing-subscriber's default format writes an event
/// (after the timestamp): `  INFO target: request route="r" method=GET ...`.
fn format_text(out: &mut Vec<u8>, target: &str, line: &Line<'_>) {
    out.extend_from_slice(match line.level() {
        Level::Info => b"  INFO ",
        Level::Warn => b"  WARN ",
    });
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b": request route=");
    push_debug_str(out, line.route);
    out.extend_from_slice(b" method=");
    out.extend_from_slice(line.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(line.path.as_bytes());
    out.extend_from_slice(b" status=");
    push_u16(out, line.status);
    if let Some(latency) = line.latency {
        out.extend_from_slice(b" latency_ms=");
        push_ms(out, latency);
    }
    if let Some(failure) = &line.failure {
        out.extend_from_slice(b" error=");
        push_debug_str(out, failure.code);
        let _ = write!(out, " cause={}", failure.cause);
    }
    out.push(b'\n');
}

/// The bytes a JSON string must escape: `"`, `\\` and the controls.
const JSON_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `s` as a JSON string (quoted, escaped as serde_json does).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = bytes[start..]
        .iter()
        .position(|&b| JSON_ESCAPE[usize::from(b)])
    {
        let i = start + at;
        out.extend_from_slice(&bytes[start..i]);
        match bytes[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The JSON line, as tracing-subscriber's JSON format with flattened
/// fields writes an event (after `{"timestamp":"` and the timestamp).
fn format_json(out: &mut Vec<u8>, target: &str, line: &Line<'_>) {
    out.extend_from_slice(match line.level() {
        Level::Info => b"\",\"level\":\"INFO\",\"message\":\"request\",\"route\":",
        Level::Warn => b"\",\"level\":\"WARN\",\"message\":\"request\",\"route\":",
    });
    push_json_str(out, line.route);
    out.extend_from_slice(b",\"method\":");
    push_json_str(out, line.method);
    out.extend_from_slice(b",\"path\":");
    push_json_str(out, line.path);
    out.extend_from_slice(b",\"status\":");
    push_u16(out, line.status);
    if let Some(latency) = line.latency {
        out.extend_from_slice(b",\"latency_ms\":");
        push_ms(out, latency);
    }
    if let Some(failure) = &line.failure {
        out.extend_from_slice(b",\"error\":");
        push_json_str(out, failure.code);
        out.extend_from_slice(b",\"cause\":");
        push_json_str(out, &failure.cause.to_string());
    }
    out.extend_from_slice(b",\"target\":");
    push_json_str(out, target);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn line<'a>(failure: Option<Failure<'a>>) -> Line<'a> {
        Line {
            route: "copilot",
            method: "GET",
            path: "/v1/users",
            status: if failure.is_some() { 502 } else { 200 },
            latency: Some(Duration::from_micros(1_234)),
            failure,
        }
    }

    /// What tracing-subscriber itself writes for the same line (the
    /// fallback event of `access_line!`), in `format`.
    fn through_tracing(format: Format, failure: bool) -> String {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let out = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false);
        let cause = "the upstream \"api\" did not answer";
        let emit = || match failure {
            false => crate::access_line!(Info, line(None)),
            true => crate::access_line!(
                Warn,
                line(Some(Failure {
                    code: "upstream_unreachable",
                    cause: &cause,
                }))
            ),
        };
        match format {
            Format::Text => tracing::subscriber::with_default(builder.finish(), emit),
            Format::Json => {
                tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit)
            }
        }
        let text = String::from_utf8(lock(&captured.0).clone()).expect("UTF-8");
        text
    }

    fn ours(format: Format, failure: bool) -> String {
        let cause = "the upstream \"api\" did not answer";
        let line = line(failure.then_some(Failure {
            code: "upstream_unreachable",
            cause: &cause,
        }));
        let mut out = Vec::new();
        let mut clock = Clock {
            secs: u64::MAX,
            text: [0; 19],
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        match format {
            Format::Text => {
                clock.stamp(now, &mut out);
                format_text(&mut out, module_path!(), &line);
            }
            Format::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                clock.stamp(now, &mut out);
                format_json(&mut out, module_path!(), &line);
            }
        }
        String::from_utf8(out).expect("UTF-8")
    }

    /// A text line without its timestamp, latency_ms as a number.
    fn text_parts(line: &str) -> (String, f64) {
        let (_, rest) = line.split_once(' ').expect("a timestamp");
        let (head, tail) = rest.split_once("latency_ms=").expect("latency_ms");
        let (number, tail) = tail.split_once([' ', '\n']).unwrap_or((tail, ""));
        (
            format!("{head}latency_ms=? {tail}"),
            number.parse().expect("a number"),
        )
    }

    #[test]
    fn the_text_line_is_the_one_tracing_writes() {
        for failure in [false, true] {
            let (theirs, their_ms) = text_parts(&through_tracing(Format::Text, failure));
            let (ours, our_ms) = text_parts(&ours(Format::Text, failure));
            assert_eq!(ours, theirs);
            assert!((our_ms - their_ms).abs() < 1e-9, "{our_ms} vs {their_ms}");
        }
    }

    #[test]
    fn the_json_line_is_the_one_tracing_writes() {
        for failure in [false, true] {
            let theirs = through_tracing(Format::Json, failure);
            let ours = ours(Format::Json, failure);
            assert_eq!(ours.lines().count(), 1, "{ours}");
            let mut theirs: serde_json::Value = serde_json::from_str(&theirs).expect("JSON");
            let mut ours: serde_json::Value = serde_json::from_str(&ours).expect("JSON");
            let their_ms = theirs["latency_ms"].take().as_f64().expect("latency_ms");
            let our_ms = ours["latency_ms"].take().as_f64().expect("latency_ms");
            assert!((our_ms - their_ms).abs() < 1e-9, "{our_ms} vs {their_ms}");
            let their_time = theirs["timestamp"].take();
            let our_time = ours["timestamp"].take();
            assert_eq!(
                our_time.as_str().map(str::len),
                their_time.as_str().map(str::len)
            );
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn the_timestamp_is_rfc3339_with_microseconds() {
        let mut clock = Clock {
            secs: u64::MAX,
            text: [0; 19],
        };
        for now in [
            Duration::new(0, 0),
            Duration::new(1_765_000_000, 123_456_789),
            Duration::new(1_765_000_000, 999_999_999),
            Duration::new(1_765_000_001, 7_000),
        ] {
            let mut out = Vec::new();
            clock.stamp(now, &mut out);
            let want = humantime::format_rfc3339_micros(UNIX_EPOCH + now).to_string();
            assert_eq!(String::from_utf8(out).expect("UTF-8"), want);
        }
    }

    #[test]
    fn latencies_are_milliseconds_to_the_nanosecond() {
        for (latency, want) in [
            (Duration::from_nanos(233_037_477), "233.037477"),
            (Duration::from_micros(12_500), "12.5"),
            (Duration::from_millis(3), "3"),
            (Duration::from_nanos(1_000_001), "1.000001"),
            (Duration::from_nanos(40), "0.00004"),
        ] {
            let mut out = Vec::new();
            push_ms(&mut out, latency);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), want);
            let ms = latency.as_secs_f64() * 1000.0;
            assert!(
                (want.parse::<f64>().expect("a number") - ms).abs() < 1e-9,
                "{want}"
            );
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(
            text,
            serde_json::to_string("a\"b\\c\nd\u{1}é").expect("JSON")
        );
    }

    /// An output that blocks every write until the test lets it go, and
    /// keeps what it was given.
    struct Gate {
        open: mpsc::Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.open.recv();
            lock(&self.got).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn queued_line(sink: &Sink, n: usize) {
        let path = format!("/n/{n}");
        sink.write(
            "sidekey::test",
            &Line {
                route: "r",
                method: "GET",
                path: &path,
                status: 200,
                latency: Some(Duration::from_micros(5)),
                failure: None,
            },
        );
    }

    fn paths(got: &[u8]) -> Vec<usize> {
        String::from_utf8_lossy(got)
            .lines()
            .filter_map(|l| l.split("path=/n/").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn a_blocked_output_drops_and_counts_lines_instead_of_blocking() {
        let (open, gate) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let dropped = Counter::default();
        let out = Gate {
            open: gate,
            got: got.clone(),
        };
        let sink = Sink::start(Format::Text, Box::new(out), dropped.clone()).expect("thread");
        // Far more than LIMIT bytes: every call returns, the output is
        // stuck.
        let n = 2 * LIMIT / 60;
        for i in 0..n {
            queued_line(&sink, i);
        }
        assert!(dropped.get() > 0, "nothing dropped");
        let kept = n - usize::try_from(dropped.get()).expect("fits");
        // Let the output go: every line kept is written, in order.
        drop(open);
        assert!(sink.flush(Duration::from_secs(10)), "flushed");
        let written = paths(&lock(&got));
        assert_eq!(written.len(), kept);
        assert!(written.windows(2).all(|w| w[0] < w[1]), "in order");
        sink.stop();
    }

    #[test]
    fn flush_writes_what_is_pending_and_tracing_lines_keep_their_place() {
        let (open, gate) = mpsc::channel::<()>();
        // Without its sender the gate never blocks.
        drop(open);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink::start(
            Format::Text,
            Box::new(Gate {
                open: gate,
                got: got.clone(),
            }),
            Counter::default(),
        )
        .expect("thread");
        queued_line(&sink, 1);
        queued_line(&sink, 2);
        let mut writer = sink.make_writer();
        writer.write_all(b"a tracing line\n").expect("written");
        queued_line(&sink, 3);
        assert!(sink.flush(Duration::from_secs(10)), "flushed");
        let text = String::from_utf8(lock(&got).clone()).expect("UTF-8");
        let order: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.contains("/n/1") {
                    "1"
                } else if l.contains("/n/2") {
                    "2"
                } else if l.contains("/n/3") {
                    "3"
                } else {
                    l
                }
            })
            .collect();
        assert_eq!(order, ["1", "2", "a tracing line", "3"]);
        sink.stop();
    }
}
