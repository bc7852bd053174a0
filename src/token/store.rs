//! The token store of an `oauth2_code` route: the file `sidekey authorize`
//! writes and the proxy reads.
//!
//! Written atomically (a temporary file in the same folder, synced, then
//! renamed over the store) with mode 0600, so a reader sees the old token
//! or the new one, never half of one, and no other user can read it. The
//! format is a small JSON document, `{"access_token": "...", "created_at":
//! <unix seconds>}`, with `"refresh_token"`, `"expires_at"` (unix seconds)
//! and `"updated_at_ms"` when the provider gave a refresh token
//! ([`Tokens`]); a file holding just a token (pasted from a provider's
//! dashboard, as Copernica offers) is read too.

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot write the token store {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// What an `oauth2_code` route keeps: the access token, and the refresh
/// token that gets the next one.
#[derive(Clone)]
pub(crate) struct Tokens {
    pub(crate) access_token: SecretString,
    pub(crate) refresh_token: Option<SecretString>,
    /// When the access token expires (unix seconds); `None`: not said.
    pub(crate) expires_at: Option<u64>,
    /// When this record was written (unix milliseconds): of two copies
    /// (the file, Redis), the later one holds the current refresh token.
    pub(crate) updated_at_ms: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish_non_exhaustive()
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tokens {
    /// The JSON document (the store file's text, and what is sealed in
    /// Redis).
    pub(crate) fn to_json(&self) -> SecretString {
        let mut json = serde_json::json!({
            "access_token": self.access_token.expose_secret(),
            "created_at": self.updated_at_ms / 1000,
            "updated_at_ms": self.updated_at_ms,
        });
        if let Some(r) = &self.refresh_token {
            json["refresh_token"] = r.expose_secret().into();
        }
        if let Some(e) = self.expires_at {
            json["expires_at"] = e.into();
        }
        let mut text = json.to_string();
        text.push('\n');
        SecretString::from(text)
    }

    /// A store's text: the JSON document, or a bare token.
    pub(crate) fn parse(text: &str) -> Option<Tokens> {
        let access_token = parse(text)?;
        let json: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
        let field = |name: &str| json.as_ref().and_then(|j| j.get(name).cloned());
        let refresh_token = field("refresh_token")
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|t| !t.is_empty() && !t.chars().any(char::is_control))
            .map(SecretString::from);
        let updated_at_ms = field("updated_at_ms")
            .and_then(|v| v.as_u64())
            .or_else(|| {
                field("created_at")
                    .and_then(|v| v.as_u64())
                    .map(|s| s * 1000)
            })
            .unwrap_or(0);
        Some(Tokens {
            access_token,
            refresh_token,
            expires_at: field("expires_at").and_then(|v| v.as_u64()),
            updated_at_ms,
        })
    }
}

/// Writes `token` to `path` atomically with mode 0600.
#[cfg(test)]
pub(crate) fn write(path: &Path, token: &SecretString) -> Result<(), StoreError> {
    write_tokens(
        path,
        &Tokens {
            access_token: token.clone(),
            refresh_token: None,
            expires_at: None,
            updated_at_ms: now_ms(),
        },
    )
}

/// Writes `tokens` to `path` atomically with mode 0600.
pub(crate) fn write_tokens(path: &Path, tokens: &Tokens) -> Result<(), StoreError> {
    let err = |cause| StoreError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".to_string());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let text = tokens.to_json();

    let result = (|| {
        let mut file = open_private(&tmp)?;
        file.write_all(text.expose_secret().as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform
        // can open a folder).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The token in a store file's text: the JSON document's `access_token`,
/// else the whole text trimmed. `None` when there is no usable token.
pub(crate) fn parse(text: &str) -> Option<SecretString> {
    let text = text.trim();
    let token = if text.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        json.get("access_token")?.as_str()?.to_string()
    } else {
        text.to_string()
    };
    (!token.is_empty() && !token.chars().any(char::is_control)).then(|| SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_with_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copernica.token");
        write(
            &path,
            &SecretString::from("ed430a95c58fd7d2830c9dc453396cf5"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            parse(&text).unwrap().expose_secret(),
            "ed430a95c58fd7d2830c9dc453396cf5"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Overwriting keeps one file and no temporaries.
        write(&path, &SecretString::from("second")).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("copernica.token")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse(&text).unwrap().expose_secret(), "second");
    }

    #[test]
    fn a_refresh_token_and_expiry_round_trip_and_a_bare_token_has_neither() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.token");
        let tokens = Tokens {
            access_token: SecretString::from("acc-1"),
            refresh_token: Some(SecretString::from("ref-1")),
            expires_at: Some(1_900_000_000),
            updated_at_ms: 1_800_000_000_123,
        };
        write_tokens(&path, &tokens).unwrap();
        let back = Tokens::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.access_token.expose_secret(), "acc-1");
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "ref-1");
        assert_eq!(back.expires_at, Some(1_900_000_000));
        assert_eq!(back.updated_at_ms, 1_800_000_000_123);
        assert!(!format!("{tokens:?}").contains("ref-1"));
        let bare = Tokens::parse("abc123\n").unwrap();
        assert!(bare.refresh_token.is_none() && bare.expires_at.is_none());
    }

    #[test]
    fn a_plain_token_file_is_read_too() {
        assert_eq!(parse("abc123\n").unwrap().expose_secret(), "abc123");
        assert!(parse("").is_none());
        assert!(parse("  \n").is_none());
        assert!(parse("{\"other\":1}").is_none());
        assert!(parse("{not json").is_none());
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/t.token");
        let err = write(&path, &SecretString::from("x")).unwrap_err();
        assert!(err.to_string().contains("t.token"), "{err}");
    }
}
