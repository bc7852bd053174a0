//! Request smuggling, end to end: each payload of
//! `tests/corpus/smuggling.toml` goes to real sidekey, in front of a raw
//! upstream that records every byte it gets ([`Recorder`]). The upstream
//! must only ever get whole requests that the client framed unambiguously
//! (a smuggled `/smuggled` never), and sidekey must answer each payload
//! either with its own error, closing the connection, or with exactly the
//! upstream's answers, one per request: never a 5xx that is not its own
//! named error, never two answers for one request.

mod support;

use std::time::Duration;

use serde::Deserialize;
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

const CORPUS: &str = include_str!("corpus/smuggling.toml");

/// Sent on the payload's connection when sidekey keeps it open.
const FOLLOW_UP: &str =
    "GET /follow-up HTTP/1.1\r\nHost: echo.example.test\r\nConnection: close\r\n\r\n";

/// The longest wait for an answer, an end of connection, or the upstream.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    payload: Vec<Payload>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    name: String,
    class: String,
    expect: Expect,
    request: String,
    #[serde(default)]
    forwarded: Vec<String>,
    body: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    keeps_open: bool,
    pending: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Reject,
    Forward,
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        self.request
            .replace("@EXT@", &"e".repeat(5000))
            .replace("@TRAILER@", &"a".repeat(1 << 20))
            .into_bytes()
    }
}

fn corpus() -> Vec<Payload> {
    toml::from_str::<Corpus>(CORPUS)
        .unwrap_or_else(|e| panic!("tests/corpus/smuggling.toml: {e}"))
        .payload
}

#[test]
fn the_corpus_is_well_formed() {
    let corpus = corpus();
    assert!(
        (40..=90).contains(&corpus.len()),
        "{} payloads",
        corpus.len()
    );
    for (i, p) in corpus.iter().enumerate() {
        assert!(
            corpus[..i].iter().all(|q| q.name != p.name),
            "{}: named twice",
            p.name
        );
        assert!(!p.class.is_empty(), "{}: no class", p.name);
        match p.expect {
            Expect::Forward => assert!(!p.forwarded.is_empty(), "{}: forwards nothing", p.name),
            Expect::Reject => assert!(
                p.forwarded.is_empty() && p.body.is_none(),
                "{}: a rejected payload forwards nothing",
                p.name
            ),
        }
    }
}

#[tokio::test]
async fn no_payload_reaches_the_upstream_unframed() {
    run(|p| p.pending.is_none()).await;
}

/// The payloads whose rule is not implemented yet (issue 12).
#[tokio::test]
async fn pending_payloads_are_refused() {
    run(|p| p.pending.is_some()).await;
}

async fn run(select: fn(&Payload) -> bool) {
    let payloads: Vec<Payload> = corpus().into_iter().filter(select).collect();
    let mut failures = Vec::new();
    for p in &payloads {
        if let Err(e) = exchange(p).await {
            let pending = p
                .pending
                .as_deref()
                .map(|i| format!(", pending {i}"))
                .unwrap_or_default();
            failures.push(format!("[{}{pending}] {}: {e}", p.class, p.name));
        }
    }
    assert_no_foreign_panic();
    assert!(
        failures.is_empty(),
        "{} of {} payloads:\n{}",
        failures.len(),
        payloads.len(),
        failures.join("\n")
    );
}

/// Sends one payload (and the follow-up, if the connection stays open)
/// and checks what sidekey answered and what the upstream got.
async fn exchange(p: &Payload) -> Result<(), String> {
    let env = TestEnv::new();
    let upstream = Recorder::spawn().await;
    let config = echo_config(&env, upstream.addr(), "drain_timeout = \"1s\"");
    let proxy = start_sidekey(&env, &config).await;

    let tcp = TcpStream::connect(proxy.proxy_addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = tcp.into_split();
    // Written apart from the reading: sidekey may answer before it has
    // read a large payload.
    let bytes = p.bytes();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        write
    });
    let want = match p.expect {
        Expect::Reject => 1,
        Expect::Forward => p.forwarded.len(),
    };
    let mut answers = Vec::new();
    let mut closed = read_answers(&mut read, &mut answers, want).await;
    if p.expect == Expect::Reject {
        // Not refused: said at once, without waiting on the connection.
        let first: Vec<(u16, bool)> = split_responses(&answers)
            .iter()
            .filter(|r| r.status >= 200)
            .map(|r| (r.status, r.header("x-sidekey-error").is_some()))
            .collect();
        if first.len() != 1 || !first[0].1 {
            let seen: Vec<String> = upstream
                .requests()
                .iter()
                .map(|r| r.target.clone())
                .collect();
            return Err(format!(
                "not one error answer: (status, sidekey's own) {first:?}, upstream got {seen:?}"
            ));
        }
    }
    if p.expect == Expect::Reject && !p.keeps_open && !closed {
        // The error ends the connection: read on to its end.
        closed = read_answers(&mut read, &mut answers, usize::MAX).await;
    }
    let mut write = writer.await.map_err(|e| format!("writer: {e}"))?;
    let mut follow_up = None;
    if !closed {
        let _ = write.write_all(FOLLOW_UP.as_bytes()).await;
        let mut more = Vec::new();
        read_answers(&mut read, &mut more, usize::MAX).await;
        follow_up = Some(more);
    }
    drop((read, write));
    let _ = tokio::time::timeout(WAIT, proxy.shutdown()).await;
    if !upstream.wait_until_all_closed(WAIT).await {
        return Err("the upstream's connections did not end".into());
    }

    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    let answers: Vec<RawResponse> = split_responses(&answers)
        .into_iter()
        .filter(|r| r.status >= 200)
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let context = || format!("answers {statuses:?}, upstream got {seen:?}");
    if seen.iter().any(|s| s.contains("/smuggled")) {
        return Err(format!(
            "a smuggled request reached the upstream; {}",
            context()
        ));
    }
    let unparsable = upstream.unparsable();
    if !unparsable.is_empty() {
        return Err(format!(
            "the upstream got bytes it cannot frame: {unparsable:?}"
        ));
    }
    for answer in &answers {
        let own = answer.header("x-sidekey-error").is_some();
        let upstream_ok = answer.header("x-recorder").is_some() && answer.status == 200;
        if !own && !upstream_ok {
            return Err(format!(
                "an answer from neither sidekey nor the upstream; {}",
                context()
            ));
        }
        if answer.status >= 500 && Some(answer.status) != p.status {
            return Err(format!("a 5xx answer; {}", context()));
        }
    }
    let mut expected_seen = p.forwarded.clone();
    match p.expect {
        Expect::Reject => {
            let status = answers.first().map(|a| a.status);
            let status_ok = match p.status {
                Some(s) => status == Some(s),
                None => status.is_some_and(|s| (400..500).contains(&s)),
            };
            if answers.len() != 1 || !status_ok || answers[0].header("x-sidekey-error").is_none() {
                return Err(format!("not one error answer; {}", context()));
            }
            if !closed && !p.keeps_open {
                return Err(format!(
                    "the connection stayed open after the error; {}",
                    context()
                ));
            }
        }
        Expect::Forward => {
            if answers.len() != p.forwarded.len()
                || answers.iter().any(|a| a.header("x-recorder").is_none())
            {
                return Err(format!(
                    "not one upstream answer per forwarded request; {}",
                    context()
                ));
            }
            if let Some(body) = &p.body {
                let got = upstream.requests().first().map(|r| r.body.clone());
                if got.as_deref() != Some(body.as_bytes()) {
                    return Err(format!(
                        "the upstream got the body {:?}",
                        got.map(|b| String::from_utf8_lossy(&b).into_owned())
                    ));
                }
            }
        }
    }
    if let Some(more) = follow_up {
        let more: Vec<RawResponse> = split_responses(&more)
            .into_iter()
            .filter(|r| r.status >= 200)
            .collect();
        let more_statuses: Vec<u16> = more.iter().map(|r| r.status).collect();
        if more_statuses != [200] || more[0].header("x-recorder").is_none() {
            return Err(format!(
                "the follow-up got {more_statuses:?}, not the upstream's one answer; {}",
                context()
            ));
        }
        expected_seen.push("GET /follow-up".into());
    }
    if seen != expected_seen {
        return Err(format!(
            "the upstream should have got {expected_seen:?}; {}",
            context()
        ));
    }
    Ok(())
}

/// Reads into `buf` until it holds `want` whole final answers, the
/// connection ends, or [`WAIT`] passes; whether the connection ended.
async fn read_answers(read: &mut OwnedReadHalf, buf: &mut Vec<u8>, want: usize) -> bool {
    let reading = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if final_answers(buf) >= want {
                return false;
            }
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, reading).await.unwrap_or(false)
}

/// How many whole final (non-1xx) answers `buf` starts with.
fn final_answers(buf: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = buf;
    while let Some(len) = complete_response_len(rest) {
        count += 1;
        rest = &rest[len..];
    }
    count
}
