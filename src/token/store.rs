//! The token store of an `oauth2_code` route: the file `sidekey authorize`
//! writes and the proxy reads.
//!
//! Written atomically (a temporary file in the same folder, synced, then
//! renamed over the store) with mode 0600, so a reader sees the old token
//! or the new one, never half of one, and no other user can read it. The
//! format is a small JSON document, `{"access_token": "...", "created_at":
//! <unix seconds>}`; a file holding just a token (pasted from a provider's
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

/// Writes `token` to `path` atomically with mode 0600.
pub(crate) fn write(path: &Path, token: &SecretString) -> Result<(), StoreError> {
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
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut text = serde_json::json!({
        "access_token": token.expose_secret(),
        "created_at": created_at,
    })
    .to_string();
    text.push('\n');

    let result = (|| {
        let mut file = open_private(&tmp)?;
        file.write_all(text.as_bytes())?;
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
