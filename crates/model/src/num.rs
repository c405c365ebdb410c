//! Numeric conversions that say what happens at the edge instead of a bare `as`, which
//! truncates silently (the workspace denies `cast_possible_truncation`, `cast_sign_loss` and
//! `cast_possible_wrap`; these are the named ways around them).

use std::time::Duration;

/// `v`, or `u64::MAX` when it does not fit.
pub fn sat_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A duration in whole milliseconds, saturating.
pub fn ms(d: Duration) -> u64 {
    sat_u64(d.as_millis())
}

/// `v`, or `u32::MAX` when it does not fit.
pub fn sat_u32<T: TryInto<u32>>(v: T) -> u32 {
    v.try_into().unwrap_or(u32::MAX)
}

/// `v`, or `usize::MAX` when it does not fit (a 32-bit target).
pub fn sat_usize<T: TryInto<usize>>(v: T) -> usize {
    v.try_into().unwrap_or(usize::MAX)
}

/// `v` when it is not negative, else 0.
pub fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The low 64 bits of `v` (random bits: any 64 of them are as good).
pub fn low_u64(v: u128) -> u64 {
    u64::try_from(v & u128::from(u64::MAX)).unwrap_or(0)
}

/// `v` rounded toward zero; negatives and NaN are 0, values past `u64::MAX` are `u64::MAX`
/// (what `as` does, named).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn f64_to_u64(v: f64) -> u64 {
    v as u64
}

/// `v` rounded toward zero; negatives and NaN are 0, values past `u32::MAX` are `u32::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn f64_to_u32(v: f64) -> u32 {
    v as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edges_saturate_instead_of_wrapping() {
        assert_eq!(sat_u64(u128::MAX), u64::MAX);
        assert_eq!(sat_u32(u64::from(u32::MAX) + 1), u32::MAX);
        assert_eq!(sat_u32(7usize), 7);
        assert_eq!(non_negative(-5), 0);
        assert_eq!(low_u64((1u128 << 64) | 9), 9);
        assert_eq!(f64_to_u64(-1.0), 0);
        assert_eq!(f64_to_u64(f64::NAN), 0);
        assert_eq!(f64_to_u64(1e30), u64::MAX);
        assert_eq!(f64_to_u32(1e12), u32::MAX);
    }
}
