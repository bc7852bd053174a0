//! A throw-away certificate authority for the TLS stand-ins.
//!
//! Every `TestCa` is a fresh CA (new key, new self-signed root); two instances
//! never trust each other, which is how tests build an "untrusted upstream".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN protocols the stand-ins offer by default, in preference order.
pub const DEFAULT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The ring crypto provider, passed explicitly so no process-wide default is needed.
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("TestCa: generate CA key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sidekey test CA");
        dn.push(DnType::OrganizationName, "sidekey tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .expect("TestCa: self-sign CA certificate");
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_der,
            cert_pem,
        }
    }

    /// The CA certificate, PEM encoded.
    pub fn ca_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER encoded.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// Writes the CA certificate as `dir/test-ca.pem` (what `proxy.ca_file` points at).
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, self.cert_pem.as_bytes())
            .unwrap_or_else(|e| panic!("TestCa: write {}: {e}", path.display()));
        path
    }

    /// Issues a leaf certificate for `hosts` (DNS names) plus the IP 127.0.0.1.
    /// Returns the chain (leaf only) and its private key.
    pub fn issue(&self, hosts: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        sans.push("127.0.0.1".to_string());
        let mut params =
            CertificateParams::new(sans).expect("TestCa: leaf subject alt names must be valid");
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("127.0.0.1"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("TestCa: generate leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("TestCa: sign leaf certificate");
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key_der)
    }

    /// A TLS server config with a leaf for `hosts` (+ 127.0.0.1), ALPN `h2` and `http/1.1`.
    pub fn server_config(&self, hosts: &[&str]) -> Arc<ServerConfig> {
        self.server_config_with_alpn(hosts, DEFAULT_ALPN)
    }

    /// Like [`TestCa::server_config`] with an explicit ALPN list (e.g. only `http/1.1`,
    /// or empty for a server that negotiates no ALPN at all).
    pub fn server_config_with_alpn(&self, hosts: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let (chain, key) = self.issue(hosts);
        let mut config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("TestCa: ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("TestCa: leaf certificate and key must be accepted by rustls");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Issues a client certificate (extended key usage clientAuth) with
    /// common name `cn`: (certificate PEM, PKCS#8 key PEM), as an operator
    /// would get from a partner's CA.
    pub fn issue_client_pem(&self, cn: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .expect("TestCa: a client certificate needs no names");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("TestCa: generate client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("TestCa: sign client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a client certificate for `cn` as `dir/{name}.pem` and its key
    /// as `dir/{name}.key` (mode 0600); returns both paths.
    pub fn write_client_cert(&self, dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue_client_pem(cn);
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).expect("write the client certificate");
        std::fs::write(&key_path, key).expect("write the client key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 0600 the client key");
        }
        (cert_path, key_path)
    }

    /// A TLS server config with a leaf for `hosts` (+ 127.0.0.1) that
    /// requires a client certificate issued by `clients` (mutual TLS).
    pub fn server_config_requiring_client(
        &self,
        hosts: &[&str],
        clients: &TestCa,
    ) -> Arc<ServerConfig> {
        let (chain, key) = self.issue(hosts);
        let mut roots = RootCertStore::empty();
        roots
            .add(clients.ca_der())
            .expect("TestCa: CA certificate must be a valid trust anchor");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            ring_provider(),
        )
        .build()
        .expect("TestCa: client verifier");
        let mut config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("TestCa: ring supports the default TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("TestCa: leaf certificate and key must be accepted by rustls");
        config.alpn_protocols = DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS client config that trusts only this CA (for talking to stand-ins directly).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der())
            .expect("TestCa: CA certificate must be a valid trust anchor");
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("TestCa: ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
