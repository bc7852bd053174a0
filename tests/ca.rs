//! `sidekey ca init`, `sidekey ca show` and `check` with `[proxy.intercept]`,
//! run as the built binary.

mod support;

use std::path::{Path, PathBuf};

use support::process::run_cli;

fn mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// `sidekey ca init --dir DIR`; asserts it succeeded.
fn ca_init(dir: &Path) -> (PathBuf, PathBuf) {
    let (status, stdout, stderr) = run_cli(&["ca", "init", "--dir", dir.to_str().unwrap()], &[]);
    assert!(status.success(), "ca init failed:\n{stdout}\n{stderr}");
    (dir.join("sidekey-ca.pem"), dir.join("sidekey-ca.key"))
}

/// A config with only `[proxy.intercept]` pointing at `cert` and `key`.
fn config(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let path = dir.join("sidekey.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.intercept]\nca_cert = {:?}\nca_key = {:?}\nlisten = \"127.0.0.1:0\"\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn check(config: &Path) -> (bool, String) {
    let (status, stdout, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    (status.success(), format!("{stdout}{stderr}"))
}

fn key_body(key: &Path) -> String {
    let pem = std::fs::read_to_string(key).unwrap();
    pem.lines().nth(1).unwrap().to_string()
}

#[test]
fn ca_init_writes_both_files_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_init(dir.path());
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    if cfg!(unix) {
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(mode(&key), 0o600);
    }
    let before = std::fs::read(&cert).unwrap();
    let (status, stdout, stderr) =
        run_cli(&["ca", "init", "--dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("sidekey-ca.pem already exists"), "{stderr}");
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    // Only the key left: still refused, naming the key.
    std::fs::remove_file(&cert).unwrap();
    let (status, _, stderr) = run_cli(&["ca", "init", "--dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("sidekey-ca.key already exists"), "{stderr}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind");
}

#[test]
fn ca_show_prints_the_certificate_and_trust_lines_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_init(dir.path());
    let config = config(dir.path(), &cert, &key);
    let (status, stdout, stderr) =
        run_cli(&["ca", "show", "--config", config.to_str().unwrap()], &[]);
    assert!(status.success(), "{stdout}{stderr}");
    let out = format!("{stdout}{stderr}");
    for needle in [
        "CN=sidekey local CA",
        "SHA-256",
        "not after",
        "SSL_CERT_FILE=",
        "REQUESTS_CA_BUNDLE=",
        "NODE_EXTRA_CA_CERTS=",
        "CURL_CA_BUNDLE=",
        "/usr/local/share/ca-certificates/sidekey-ca.crt && sudo update-ca-certificates",
        "keytool -importcert -alias sidekey -file",
        "-cacerts -storepass changeit -noprompt",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(out.contains(cert.file_name().unwrap().to_str().unwrap()));
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert!(!out.contains(&key_body(&key)), "{out}");
    assert!(!out.contains("sidekey-ca.key"), "{out}");
}

#[test]
fn check_accepts_a_fresh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_init(dir.path());
    let (ok, out) = check(&config(dir.path(), &cert, &key));
    assert!(ok, "{out}");
    assert!(out.contains("intercept: CA"), "{out}");
    assert!(out.contains("sidekey-ca.pem"), "{out}");
    assert!(!out.contains(&key_body(&key)), "{out}");
}

#[cfg(unix)]
#[test]
fn check_refuses_a_key_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_init(dir.path());
    set_mode(&key, 0o644);
    let (ok, out) = check(&config(dir.path(), &cert, &key));
    assert!(!ok, "{out}");
    assert!(out.contains("error: proxy: intercept.ca_key:"), "{out}");
    assert!(out.contains("readable by group or others"), "{out}");
    assert!(!out.contains(&key_body(&key)), "{out}");
}

#[test]
fn check_refuses_a_key_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca_init(&dir.path().join("a").tap_mkdir());
    let (_, key) = ca_init(&dir.path().join("b").tap_mkdir());
    let (ok, out) = check(&config(dir.path(), &cert, &key));
    assert!(!ok, "{out}");
    assert!(out.contains("intercept.ca_key"), "{out}");
    assert!(out.contains("does not match the certificate"), "{out}");
    assert!(!out.contains(&key_body(&key)), "{out}");
}

#[test]
fn check_refuses_an_expired_ca_and_names_every_problem() {
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86400);
    let (cert_pem, key_pem) =
        sidekey::tls::LocalCa::generate_valid(now - 10 * day, now - day).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("old-ca.pem");
    let key = dir.path().join("old-ca.key");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    set_mode(&key, 0o600);
    let (ok, out) = check(&config(dir.path(), &cert, &key));
    assert!(!ok, "{out}");
    assert!(out.contains("error: proxy: intercept.ca_cert:"), "{out}");
    assert!(out.contains("expired"), "{out}");
    // Missing files: each named.
    let (ok, out) = check(&config(
        dir.path(),
        &dir.path().join("none.pem"),
        &dir.path().join("none.key"),
    ));
    assert!(!ok);
    assert!(out.contains("intercept.ca_cert: cannot read"), "{out}");
    assert!(out.contains("intercept.ca_key: cannot read"), "{out}");
}

#[test]
fn the_contract_intercept_tables_check() {
    let dir = tempfile::tempdir().unwrap();
    ca_init(dir.path());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/intercept.toml");
    let (status, stdout, stderr) = run_cli(
        &["check", "--config", example.to_str().unwrap()],
        &[("SIDEKEY_CA_DIR", dir.path().to_str().unwrap())],
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("TLS listener 127.0.0.1:8443"), "{stdout}");
    assert!(stdout.contains("leaf lifetime 1day"), "{stdout}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
