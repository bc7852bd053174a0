//! The command line for the beyond-the-seeds routes this build has:
//! `check` on `config/examples/beyond-routes.toml`, `sign` for an
//! `aws_sigv4` route, and `run` at `RUST_LOG=trace` signing requests;
//! none prints a secret key, session token or signature.

mod support;

use std::path::Path;

use http::{Request, StatusCode};
use support::harness::*;
use support::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FwoGZXIvYXdzSESSIONTOKENEXAMPLE";

fn beyond_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples/beyond-routes.toml")
        .display()
        .to_string()
}

/// The variables beyond-routes.toml names; the partner route's client
/// certificate and token command are written into `dir`.
fn env(dir: &Path) -> Vec<(&'static str, String)> {
    TestCa::new().write_client_cert(dir, "partner-client", "sidekey-partner");
    let command = dir.join("partner-token");
    std::fs::write(&command, "#!/bin/sh\necho partner-token-value\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_SESSION_TOKEN", TOKEN.to_string()),
        ("PARTNER_CERT_DIR", dir.display().to_string()),
        ("PARTNER_TOKEN_CMD", command.display().to_string()),
    ]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn check_accepts_the_beyond_routes_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let (status, stdout, stderr) = run_cli(&["check", "--config", &beyond_config()], &pairs(&env));
    assert!(status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("aws_sigv4 region eu-west-1 service s3, payload unsigned"),
        "{stdout}"
    );
    assert!(
        stdout.contains("allow: GET /v1/orders/*, /v1/catalog/**"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mutual TLS: client certificate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(2 arguments), JSON, token at /token"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
    for secret in [SECRET, TOKEN, "partner-token-value"] {
        assert!(
            !stdout.contains(secret),
            "check printed a secret:\n{stdout}"
        );
    }
}

#[test]
fn sign_prints_the_signed_headers_with_the_signature_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let (status, stdout, stderr) = run_cli(
        &[
            "sign",
            "--config",
            &beyond_config(),
            "s3",
            "http://my-bucket.s3.eu-west-1.amazonaws.com/photos/a%20b.jpg",
            "--method",
            "PUT",
        ],
        &pairs(&env),
    );
    assert!(status.success(), "sign failed:\n{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("PUT https://my-bucket.s3.eu-west-1.amazonaws.com/photos/a%20b.jpg")
    );
    let headers: Vec<&str> = lines.collect();
    let find = |name: &str| {
        headers
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
    };
    assert_eq!(find("host"), "my-bucket.s3.eu-west-1.amazonaws.com");
    assert_eq!(find("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
    assert_eq!(find("x-amz-security-token"), "[REDACTED]");
    assert_eq!(find("x-amz-date").len(), 16);
    let authorization = find("authorization");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"),
        "{authorization}"
    );
    assert!(
        authorization.ends_with("/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=[REDACTED]"),
        "{authorization}"
    );
    for secret in [SECRET, TOKEN] {
        assert!(!stdout.contains(secret), "sign printed a secret:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_no_secret_key_session_token_or_signature() {
    let env = TestEnv::new();
    let host = "my-bucket.s3.eu-west-1.amazonaws.com";
    let api = SigV4Api::spawn(SigV4Rules {
        session_token: Some(TOKEN.into()),
        ..SigV4Rules::s3("eu-west-1")
    });
    let toml = proxy_toml(&env, "", &[connect_to(&format!("{host}:80"), api.addr())])
        + &format!(
            r#"
[[route]]
name = "s3"
host = "{host}"
upstream = "http://{host}"
[route.auth]
kind = "aws_sigv4"
access_key_id = "{AWS_KEY_ID}"
secret_access_key = "{SECRET}"
session_token = "{TOKEN}"
region = "eu-west-1"
service = "s3"
payload = "unsigned"
"#
        );
    let path = env.write_config(&toml);
    let sidekey =
        tokio::task::block_in_place(|| SidekeyProcess::spawn(&path, &[("RUST_LOG", "trace")], &[]));
    let get = Request::get(format!("http://{host}/a.txt?versionId=1"))
        .body(empty_body())
        .expect("request");
    assert_eq!(send(sidekey.proxy_addr, get).await.status(), StatusCode::OK);
    let put = Request::put(format!("http://{host}/b.txt"))
        .body(full_body("hello"))
        .expect("request");
    assert_eq!(send(sidekey.proxy_addr, put).await.status(), StatusCode::OK);
    let (status, output) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(status.success(), "{status:?}\n{output}");
    assert!(
        output.contains("s3"),
        "the request lines are logged:\n{output}"
    );

    let signatures: Vec<String> = api
        .requests()
        .iter()
        .map(|r| {
            let auth = r.header("authorization").expect("signed");
            auth.split("Signature=")
                .nth(1)
                .expect("a signature")
                .to_string()
        })
        .collect();
    assert_eq!(signatures.len(), 2);
    for secret in [SECRET, TOKEN]
        .iter()
        .map(|s| s.to_string())
        .chain(signatures)
    {
        assert!(
            !output.contains(&secret),
            "the logs carry {secret}:\n{output}"
        );
    }
}
