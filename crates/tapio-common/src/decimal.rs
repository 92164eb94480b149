//! Decimal digits without a division instruction.
//!
//! The agent's release build is optimised for size (opt-level "z"), where
//! the compiler keeps a `div` for a division by a constant. A JSON line has
//! some twenty digits (the timestamp's fraction, IPv4 octets), and those
//! `div`s were about 10 % of the agent's CPU per event (docs/budgets.md,
//! "CPU per event"). The integers of a line (ports, pids, ids) take the
//! same way instead of `itoa`, whose steps are divisions too.

/// `v / 10` by a multiply and a shift, exact for every u32: the constant
/// is ceil(2^35 / 10), the one compilers use at higher optimisation.
#[inline(always)]
pub fn div10(v: u32) -> u32 {
    ((u64::from(v) * 0xCCCC_CCCD) >> 35) as u32
}

/// `v / 10` for a u64, by a 128-bit multiply and a shift, exact for every
/// u64 (the constant is ceil(2^67 / 10)).
#[inline(always)]
pub fn div10_u64(v: u64) -> u64 {
    ((u128::from(v) * 0xCCCC_CCCC_CCCC_CCCD) >> 67) as u64
}

/// The decimal digits of `v`, without leading zeros, at the end of `b`:
/// returns where they start. Values below 2^32 take the cheaper 32-bit
/// step.
#[inline(always)]
pub fn digits(mut v: u64, b: &mut [u8; 20]) -> usize {
    let mut i = b.len();
    while v > u64::from(u32::MAX) {
        let q = div10_u64(v);
        i -= 1;
        b[i] = b'0' + (v - q * 10) as u8;
        v = q;
    }
    let mut v = v as u32;
    loop {
        let q = div10(v);
        i -= 1;
        b[i] = b'0' + (v - q * 10) as u8;
        v = q;
        if v == 0 {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiply-and-shift division against the machine's `/`: across
    /// the range, around every power of ten and at the top.
    #[test]
    fn div10_is_exact() {
        let powers = (0..10).map(|k| 10u32.pow(k));
        let near = powers.flat_map(|p| p.saturating_sub(3)..=p.saturating_add(3));
        let top = u32::MAX - 20..=u32::MAX;
        for v in (0..=u32::MAX).step_by(9_973).chain(near).chain(top) {
            assert_eq!(div10(v), v / 10, "{v}");
        }
    }

    /// Both divisions and the digits against the standard library, around
    /// every power of ten, at the 32-bit boundary and at the top.
    #[test]
    fn digits_are_the_standard_text() {
        let powers = (0..20).map(|k| 10u64.pow(k));
        let near = powers.flat_map(|p| p.saturating_sub(2)..=p.saturating_add(2));
        let edges = [
            u64::from(u32::MAX) - 1,
            u64::from(u32::MAX),
            1 << 32,
            (1 << 32) + 1,
        ];
        let top = u64::MAX - 12..=u64::MAX;
        let spread = (0..64).map(|k| 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k + 1) >> (k % 64));
        for v in near.chain(edges).chain(top).chain(spread) {
            assert_eq!(div10_u64(v), v / 10, "{v}");
            let mut b = [0u8; 20];
            let at = digits(v, &mut b);
            assert_eq!(std::str::from_utf8(&b[at..]), Ok(v.to_string().as_str()));
        }
    }
}
