//! `source = "exec"`: a token printed by a command (a cloud CLI such as
//! `gcloud auth print-access-token`, a vault agent, a company script).
//!
//! [`ExecFetcher`] is a [`TokenFetcher`], so the token cache
//! ([`super::cache`]) runs it exactly as it sends an endpoint request:
//! one run at a time, refreshed ahead of expiry, backed off after a
//! failure, `503` to requests while there is no valid token.
//!
//! One run: the program with its arguments (an argv list, never a shell),
//! the environment sidekey runs with plus `env`, stdin empty. Its stdout
//! is the token: JSON read with `token_pointer` / `expires_in_pointer`,
//! or one bare line. A non-zero exit, no output, output past
//! [`MAX_OUTPUT_BYTES`] or a run longer than `timeout` (the child is
//! killed) is a failed fetch. Its stderr is read and thrown away: CLIs
//! print hints there that may quote secrets, so only its size is ever
//! reported. Errors name the program, never an argument (a `${VAR}` may
//! have put a secret there).

use std::io::Read;
use std::process::{Child, ChildStderr, ChildStdout, ExitStatus, Stdio};

use secrecy::{ExposeSecret, SecretString};

use super::endpoint::{
    parse_response, FetchError, FetchFuture, Fetched, ResponseSpec, TokenFetcher,
};
use crate::config::ExecConfig;

/// Output larger than this is refused (a token is a few hundred bytes,
/// a JSON credential a few KiB).
pub(crate) const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Runs a token command; see the module documentation.
pub(crate) struct ExecFetcher {
    config: ExecConfig,
    /// How errors name the command: its program as configured.
    name: String,
}

impl ExecFetcher {
    pub(crate) fn new(config: &ExecConfig) -> ExecFetcher {
        ExecFetcher {
            name: config.program.display().to_string(),
            config: config.clone(),
        }
    }

    fn fail(&self, cause: impl Into<String>) -> FetchError {
        FetchError::Command {
            program: self.name.clone(),
            cause: cause.into(),
        }
    }

    async fn run(&self) -> Result<Fetched, FetchError> {
        let mut command = std::process::Command::new(&self.config.program);
        command
            .args(self.config.args.iter().map(|a| a.expose_secret()))
            .envs(
                self.config
                    .env
                    .iter()
                    .map(|(name, value)| (name, value.expose_secret())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Running(Some(
            command
                .spawn()
                .map_err(|e| self.fail(format!("could not be started: {e}")))?,
        ));
        let (Some(stdout), Some(stderr)) = child.pipes() else {
            return Err(FetchError::Internal(
                "the token command's pipes are missing",
            ));
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let killed = || {
            self.fail(format!(
                "did not finish within {} and was killed",
                humantime::format_duration(self.config.timeout)
            ))
        };
        // Both pipes are drained at once, each on its own thread, so a
        // command that writes much to stderr does not block; too much
        // stdout ends the run at once. (`child` kills and reaps the
        // command on every early return, and when this future is dropped.)
        let stdout = on_thread(move || read_bounded(stdout));
        let stderr = on_thread(move || count(stderr));
        let stdout = match tokio::time::timeout_at(deadline, stdout).await {
            Ok(Ok(out)) => out,
            Ok(Err(why)) => return Err(self.fail(why.describe())),
            Err(_) => return Err(killed()),
        };
        let stderr_bytes = match tokio::time::timeout_at(deadline, stderr).await {
            Ok(Ok(n)) => n,
            Ok(Err(why)) => return Err(self.fail(why.describe())),
            Err(_) => return Err(killed()),
        };
        // Both pipes are closed: the command has ended or is ending.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if tokio::time::Instant::now() >= deadline => return Err(killed()),
                Ok(None) => tokio::time::sleep(EXIT_POLL).await,
                Err(e) => return Err(self.fail(Output::Io(e).describe())),
            }
        };
        if !status.success() {
            return Err(self.fail(format!(
                "{} (stderr: {stderr_bytes} bytes, not shown)",
                exit_description(status)
            )));
        }
        self.token(&stdout)
    }

    /// The token in a successful run's output.
    fn token(&self, stdout: &[u8]) -> Result<Fetched, FetchError> {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(self.fail("printed nothing"));
        }
        match &self.config.token_pointer {
            Some(pointer) => {
                let spec = ResponseSpec {
                    token_pointer: pointer.clone(),
                    expires_in_pointer: self.config.expires_in_pointer.clone(),
                    ttl: self.config.ttl,
                };
                // The endpoint's reader, with its errors worded for a
                // command's output.
                parse_response(&self.name, 200, stdout, &spec).map_err(|e| match e {
                    FetchError::NotJson { .. } => self.fail("printed something that is not JSON"),
                    FetchError::NoToken { pointer, .. } => {
                        self.fail(format!("printed no token at {pointer}"))
                    }
                    FetchError::BadToken { pointer, .. } => self.fail(format!(
                        "printed a token at {pointer} that cannot be sent (empty or control characters)"
                    )),
                    FetchError::Expired { .. } => self.fail("printed a token that has expired"),
                    other => other,
                })
            }
            None => {
                let text = std::str::from_utf8(stdout)
                    .map_err(|_| self.fail("printed something that is not UTF-8 text"))?
                    .trim();
                if text.lines().count() != 1 || text.chars().any(char::is_control) {
                    return Err(self.fail(
                        "printed more than one line (or control characters); set token_pointer if it prints JSON",
                    ));
                }
                Ok(Fetched {
                    value: SecretString::from(text.to_string()),
                    lifetime: self.config.ttl,
                })
            }
        }
    }
}

impl TokenFetcher for ExecFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.run())
    }
}

/// Why reading a run's output ended it.
enum Output {
    TooLarge,
    Io(std::io::Error),
}

impl Output {
    fn describe(&self) -> String {
        match self {
            Output::TooLarge => {
                format!("printed more than {MAX_OUTPUT_BYTES} bytes and was killed")
            }
            Output::Io(e) => format!("could not be read: {e}"),
        }
    }
}

/// How often a run whose pipes have closed is checked for its exit.
const EXIT_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// A running command: killed (if still running) and reaped when dropped.
///
/// std's process API, not tokio's: tokio's `process` feature adds a
/// check for exited children to every wake-up of every worker's event
/// loop (~110 instructions per proxied request, measured with callgrind),
/// for a command that runs once per token lifetime.
struct Running(Option<Child>);

impl Running {
    fn pipes(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        match &mut self.0 {
            Some(child) => (child.stdout.take(), child.stderr.take()),
            None => (None, None),
        }
    }

    /// The exit status once the command has ended (then reaped).
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let Some(child) = &mut self.0 else {
            return Err(std::io::Error::other("already reaped"));
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.0 = None;
        }
        Ok(status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // After SIGKILL the wait returns at once.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `read` on a thread of its own (a blocked pipe read then never
/// holds up the runtime, even past a timeout or at shutdown) and waits
/// for its result.
async fn on_thread<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, Output> + Send + 'static,
) -> Result<T, Output> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sidekey-exec-pipe".into())
        .spawn(move || {
            let _ = tx.send(read());
        })
        .map_err(Output::Io)?;
    rx.await
        .unwrap_or_else(|_| Err(Output::Io(std::io::Error::other("the pipe reader ended"))))
}

/// All of `pipe`, unless it holds more than [`MAX_OUTPUT_BYTES`].
fn read_bounded(pipe: impl Read) -> Result<Vec<u8>, Output> {
    let mut out = Vec::new();
    pipe.take(MAX_OUTPUT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Output::Io)?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(Output::TooLarge);
    }
    Ok(out)
}

/// How many bytes `pipe` held; the bytes themselves are dropped unread.
fn count(mut pipe: impl Read) -> Result<u64, Output> {
    std::io::copy(&mut pipe, &mut std::io::sink()).map_err(Output::Io)
}

fn exit_description(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was ended by signal {signal}");
        }
    }
    "ended abnormally".to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;

    /// A config running `script` (a shell script written to `dir`).
    fn config(dir: &Path, script: &str, pointer: Option<&str>) -> ExecConfig {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("token.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        ExecConfig {
            program: path,
            args: vec![SecretString::from("arg-one".to_string())],
            env: vec![(
                "TOKEN_SUFFIX".to_string(),
                SecretString::from("-sfx".to_string()),
            )],
            token_pointer: pointer.map(str::to_string),
            expires_in_pointer: pointer.map(|_| "/expires_in".to_string()),
            ttl: None,
            refresh_before: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }

    async fn fetch(config: ExecConfig) -> Result<Fetched, FetchError> {
        ExecFetcher::new(&config).fetch().await
    }

    #[tokio::test]
    async fn a_bare_line_is_the_token_and_args_and_env_reach_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let got = fetch(config(dir.path(), "echo \"tok-$1$TOKEN_SUFFIX\"", None))
            .await
            .unwrap();
        assert_eq!(got.value.expose_secret(), "tok-arg-one-sfx");
        assert_eq!(got.lifetime, None);
    }

    #[tokio::test]
    async fn json_output_is_read_with_the_pointers() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo '{"token":"ya29.abc","expires_in":3599}'"#;
        let got = fetch(config(dir.path(), script, Some("/token")))
            .await
            .unwrap();
        assert_eq!(got.value.expose_secret(), "ya29.abc");
        assert_eq!(got.lifetime, Some(Duration::from_secs(3599)));
    }

    #[tokio::test]
    async fn a_failing_command_names_its_status_and_never_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo 'stderr-secret-hunter2' >&2; echo tok; exit 3";
        let e = fetch(config(dir.path(), script, None)).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.contains("stderr: 22 bytes"), "{msg}");
        assert!(
            !msg.contains("hunter2") && !msg.contains("arg-one"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn empty_multi_line_non_json_and_oversized_output_fail() {
        let dir = tempfile::tempdir().unwrap();
        for (script, pointer, expect) in [
            ("true", None, "printed nothing"),
            ("printf 'a\\nb\\n'", None, "more than one line"),
            ("echo not-json", Some("/token"), "not JSON"),
            ("echo '{\"t\":1}'", Some("/token"), "no token at /token"),
            (
                "head -c 70000 /dev/zero | tr '\\0' a",
                None,
                "more than 65536 bytes",
            ),
        ] {
            let e = fetch(config(dir.path(), script, pointer))
                .await
                .unwrap_err();
            assert!(e.to_string().contains(expect), "{script}: {e}");
        }
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let mut config = config(dir.path(), &script, None);
        config.timeout = Duration::from_millis(300);
        let e = fetch(config).await.unwrap_err();
        assert!(e.to_string().contains("was killed"), "{e}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed and reaped: gone, never still sleeping.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            let running = state
                .rsplit(')')
                .next()
                .is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some('S' | 'R')));
            if !running {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_a_failed_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "echo tok", None);
        c.program = dir.path().join("no-such-program");
        let e = fetch(c).await.unwrap_err();
        assert!(e.to_string().contains("could not be started"), "{e}");
    }
}
