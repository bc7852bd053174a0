//! AES-256-GCM for what sidekey keeps in Redis.
//!
//! A sealed value is `version (1 byte) ‖ nonce (12 random bytes) ‖
//! ciphertext and tag`; the Redis key it is stored under is the associated
//! data, so a value copied to another key (another route) does not open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::{ExposeSecret, SecretBox};
use thiserror::Error;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a value from Redis could not be opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum OpenError {
    #[error("the value is not one sidekey sealed")]
    Malformed,
    #[error("the value does not open with this encryption_key (another key, or tampered with)")]
    Rejected,
}

/// Seals and opens values with one key.
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(...)")
    }
}

impl Sealer {
    pub(crate) fn new(key: &SecretBox<[u8; 32]>) -> Sealer {
        let key = Key::<Aes256Gcm>::from_slice(key.expose_secret());
        Sealer {
            cipher: Aes256Gcm::new(key),
        }
    }

    /// `plaintext` sealed for the Redis key `name`, under a fresh random
    /// nonce.
    pub(crate) fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: name.as_bytes(),
        };
        // Encryption fails only past GCM's length limit (64 GiB); a
        // token is a few hundred bytes.
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of `sealed`, if it was sealed with this key for `name`.
    pub(crate) fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let payload = Payload {
            msg: &sealed[1 + NONCE_LEN..],
            aad: name.as_bytes(),
        };
        self.cipher
            .decrypt(nonce, payload)
            .map_err(|_| OpenError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn seals_with_a_fresh_nonce_and_opens_back() {
        let s = sealer(7);
        let a = s.seal("sidekey:api:abc", b"tok-123");
        let b = s.seal("sidekey:api:abc", b"tok-123");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.windows(7).any(|w| w == b"tok-123"));
        assert_eq!(s.open("sidekey:api:abc", &a).unwrap(), b"tok-123");
    }

    #[test]
    fn another_key_name_or_encryption_key_or_a_flipped_bit_does_not_open() {
        let s = sealer(7);
        let sealed = s.seal("sidekey:api:abc", b"tok-123");
        assert_eq!(
            s.open("sidekey:other:abc", &sealed),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            sealer(8).open("sidekey:api:abc", &sealed),
            Err(OpenError::Rejected)
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            s.open("sidekey:api:abc", &flipped),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            s.open("sidekey:api:abc", b"short"),
            Err(OpenError::Malformed)
        );
    }
}
