//! The signing key: `HMAC("AWS4" + secret, date)`, then region, service
//! and `aws4_request`. It depends on the day only (a route's region and
//! service are fixed), so it is derived once per UTC day and kept, as an
//! HMAC already keyed with it: signing a request is then one HMAC over
//! the string to sign.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 keyed with `key`.
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
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

/// One day's signing key, as a keyed HMAC.
struct DayKey {
    date: [u8; 8],
    mac: HmacSha256,
}

/// The signing key of one secret, region and service, derived once per
/// day.
pub(crate) struct KeyCache {
    secret: SecretString,
    region: String,
    service: String,
    current: ArcSwapOption<DayKey>,
    /// How many keys were derived (for tests: once per day).
    derived: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(secret: SecretString, region: String, service: String) -> KeyCache {
        KeyCache {
            secret,
            region,
            service,
            current: ArcSwapOption::empty(),
            derived: AtomicU64::new(0),
        }
    }

    /// An HMAC keyed with the signing key of `date` (`YYYYMMDD`).
    pub(crate) fn mac(&self, date: &[u8; 8]) -> HmacSha256 {
        if let Some(day) = &*self.current.load() {
            if day.date == *date {
                return day.mac.clone();
            }
        }
        // A new day (or the first request): derived here, and replaced
        // for everyone. Two requests racing at midnight both derive it,
        // which is harmless.
        let date_str = std::str::from_utf8(date).unwrap_or_default();
        let key = derive(
            self.secret.expose_secret(),
            date_str,
            &self.region,
            &self.service,
        );
        let mac = keyed(&key);
        self.derived.fetch_add(1, Ordering::Relaxed);
        self.current.store(Some(Arc::new(DayKey {
            date: *date,
            mac: mac.clone(),
        })));
        mac
    }

    #[cfg(test)]
    pub(crate) fn derived(&self) -> u64 {
        self.derived.load(Ordering::Relaxed)
    }
}
