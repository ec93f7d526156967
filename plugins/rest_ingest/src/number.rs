//! Number and date parsing for the fast path, without `str::parse` on the common forms.
//!
//! Each function returns exactly what the general path's conversion gives for the same text
//! (`values::convert` with the SDK's parsers), or `None` where that conversion would refuse
//! the value. Uncommon forms go to the standard library's parser, as the general path does.

/// A JSON integer literal (`-?[0-9]+`) as `i64`; `None` for anything else (a fraction, an
/// exponent, a string) or a value beyond `i64`.
pub fn integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    if digits.len() <= 18 {
        // At most 18 digits: no overflow possible.
        let mut value = 0i64;
        for &b in digits {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            value = value * 10 + d as i64;
        }
        return Some(if negative { -value } else { value });
    }
    // Accumulated negatively so that i64::MIN fits.
    let mut value = 0i64;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(d as i64)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Powers of ten that are exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A JSON number as `f64`, correctly rounded (what `str::parse` gives); `None` for a string
/// or literal, malformed text, or a value too large for `f64` (the general path refuses it).
pub fn float64(raw: &str) -> Option<f64> {
    let bytes = raw.as_bytes();
    if !matches!(bytes.first()?, b'-' | b'0'..=b'9') {
        return None;
    }
    if let Some(value) = exact_float(bytes) {
        return Some(value);
    }
    let value: f64 = raw.parse().ok()?;
    value.is_finite().then_some(value)
}

/// A JSON number as `f32` the way the general path narrows it: parsed as `f64`, then cast;
/// `None` if that overflows.
pub fn float32(raw: &str) -> Option<f32> {
    let narrow = float64(raw)? as f32;
    narrow.is_finite().then_some(narrow)
}

/// Clinger's fast path: when the decimal significand fits in 53 bits and the power of ten is
/// exact (|k| <= 22), one multiplication or division is correctly rounded. `None` otherwise.
fn exact_float(bytes: &[u8]) -> Option<f64> {
    let (negative, rest) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, bytes),
    };
    let mut significand = 0u64;
    let mut digits = 0usize;
    let mut scale = 0i32;
    let mut i = 0;
    while let Some(&b) = rest.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        significand = significand.wrapping_mul(10).wrapping_add((b - b'0') as u64);
        digits += 1;
        i += 1;
    }
    if rest.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&b) = rest.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            significand = significand.wrapping_mul(10).wrapping_add((b - b'0') as u64);
            digits += 1;
            scale -= 1;
            i += 1;
        }
    }
    if let Some(b'e' | b'E') = rest.get(i) {
        i += 1;
        let exponent_negative = match rest.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut exponent = 0i32;
        let start = i;
        while let Some(&b) = rest.get(i) {
            if !b.is_ascii_digit() || i - start >= 4 {
                return None; // not a digit, or an exponent too long for this path
            }
            exponent = exponent * 10 + (b - b'0') as i32;
            i += 1;
        }
        if i == start {
            return None;
        }
        scale += if exponent_negative {
            -exponent
        } else {
            exponent
        };
    }
    // 19 digits always fit a u64; the significand must also be exact in an f64.
    if i != rest.len() || digits == 0 || digits > 19 || significand > (1u64 << 53) {
        return None;
    }
    let value = significand as f64;
    let value = match scale {
        0..=22 => value * POW10[scale as usize],
        -22..=-1 => value / POW10[(-scale) as usize],
        _ => return None,
    };
    Some(if negative { -value } else { value })
}

/// `YYYY-MM-DD` with a four-digit year as days since 1970-01-01, as the SDK's `parse_date`
/// gives it; `None` for any other form (the caller then asks `parse_date`) or a bad date.
pub fn date(b: &[u8]) -> Option<i32> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &[u8]| {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
        })
    };
    let (year, month, day) = (num(&b[0..4])? as i64, num(&b[5..7])?, num(&b[8..10])?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm); years 0..=9999 fit an i32.
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146097 + doe - 719468).ok()
}

#[cfg(test)]
#[path = "number_tests.rs"]
mod tests;
