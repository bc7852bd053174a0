//! The built `sidekey` binary as a child process: start it, read its log
//! lines as they come, signal it, stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for an expected log line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of the binary cargo built for these tests.
pub fn sidekey_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sidekey")
}

/// Runs `sidekey ARGS...` to completion: (exit status, stdout, stderr).
pub fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(sidekey_bin())
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .expect("run the sidekey binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `sidekey run`.
pub struct SidekeyProcess {
    child: Child,
    lines: Receiver<String>,
    all: Arc<Mutex<Vec<String>>>,
    /// Set by [`SidekeyProcess::spawn_stderr_unread`]: lets the stderr
    /// reader go on.
    resume_stderr: Option<mpsc::Sender<()>>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
}

/// The address following `key=` (text logs) or `"key":"` (JSON logs).
fn field_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line
        .find(&format!("{key}="))
        .map(|i| i + key.len() + 1)
        .or_else(|| {
            line.find(&format!("\"{key}\":\""))
                .map(|i| i + key.len() + 4)
        })?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '.' || c == ':' || c == '[' || c == ']')
        })
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl SidekeyProcess {
    /// Starts `sidekey run --config CONFIG EXTRA...` with exactly `envs`
    /// as its environment and waits until it logs that it is listening.
    pub fn spawn(config: &Path, envs: &[(&str, &str)], extra: &[&str]) -> SidekeyProcess {
        SidekeyProcess::start(config, envs, extra, false)
    }

    /// Like [`SidekeyProcess::spawn`], but stderr is read only up to the
    /// line saying sidekey listens: then nobody reads it (the pipe fills
    /// and stays full) until [`SidekeyProcess::read_stderr_again`].
    pub fn spawn_stderr_unread(
        config: &Path,
        envs: &[(&str, &str)],
        extra: &[&str],
    ) -> SidekeyProcess {
        SidekeyProcess::start(config, envs, extra, true)
    }

    /// Reads stderr again after [`SidekeyProcess::spawn_stderr_unread`].
    pub fn read_stderr_again(&mut self) {
        if let Some(resume) = self.resume_stderr.take() {
            let _ = resume.send(());
        }
    }

    fn start(
        config: &Path,
        envs: &[(&str, &str)],
        extra: &[&str],
        pause_stderr: bool,
    ) -> SidekeyProcess {
        let mut child = Command::new(sidekey_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env_clear()
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the sidekey binary");
        let (tx, lines) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (resume_stderr, resume) = mpsc::channel::<()>();
        let mut resume = pause_stderr.then_some(resume);
        for (stream, mut pause) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, None),
            (Box::new(stderr), resume.take()),
        ] {
            let tx = tx.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    all.lock().expect("log lock").push(line.clone());
                    let listening = line.contains("sidekey listening");
                    let _ = tx.send(line);
                    if listening {
                        if let Some(resume) = pause.take() {
                            // Holds the pipe open, unread, until resumed
                            // (or the test is over).
                            let _ = resume.recv();
                        }
                    }
                }
            });
        }
        let mut process = SidekeyProcess {
            child,
            lines,
            all,
            resume_stderr: pause_stderr.then_some(resume_stderr),
            proxy_addr: "0.0.0.0:0".parse().expect("literal address"),
            admin_addr: None,
        };
        let line = process.wait_for_line("sidekey listening");
        process.proxy_addr =
            field_addr(&line, "proxy_addr").unwrap_or_else(|| panic!("no proxy_addr in {line:?}"));
        process.admin_addr = field_addr(&line, "admin_addr");
        process
    }

    /// Waits for the next log line containing `needle` (earlier lines
    /// are skipped) and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "sidekey did not log {needle:?} within {LINE_TIMEOUT:?}; it printed:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Waits at most `within` for the next log line containing `needle`
    /// (earlier lines are skipped).
    pub fn line_within(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits (up to [`LINE_TIMEOUT`]) until `count` of the lines printed
    /// so far satisfy `matches`; returns how many do.
    pub fn wait_for_lines(&mut self, count: usize, matches: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let n = self
                .all
                .lock()
                .expect("log lock")
                .iter()
                .filter(|l| matches(l))
                .count();
            let left = deadline.saturating_duration_since(Instant::now());
            if n >= count || left.is_zero() {
                return n;
            }
            // The next line, whatever it is, then count again.
            let _ = self.lines.recv_timeout(left);
        }
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"INT"`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Everything printed so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        self.all.lock().expect("log lock").join("\n")
    }

    /// Sends SIGTERM, waits for the process to exit and returns its status
    /// and everything it printed.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with("TERM")
    }

    /// Stops sidekey with signal `name` (as [`SidekeyProcess::signal`]
    /// names it); returns how it exited and everything it printed.
    pub fn stop_with(mut self, name: &str) -> (ExitStatus, String) {
        self.signal(name);
        self.read_stderr_again();
        let status = self.child.wait().expect("wait for sidekey");
        // The reader threads end at EOF; collect what they read.
        let deadline = Instant::now() + LINE_TIMEOUT;
        while self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        (status, self.output())
    }
}

impl Drop for SidekeyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
