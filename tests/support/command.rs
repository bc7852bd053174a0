//! A one-shot sidekey command (`authorize`, `check`) as a child process:
//! stdout line by line as it comes, stderr collected whole (tests run it
//! with `RUST_LOG=trace` and search the log for secrets). For `sidekey run`,
//! see [`super::process`].

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use tokio::sync::mpsc;

/// A running sidekey command: stdout line by line as it comes, stderr
/// collected whole.
pub struct SidekeyCommand {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl SidekeyCommand {
    /// Spawns `cmd` (its stdout and stderr must be piped).
    pub fn spawn(mut cmd: Command) -> SidekeyCommand {
        let mut child = cmd.spawn().expect("run the sidekey binary");
        let out = child.stdout.take().expect("stdout piped");
        let mut err = child.stderr.take().expect("stderr piped");
        let (tx, stdout) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        SidekeyCommand {
            child,
            stdout,
            stderr,
        }
    }

    /// The next line on stdout (panics after 30 s).
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.stdout.recv())
            .await
            .expect("a line on stdout within 30 s")
            .expect("sidekey closed stdout without printing a line")
    }

    /// Kills the process (SIGKILL) and returns like [`SidekeyCommand::finish`].
    pub async fn kill(mut self) -> (ExitStatus, Vec<String>, String) {
        let _ = self.child.kill();
        self.finish().await
    }

    /// Waits for the exit; returns the status, the rest of stdout and stderr.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let mut child = self.child;
        let status = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await
        .expect("sidekey exits within 60 s")
        .expect("wait task")
        .expect("wait for sidekey");
        let mut rest = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            rest.push(line);
        }
        let stderr = self.stderr.join().expect("stderr reader");
        (status, rest, stderr)
    }
}
