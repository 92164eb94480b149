//! UTC time without a date library: RFC 3339 with nanoseconds, and hour
//! buckets.

/// Days since 1970-01-01 -> (year, month, day). Howard Hinnant's civil
/// calendar algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time of `ns` since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Utc {
    pub fn from_unix_ns(ns: u64) -> Utc {
        let secs = (ns / 1_000_000_000) as i64;
        let nanos = (ns % 1_000_000_000) as u32;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400) as u32;
        Utc {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            nanos,
        }
    }
}

/// Writes `v` as `width` decimal digits ending just before `b[end]`. Every
/// field fits 32 bits (a clamped year, nanoseconds below 10^9), whose
/// arithmetic is the cheaper.
fn put_digits(b: &mut [u8; 30], end: usize, width: usize, mut v: u32) {
    for i in (end - width..end).rev() {
        let q = crate::decimal::div10(v);
        b[i] = b'0' + (v - q * 10) as u8;
        v = q;
    }
}

/// RFC 3339 text of `ns`: fixed-width digits into a stack buffer, without
/// core::fmt. A u64 of ns ends before year 2555.
fn rfc3339_bytes(ns: u64) -> [u8; 30] {
    let t = Utc::from_unix_ns(ns);
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut b, 4, 4, t.year.clamp(0, 9999) as u32);
    put_digits(&mut b, 7, 2, t.month);
    put_digits(&mut b, 10, 2, t.day);
    put_digits(&mut b, 13, 2, t.hour);
    put_digits(&mut b, 16, 2, t.minute);
    put_digits(&mut b, 19, 2, t.second);
    put_digits(&mut b, 29, 9, t.nanos);
    b
}

/// `2026-11-22T06:01:02.123456789Z` (always nine fraction digits).
pub fn format_rfc3339_ns(ns: u64, out: &mut String) {
    // Every byte is ASCII.
    out.push_str(std::str::from_utf8(&rfc3339_bytes(ns)).unwrap_or_default());
}

/// RFC 3339 for a stream of close timestamps (the agent's events): the
/// calendar part is computed once per second, and each timestamp in the
/// same second only rewrites its nine fraction digits.
#[derive(Debug, Clone)]
pub struct Rfc3339Cache {
    /// The first ns of the second `text` holds.
    second_ns: u64,
    text: [u8; 30],
}

impl Default for Rfc3339Cache {
    fn default() -> Self {
        Rfc3339Cache {
            second_ns: 0,
            text: rfc3339_bytes(0),
        }
    }
}

impl Rfc3339Cache {
    /// The same text as [`format_rfc3339_ns`]. Within the cached second
    /// the fraction is a subtraction: no 64-bit division per event.
    pub fn format(&mut self, ns: u64) -> &str {
        match ns.checked_sub(self.second_ns) {
            Some(frac) if frac < 1_000_000_000 => {
                put_digits(&mut self.text, 29, 9, frac as u32);
            }
            _ => {
                self.text = rfc3339_bytes(ns);
                self.second_ns = ns - ns % 1_000_000_000;
            }
        }
        // SAFETY: `text` starts as the ASCII template of
        // `rfc3339_bytes`, and every write into it is an ASCII digit.
        unsafe { std::str::from_utf8_unchecked(&self.text) }
    }
}

pub fn rfc3339_ns(ns: u64) -> String {
    let mut s = String::with_capacity(30);
    format_rfc3339_ns(ns, &mut s);
    s
}

/// Parses RFC 3339 (`Z` or `±HH:MM` offsets, optional fraction) into ns
/// since the epoch. Times before 1970 are rejected.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits.min(9)..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..) {
        Some([b'Z' | b'z']) => 0,
        Some([sign @ (b'+' | b'-'), rest @ ..]) if rest.len() == 5 && rest[2] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se) - offset_secs;
    if secs < 0 {
        return None;
    }
    (secs as u64).checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The hour bucket of a timestamp: ns / 3600 s.
pub fn hour_of(ns: u64) -> u64 {
    ns / 3_600_000_000_000
}

/// `20261122T06` for an hour bucket.
pub fn hour_label(hour: u64) -> String {
    let t = Utc::from_unix_ns(hour * 3_600_000_000_000);
    format!("{:04}{:02}{:02}T{:02}", t.year, t.month, t.day, t.hour)
}

/// Inverse of [`hour_label`].
pub fn parse_hour_label(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 11
        || b[8] != b'T'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (y, m, d, h) = (n(0..4)?, n(4..6)?, n(6..8)?, n(9..11)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    if days < 0 {
        return None;
    }
    Some(days as u64 * 24 + u64::from(h))
}

/// Wall-clock now, ns since the epoch.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `90s`, `15m`, `2h`, `7d` -> ns.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-22T06:26:24.5Z
        let ns = 1_795_328_784_500_000_000;
        assert_eq!(rfc3339_ns(ns), "2026-11-22T06:26:24.500000000Z");
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(rfc3339_ns(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        // The cache agrees with the plain formatter inside a second, across
        // seconds, days and years, and going back in time.
        let mut cache = Rfc3339Cache::default();
        for ns in [
            0,
            999_999_999,
            1_000_000_000,
            1_798_761_599_999_999_999,
            1_798_761_600_000_000_000,
            1_798_761_600_000_000_007,
            5,
            u64::MAX,
        ] {
            assert_eq!(cache.format(ns), rfc3339_ns(ns), "{ns}");
        }
    }

    #[test]
    fn parse_is_the_inverse_of_format() {
        for ns in [
            0u64,
            1,
            951_782_400_000_000_001,
            1_795_328_784_500_000_000,
            4_102_444_799_999_999_999,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_ns(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T07:26:24.5+01:00"),
            Some(1_795_328_784_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T06:26:24Z"),
            Some(1_795_328_784_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T06:26:24.1234567891Z"),
            Some(1_795_328_784_123_456_789)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-22T06:26:24Z",
            "2026-11-22T06:26:24",
            "2026-11-22T06:26:24.Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn hour_labels_round_trip() {
        let ns = 1_795_328_784_500_000_000;
        let h = hour_of(ns);
        assert_eq!(hour_label(h), "20261122T06");
        assert_eq!(parse_hour_label("20261122T06"), Some(h));
        assert_eq!(parse_hour_label("20261122X06"), None);
        assert_eq!(parse_hour_label("20261122T24"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(900_000_000_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
