//! Leaf certificates for intercepted hosts, and the rustls resolvers that
//! pick one for a handshake.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::{random_serial, set_validity};
use super::{CaError, LocalCa};

/// Where a [`LeafCache`] reads the time (injectable for tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How far back a leaf's validity starts, for clients whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(60);

struct Entry {
    key: Arc<CertifiedKey>,
    /// When less than a quarter of the leaf's lifetime is left.
    renew_at: SystemTime,
    /// The cache's use counter at the last lookup (least recently used
    /// is evicted first).
    last_used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    uses: u64,
}

/// Leaf certificates per host, signed by a [`LocalCa`]: minted on first
/// use, kept until less than a quarter of their lifetime is left, at most
/// `capacity` of them (the least recently used is dropped first). Minting
/// happens outside the lock; two racing requests for a new host may both
/// mint, and the later one is kept.
pub struct LeafCache {
    ca: Arc<LocalCa>,
    lifetime: Duration,
    capacity: usize,
    clock: Clock,
    entries: Mutex<Entries>,
    minted: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache of leaves valid for `lifetime` (never past the CA's own
    /// expiry), holding at most `capacity` hosts (at least one).
    pub fn new(ca: impl Into<Arc<LocalCa>>, lifetime: Duration, capacity: usize) -> LeafCache {
        LeafCache::with_clock(ca, lifetime, capacity, Arc::new(SystemTime::now))
    }

    /// As [`LeafCache::new`], reading the time from `clock`.
    pub fn with_clock(
        ca: impl Into<Arc<LocalCa>>,
        lifetime: Duration,
        capacity: usize,
        clock: Clock,
    ) -> LeafCache {
        LeafCache {
            ca: ca.into(),
            lifetime,
            capacity: capacity.max(1),
            clock,
            entries: Mutex::new(Entries::default()),
            minted: AtomicU64::new(0),
        }
    }

    /// The CA that signs the leaves.
    pub fn ca(&self) -> &LocalCa {
        &self.ca
    }

    /// How many leaves have been minted so far.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// How many hosts have a leaf cached now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no leaf is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves the map consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `host` has a cached leaf that is not due for renewal, so a
    /// handshake for it will not mint. Does not count as a use.
    pub fn is_fresh(&self, host: &str) -> bool {
        let host = normalise(host);
        let now = (self.clock)();
        self.lock().map.get(&host).is_some_and(|e| now < e.renew_at)
    }

    /// The certificate chain (leaf, then CA) and signing key for `host`:
    /// a DNS name, or an IP literal (`[::1]` or `::1`), compared
    /// case-insensitively.
    pub fn certified_key(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = normalise(host);
        let now = (self.clock)();
        {
            let mut entries = self.lock();
            entries.uses += 1;
            let uses = entries.uses;
            if let Some(entry) = entries.map.get_mut(&host) {
                if now < entry.renew_at {
                    entry.last_used = uses;
                    return Ok(entry.key.clone());
                }
            }
        }
        let (key, renew_at) = self.mint(&host, now)?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        entries.uses += 1;
        let last_used = entries.uses;
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&host) {
            let oldest = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
            }
        }
        entries.map.insert(
            host,
            Entry {
                key: key.clone(),
                renew_at,
                last_used,
            },
        );
        Ok(key)
    }

    /// A new leaf for `host`: (chain and key, when to renew it).
    fn mint(
        &self,
        host: &str,
        now: SystemTime,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), CaError> {
        let fail = |reason: String| CaError::Leaf {
            host: host.to_string(),
            reason,
        };
        let not_before = now - BACKDATE;
        let not_after = (now + self.lifetime).min(self.ca.not_after());
        if not_after <= now {
            return Err(fail("the CA has expired".to_string()));
        }
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let not_dns = || fail("not a DNS name".to_string());
                rustls_pki_types::DnsName::try_from(host).map_err(|_| not_dns())?;
                SanType::DnsName(host.try_into().map_err(|_| not_dns())?)
            }
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if host.len() <= 64 {
            dn.push(DnType::CommonName, host);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail(e.to_string()))?;
        let cert = params
            .signed_by(&key, self.ca.issuer())
            .map_err(|e| fail(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            rustls::crypto::ring::sign::any_ecdsa_type(&der).map_err(|e| fail(e.to_string()))?;
        let chain = vec![cert.der().clone(), self.ca.cert_der()];
        let renew_at = not_after - (not_after.duration_since(now).unwrap_or_default() / 4);
        Ok((Arc::new(CertifiedKey::new(chain, signing)), renew_at))
    }
}

/// Lower case, without the brackets of an IPv6 literal or a trailing dot.
fn normalise(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Picks the leaf by the ClientHello's SNI, for the TLS listener: a name
/// `allowed` accepts (a route's host) gets its leaf; any other name, or
/// no SNI, fails the handshake.
pub struct SniResolver {
    cache: Arc<LeafCache>,
    allowed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl SniResolver {
    pub fn new(cache: Arc<LeafCache>, allowed: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> Self {
        SniResolver { cache, allowed }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            tracing::debug!("TLS handshake without SNI refused");
            return None;
        };
        if !(self.allowed)(sni) {
            tracing::debug!(
                host = sni,
                "TLS handshake for a host no route names refused"
            );
            return None;
        }
        leaf_or_log(&self.cache, sni)
    }
}

/// The leaf of a CONNECT tunnel's host: no SNI or SNI equal to the host
/// (ASCII case-insensitive) gets it; any other SNI fails the handshake.
pub struct FixedHostResolver {
    cache: Arc<LeafCache>,
    host: String,
}

impl FixedHostResolver {
    pub fn new(cache: Arc<LeafCache>, host: String) -> Self {
        FixedHostResolver { cache, host }
    }
}

impl fmt::Debug for FixedHostResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedHostResolver")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for FixedHostResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(sni) if !normalise(sni).eq_ignore_ascii_case(&normalise(&self.host)) => {
                tracing::debug!(
                    host = %self.host,
                    sni,
                    "TLS handshake whose SNI is not the CONNECT host refused"
                );
                None
            }
            _ => leaf_or_log(&self.cache, &self.host),
        }
    }
}

fn leaf_or_log(cache: &LeafCache, host: &str) -> Option<Arc<CertifiedKey>> {
    match cache.certified_key(host) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(host, error = %e, "cannot issue a leaf certificate");
            None
        }
    }
}
