//! Lowercase hex of digests and MACs, written on the stack: the one
//! encoder behind SigV4's hashes and signatures and `signed_url`'s
//! signatures (the `hex` crate's `encode` collects chars into a `String`:
//! ~20× the cost).

/// Both digits of every byte value, looked up once per byte.
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    pairs
};

/// Writes the lowercase hex of `bytes` at the start of `out` and returns
/// it; as much of `bytes` as `out` has room for (two digits per byte).
pub(crate) fn encode_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    let len = fill(bytes, out);
    // Hex digits are ASCII.
    std::str::from_utf8(&out[..len]).unwrap_or_default()
}

/// The lowercase hex of a 32-byte digest (SHA-256, HMAC-SHA256), as
/// bytes (SigV4 copies them on into its buffers).
pub(crate) fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    fill(bytes, &mut out);
    out
}

/// [`encode_into`]'s digits, without the text check; their length.
fn fill(bytes: &[u8], out: &mut [u8]) -> usize {
    let mut len = 0;
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
        len += 2;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_value_is_two_lowercase_digits() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = [0u8; 512];
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encode_into(&bytes, &mut out), expected);
    }

    #[test]
    fn a_short_buffer_takes_what_fits_and_a_long_one_what_there_is() {
        let mut short = [0u8; 3];
        assert_eq!(encode_into(&[0xab, 0xcd], &mut short), "ab");
        let mut long = [0u8; 64];
        assert_eq!(encode_into(&[0x01, 0xfe], &mut long), "01fe");
        assert_eq!(
            std::str::from_utf8(&hex32(&[0x5a; 32])).unwrap(),
            "5a".repeat(32)
        );
    }
}
