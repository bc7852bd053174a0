//! `X-Amz-Date`: the signing time as `YYYYMMDD'T'HHMMSS'Z'` (UTC).

/// `X-Amz-Date` of `unix` seconds since the epoch.
pub(crate) fn amz_date(unix: u64) -> [u8; 16] {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"00000000T000000Z";
    write_digits(&mut out[0..4], y);
    write_digits(&mut out[4..6], m);
    write_digits(&mut out[6..8], d);
    write_digits(&mut out[9..11], secs / 3600);
    write_digits(&mut out[11..13], secs % 3600 / 60);
    write_digits(&mut out[13..15], secs % 60);
    out
}

fn write_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        // n % 10 < 10: the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month, day of the day `days` after 1970-01-01 (the proleptic
/// Gregorian calendar, counted in 400-year eras).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_signing_time() {
        assert_eq!(&amz_date(0), b"19700101T000000Z");
        // The AWS test suite's time, and S3's examples'.
        assert_eq!(&amz_date(1_440_938_160), b"20150830T123600Z");
        assert_eq!(&amz_date(1_369_353_600), b"20130524T000000Z");
        assert_eq!(&amz_date(951_782_400), b"20000229T000000Z");
        assert_eq!(&amz_date(4_102_444_799), b"20991231T235959Z");
    }
}
