//! A real `redis-server` for the shared-cache tests, on a free loopback
//! port, with no persistence; killed when dropped. [`RedisServer::start`]
//! returns `None`, after saying so loudly on stderr, only when no
//! `redis-server` binary exists (CI installs it: `.ci/run`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
}

/// `redis-server` on `PATH` or in the usual Debian place.
fn binary() -> Option<PathBuf> {
    let mut candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("redis-server"))
        .chain([PathBuf::from("/usr/bin/redis-server")]);
    candidates.find(|c| c.is_file())
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`; `None` (loudly) when
    /// there is no `redis-server` binary.
    pub async fn start(test: &str) -> Option<RedisServer> {
        let Some(binary) = binary() else {
            eprintln!(
                "\n\n!!!!!!!! SKIPPED {test}: no redis-server binary on this machine \
                 (apt-get install -y redis-server; .ci/run does it) !!!!!!!!\n\n"
            );
            return None;
        };
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            binary,
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING on port {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: Redis goes away at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn client(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    async fn ping(&self) -> bool {
        let Ok(mut c) = self.client().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client().await.expect("connect to the test redis")
    }

    /// Every key (SCAN) with its value (DUMP is not needed: sidekey
    /// stores strings).
    pub async fn all(&self) -> Vec<(String, Vec<u8>)> {
        let mut c = self.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .expect("KEYS");
        let mut out = Vec::new();
        for key in keys {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("GET");
            if let Some(v) = value {
                out.push((key, v));
            }
        }
        out
    }

    /// A key's remaining time to live in ms (-1: none, -2: no key).
    pub async fn pttl(&self, key: &str) -> i64 {
        let mut c = self.conn().await;
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("PTTL")
    }

    pub async fn del(&self, key: &str) {
        let mut c = self.conn().await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("DEL");
    }

    /// Commands served so far, from `INFO commandstats` (the `calls` of
    /// every `cmdstat_*` line, `info` itself excluded).
    pub async fn commands(&self) -> u64 {
        let mut c = self.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .expect("INFO");
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                l.split(':')
                    .nth(1)?
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
