//! Text forms of typed values, parsed exactly: what HTTP bodies and Postgres send.
//! Strict: nothing is rounded or guessed; errors quote the input and say what was expected.
//! Every check Iceberg needs is made here (ranges of dates, timestamps and times, decimal
//! precision, float overflow), so a value that parses can always be written.

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The largest Iceberg `time`: 23:59:59.999999 (microseconds since midnight).
pub const MAX_TIME_MICROS: i64 = MICROS_PER_DAY - 1;

/// Longest part of an input quoted back in an error message (values can be megabytes long).
const QUOTE_MAX: usize = 64;

/// `s` for an error message: at most `QUOTE_MAX` (64) bytes, cut at a character boundary.
pub fn quoted(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return s.to_string();
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn digits(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid {what} '{}'", quoted(s)));
    }
    s.parse()
        .map_err(|_| format!("invalid {what} '{}'", quoted(s)))
}

/// Checks microseconds since midnight against Iceberg's `time` range.
pub fn check_time(micros: i64) -> Result<i64, String> {
    if (0..=MAX_TIME_MICROS).contains(&micros) {
        Ok(micros)
    } else {
        Err(format!(
            "time {micros} is out of range: Iceberg time is 0 to {MAX_TIME_MICROS} microseconds \
             since midnight (00:00:00 to 23:59:59.999999)"
        ))
    }
}

/// Checks days since 1970-01-01 against what a `date` holds (a 32-bit day number).
pub fn check_date_days(days: i64) -> Result<i32, String> {
    i32::try_from(days).map_err(|_| {
        format!(
            "date {days} (days since 1970-01-01) is out of range: a date is a 32-bit day number"
        )
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_date(s: &str) -> Result<i32, String> {
    let bad = || format!("invalid date '{}' (expected YYYY-MM-DD)", quoted(s));
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut parts = body.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year = digits(y, "year").map_err(|_| bad())? as i64 * if negative { -1 } else { 1 };
    let month = digits(m, "month").map_err(|_| bad())?;
    let day = digits(d, "day").map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad());
    }
    check_date_days(days_from_civil(year, month, day))
        .map_err(|e| format!("invalid date '{}': {e}", quoted(s)))
}

/// Fractional seconds (1 to 9 digits, at most 6 of them non-zero) as microseconds.
fn fraction_micros(f: &str) -> Result<i64, &'static str> {
    if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad fractional seconds");
    }
    let (kept, dropped) = f.split_at(f.len().min(6));
    if dropped.bytes().any(|b| b != b'0') {
        return Err("more precision than microseconds");
    }
    let value = kept
        .bytes()
        .fold(0i64, |acc, b| acc * 10 + (b - b'0') as i64);
    Ok(value * 10i64.pow(6 - kept.len() as u32))
}

/// `HH:MM[:SS[.ffffff]]` (ASCII) as hour, minute, second and microseconds; ranges unchecked.
fn time_fields(time: &str) -> Result<(u32, u32, u32, i64), &'static str> {
    let (hms, fraction) = match time.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (time, None),
    };
    let mut parts = hms.split(':');
    let field = |p: Option<&str>, why| p.map(|p| digits(p, "field")).transpose().map_err(|_| why);
    let h = field(parts.next(), "bad hour")?;
    let m = field(parts.next(), "bad minute")?;
    let sec = field(parts.next(), "bad second")?;
    if parts.next().is_some() {
        return Err("bad time");
    }
    let (Some(h), Some(m)) = (h, m) else {
        return Err("expected HH:MM[:SS]");
    };
    let micros = match fraction {
        Some(f) => fraction_micros(f)?,
        None => 0,
    };
    Ok((h, m, sec.unwrap_or(0), micros))
}

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]][Z|±HH:MM]` into microseconds since the epoch
/// (UTC when an offset is given). A naive value is taken as UTC for timestamptz and as
/// wall-clock time for timestamp; an offset on a plain timestamp is refused, not dropped.
pub fn parse_timestamp(s: &str, with_zone: bool) -> Result<i64, String> {
    if let Some(micros) = parse_plain_timestamp(s.as_bytes(), with_zone) {
        return Ok(micros);
    }
    let bad = |why: &str| format!("invalid timestamp '{}': {why}", quoted(s));
    let s_trim = s.trim();
    // Every valid form is ASCII; checking first makes the byte offsets below safe to slice.
    if !s_trim.is_ascii() {
        return Err(bad("unexpected non-ASCII character"));
    }
    if s_trim.len() < 10 {
        return Err(bad("expected YYYY-MM-DD HH:MM:SS[.ffffff]"));
    }
    let (date_part, rest) = s_trim.split_at(10);
    let days = parse_date(date_part).map_err(|_| bad("bad date"))? as i64;
    let mut micros_of_day = 0i64;
    let mut offset_secs = 0i64;
    if !rest.is_empty() {
        let rest = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix('t'))
            .or_else(|| rest.strip_prefix(' '))
            .ok_or_else(|| bad("expected 'T' or ' ' between date and time"))?;
        // Split off a zone designator.
        let (time, zone) =
            if let Some(t) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
                (t, Some(0))
            } else if let Some(pos) = rest.rfind(['+', '-']) {
                let (t, z) = rest.split_at(pos);
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let z = &z[1..];
                let (hh, mm) = match z.split_once(':') {
                    Some((h, m)) => (h, m),
                    None if z.len() == 4 => z.split_at(2),
                    None if z.len() == 2 => (z, "00"),
                    None => return Err(bad("bad UTC offset")),
                };
                let h = digits(hh, "offset").map_err(|_| bad("bad UTC offset"))? as i64;
                let m = digits(mm, "offset").map_err(|_| bad("bad UTC offset"))? as i64;
                if h > 23 || m > 59 {
                    return Err(bad("bad UTC offset"));
                }
                (t, Some(sign * (h * 3600 + m * 60)))
            } else {
                (rest, None)
            };
        if let Some(off) = zone {
            if !with_zone && off != 0 {
                return Err(bad("a UTC offset needs a timestamptz column"));
            }
            offset_secs = off;
        }
        let (h, m, sec, micros) = time_fields(time).map_err(bad)?;
        if h > 23 || m > 59 || sec > 59 {
            return Err(bad("time out of range"));
        }
        micros_of_day = ((h as i64 * 60 + m as i64) * 60 + sec as i64) * 1_000_000 + micros;
    }
    days.checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(micros_of_day))
        .and_then(|t| t.checked_sub(offset_secs * 1_000_000))
        .ok_or_else(|| bad("out of range for a timestamp (64-bit microseconds)"))
}

/// The common `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]` form without allocating; `None` sends
/// everything else (and every error) to the general parser.
fn parse_plain_timestamp(b: &[u8], with_zone: bool) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64)
        })
    }
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (
        num(&b[0..4])?,
        num(&b[5..7])? as u32,
        num(&b[8..10])? as u32,
    );
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        micros = num(&fraction[..digits])? * 10i64.pow(6 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        [] => 0,
        [sign @ (b'+' | b'-'), zone @ ..] if with_zone => {
            let (h, m) = match zone {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    // Four-digit years: no overflow possible.
    let days = days_from_civil(year, month, day);
    let micros_of_day = ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    Some(days * MICROS_PER_DAY + micros_of_day - offset_secs * 1_000_000)
}

/// Parses `HH:MM[:SS[.ffffff]]` into microseconds since midnight. Iceberg's time ends at
/// 23:59:59.999999, so Postgres's `24:00:00` is refused with a message saying so.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("invalid time '{}': {why}", quoted(s));
    let t = s.trim();
    if !t.is_ascii() {
        return Err(bad("unexpected non-ASCII character"));
    }
    let (h, m, sec, micros) =
        time_fields(t).map_err(|why| bad(&format!("{why} (expected HH:MM:SS[.ffffff])")))?;
    if (h, m, sec, micros) == (24, 0, 0, 0) {
        return Err(bad(
            "24:00:00 has no Iceberg form (a time is 00:00:00 to 23:59:59.999999)",
        ));
    }
    if h > 23 || m > 59 || sec > 59 {
        return Err(bad("out of range (00:00:00 to 23:59:59.999999)"));
    }
    Ok(((h as i64 * 60 + m as i64) * 60 + sec as i64) * 1_000_000 + micros)
}

/// Parses a decimal literal exactly into its unscaled value at `scale`: `[+-]digits[.digits]`
/// with an optional exponent (`1e-5`, `-0.5E2`: what JSON numbers look like). A value with
/// non-zero digits beyond `scale`, or too many digits for `precision`, is refused, never rounded.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    if let Some(value) = parse_plain_decimal(text.as_bytes(), precision, scale) {
        return Ok(value);
    }
    let bad = |why: &str| {
        format!(
            "invalid decimal '{}' for decimal({precision},{scale}): {why}",
            quoted(text)
        )
    };
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, parse_exponent(e).ok_or_else(|| bad("bad exponent"))?),
        None => (t, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("not a number"));
    }
    // The digits are int_part ++ frac_part; the value is digits * 10^(exponent - frac_len).
    let all = || int_part.bytes().chain(frac_part.bytes());
    let leading_zeros = all().take_while(|b| *b == b'0').count();
    let significant = int_part.len() + frac_part.len() - leading_zeros;
    if significant == 0 {
        return Ok(0); // zero, whatever the exponent
    }
    let trailing_zeros = all().rev().take_while(|b| *b == b'0').count();
    // The unscaled value is the significant digits times 10^shift (i128: no overflow for any
    // input length or exponent).
    let shift = exponent as i128 - frac_part.len() as i128 + scale as i128;
    if shift < 0 && -shift > trailing_zeros as i128 {
        return Err(bad(&format!(
            "more than {scale} digits after the point (refused, not rounded)"
        )));
    }
    let width = significant as i128 + shift;
    if width > precision.min(38) as i128 {
        return Err(bad(&format!(
            "out of range: decimal({precision},{scale}) holds at most {} digits before the point",
            precision.saturating_sub(scale)
        )));
    }
    // At most 38 digits from here on: fits in i128.
    let kept = (significant as i128 + shift.min(0)) as usize;
    let mut value = all()
        .skip(leading_zeros)
        .take(kept)
        .fold(0i128, |acc, b| acc * 10 + (b - b'0') as i128);
    for _ in 0..shift.max(0) {
        value *= 10;
    }
    Ok(if negative { -value } else { value })
}

/// An exponent `[+-]digits`, saturated far beyond any decimal's range (so `1e-999999999999`
/// is a clear error, not an overflow).
fn parse_exponent(e: &str) -> Option<i64> {
    let (negative, digits) = match e.as_bytes().first()? {
        b'-' => (true, &e[1..]),
        b'+' => (false, &e[1..]),
        _ => (false, e),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.bytes().fold(0i64, |acc, b| {
        (acc * 10 + (b - b'0') as i64).min(1_000_000_000_000)
    });
    Some(if negative { -value } else { value })
}

/// The common case without allocating: `[-]digits[.digits]` that fits exactly. `None` sends
/// everything else (exponents, too many digits, errors) to the general parser.
fn parse_plain_decimal(t: &[u8], precision: u8, scale: u8) -> Option<i128> {
    let max_digits = precision.min(38) as usize;
    let (negative, t) = match t.first()? {
        b'-' => (true, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match t.iter().position(|b| *b == b'.') {
        Some(dot) => (&t[..dot], &t[dot + 1..]),
        None => (t, &t[..0]),
    };
    if int_part.is_empty() || frac_part.len() > scale as usize {
        return None;
    }
    let mut value: i128 = 0;
    let mut significant = 0usize;
    for &b in int_part.iter().chain(frac_part) {
        if !b.is_ascii_digit() {
            return None;
        }
        if value != 0 || b != b'0' {
            // Checked before multiplying: 39 digits would overflow i128.
            significant += 1;
            if significant > max_digits {
                return None;
            }
        }
        value = value * 10 + (b - b'0') as i128;
    }
    let padding = scale as usize - frac_part.len();
    if value != 0 && significant + padding > max_digits {
        return None;
    }
    for _ in 0..padding {
        value *= 10;
    }
    Some(if negative { -value } else { value })
}

/// Parses a floating-point literal for a float64 column, or a float32 one (`float32`).
/// `NaN` and `Infinity` (any case, also `inf`) are taken as written; a finite literal too
/// large for the type (`1e39` for float32, `1e309`) is refused, not stored as infinity.
pub fn parse_float(text: &str, float32: bool) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid number '{}'", quoted(text)))?;
    // Letters other than an exponent's mark mean inf/infinity/nan was written out.
    let spelled_out = text
        .bytes()
        .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'));
    if value.is_infinite() && !spelled_out {
        return Err(format!(
            "number '{}' is out of range for float64 (largest magnitude {:e})",
            quoted(text),
            f64::MAX
        ));
    }
    if float32 {
        check_float32(value).map_err(|_| {
            format!(
                "number '{}' is out of range for float32 (largest magnitude {:e})",
                quoted(text),
                f32::MAX
            )
        })?;
    }
    Ok(value)
}

/// Checks that a finite value stays finite as a float32.
pub fn check_float32(value: f64) -> Result<f32, String> {
    let narrow = value as f32;
    if value.is_finite() && narrow.is_infinite() {
        return Err(format!(
            "{value:e} is out of range for float32 (largest magnitude {:e})",
            f32::MAX
        ));
    }
    Ok(narrow)
}

/// Parses the canonical 8-4-4-4-12 form (case-insensitive) into 16 big-endian bytes.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let bad = || {
        format!(
            "invalid UUID '{}' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            quoted(s)
        )
    };
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    let mut nibble = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return Err(bad());
            }
            continue;
        }
        // Bytes, not chars: a multibyte character is simply not a hex digit.
        let value = (c as char).to_digit(16).ok_or_else(bad)? as u8;
        out[nibble / 2] |= if nibble % 2 == 0 { value << 4 } else { value };
        nibble += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_paths_agree_with_the_general_parsers() {
        let day = days_from_civil(2024, 2, 29);
        let want = day * 86_400_000_000 + (21 * 3600 + 59 * 60 + 59) * 1_000_000 + 500_000;
        assert_eq!(parse_timestamp("2024-02-29 23:59:59.5+02", true), Ok(want));
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59.500+02:00", true),
            Ok(want)
        );
        // Forms only the general parser takes give the same instant.
        assert_eq!(parse_timestamp("2024-02-29T21:59:59.5Z", true), Ok(want));
        assert!(parse_timestamp("2023-02-29 00:00:00", false).is_err());
        assert!(parse_timestamp("2024-01-01 00:00:00+02", false).is_err());
        assert_eq!(parse_decimal("-12.5", 5, 2), Ok(-1250));
        assert_eq!(parse_decimal("1.2e1", 5, 2), Ok(1200));
        assert!(parse_decimal("123.456", 9, 2).is_err());
        assert!(parse_decimal("1234", 3, 0).is_err());
    }

    #[test]
    fn decimal_exponents_are_exact_or_refused_never_panics() {
        // Digits beyond the scale are refused (this underflowed an index before).
        let err = parse_decimal("1e-5", 10, 2).unwrap_err();
        assert!(
            err.contains("decimal(10,2)") && err.contains("2 digits after the point"),
            "{err}"
        );
        // Huge exponents are a clear error, not an overflow or a gigabyte of zeros.
        for huge in [
            "1e-999999999",
            "1e-99999999999999999999999",
            "1e999999999999",
        ] {
            let err = parse_decimal(huge, 38, 0).unwrap_err();
            assert!(err.contains("decimal(38,0)"), "{err}");
        }
        assert_eq!(parse_decimal("0e-999999999999", 5, 2), Ok(0));
        assert_eq!(parse_decimal("1e-5", 10, 5), Ok(1));
        assert_eq!(parse_decimal("1E3", 4, 0), Ok(1000));
        assert_eq!(parse_decimal("-0.5e2", 5, 2), Ok(-5000));
        assert_eq!(parse_decimal("2.50E-1", 5, 2), Ok(25));
        assert_eq!(parse_decimal("1.50", 5, 1), Ok(15));
        let err = parse_decimal("1E4", 4, 0).unwrap_err();
        assert!(err.contains("at most 4 digits before the point"), "{err}");
        for bad in ["1e", "1e+", "e5", ".e5", "1e5.0", "--1"] {
            assert!(parse_decimal(bad, 5, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn thirty_nine_digits_are_refused_not_overflowed() {
        // The fast path multiplied before checking the digit count.
        let nines = "9".repeat(39);
        let err = parse_decimal(&nines, 38, 0).unwrap_err();
        assert!(err.contains("decimal(38,0)"), "{err}");
        assert_eq!(
            parse_decimal(&nines[..38], 38, 0),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert!(parse_decimal(&format!("{}.5", &nines[..37]), 38, 2).is_err());
    }

    #[test]
    fn multibyte_characters_are_errors_not_panics() {
        for s in [
            "2026-01-0é 00:00:00",
            "2026-01-01 00:00:00+1é1",
            "2026-01-01T00:00:00é",
            "ééééééééééé",
        ] {
            let err = parse_timestamp(s, true).unwrap_err();
            assert!(err.starts_with("invalid timestamp"), "{err}");
            assert!(parse_timestamp(s, false).is_err());
        }
        let uuid = "0ééé0000-0000-0000-0000-000000000000";
        assert_eq!(uuid.len(), 39);
        let uuid36 = "0ééé0-0000-0000-0000-000000000000";
        assert_eq!(uuid36.len(), 36);
        for u in [
            uuid,
            uuid36,
            "0ééé0000-0000-0000-0000-0000000000",
            &"é".repeat(18),
        ] {
            assert!(parse_uuid(u).unwrap_err().contains("invalid UUID"), "{u}");
        }
        assert!(parse_time("12:00:0é").is_err());
        assert!(parse_date("2026-0é-1").is_err());
        // Quoting a long multibyte value cuts at a character boundary.
        assert!(quoted(&"é".repeat(100)).ends_with("(200 bytes)"));
    }

    #[test]
    fn time_is_what_iceberg_holds() {
        assert_eq!(parse_time("23:59:59.999999"), Ok(MAX_TIME_MICROS));
        assert_eq!(parse_time("00:00"), Ok(0));
        let err = parse_time("24:00:00").unwrap_err();
        assert!(
            err.contains("'24:00:00'") && err.contains("23:59:59.999999"),
            "{err}"
        );
        for bad in [
            "24:00:00.000",
            "25:00:00",
            "12:60:00",
            "12:00:60",
            "12",
            "12:00:00+02",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(check_time(0), Ok(0));
        assert_eq!(check_time(MAX_TIME_MICROS), Ok(MAX_TIME_MICROS));
        for bad in [-5, MAX_TIME_MICROS + 1, 1_000_000_000_000_000] {
            let err = check_time(bad).unwrap_err();
            assert!(err.contains("out of range"), "{err}");
        }
    }

    #[test]
    fn floats_that_overflow_are_refused() {
        for (text, float32, kind) in [
            ("1e39", true, "float32"),
            ("-1e39", true, "float32"),
            ("1e309", false, "float64"),
            ("-1e309", true, "float64"),
        ] {
            let err = parse_float(text, float32).unwrap_err();
            assert!(err.contains(kind) && err.contains(text), "{err}");
        }
        assert_eq!(parse_float("3.4028235e38", true), Ok(3.4028235e38));
        assert_eq!(parse_float("1e308", false), Ok(1e308));
        assert_eq!(parse_float("-Infinity", true), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_float("inf", false), Ok(f64::INFINITY));
        assert!(parse_float("NaN", true).is_ok_and(f64::is_nan));
        assert!(parse_float("1.5x", false).is_err());
        assert!(check_float32(1e39).is_err());
        assert_eq!(check_float32(f64::INFINITY), Ok(f32::INFINITY));
    }
}
