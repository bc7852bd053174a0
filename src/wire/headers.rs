//! Header hygiene between the app and the upstream: hop-by-hop headers
//! (RFC 9110 7.6.1) and proxy credentials are never forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use super::h1::fields::RawFields;

/// Headers that describe one connection, not the message, and proxy
/// credentials: the one list of what never crosses the proxy.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields sidekey frames, routes or sets itself besides the hop-by-hop
/// ones: no client field whose name folds to one of these (see
/// [`folds_to_reserved`]) is forwarded.
const RESERVED: [&str; 8] = [
    "content-length",
    "host",
    "expect",
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Whether a backend that folds `_` into `-` and ignores case (CGI, WSGI,
/// PHP and others) reads the field name `name` as `other`.
pub(crate) fn folds_to(name: &[u8], other: &[u8]) -> bool {
    let dash = |b: u8| b == b'-' || b == b'_';
    name.len() == other.len()
        && name
            .iter()
            .zip(other)
            .all(|(a, b)| a.eq_ignore_ascii_case(b) || (dash(*a) && dash(*b)))
}

/// Whether `name` folds to a framing, hop-by-hop or forwarding field
/// name, or `Host`.
pub(crate) fn folds_to_reserved(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(&RESERVED)
        .any(|r| folds_to(name, r.as_bytes()))
}

/// True for headers that must not cross the proxy.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// [`is_hop_by_hop`] for a name as it came on the wire (any case). Runs
/// for every field of every response, so it tells most names apart by
/// their length alone.
pub(crate) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|c| c.len() == name.len() && name.eq_ignore_ascii_case(c.as_bytes()))
}

/// The comma-separated tokens of one `Connection` field value, trimmed,
/// empty ones left out.
pub(crate) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What the `Connection` fields of a head say: the `close`,
/// `keep-alive` and `upgrade` options, and whether they name fields
/// (any token but `close` and `keep-alive`: those fields are hop-by-hop).
/// The one reading of `Connection`, for requests and responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
    pub(crate) names_fields: bool,
}

impl ConnectionOptions {
    /// Adds what one `Connection` field value says.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in connection_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.names_fields = true;
            }
        }
    }

    /// What the `Connection` fields of `fields` say.
    pub(crate) fn of(fields: &RawFields) -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        for value in connection_values(fields) {
            options.add(value);
        }
        options
    }
}

/// The values of the `Connection` fields.
fn connection_values(fields: &RawFields) -> impl Iterator<Item = &[u8]> {
    fields
        .iter()
        .filter(|(name, _)| name.len() == 10 && name.eq_ignore_ascii_case(b"connection"))
        .map(|(_, value)| value)
}

/// Which fields of a head as it came are end-to-end: a test of a field
/// name of `fields`, false for the hop-by-hop fields and those its
/// `Connection` header names. Runs for every request and response, so the
/// usual case (no `Connection` field, or one that only says `keep-alive`
/// or `close`) costs one pass of length compares.
pub(crate) fn end_to_end_names(fields: &RawFields) -> impl Fn(&[u8]) -> bool + '_ {
    let listed =
        (fields.may_name_fields() && ConnectionOptions::of(fields).names_fields).then_some(fields);
    move |name| !is_hop_by_hop_name(name) && !listed.is_some_and(|f| connection_names(f, name))
}

/// Whether a `Connection` field names `name`.
fn connection_names(fields: &RawFields, name: &[u8]) -> bool {
    connection_values(fields)
        .flat_map(connection_tokens)
        .any(|t| t.eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names, and `Proxy-Authorization`.
///
/// Runs twice per proxied request (request and response), so it first
/// looks at the few names present and removes only what is there, instead
/// of a hash lookup for each of the nine hop-by-hop names every time.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut connection = false;
    let mut other_hop = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            other_hop = true;
        }
    }
    if connection {
        // Usually just `keep-alive` or `close`: options, not header names
        // (and `Keep-Alive` goes anyway), so nothing to collect.
        let names_headers = |name: &[u8]| {
            !(name.eq_ignore_ascii_case(b"keep-alive") || name.eq_ignore_ascii_case(b"close"))
        };
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| connection_tokens(v.as_bytes()))
            .filter(|name| names_headers(name))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        for name in listed {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    if other_hop {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// The header fields of a request on its way upstream: the client's, as
/// they came, minus hop-by-hop fields and those sidekey removes or
/// replaces, then sidekey's own. No header map is built for the usual
/// HTTP/1.1 request; [`ForwardHeaders::to_header_map`] makes one when
/// one is needed (HTTP/2).
///
/// What sidekey removes and adds is kept inline for the usual few fields
/// (`Host`, `Expect`, the credential's): no allocation per request.
#[derive(Clone, Debug, Default)]
pub struct ForwardHeaders {
    client: RawFields,
    /// Client fields left out (besides the hop-by-hop ones).
    removed: SmallVec<[HeaderName; 4]>,
    /// sidekey's own fields, written after the client's (inline: `Host`
    /// and a credential's, up to SigV4's three).
    added: SmallVec<[(HeaderName, HeaderValue); 4]>,
}

impl ForwardHeaders {
    pub fn new(client: RawFields) -> ForwardHeaders {
        ForwardHeaders {
            client,
            removed: SmallVec::new(),
            added: SmallVec::new(),
        }
    }

    /// The client's fields, as they came.
    pub(crate) fn client(&self) -> &RawFields {
        &self.client
    }

    /// Sets `name` to `value`, replacing every value the client sent or
    /// sidekey added before.
    pub(crate) fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove(&name);
        self.added.push((name, value));
    }

    /// Sets `name` to `value` like [`ForwardHeaders::insert`], for names
    /// clients rarely send (SigV4's `x-amz-*`): the name is remembered
    /// among the client fields left out only when the client sent it,
    /// since each name remembered costs a comparison per forwarded field.
    pub(crate) fn set_own(&mut self, name: HeaderName, value: HeaderValue) {
        if self.client.contains(name.as_str()) {
            self.remove(&name);
            self.added.push((name, value));
        } else {
            self.set_unsent(name, value);
        }
    }

    /// [`ForwardHeaders::set_own`] if the client may have sent `name`, else
    /// [`ForwardHeaders::set_unsent`]: for a caller that looked once
    /// whether the client sent any of several names.
    pub(crate) fn set_where(
        &mut self,
        client_may_have: bool,
        name: HeaderName,
        value: HeaderValue,
    ) {
        if client_may_have {
            self.set_own(name, value);
        } else {
            self.set_unsent(name, value);
        }
    }

    /// Sets `name` to `value`, for a name the caller knows the client did
    /// not send (replacing only what sidekey added before).
    pub(crate) fn set_unsent(&mut self, name: HeaderName, value: HeaderValue) {
        if self.added.iter().any(|(n, _)| *n == name) {
            self.unadd(&name);
        }
        self.added.push((name, value));
    }

    /// Drops sidekey's own values of `name` (rare: kept out of line).
    #[cold]
    fn unadd(&mut self, name: &HeaderName) {
        self.added.retain(|(n, _)| n != name);
    }

    /// The last value sidekey itself set for `name`, if any.
    pub(crate) fn added(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.added
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// Adds a value for `name` after those already there.
    pub(crate) fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.added.push((name, value));
    }

    /// Leaves out every value of `name`.
    pub(crate) fn remove(&mut self, name: &HeaderName) {
        self.added.retain(|(n, _)| n != name);
        if !self.removed.contains(name) {
            self.removed.push(name.clone());
        }
    }

    /// Asks the upstream to switch to `protocol` (the client's `Upgrade`
    /// value): `Upgrade` and `Connection: upgrade`, sidekey's own (the
    /// client's are hop-by-hop and never forwarded).
    pub(crate) fn ask_upgrade(&mut self, protocol: HeaderValue) {
        self.added
            .push((header::CONNECTION, HeaderValue::from_static("upgrade")));
        self.added.push((header::UPGRADE, protocol));
    }

    /// Whether the request asks the upstream to switch protocols (see
    /// [`ForwardHeaders::ask_upgrade`]): only then may it answer `101`.
    pub(crate) fn asks_upgrade(&self) -> bool {
        self.added.iter().any(|(name, _)| name == header::UPGRADE)
    }

    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        self.added.iter().any(|(n, _)| n == name) || self.client_value(name.as_str()).is_some()
    }

    /// The first value the client sent for `name` that is still to be
    /// forwarded.
    pub(crate) fn client_value(&self, name: &str) -> Option<&[u8]> {
        if is_hop_by_hop_name(name.as_bytes()) || self.is_removed(name.as_bytes()) {
            return None;
        }
        self.client.get(name)
    }

    fn is_removed(&self, name: &[u8]) -> bool {
        self.removed
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_str().as_bytes()))
    }

    /// Which of the client's fields are forwarded: a test of a field name.
    fn forwards(&self) -> impl Fn(&[u8]) -> bool + '_ {
        let end_to_end = end_to_end_names(&self.client);
        move |name| end_to_end(name) && !self.is_removed(name)
    }

    /// Every field that will be sent, as name and value bytes: the
    /// client's that are forwarded (names as the client spelled them),
    /// then sidekey's own (lowercase names). What a signature over the
    /// sent headers is computed from.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let forwards = self.forwards();
        self.client
            .iter()
            .filter(move |(name, _)| forwards(name))
            .chain(
                self.added
                    .iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            )
    }

    /// [`ForwardHeaders::iter`], only the fields whose names `pick`
    /// says yes to (tested first: cheaper than what is forwarded), each
    /// with whether its name is known to be lower case (sidekey's own:
    /// `HeaderName`s are).
    pub(crate) fn iter_picked(
        &self,
        pick: fn(&[u8]) -> bool,
    ) -> impl Iterator<Item = (&[u8], &[u8], bool)> + '_ {
        let forwards = self.forwards();
        self.client
            .iter()
            .filter(move |(name, _)| pick(name) && forwards(name))
            .map(|(name, value)| (name, value, false))
            .chain(
                self.added
                    .iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes(), true))
                    .filter(move |(name, _, _)| pick(name)),
            )
    }

    /// Writes the fields to send as header lines, leaving out those that
    /// `skip` names (e.g. framing fields the writer sets itself).
    pub(crate) fn write_lines(&self, buf: &mut Vec<u8>, skip: impl Fn(&[u8]) -> bool) {
        let forwards = self.forwards();
        self.client
            .write_lines(buf, |name, _| forwards(name) && !skip(name));
        for (name, value) in &self.added {
            if skip(name.as_str().as_bytes()) {
                continue;
            }
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }

    /// The fields to send as a header map (sidekey's own values as they
    /// are, sensitive ones still marked so).
    pub(crate) fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.client.len() + self.added.len());
        let forwards = self.forwards();
        for (name, value) in self.client.iter().filter(|(name, _)| forwards(name)) {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                map.append(name, value);
            }
        }
        for (name, value) in &self.added {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn names_fold_underscores_and_case() {
        assert!(folds_to(b"X_Api_Key", b"x-api-key"));
        assert!(folds_to(b"x-api_key", b"X-API-KEY"));
        assert!(!folds_to(b"X_Api_Key2", b"x-api-key"));
        assert!(!folds_to(b"X.Api.Key", b"x-api-key"));
        for name in [
            "Transfer_Encoding",
            "Content_Length",
            "CONNECTION",
            "X_Forwarded_For",
        ] {
            assert!(folds_to_reserved(name.as_bytes()), "{name}");
        }
        for name in ["Host_", "X_Request_Id", "Content_Type"] {
            assert!(!folds_to_reserved(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn wire_names_are_hop_by_hop_in_any_case() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_bytes()), "{name}");
            assert!(
                is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        for name in ["date", "content-length", "x-te", "trailers", "connections"] {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn connection_options_are_read_in_one_place() {
        let fields = RawFields::parse(
            b"Connection: keep-alive, Upgrade\r\nX: 1\r\nconnection: ,X-Hop ,\r\n\r\n",
        )
        .unwrap();
        let options = ConnectionOptions::of(&fields);
        assert!(options.keep_alive && options.upgrade && options.names_fields);
        assert!(!options.close);
        let end_to_end = end_to_end_names(&fields);
        assert!(!end_to_end(b"x-hop") && !end_to_end(b"X-HOP") && end_to_end(b"x"));
        let mut options = ConnectionOptions::default();
        options.add(b"Close, keep-alive");
        assert!(options.close && options.keep_alive && !options.names_fields);
        assert!(!is_hop_by_hop(&header::DATE));
        assert!(is_hop_by_hop(&HeaderName::from_static("proxy-connection")));
    }

    #[test]
    fn only_an_upgrade_sidekey_asks_for_is_forwarded() {
        let client = RawFields::parse(
            b"Connection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\nSec-WebSocket-Key: k\r\n\r\n",
        )
        .unwrap();
        let mut headers = ForwardHeaders::new(client);
        let mut lines = Vec::new();
        headers.write_lines(&mut lines, |_| false);
        assert_eq!(lines, b"Sec-WebSocket-Key: k\r\n");
        assert!(!headers.asks_upgrade());
        headers.ask_upgrade(HeaderValue::from_static("websocket"));
        assert!(headers.asks_upgrade());
        lines.clear();
        headers.write_lines(&mut lines, |_| false);
        assert_eq!(
            String::from_utf8_lossy(&lines),
            "Sec-WebSocket-Key: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        );
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.append(header::VIA, HeaderValue::from_static("1.1 a"));
        h.append(header::VIA, HeaderValue::from_static("1.1 b"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);

        // A hop-by-hop header with no `Connection` header, and the reverse.
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // The usual `Connection: keep-alive` with its `Keep-Alive` header.
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn set_own_replaces_the_clients_copy_in_any_case() {
        use crate::wire::h1::fields::RawFields;
        let client = b"X-AMZ-Date: 19990101T000000Z\r\nAccept: */*\r\n\r\n";
        let mut h = ForwardHeaders::new(RawFields::parse(client).unwrap());
        let date = HeaderName::from_static("x-amz-date");
        let sha = HeaderName::from_static("x-amz-content-sha256");
        h.set_own(date.clone(), HeaderValue::from_static("20260101T000000Z"));
        h.set_own(sha.clone(), HeaderValue::from_static("UNSIGNED-PAYLOAD"));
        h.set_own(sha.clone(), HeaderValue::from_static("e3b0"));
        let sent: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sent,
            pairs(&[
                ("accept", "*/*"),
                ("x-amz-date", "20260101T000000Z"),
                ("x-amz-content-sha256", "e3b0"),
            ])
        );
        // Only the name the client sent is remembered as left out.
        assert!(h.is_removed(b"x-amz-date"));
        assert!(!h.is_removed(b"x-amz-content-sha256"));
    }
}
