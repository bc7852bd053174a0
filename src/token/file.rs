//! Tokens read from a file (`source = "file"`, and the `store` of an
//! `oauth2_code` route), re-read when the file changes.
//!
//! [`WatchedFile`] checks the file's modification time, length and inode
//! at most once per [`RECHECK`], and reads it only when one of them
//! changed: no syscall per request. Requests never wait for the check
//! except the first one (and those that arrive while it runs). The file is
//! the source of truth: once it is gone or empty, there is no token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use thiserror::Error;
use tokio::time::Instant;

use super::snapshot::{Failure, TokenSnapshot, TokenState};
use super::{Token, TokenError};

/// How often the file's metadata is looked at.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// Why a watched file gives no token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum FileError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} holds no token")]
    Empty(PathBuf),
    #[error("cannot read {path}: {kind}")]
    Unreadable { path: PathBuf, kind: String },
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

struct State {
    current: Result<Token, FileError>,
    stamp: Option<Stamp>,
    checked: Option<Instant>,
    /// When the current token was read (for the status views).
    read_at: Option<Instant>,
    generation: u64,
}

/// What a [`WatchedFile`] knows of itself, for the status views.
pub(crate) struct FileStatus {
    /// Why it gives no token, if it does not.
    pub(crate) error: Option<FileError>,
    /// When the current token was read.
    pub(crate) read_at: Option<Instant>,
    /// When the file was last looked at (`None`: never yet).
    pub(crate) checked: Option<Instant>,
}

/// A file holding a token, with `parse` turning its text into the token.
pub(crate) struct WatchedFile {
    path: PathBuf,
    parse: fn(&str) -> Option<SecretString>,
    state: Mutex<State>,
    /// Serialises checks, so concurrent requests share one.
    checking: tokio::sync::Mutex<()>,
}

impl WatchedFile {
    /// Does no I/O: the file is first read by [`WatchedFile::token`].
    pub(crate) fn new(path: PathBuf, parse: fn(&str) -> Option<SecretString>) -> WatchedFile {
        WatchedFile {
            state: Mutex::new(State {
                current: Err(FileError::Missing(path.clone())),
                stamp: None,
                checked: None,
                read_at: None,
                generation: 0,
            }),
            path,
            parse,
            checking: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_due(&self, now: Instant) -> bool {
        self.lock()
            .checked
            .is_none_or(|at| now.saturating_duration_since(at) >= RECHECK)
    }

    /// The file's token, re-reading the file if it changed since the last
    /// check (at most one check per [`RECHECK`]).
    pub(crate) async fn token(&self) -> Result<Token, FileError> {
        if self.check_due(Instant::now()) {
            let _one_at_a_time = self.checking.lock().await;
            if self.check_due(Instant::now()) {
                self.check().await;
            }
        }
        self.lock().current.clone()
    }

    /// Makes the next [`WatchedFile::token`] look at the file again.
    pub(crate) fn recheck(&self) {
        self.lock().checked = None;
    }

    pub(crate) fn has_token(&self) -> bool {
        self.lock().current.is_ok()
    }

    pub(crate) fn status(&self) -> FileStatus {
        let st = self.lock();
        FileStatus {
            error: st.current.as_ref().err().cloned(),
            read_at: st.read_at.filter(|_| st.current.is_ok()),
            checked: st.checked,
        }
    }

    async fn check(&self) {
        let meta = tokio::fs::metadata(&self.path).await;
        let stamp = match &meta {
            Ok(m) => Some(Stamp::of(m)),
            Err(_) => None,
        };
        {
            let mut st = self.lock();
            // Unchanged and read fine last time: nothing to do. (A file that
            // could not be read is retried: a chmod does not change its stamp.)
            if stamp.is_some() && stamp == st.stamp && st.current.is_ok() {
                st.checked = Some(Instant::now());
                return;
            }
        }
        let read = match meta {
            Err(e) => Err(e),
            Ok(_) => tokio::fs::read_to_string(&self.path).await,
        };
        let value = match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(FileError::Missing(self.path.clone()))
            }
            Err(e) => Err(FileError::Unreadable {
                path: self.path.clone(),
                kind: e.kind().to_string(),
            }),
            Ok(text) => (self.parse)(&text).ok_or_else(|| FileError::Empty(self.path.clone())),
        };
        let mut st = self.lock();
        st.checked = Some(Instant::now());
        st.stamp = stamp;
        st.current = match value {
            Ok(value) => {
                let same = st.current.as_ref().is_ok_and(|t| {
                    use secrecy::ExposeSecret;
                    t.value.expose_secret() == value.expose_secret()
                });
                if same {
                    return;
                }
                st.generation += 1;
                st.read_at = st.checked;
                tracing::info!(path = %self.path.display(), "token file read");
                Ok(Token {
                    value: Arc::new(value),
                    generation: st.generation,
                })
            }
            Err(e) => {
                if st.current.is_ok() {
                    tracing::warn!(error = %e, "token file no longer gives a token");
                }
                Err(e)
            }
        };
    }
}

/// `source = "file"`.
pub(crate) struct FileSource {
    file: Arc<WatchedFile>,
}

impl FileSource {
    pub(crate) fn new(path: PathBuf) -> FileSource {
        FileSource {
            file: Arc::new(WatchedFile::new(path, parse_plain)),
        }
    }

    pub(crate) async fn token(&self) -> Result<Token, TokenError> {
        self.file
            .token()
            .await
            .map_err(|e| TokenError::Unavailable {
                cause: e.to_string(),
                retry_after: RECHECK.as_secs().max(1),
            })
    }

    /// A 401: the file may have been rotated since the last check.
    pub(crate) fn reject(&self) {
        self.file.recheck();
    }

    pub(crate) fn has_valid_token(&self) -> bool {
        self.file.has_token()
    }

    pub(crate) fn warm_up(&self) {
        warm_up(&self.file);
    }

    /// A file that is not there (or empty) is `missing`; one that cannot
    /// be read is `failing`.
    pub(crate) fn snapshot(&self) -> TokenSnapshot {
        let status = self.file.status();
        let state = match &status.error {
            None => TokenState::Valid,
            Some(FileError::Unreadable { .. }) => TokenState::Failing,
            Some(_) => TokenState::Missing,
        };
        file_snapshot(state, status, |e| e.to_string())
    }
}

/// The snapshot of a source that reads `status`'s file; the cause of a
/// failure is `cause(error)` (what a client's 503 says).
pub(crate) fn file_snapshot(
    state: TokenState,
    status: FileStatus,
    cause: impl Fn(&FileError) -> String,
) -> TokenSnapshot {
    let failed = state == TokenState::Failing;
    let last_failure = match (&status.error, status.checked) {
        (Some(e), Some(at)) => Some(Failure {
            at,
            cause: cause(e),
        }),
        _ => None,
    };
    TokenSnapshot {
        usable: status.error.is_none(),
        fetched_at: status.read_at,
        last_failure,
        consecutive_failures: u32::from(failed),
        ..TokenSnapshot::bare(state, false)
    }
}

/// Reads the file once in the background (so `/readyz` knows), when in a
/// Tokio runtime.
pub(crate) fn warm_up(file: &Arc<WatchedFile>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let file = Arc::downgrade(file);
    tokio::spawn(async move {
        if let Some(file) = file.upgrade() {
            let _ = file.token().await;
        }
    });
}

/// A plain token file: its text, trimmed.
fn parse_plain(text: &str) -> Option<SecretString> {
    let text = text.trim();
    (!text.is_empty() && !text.chars().any(char::is_control))
        .then(|| SecretString::from(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn value(t: &Token) -> String {
        t.value.expose_secret().to_string()
    }

    #[tokio::test]
    async fn reads_the_file_and_notices_a_change_after_the_recheck_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = WatchedFile::new(path.clone(), parse_plain);
        let t1 = file.token().await.unwrap();
        assert_eq!(value(&t1), "first");
        // Replaced the way editors and `authorize` do: a new file renamed over it.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "second-token\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        // Within the interval the old token stays (no stat per request).
        assert_eq!(value(&file.token().await.unwrap()), "first");
        tokio::time::pause();
        tokio::time::advance(RECHECK).await;
        let t2 = file.token().await.unwrap();
        assert_eq!(value(&t2), "second-token");
        assert!(t2.generation > t1.generation);
    }

    #[tokio::test]
    async fn recheck_forces_a_look_and_a_missing_file_gives_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first").unwrap();
        let file = WatchedFile::new(path.clone(), parse_plain);
        assert!(!file.has_token(), "nothing is read before the first use");
        file.token().await.unwrap();
        assert!(file.has_token());
        std::fs::remove_file(&path).unwrap();
        file.recheck();
        assert_eq!(
            file.token().await.unwrap_err(),
            FileError::Missing(path.clone())
        );
        std::fs::write(&path, "  \n").unwrap();
        file.recheck();
        assert_eq!(file.token().await.unwrap_err(), FileError::Empty(path));
    }

    #[tokio::test]
    async fn the_file_source_reports_a_missing_file_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let source = FileSource::new(dir.path().join("absent"));
        match source.token().await.unwrap_err() {
            TokenError::Unavailable { cause, .. } => assert!(cause.contains("does not exist")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_snapshot_of_a_file_source_is_valid_then_missing_with_the_503_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok").unwrap();
        let source = FileSource::new(path.clone());
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Missing, "not read yet");
        assert_eq!(snap.last_failure, None, "nothing failed yet");
        source.token().await.unwrap();
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Valid);
        assert!(snap.usable);
        assert!(snap.fetched_at.is_some());
        std::fs::write(&path, "").unwrap();
        source.file.recheck();
        let cause = match source.token().await.unwrap_err() {
            TokenError::Unavailable { cause, .. } => cause,
            other => panic!("{other:?}"),
        };
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Missing);
        assert!(!snap.usable);
        assert_eq!(snap.fetched_at, None);
        assert_eq!(snap.last_failure.map(|f| f.cause), Some(cause));
    }
}
