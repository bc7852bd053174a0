use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Writes a CA (cert 0644, key 0600) into `dir`; returns (cert, key) paths.
fn write_ca(dir: &Path, pems: (String, String)) -> (PathBuf, PathBuf) {
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    std::fs::write(&cert, pems.0).unwrap();
    std::fs::write(&key, pems.1).unwrap();
    set_mode(&key, 0o600);
    (cert, key)
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

fn fresh_ca() -> (tempfile::TempDir, LocalCa) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(dir.path(), LocalCa::generate().unwrap());
    let ca = LocalCa::load(&cert, &key).unwrap();
    (dir, ca)
}

#[test]
fn a_generated_ca_loads_back() {
    let (_dir, ca) = fresh_ca();
    assert!(
        ca.subject().contains("CN=sidekey local CA"),
        "{}",
        ca.subject()
    );
    let years = ca.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(years > 3649 * DAY && years <= 3650 * DAY, "{years:?}");
    let fp = ca.fingerprint_sha256();
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp.split(':').all(|b| b.len() == 2));
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[cfg(unix)]
#[test]
fn a_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(dir.path(), LocalCa::generate().unwrap());
    set_mode(&key, 0o644);
    let err = LocalCa::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::KeyMode { mode: 0o644, .. }), "{err}");
    assert!(err.is_about_key());
    assert!(err.to_string().contains("0644"), "{err}");
}

#[test]
fn a_key_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_ca(dir.path(), LocalCa::generate().unwrap());
    let other = tempfile::tempdir().unwrap();
    let (_, key) = write_ca(other.path(), LocalCa::generate().unwrap());
    let err = LocalCa::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
}

#[test]
fn an_expired_or_future_ca_is_refused() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(
        dir.path(),
        LocalCa::generate_valid(now - 10 * DAY, now - DAY).unwrap(),
    );
    let err = LocalCa::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::Expired { .. }), "{err}");
    let (cert, key) = write_ca(
        dir.path(),
        LocalCa::generate_valid(now + DAY, now + 10 * DAY).unwrap(),
    );
    let err = LocalCa::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::NotYetValid { .. }), "{err}");
}

#[test]
fn a_certificate_that_is_not_a_ca_is_refused() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(dir.path(), (cert.pem(), key.serialize_pem()));
    let err = LocalCa::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_ca(
        dir.path(),
        LocalCa::generate_valid(now - 10 * DAY, now - DAY).unwrap(),
    );
    let other = tempfile::tempdir().unwrap();
    let (_, key) = write_ca(other.path(), LocalCa::generate().unwrap());
    set_mode(&key, 0o640);
    let problems = LocalCa::load_checked(&cert, &key).unwrap_err();
    let n = if cfg!(unix) { 3 } else { 2 };
    assert_eq!(problems.len(), n, "{problems:?}");
    let missing = LocalCa::load_checked(&dir.path().join("nope.pem"), &dir.path().join("nope.key"))
        .unwrap_err();
    assert!(matches!(missing[0], CaError::ReadCert { .. }));
    assert!(matches!(missing[1], CaError::ReadKey { .. }));
}

fn verifier(ca: &LocalCa) -> Arc<WebPkiServerVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

fn verifies(verifier: &WebPkiServerVerifier, key: &rustls::sign::CertifiedKey, name: &str) -> bool {
    verifier
        .verify_server_cert(
            &key.cert[0],
            &key.cert[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn a_leaf_chains_to_the_ca_for_its_host_only() {
    let (_dir, ca) = fresh_ca();
    let verifier = verifier(&ca);
    let cache = LeafCache::new(ca, DAY, 10);
    let key = cache.certified_key("API.Example.com").unwrap();
    assert_eq!(key.cert.len(), 2);
    assert!(verifies(&verifier, &key, "api.example.com"));
    assert!(!verifies(&verifier, &key, "other.example.com"));
    let ip = cache.certified_key("[::1]").unwrap();
    assert!(verifies(&verifier, &ip, "::1"));
    assert!(!verifies(&verifier, &ip, "127.0.0.1"));
    assert!(cache.certified_key("not a host").is_err());
}

#[test]
fn a_leaf_never_outlives_the_ca() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(
        dir.path(),
        LocalCa::generate_valid(now - DAY, now + 2 * 3600 * Duration::from_secs(1)).unwrap(),
    );
    let ca = LocalCa::load(&cert, &key).unwrap();
    let ca_end = ca.not_after();
    let cache = LeafCache::new(ca, 30 * DAY, 10);
    let key = cache.certified_key("api.example.com").unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
    let end = x509.validity().not_after.timestamp();
    let ca_end = ca_end
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(end <= ca_end, "{end} > {ca_end}");
}

#[test]
fn leaves_are_cached_and_reminted_near_expiry() {
    let (_dir, ca) = fresh_ca();
    let offset = Arc::new(AtomicU64::new(0));
    let start = SystemTime::now();
    let clock_offset = offset.clone();
    let clock: Clock =
        Arc::new(move || start + Duration::from_secs(clock_offset.load(Ordering::SeqCst)));
    let cache = LeafCache::with_clock(ca, Duration::from_secs(4000), 10, clock);
    // `is_fresh` is what a handshake asks before minting off its thread.
    assert!(!cache.is_fresh("api.example.com"));
    let first = cache.certified_key("api.example.com").unwrap();
    assert!(cache.is_fresh("API.example.COM"));
    let again = cache.certified_key("API.EXAMPLE.COM").unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(cache.minted(), 1);
    // Three quarters in, still the same leaf; past that, a new one.
    offset.store(2999, Ordering::SeqCst);
    assert!(cache.is_fresh("api.example.com"));
    assert!(Arc::ptr_eq(
        &first,
        &cache.certified_key("api.example.com").unwrap()
    ));
    offset.store(3001, Ordering::SeqCst);
    assert!(!cache.is_fresh("api.example.com"));
    let renewed = cache.certified_key("api.example.com").unwrap();
    assert!(!Arc::ptr_eq(&first, &renewed));
    assert_eq!(cache.minted(), 2);
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
    let (_dir, ca) = fresh_ca();
    let cache = LeafCache::new(ca, DAY, 50);
    let kept = cache.certified_key("h0.example").unwrap();
    for i in 1..1000 {
        // h0 stays in use, so it is never the least recently used.
        assert!(Arc::ptr_eq(
            &kept,
            &cache.certified_key("h0.example").unwrap()
        ));
        cache.certified_key(&format!("h{i}.example")).unwrap();
        assert!(cache.len() <= 50);
    }
    assert_eq!(cache.len(), 50);
    assert_eq!(cache.minted(), 1000);
    assert!(Arc::ptr_eq(
        &kept,
        &cache.certified_key("h0.example").unwrap()
    ));
    // h1 was evicted long ago: minted again.
    cache.certified_key("h1.example").unwrap();
    assert_eq!(cache.minted(), 1001);
}

#[test]
fn minting_is_fast() {
    let (_dir, ca) = fresh_ca();
    let cache = LeafCache::new(ca, DAY, 1000);
    let start = Instant::now();
    for i in 0..20 {
        cache.certified_key(&format!("h{i}.example")).unwrap();
    }
    let each = start.elapsed() / 20;
    // ≤ 1 ms in release; debug builds of ring are slower.
    let limit = if cfg!(debug_assertions) { 50 } else { 2 };
    assert!(each < Duration::from_millis(limit), "{each:?} per leaf");
}

/// A TLS handshake over an in-memory pipe: the client trusts the CA and
/// sends `sni` (None: no SNI, as for an IP address); returns the
/// negotiated ALPN on success.
async fn handshake(
    ca_der: rustls_pki_types::CertificateDer<'static>,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    sni: &str,
    send_sni: bool,
) -> Result<Option<Vec<u8>>, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    client.enable_sni = send_sni;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(resolver)));
    let (c, s) = tokio::io::duplex(16 * 1024);
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let result = async {
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        Ok(tls.get_ref().1.alpn_protocol().map(|p| p.to_vec()))
    }
    .await;
    let _ = server.await;
    result
}

#[tokio::test]
async fn the_fixed_host_resolver_serves_only_its_host() {
    let (_dir, ca) = fresh_ca();
    let der = ca.cert_der();
    let cache = Arc::new(LeafCache::new(ca, DAY, 10));
    let fixed = || -> Arc<dyn rustls::server::ResolvesServerCert> {
        Arc::new(FixedHostResolver::new(
            cache.clone(),
            "api.example.com".to_string(),
        ))
    };
    let alpn = handshake(der.clone(), fixed(), "api.example.com", true)
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    handshake(der.clone(), fixed(), "API.example.COM", true)
        .await
        .unwrap();
    // No SNI: the CONNECT host's leaf (the client still checks the name).
    handshake(der.clone(), fixed(), "api.example.com", false)
        .await
        .unwrap();
    assert!(handshake(der.clone(), fixed(), "other.example.com", true)
        .await
        .is_err());
    // An IP literal host: clients send no SNI for it.
    let ip: Arc<dyn rustls::server::ResolvesServerCert> = Arc::new(FixedHostResolver::new(
        cache.clone(),
        "127.0.0.1".to_string(),
    ));
    handshake(der, ip, "127.0.0.1", true).await.unwrap();
}

#[tokio::test]
async fn the_sni_resolver_serves_allowed_hosts_only() {
    let (_dir, ca) = fresh_ca();
    let der = ca.cert_der();
    let cache = Arc::new(LeafCache::new(ca, DAY, 10));
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = Arc::new(SniResolver::new(
        cache.clone(),
        Arc::new(|host: &str| host.eq_ignore_ascii_case("api.example.com")),
    ));
    handshake(der.clone(), resolver.clone(), "api.example.com", true)
        .await
        .unwrap();
    assert!(
        handshake(der.clone(), resolver.clone(), "other.example.com", true)
            .await
            .is_err()
    );
    assert!(handshake(der, resolver, "api.example.com", false)
        .await
        .is_err());
    assert_eq!(cache.minted(), 1);
}
