//! Text forms of typed values, parsed exactly: what HTTP bodies and Postgres send.
//! Strict: nothing is rounded or guessed; errors quote the input and say what was expected.

fn digits(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid {what} '{s}'"));
    }
    s.parse().map_err(|_| format!("invalid {what} '{s}'"))
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
    let bad = || format!("invalid date '{s}' (expected YYYY-MM-DD)");
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
    i32::try_from(days_from_civil(year, month, day)).map_err(|_| bad())
}

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]][Z|±HH:MM]` into microseconds since the epoch
/// (UTC when an offset is given). A naive value is taken as UTC for timestamptz and as
/// wall-clock time for timestamp; an offset on a plain timestamp is refused, not dropped.
pub fn parse_timestamp(s: &str, with_zone: bool) -> Result<i64, String> {
    if let Some(micros) = parse_plain_timestamp(s.as_bytes(), with_zone) {
        return Ok(micros);
    }
    let bad = |why: &str| format!("invalid timestamp '{s}': {why}");
    let s_trim = s.trim();
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
        let (hms, fraction) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let h = parts
            .next()
            .map(|p| digits(p, "hour"))
            .transpose()
            .map_err(|_| bad("bad hour"))?;
        let m = parts
            .next()
            .map(|p| digits(p, "minute"))
            .transpose()
            .map_err(|_| bad("bad minute"))?;
        let sec = parts
            .next()
            .map(|p| digits(p, "second"))
            .transpose()
            .map_err(|_| bad("bad second"))?;
        if parts.next().is_some() {
            return Err(bad("bad time"));
        }
        let (Some(h), Some(m)) = (h, m) else {
            return Err(bad("expected HH:MM[:SS]"));
        };
        let sec = sec.unwrap_or(0);
        if h > 23 || m > 59 || sec > 59 {
            return Err(bad("time out of range"));
        }
        let mut micros = 0i64;
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("bad fractional seconds"));
            }
            let (kept, dropped) = f.split_at(f.len().min(6));
            if dropped.bytes().any(|b| b != b'0') {
                return Err(bad("more precision than microseconds"));
            }
            micros = format!("{kept:0<6}").parse::<i64>().unwrap();
        }
        micros_of_day = ((h as i64 * 60 + m as i64) * 60 + sec as i64) * 1_000_000 + micros;
    }
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros_of_day))
        .and_then(|t| t.checked_sub(offset_secs * 1_000_000))
        .ok_or_else(|| bad("out of range"))
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
    let days = days_from_civil(year, month, day);
    let micros_of_day = ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    Some(days * 86_400_000_000 + micros_of_day - offset_secs * 1_000_000)
}

/// Parses a decimal literal exactly into its unscaled value at `scale`.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    if let Some(value) = parse_plain_decimal(text.as_bytes(), precision, scale) {
        return Ok(value);
    }
    let bad =
        |why: &str| format!("invalid decimal '{text}' for decimal({precision},{scale}): {why}");
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    // Exponent notation (from JSON numbers like 1e3) is expanded exactly.
    let (mantissa, exponent) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad("bad exponent"))?),
        None => (t, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("not a number"));
    }
    let mut all_digits: String = format!("{int_part}{frac_part}");
    let mut frac_len = frac_part.len() as i32 - exponent;
    if frac_len < 0 {
        all_digits.push_str(&"0".repeat((-frac_len) as usize));
        frac_len = 0;
    }
    let frac_len = frac_len as usize;
    if frac_len > scale as usize {
        let extra = &all_digits[all_digits.len() - (frac_len - scale as usize)..];
        if extra.bytes().any(|b| b != b'0') {
            return Err(bad(&format!("more than {scale} digits after the point")));
        }
        all_digits.truncate(all_digits.len() - (frac_len - scale as usize));
    } else {
        all_digits.push_str(&"0".repeat(scale as usize - frac_len));
    }
    let significant = all_digits.trim_start_matches('0');
    if significant.len() > precision as usize {
        return Err(bad(&format!("more than {precision} significant digits")));
    }
    let value: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| bad("out of range"))?
    };
    Ok(if negative { -value } else { value })
}

/// The common case without allocating: `[-]digits[.digits]` that fits exactly. `None` sends
/// everything else (exponents, too many digits, errors) to the general parser.
fn parse_plain_decimal(t: &[u8], precision: u8, scale: u8) -> Option<i128> {
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
            significant += 1;
        }
        value = value * 10 + (b - b'0') as i128;
        if significant > 38 {
            return None;
        }
    }
    for _ in frac_part.len()..scale as usize {
        value *= 10;
        if value != 0 {
            significant += 1;
        }
    }
    if significant > precision as usize {
        return None;
    }
    Some(if negative { -value } else { value })
}

/// Parses the canonical 8-4-4-4-12 form (case-insensitive) into 16 big-endian bytes.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("invalid UUID '{s}' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    let groups: Vec<&str> = s.split('-').collect();
    if groups.len() != 5 || groups.iter().map(|g| g.len()).ne([8, 4, 4, 4, 12]) {
        return Err(bad());
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Parses `HH:MM[:SS[.ffffff]]` into microseconds since midnight (`24:00:00` is allowed, as
/// Postgres allows it).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if s.trim() == "24:00:00" {
        return Ok(86_400_000_000);
    }
    // The same rules as a timestamp's time part.
    parse_timestamp(&format!("1970-01-01 {}", s.trim()), false)
        .map_err(|_| format!("invalid time '{s}' (expected HH:MM:SS[.ffffff])"))
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
}
