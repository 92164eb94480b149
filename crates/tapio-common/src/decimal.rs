//! Decimal digits without a division instruction.
//!
//! The agent's release build is optimised for size (opt-level "z"), where
//! the compiler keeps a `div` for a division by a constant. A JSON line has
//! some twenty digits (the timestamp's fraction, IPv4 octets), and those
//! `div`s were about 10 % of the agent's CPU per event (docs/budgets.md,
//! "CPU per event").

/// `v / 10` by a multiply and a shift, exact for every u32: the constant
/// is ceil(2^35 / 10), the one compilers use at higher optimisation.
#[inline(always)]
pub fn div10(v: u32) -> u32 {
    ((u64::from(v) * 0xCCCC_CCCD) >> 35) as u32
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
}
