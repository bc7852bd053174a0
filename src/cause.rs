//! Describing an error by its cause, for logs and error bodies: the
//! innermost error of a chain names what went wrong and (unlike the outer
//! layers) holds no request data. Depends on nothing else in sidekey.

/// The innermost cause of an error chain: for a client error, the I/O or
/// TLS error underneath.
pub(crate) fn innermost_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// What went wrong, in a few words: the innermost cause of `e`, with the
/// usual socket errors named plainly ("connection refused") rather than
/// as the OS words them.
pub(crate) fn describe_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let cause = innermost_cause(e);
    match cause.downcast_ref::<std::io::Error>().map(|io| io.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_string(),
        Some(std::io::ErrorKind::TimedOut) => "connect timed out".to_string(),
        _ => cause.to_string(),
    }
}
