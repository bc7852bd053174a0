//! SigV4 against AWS's published examples: the Signature Version 4 test
//! suite (`tests/vectors/sigv4`, each case's request, canonical request,
//! string to sign and `Authorization` header) and the S3 API reference's
//! GET Object, PUT Object, GET Bucket lifecycle and List Objects examples.

use http::header::AUTHORIZATION;
use http::uri::Scheme;
use http::Method;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::canonical::{self, ALGORITHM};
use super::{key, sha, SigV4};
use crate::config::{AwsSigV4Config, PayloadSigning};
use crate::target::Target;
use crate::wire::h1::fields::RawFields;
use crate::wire::headers::ForwardHeaders;

/// The test suite's credentials and time.
const SUITE_KEY_ID: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_TIME: &str = "20150830T123600Z";

/// The S3 examples' credentials and time (2013-05-24T00:00:00Z).
const S3_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const S3_UNIX: u64 = 1_369_353_600;
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn vector(name: &str, ext: &str) -> String {
    let path = format!(
        "{}/tests/vectors/sigv4/{name}.{ext}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A `.req` file: method, path and query, headers, body.
struct SuiteRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn parse_req(text: &str) -> SuiteRequest {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let line = lines.next().unwrap();
    let (method, rest) = line.split_once(' ').unwrap();
    let target = rest.strip_suffix(" HTTP/1.1").unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect();
    SuiteRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: body.into(),
    }
}

fn signature(secret: &str, date: &str, region: &str, service: &str, sts: &str) -> String {
    let signing_key = key::derive(secret, date, region, service);
    hex::encode(key::sign_with(&signing_key, sts.as_bytes()))
}

/// Checks every step of one test-suite case; `extra` headers are added
/// to the request (the session-token case sets its token that way).
fn suite_case(name: &str, extra: &[(&str, &str)]) {
    let mut req = parse_req(&vector(name, "req"));
    for (n, v) in extra {
        req.headers.push((n.to_string(), v.to_string()));
    }
    let payload = hex::encode(Sha256::digest(req.body.as_bytes()));
    let creq = canonical::request(
        &req.method,
        &req.path,
        &req.query,
        false,
        req.headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &payload,
    );
    assert_eq!(
        String::from_utf8(creq.bytes.clone()).unwrap(),
        vector(name, "creq"),
        "{name}: canonical request"
    );
    let scope = canonical::scope(&SUITE_TIME[..8], "us-east-1", "service");
    let sts = canonical::string_to_sign(SUITE_TIME, &scope, &creq.bytes);
    assert_eq!(sts, vector(name, "sts"), "{name}: string to sign");
    let sig = signature(SUITE_SECRET, &SUITE_TIME[..8], "us-east-1", "service", &sts);
    let authz = format!(
        "{ALGORITHM} Credential={SUITE_KEY_ID}/{scope}, SignedHeaders={}, Signature={sig}",
        std::str::from_utf8(creq.signed_headers()).unwrap()
    );
    assert_eq!(authz, vector(name, "authz"), "{name}: Authorization");
}

#[test]
fn suite_vanilla_and_query_order() {
    suite_case("get-vanilla", &[]);
    suite_case("get-vanilla-query-order-key-case", &[]);
}

#[test]
fn suite_utf8_path() {
    suite_case("get-utf8", &[]);
}

#[test]
fn suite_form_post_signs_content_type_and_body() {
    suite_case("post-x-www-form-urlencoded", &[]);
}

#[test]
fn suite_header_values_are_trimmed() {
    suite_case("get-header-value-trim", &[]);
}

#[test]
fn suite_paths_are_normalised_for_services_other_than_s3() {
    for name in [
        "get-relative",
        "get-relative-relative",
        "get-slash",
        "get-slash-dot-slash",
        "get-slash-pointless-dot",
        "get-slashes",
        "get-space",
    ] {
        suite_case(name, &[]);
    }
}

#[test]
fn suite_session_tokens() {
    suite_case(
        "get-vanilla-with-session-token",
        &[(
            "X-Amz-Security-Token",
            "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        )],
    );
    // The token signed with the request (as sidekey sends it) ...
    suite_case("post-sts-header-before", &[]);
    // ... and the suite's other case, where it is added after signing.
    suite_case("post-sts-header-after", &[]);
}

/// S3 API reference, "Example: GET Object": a ranged read, empty payload.
#[test]
fn s3_get_object_example() {
    let headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ];
    let creq = canonical::request(
        "GET",
        "/test.txt",
        "",
        true,
        headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        EMPTY_SHA256,
    );
    assert_eq!(
        String::from_utf8(creq.bytes.clone()).unwrap(),
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&creq.bytes)),
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    let scope = canonical::scope("20130524", "us-east-1", "s3");
    let sts = canonical::string_to_sign("20130524T000000Z", &scope, &creq.bytes);
    assert_eq!(
        signature(S3_SECRET, "20130524", "us-east-1", "s3", &sts),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

/// S3 API reference, "Example: PUT Object": a body, and a key with `$`
/// encoded once (`%24`), whether the client sent it encoded or not.
#[test]
fn s3_put_object_example() {
    let payload = hex::encode(Sha256::digest(b"Welcome to Amazon S3."));
    assert_eq!(
        payload,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    for path in ["/test$file.text", "/test%24file.text"] {
        let headers = [
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", payload.as_str()),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ];
        let creq = canonical::request(
            "PUT",
            path,
            "",
            true,
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &payload,
        );
        assert!(
            creq.bytes.starts_with(b"PUT\n/test%24file.text\n\n"),
            "{path}: encoded once"
        );
        let scope = canonical::scope("20130524", "us-east-1", "s3");
        let sts = canonical::string_to_sign("20130524T000000Z", &scope, &creq.bytes);
        assert!(
            sts.ends_with("9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"),
            "{sts}"
        );
        assert_eq!(
            signature(S3_SECRET, "20130524", "us-east-1", "s3", &sts),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }
}

#[test]
fn s3_paths_are_not_normalised() {
    let mut out = Vec::new();
    canonical::push_uri(&mut out, "/my-object//example//photo.user", true);
    assert_eq!(out, b"/my-object//example//photo.user");
    out.clear();
    canonical::push_uri(&mut out, "/a%20b/./c", true);
    assert_eq!(out, b"/a%20b/./c");
    out.clear();
    // Other services: the path as sent is encoded once more.
    canonical::push_uri(&mut out, "/a%20b/./c", false);
    assert_eq!(out, b"/a%2520b/c");
}

fn s3_signer(payload: PayloadSigning, token: Option<&str>) -> SigV4 {
    SigV4::new(&AwsSigV4Config {
        access_key_id: SecretString::from(S3_KEY_ID),
        secret_access_key: SecretString::from(S3_SECRET),
        session_token: token.map(SecretString::from),
        region: "us-east-1".into(),
        service: "s3".into(),
        payload,
        max_signed_body: 1024,
    })
    .unwrap()
}

fn s3_target(path: &str, query: &str) -> Target {
    Target::new(
        Scheme::HTTPS,
        "examplebucket.s3.amazonaws.com".into(),
        path,
        query,
    )
}

fn authorization(headers: &ForwardHeaders) -> String {
    let map = headers.to_header_map();
    let all: Vec<_> = map.get_all(AUTHORIZATION).iter().collect();
    assert_eq!(all.len(), 1, "one Authorization");
    assert!(all[0].is_sensitive());
    all[0].to_str().unwrap().to_string()
}

/// The whole signer, on the S3 examples that sign exactly the headers
/// sidekey sets (GET Bucket lifecycle, List Objects), with the client's
/// own copies of those headers replaced.
#[test]
fn the_signer_reproduces_s3_bucket_examples() {
    for backend in [sha::Backend::Blocks, sha::Backend::Ring] {
        s3_bucket_examples(s3_signer(PayloadSigning::Signed, None).with_backend(backend));
    }
}

fn s3_bucket_examples(signer: SigV4) {
    for (query, signature) in [
        (
            "lifecycle",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            "max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ] {
        let client = b"Authorization: AWS4-HMAC-SHA256 client-copy\r\nX-Amz-Date: 19990101T000000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nAccept: */*\r\n\r\n";
        let mut headers = ForwardHeaders::new(RawFields::parse(client).unwrap());
        let signed = signer
            .sign(
                &Method::GET,
                &s3_target("/", query),
                &mut headers,
                None,
                S3_UNIX,
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(signed.canonical_request.signed_headers()).unwrap(),
            "host;x-amz-content-sha256;x-amz-date"
        );
        assert_eq!(
            authorization(&headers),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
            ),
            "?{query}"
        );
        let map = headers.to_header_map();
        assert_eq!(map.get_all("x-amz-date").iter().count(), 1);
        assert_eq!(map["x-amz-date"], "20130524T000000Z");
        assert_eq!(map["x-amz-content-sha256"], EMPTY_SHA256);
        assert_eq!(map["host"], "examplebucket.s3.amazonaws.com");
        assert_eq!(map["accept"], "*/*");
    }
}

#[test]
fn unsigned_payloads_session_tokens_and_client_amz_headers() {
    let signer = s3_signer(PayloadSigning::Unsigned, Some("SESSION/TOKEN+77"));
    let client = b"Content-Type: text/plain\r\nx-amz-meta-owner:  ada   lovelace \r\nX-Amz-Security-Token: client-token\r\nUser-Agent: t\r\n\r\n";
    let mut headers = ForwardHeaders::new(RawFields::parse(client).unwrap());
    let signed = signer
        .sign(
            &Method::PUT,
            &s3_target("/photos/a b.jpg", ""),
            &mut headers,
            None,
            S3_UNIX,
        )
        .unwrap();
    assert_eq!(
        std::str::from_utf8(signed.canonical_request.signed_headers()).unwrap(),
        "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner;x-amz-security-token"
    );
    let creq = String::from_utf8(signed.canonical_request.bytes).unwrap();
    assert!(creq.starts_with("PUT\n/photos/a%20b.jpg\n\n"), "{creq}");
    assert!(creq.contains("\nx-amz-meta-owner:ada lovelace\n"), "{creq}");
    assert!(creq.ends_with("\nUNSIGNED-PAYLOAD"), "{creq}");
    let map = headers.to_header_map();
    let tokens: Vec<_> = map.get_all("x-amz-security-token").iter().collect();
    assert_eq!(
        tokens,
        ["SESSION/TOKEN+77"],
        "the client's copy is replaced"
    );
    assert!(tokens[0].is_sensitive());
    assert_eq!(map["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    let debug = format!("{signer:?}");
    assert!(
        !debug.contains("TOKEN+77") && !debug.contains("EXAMPLEKEY"),
        "{debug}"
    );
}

#[test]
fn a_signed_payload_is_the_body_hash() {
    let signer = s3_signer(PayloadSigning::Signed, None);
    let mut headers = ForwardHeaders::default();
    let signed = signer
        .sign(
            &Method::PUT,
            &s3_target("/test$file.text", ""),
            &mut headers,
            Some(b"Welcome to Amazon S3."),
            S3_UNIX,
        )
        .unwrap();
    assert!(String::from_utf8(signed.canonical_request.bytes)
        .unwrap()
        .ends_with("\n44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"));
    assert_eq!(signer.signed_body_limit(), Some(1024));
    assert_eq!(
        s3_signer(PayloadSigning::Unsigned, None).signed_body_limit(),
        None
    );
}

#[test]
fn the_signing_key_is_derived_once_per_day() {
    let signer = s3_signer(PayloadSigning::Unsigned, None);
    let sign_at = |unix| {
        let mut headers = ForwardHeaders::default();
        signer
            .apply(&Method::GET, &s3_target("/k", ""), &mut headers, None, unix)
            .unwrap();
        authorization(&headers)
    };
    let first = sign_at(S3_UNIX);
    sign_at(S3_UNIX + 60);
    sign_at(S3_UNIX + 86_399);
    assert_eq!(signer.keys_derived(), 1);
    let next_day = sign_at(S3_UNIX + 86_400);
    assert_eq!(signer.keys_derived(), 2);
    assert!(first.contains("/20130524/") && next_day.contains("/20130525/"));
}

/// A name sent more than once, in any case, is one line with its values
/// joined in the order sent, and once in `SignedHeaders`.
#[test]
fn repeated_header_names_are_joined_in_order() {
    let headers = [
        ("My-Header1", "value2"),
        ("Host", "example.amazonaws.com"),
        ("my-header1", "  value1  "),
        ("MY-HEADER1", "value0"),
        ("X-Amz-Date", "20150830T123600Z"),
    ];
    let creq = canonical::request(
        "GET",
        "/",
        "",
        false,
        headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        EMPTY_SHA256,
    );
    assert_eq!(
        String::from_utf8(creq.bytes.clone()).unwrap(),
        format!(
            "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value1,value0\n\
             x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n{EMPTY_SHA256}"
        )
    );
    assert_eq!(creq.signed_headers(), b"host;my-header1;x-amz-date");
}

/// Query parameters sort by encoded name, then value; a bare name gets
/// `=`; encodings are normalised (`%7e` → `~`, a space → `%20`).
#[test]
fn query_parameters_sort_by_name_then_value() {
    let mut out = Vec::new();
    canonical::push_query(&mut out, "b=2&a=z&&a=y&c&d=%7e%20x&A=1");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "A=1&a=y&a=z&b=2&c=&d=~%20x"
    );
}

/// Without a session token, a client's `X-Amz-Security-Token` is neither
/// signed nor sent (it would be someone else's credential).
#[test]
fn a_client_security_token_is_dropped_without_a_session_token() {
    let signer = s3_signer(PayloadSigning::Unsigned, None);
    let client = b"X-Amz-Security-Token: client-token\r\nAccept: */*\r\n\r\n";
    let mut headers = ForwardHeaders::new(RawFields::parse(client).unwrap());
    let signed = signer
        .sign(
            &Method::GET,
            &s3_target("/a", ""),
            &mut headers,
            None,
            S3_UNIX,
        )
        .unwrap();
    assert_eq!(
        signed.canonical_request.signed_headers(),
        b"host;x-amz-content-sha256;x-amz-date"
    );
    let map = headers.to_header_map();
    assert!(map.get("x-amz-security-token").is_none());
    assert_eq!(map["accept"], "*/*");
}

#[test]
fn signed_names_are_told_apart_in_any_case() {
    for name in [
        "host",
        "HOST",
        "Content-Type",
        "content-md5",
        "x-amz-date",
        "X-Amz-Meta-Owner",
        "X-AMZ-SECURITY-TOKEN",
        "x-amz-a",
    ] {
        assert!(super::is_signed(name.as_bytes()), "{name}");
    }
    for name in [
        "hosts",
        "accept",
        "content-length",
        "x-amz-",
        "x-amz",
        "x_amz-date",
        "x-amy-date",
        "y-amz-date",
        "xamz-date",
        "authorization",
        "content-typo",
    ] {
        assert!(!super::is_signed(name.as_bytes()), "{name}");
    }
}

/// Two signers with different secrets, signing in turn on one thread in
/// the same second (the string to sign's first block is the same text
/// for both, its hash state is not): each signature is its own key's.
#[test]
fn signers_in_the_same_second_keep_their_own_keys() {
    let aws = s3_signer(PayloadSigning::Signed, None).with_backend(sha::Backend::Blocks);
    let other_secret = "an0ther/Secret+Key/0f/forty/characters!!";
    let other = SigV4::new(&AwsSigV4Config {
        access_key_id: SecretString::from("AKIAOTHEREXAMPLE0000"),
        secret_access_key: SecretString::from(other_secret),
        session_token: None,
        region: "us-east-1".into(),
        service: "s3".into(),
        payload: PayloadSigning::Signed,
        max_signed_body: 1024,
    })
    .unwrap()
    .with_backend(sha::Backend::Blocks);
    // GET /?lifecycle with no client fields: its Authorization, and what
    // was signed.
    let sign = |signer: &SigV4| {
        let mut headers = ForwardHeaders::new(RawFields::parse(b"\r\n").unwrap());
        let signed = signer
            .sign(
                &Method::GET,
                &s3_target("/", "lifecycle"),
                &mut headers,
                None,
                S3_UNIX,
            )
            .unwrap();
        (authorization(&headers), signed)
    };
    for _ in 0..2 {
        let (authorization, _) = sign(&aws);
        assert!(authorization.ends_with(
            "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        ));
        let (authorization, signed) = sign(&other);
        let sts = canonical::string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &signed.canonical_request.bytes,
        );
        let expected = signature(other_secret, "20130524", "us-east-1", "s3", &sts);
        assert!(authorization.ends_with(&format!("Signature={expected}")));
    }
}
