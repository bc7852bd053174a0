//! SHA-256 and HMAC-SHA256 of bytes at the end of a buffer the signer
//! owns.
//!
//! On a CPU with SHA extensions (SHA-NI on x86, the SHA-2 instructions on
//! ARMv8), the padding is appended in place (and taken off again) and the
//! blocks go straight to `sha2::compress256`, which runs those
//! instructions, with no hashing context, block buffer or copy of the
//! message around them; an HMAC key is kept as its two pad states, hashed
//! once ([`HmacKey`]), so signing costs the message's blocks and one more.
//! Elsewhere `sha2` would run its portable code, slower than `ring`'s
//! assembly (AVX, SSSE3), so `ring` hashes there ([`Backend`]).

use sha2::compress256;
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// What hashes: `sha2` on the blocks in place, or `ring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `sha2::compress256` with the CPU's SHA extensions.
    Blocks,
    /// `ring` (no SHA extensions).
    Ring,
}

impl Backend {
    /// [`Backend::Blocks`] where the CPU has SHA extensions.
    pub(crate) fn detect() -> Backend {
        if sha_extensions() {
            Backend::Blocks
        } else {
            Backend::Ring
        }
    }
}

/// Whether the CPU has the SHA-256 instructions `sha2` uses.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn sha_extensions() -> bool {
    std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse2")
        && std::arch::is_x86_feature_detected!("ssse3")
        && std::arch::is_x86_feature_detected!("sse4.1")
}

#[cfg(target_arch = "aarch64")]
fn sha_extensions() -> bool {
    std::arch::is_aarch64_feature_detected!("sha2")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn sha_extensions() -> bool {
    false
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Compresses `blocks` (whole 64-byte blocks) into `state`.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(64) {
        compress256(
            state,
            std::slice::from_ref(GenericArray::<u8, U64>::from_slice(block)),
        );
    }
}

/// The digest of a final `state`.
fn output(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Hashes `buf[from..]`, the rest of a message whose first `before`
/// bytes (a multiple of 64) are already compressed into `state`: the
/// padding is appended to `buf`, compressed with the message, and
/// removed, so `buf` is as it was (its capacity may have grown).
fn finish_in_place(buf: &mut Vec<u8>, from: usize, mut state: [u32; 8], before: u64) -> [u8; 32] {
    let len = buf.len();
    // usize fits in u64 on every target Rust supports.
    let bits = (before + (len - from) as u64) * 8;
    // 0x80, zeros up to 56 mod 64, the length in bits (big endian).
    let zeros = (55 + 64 - (len - from) % 64) % 64;
    const PAD: [u8; 64] = {
        let mut pad = [0u8; 64];
        pad[0] = 0x80;
        pad
    };
    buf.extend_from_slice(&PAD[..=zeros]);
    buf.extend_from_slice(&bits.to_be_bytes());
    compress(&mut state, &buf[from..]);
    buf.truncate(len);
    output(&state)
}

/// The SHA-256 of `buf[from..]`; `buf` is left as it was.
pub(crate) fn sha256_in_place(backend: Backend, buf: &mut Vec<u8>, from: usize) -> [u8; 32] {
    match backend {
        Backend::Blocks => finish_in_place(buf, from, IV, 0),
        Backend::Ring => super::canonical::sha256(&buf[from..]),
    }
}

/// An HMAC-SHA256 key of one SigV4 signing key (32 bytes), kept for
/// its [`Backend`]: for [`Backend::Blocks`], the states after its inner
/// and outer pad blocks.
pub(crate) enum HmacKey {
    Blocks { inner: [u32; 8], outer: [u32; 8] },
    Ring(ring::hmac::Key),
}

impl HmacKey {
    pub(crate) fn new(key: &[u8; 32], backend: Backend) -> HmacKey {
        let pad_state = |pad: u8| {
            let mut block = [pad; 64];
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut state = IV;
            compress(&mut state, &block);
            state
        };
        match backend {
            Backend::Blocks => HmacKey::Blocks {
                inner: pad_state(0x36),
                outer: pad_state(0x5c),
            },
            Backend::Ring => HmacKey::Ring(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)),
        }
    }

    /// The HMAC of `buf[from..]`; `buf` is left as it was.
    pub(crate) fn sign_in_place(&self, buf: &mut Vec<u8>, from: usize) -> [u8; 32] {
        match self {
            HmacKey::Blocks { inner, outer } => {
                finish(outer, finish_in_place(buf, from, *inner, 64))
            }
            HmacKey::Ring(key) => {
                let mut out = [0u8; 32];
                out.copy_from_slice(ring::hmac::sign(key, &buf[from..]).as_ref());
                out
            }
        }
    }

    /// The inner hash's state after a message's first block `block`, for
    /// [`HmacKey::sign_rest_in_place`] (a signer whose messages start
    /// with the same block hashes it once). `None` for [`Backend::Ring`],
    /// which takes whole messages only.
    pub(crate) fn after_first_block(&self, block: &[u8]) -> Option<[u32; 8]> {
        match self {
            HmacKey::Blocks { inner, .. } => {
                let mut state = *inner;
                compress(&mut state, &block[..64]);
                Some(state)
            }
            HmacKey::Ring(_) => None,
        }
    }

    /// The HMAC of a message whose first block is in `state`
    /// ([`HmacKey::after_first_block`]) and whose rest is `buf[from..]`;
    /// `buf` is left as it was.
    pub(crate) fn sign_rest_in_place(
        &self,
        state: [u32; 8],
        buf: &mut Vec<u8>,
        from: usize,
    ) -> [u8; 32] {
        match self {
            HmacKey::Blocks { outer, .. } => finish(outer, finish_in_place(buf, from, state, 128)),
            // Not reached: no state is made for a `ring` key.
            HmacKey::Ring(_) => self.sign_in_place(buf, from - 64),
        }
    }
}

/// The outer hash, from the outer pad's state `outer`, over the inner
/// digest.
fn finish(outer: &[u32; 8], inner: [u8; 32]) -> [u8; 32] {
    // The outer message: the pad block (in `outer`), then the inner
    // digest, padded to one block for 96 bytes (768 bits).
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&inner);
    block[32] = 0x80;
    block[62..].copy_from_slice(&768u16.to_be_bytes());
    let mut state = *outer;
    compress(&mut state, &block);
    output(&state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest::{digest, SHA256};
    use ring::hmac;

    const BACKENDS: [Backend; 2] = [Backend::Blocks, Backend::Ring];

    /// Messages of every length around the padding boundaries, after
    /// prefixes of several lengths left in the buffer.
    #[test]
    fn hashes_like_ring_at_every_length_and_offset() {
        for backend in BACKENDS {
            for prefix in [0usize, 1, 63, 64, 100] {
                for len in 0..300usize {
                    let message: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                    let mut buf = vec![b'p'; prefix];
                    buf.extend_from_slice(&message);
                    let before = buf.clone();
                    let got = sha256_in_place(backend, &mut buf, prefix);
                    let want = digest(&SHA256, &message);
                    assert_eq!(got.as_slice(), want.as_ref(), "{backend:?} len {len}");
                    assert_eq!(buf, before, "the buffer is left as it was");
                }
            }
        }
    }

    #[test]
    fn signs_like_ring_at_every_length() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 13 + 5) as u8);
        let theirs = hmac::Key::new(hmac::HMAC_SHA256, &key);
        for backend in BACKENDS {
            let ours = HmacKey::new(&key, backend);
            for len in 0..300usize {
                let message: Vec<u8> = (0..len).map(|i| (i * 3 + 1) as u8).collect();
                let want = hmac::sign(&theirs, &message);
                let mut buf = b"canonical request".to_vec();
                let from = buf.len();
                buf.extend_from_slice(&message);
                let got = ours.sign_in_place(&mut buf, from);
                assert_eq!(got.as_slice(), want.as_ref(), "{backend:?} len {len}");
                assert_eq!(buf.len(), from + len);
                let state = (len >= 64)
                    .then(|| ours.after_first_block(&message[..64]))
                    .flatten();
                assert_eq!(
                    state.is_some(),
                    len >= 64 && backend == Backend::Blocks,
                    "a first-block state only for sha2 blocks"
                );
                if let Some(state) = state {
                    let got = ours.sign_rest_in_place(state, &mut buf, from + 64);
                    assert_eq!(got.as_slice(), want.as_ref(), "len {len}");
                    assert_eq!(buf.len(), from + len);
                }
            }
        }
    }

    /// RFC 4231, test case 2 ("Jefe"), with the key zero-padded to 32
    /// bytes (HMAC pads every short key with zeros to the block).
    #[test]
    fn rfc4231_case_2() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        for backend in BACKENDS {
            let mut buf = b"what do ya want for nothing?".to_vec();
            let tag = HmacKey::new(&key, backend).sign_in_place(&mut buf, 0);
            assert_eq!(
                crate::credential::hex::hex32(&tag),
                *b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "{backend:?}"
            );
        }
    }
}
