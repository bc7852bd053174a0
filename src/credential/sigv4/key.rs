//! The signing key: `HMAC("AWS4" + secret, date)`, then region, service
//! and `aws4_request`. It depends on the day only (a route's region and
//! service are fixed), so it is derived once per UTC day and kept, as an
//! HMAC already keyed with it: signing a request is then one HMAC over
//! the string to sign.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use ring::hmac::{self, HMAC_SHA256};
use secrecy::{ExposeSecret, SecretString};

use super::sha::{Backend, HmacKey};

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    tag(&hmac::Key::new(HMAC_SHA256, key), data)
}

/// The signing key of `date` (`YYYYMMDD`), `region` and `service`.
pub(crate) fn derive(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac(&k_secret, date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The HMAC-SHA256 of `data` under the signing key `key`.
#[cfg(test)]
pub(crate) fn sign_with(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    hmac(key, data)
}

/// The HMAC of `data` under `key`.
fn tag(key: &hmac::Key, data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, data).as_ref());
    out
}

/// One day's signing key, as an HMAC key whose inner and outer pads are
/// already hashed ([`HmacKey`]): signing a request hashes only the string
/// to sign and one block more. With it, the parts of the string to sign
/// and of `Authorization` that change only with the day.
pub(crate) struct Day {
    /// Told apart from every other day of every signer (by the state
    /// kept per thread for the string to sign's first block).
    pub(crate) id: u64,
    date: [u8; 8],
    pub(crate) key: HmacKey,
    /// `date/region/service/aws4_request` and a newline: the string to
    /// sign's scope line.
    pub(crate) scope_line: Box<[u8]>,
    /// `AWS4-HMAC-SHA256 Credential=<key id>/<scope>, SignedHeaders=`:
    /// what `Authorization` starts with.
    pub(crate) authorization_prefix: Box<[u8]>,
}

/// The signing key of one secret, region and service, derived once per
/// day.
pub(crate) struct KeyCache {
    key_id: SecretString,
    secret: SecretString,
    region: String,
    service: String,
    /// What hashes the string to sign.
    pub(crate) backend: Backend,
    current: ArcSwapOption<Day>,
    /// How many keys were derived (for tests: once per day).
    derived: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(
        key_id: SecretString,
        secret: SecretString,
        region: String,
        service: String,
    ) -> KeyCache {
        KeyCache {
            key_id,
            secret,
            region,
            service,
            backend: Backend::detect(),
            current: ArcSwapOption::empty(),
            derived: AtomicU64::new(0),
        }
    }

    /// Calls `f` with the signing key of `date` (`YYYYMMDD`).
    pub(crate) fn with_day<R>(&self, date: &[u8; 8], f: impl FnOnce(&Day) -> R) -> R {
        let guard = self.current.load();
        if let Some(day) = guard.as_deref().filter(|day| day.date == *date) {
            return f(day);
        }
        drop(guard);
        f(&self.new_day(date))
    }

    /// A new day (or the first request): the key is derived here, and
    /// replaced for everyone. Two requests racing at midnight both derive
    /// it, which is harmless.
    #[cold]
    fn new_day(&self, date: &[u8; 8]) -> Arc<Day> {
        let date_str = std::str::from_utf8(date).unwrap_or_default();
        let signing_key = derive(
            self.secret.expose_secret(),
            date_str,
            &self.region,
            &self.service,
        );
        self.derived.fetch_add(1, Ordering::Relaxed);
        let scope = super::canonical::scope(date_str, &self.region, &self.service);
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let day = Arc::new(Day {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            date: *date,
            key: HmacKey::new(&signing_key, self.backend),
            scope_line: format!("{scope}\n").into_bytes().into(),
            authorization_prefix: format!(
                "{} Credential={}/{scope}, SignedHeaders=",
                super::canonical::ALGORITHM,
                self.key_id.expose_secret()
            )
            .into_bytes()
            .into(),
        });
        self.current.store(Some(Arc::clone(&day)));
        day
    }

    #[cfg(test)]
    pub(crate) fn derived(&self) -> u64 {
        self.derived.load(Ordering::Relaxed)
    }
}
