//! A temporary directory holding a test CA file and the config files of one test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::ca::TestCa;

/// Writes `toml` to `dir/sidekey.toml` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("sidekey.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `s` as a TOML basic string, quotes included (for paths and addresses in configs).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a &str always serialises")
}

/// A 127.0.0.1 address that was free a moment ago (bind :0, read the port, close).
/// Racy by nature; for giving sidekey a listen address.
pub fn unused_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
}

pub struct TestEnv {
    dir: TempDir,
    pub ca: TestCa,
    ca_file: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh tempdir with a fresh [`TestCa`] written to `test-ca.pem` in it.
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("sidekey-test-")
            .tempdir()
            .expect("create a temporary directory");
        let ca = TestCa::new();
        let ca_file = ca.write_ca_file(dir.path());
        TestEnv { dir, ca, ca_file }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA PEM file, for `proxy.ca_file`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Writes `sidekey.toml` in the tempdir (overwriting) and returns its path.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        write_config(self.dir.path(), toml)
    }

    /// Writes any file in the tempdir and returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}
