//! The local CA: generating it (`sidekey ca init`) and loading it with every
//! check `sidekey check` makes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The certificate file `sidekey ca init` writes (mode 0644).
pub const CA_CERT_FILE: &str = "sidekey-ca.pem";
/// The private key file `sidekey ca init` writes (mode 0600).
pub const CA_KEY_FILE: &str = "sidekey-ca.key";
/// How long a generated CA is valid: 10 years.
pub const CA_VALIDITY_DAYS: u64 = 3650;

const CA_COMMON_NAME: &str = "sidekey local CA";

/// What is wrong with a CA or a client certificate (`role` says which:
/// "CA" or "client"), or a leaf the CA could not sign. Messages name
/// files, never their contents.
#[derive(Debug, Error)]
pub enum CaError {
    #[error("cannot read the {role} certificate {path}: {cause}")]
    ReadCert {
        role: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read the {role} key {path}: {cause}")]
    ReadKey {
        role: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a PEM certificate that can be parsed")]
    BadCert { path: PathBuf },
    #[error("{path} is not a PEM private key (PKCS#8, `BEGIN PRIVATE KEY`; convert others with `openssl pkcs8 -topk8 -nocrypt`)")]
    BadKey { path: PathBuf },
    #[error(
        "the {role} key {path} is readable by group or others (mode {mode:04o}); run chmod 600 on it"
    )]
    KeyMode {
        role: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("the {role} key {key} does not match the certificate {cert}")]
    KeyMismatch {
        role: &'static str,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error("the certificate {path} is not a CA (no basicConstraints CA:true)")]
    NotCa { path: PathBuf },
    #[error("the {role} certificate {path} expired {}", humantime::format_rfc3339_seconds(*.not_after))]
    Expired {
        role: &'static str,
        path: PathBuf,
        not_after: SystemTime,
    },
    #[error("the {role} certificate {path} is not valid before {}", humantime::format_rfc3339_seconds(*.not_before))]
    NotYetValid {
        role: &'static str,
        path: PathBuf,
        not_before: SystemTime,
    },
    #[error("cannot generate the CA: {0}")]
    Generate(String),
    #[error("cannot issue a certificate for {host}: {reason}")]
    Leaf { host: String, reason: String },
}

impl CaError {
    /// Whether the problem is with the key file (`ca_key`) rather than
    /// the certificate (`ca_cert`).
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            CaError::ReadKey { .. }
                | CaError::BadKey { .. }
                | CaError::KeyMode { .. }
                | CaError::KeyMismatch { .. }
        )
    }
}

/// A loaded local CA: its certificate and the key that signs leaves.
pub struct LocalCa {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("subject", &self.subject)
            .field(
                "not_after",
                &humantime::format_rfc3339_seconds(self.not_after),
            )
            .finish_non_exhaustive()
    }
}

/// Sets `params`' validity to `from`..`to` (times at or after 1970).
pub(super) fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(from);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(to);
}

/// A random positive serial number of 16 bytes.
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn unix_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// What a certificate file says, parsed (its first certificate; the
/// whole chain in `chain`).
pub(super) struct CertInfo {
    pub(super) der: CertificateDer<'static>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) subject: String,
    pub(super) spki: Vec<u8>,
    pub(super) is_ca: bool,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

/// Reads a PEM certificate file (a chain: the first certificate is the
/// one checked) and checks that it is valid now.
pub(super) fn read_cert(
    role: &'static str,
    path: &Path,
    problems: &mut Vec<CaError>,
) -> Option<CertInfo> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(cause) => {
            problems.push(CaError::ReadCert {
                role,
                path: path.to_path_buf(),
                cause,
            });
            return None;
        }
    };
    let bad = || CaError::BadCert {
        path: path.to_path_buf(),
    };
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
            Ok(chain) if !chain.is_empty() => chain,
            _ => {
                problems.push(bad());
                return None;
            }
        };
    let der = chain[0].clone();
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        problems.push(bad());
        return None;
    };
    let is_ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let not_before = unix_time(x509.validity().not_before.timestamp());
    let not_after = unix_time(x509.validity().not_after.timestamp());
    let now = SystemTime::now();
    if now > not_after {
        problems.push(CaError::Expired {
            role,
            path: path.to_path_buf(),
            not_after,
        });
    } else if now < not_before {
        problems.push(CaError::NotYetValid {
            role,
            path: path.to_path_buf(),
            not_before,
        });
    }
    let info = CertInfo {
        subject: x509.subject().to_string(),
        spki: x509.public_key().raw.to_vec(),
        is_ca,
        not_before,
        not_after,
        der: der.clone(),
        chain,
    };
    Some(info)
}

/// Reads a PEM (PKCS#8) private key, checking first that the file is
/// private: on unix, no group or other permission bits.
pub(super) fn read_key(
    role: &'static str,
    path: &Path,
    problems: &mut Vec<CaError>,
) -> Option<KeyPair> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                problems.push(CaError::KeyMode {
                    role,
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(cause) => {
            problems.push(CaError::ReadKey {
                role,
                path: path.to_path_buf(),
                cause,
            });
            return None;
        }
    };
    match KeyPair::from_pem(&text) {
        Ok(key) => Some(key),
        Err(_) => {
            problems.push(CaError::BadKey {
                path: path.to_path_buf(),
            });
            None
        }
    }
}

/// Reads a certificate and its private key with every check above, and
/// that the key is the certificate's (and, with `want_ca`, that the
/// certificate is a CA). Returns every problem found (never an empty
/// list).
pub(super) fn read_key_pair(
    role: &'static str,
    want_ca: bool,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertInfo, KeyPair), Vec<CaError>> {
    let mut problems = Vec::new();
    let cert = read_cert(role, cert_path, &mut problems);
    let key = read_key(role, key_path, &mut problems);
    if want_ca && cert.as_ref().is_some_and(|c| !c.is_ca) {
        problems.push(CaError::NotCa {
            path: cert_path.to_path_buf(),
        });
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(problems);
    };
    if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.spki {
        problems.push(CaError::KeyMismatch {
            role,
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((cert, key))
}

impl LocalCa {
    /// Loads the CA from a PEM certificate and a PEM (PKCS#8) key, checking
    /// that the key file is private (unix: no group or other bits), that
    /// the key matches the certificate, that the certificate is a CA and
    /// that it is valid now. The first problem found is returned; see
    /// [`LocalCa::load_checked`] for all of them.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<LocalCa, CaError> {
        LocalCa::load_checked(cert_path, key_path).map_err(|mut problems| problems.remove(0))
    }

    /// As [`LocalCa::load`], but returns every problem found (never an
    /// empty list).
    pub fn load_checked(cert_path: &Path, key_path: &Path) -> Result<LocalCa, Vec<CaError>> {
        let (cert, key) = read_key_pair("CA", true, cert_path, key_path)?;
        let issuer = Issuer::from_ca_cert_der(&cert.der, key).map_err(|_| {
            vec![CaError::BadCert {
                path: cert_path.to_path_buf(),
            }]
        })?;
        Ok(LocalCa {
            cert_der: cert.der,
            issuer,
            subject: cert.subject,
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
    }

    /// A new CA valid for [`CA_VALIDITY_DAYS`] from now: (certificate
    /// PEM, PKCS#8 key PEM).
    pub fn generate() -> Result<(String, String), CaError> {
        let now = SystemTime::now();
        LocalCa::generate_valid(
            now - Duration::from_secs(60),
            now + Duration::from_secs(CA_VALIDITY_DAYS * 24 * 3600),
        )
    }

    /// A new CA valid from `not_before` to `not_after` (tests make expired
    /// ones with this): ECDSA P-256, CN "sidekey local CA", a random
    /// serial, basicConstraints CA:true pathlen 0, key usage keyCertSign
    /// and cRLSign.
    pub fn generate_valid(
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String), CaError> {
        let fail = |e: rcgen::Error| CaError::Generate(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, "sidekey");
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, not_before, not_after);
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The end of the CA certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The start of the CA certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// SHA-256 of the certificate's DER, as colon-separated upper-case hex
    /// (`AB:CD:...`, as browsers and `openssl x509 -fingerprint` show it).
    pub fn fingerprint_sha256(&self) -> String {
        Sha256::digest(self.cert_der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The certificate's subject, e.g. `CN=sidekey local CA, O=sidekey`.
    pub fn subject(&self) -> String {
        self.subject.clone()
    }

    /// The CA certificate (the second certificate of every leaf's chain).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}
