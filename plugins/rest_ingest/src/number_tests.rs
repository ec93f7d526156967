//! The fast number and date parsers against the parsers the general path uses.

use super::{date, float32, float64, integer};
use moonlink_sdk::text::{parse_date, parse_float};

#[test]
fn integers_match_str_parse() {
    for text in [
        "0",
        "-0",
        "7",
        "-7",
        "123456789012345678",
        "-123456789012345678",
        "1234567890123456789",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "000000000000000000000001",
        "1.5",
        "1e3",
        "-",
        "",
        "\"1\"",
        "true",
        "1-",
        "--1",
    ] {
        assert_eq!(integer(text.as_bytes()), text.parse::<i64>().ok(), "{text}");
    }
}

#[test]
fn floats_match_the_general_parser() {
    let mut texts: Vec<String> = [
        "0",
        "-0",
        "-0.0",
        "1",
        "1.5",
        "0.1",
        "0.3",
        "2499.75",
        "333333.3333333333",
        "333333.33333333331",
        "9007199254740993",
        "9007199254740992",
        "1e22",
        "1e23",
        "1.5e-22",
        "1E+2",
        "1e-400",
        "1e400",
        "-1e400",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "4.9e-324",
        "123456789012345678901234567890",
        "0.000000000000000000000000001",
        "3.4028235e38",
        "3.4028236e38",
        "3.5e38",
        "1e00001",
        "1e99999",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Generated decimals in the forms JSON writers produce.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let whole = seed % 1_000_000_000;
        let frac = (seed >> 30) % 100_000_000;
        let exp = (seed >> 60) as i32 - 8;
        texts.push(format!("{whole}.{frac}"));
        texts.push(format!("-{whole}.{frac:08}e{exp}"));
        texts.push(format!("{}", f64::from_bits(seed >> 2)));
    }
    for text in &texts {
        let general = parse_float(text, false).ok();
        assert_eq!(
            float64(text).map(f64::to_bits),
            general.map(f64::to_bits),
            "{text}"
        );
        let general32 = parse_float(text, true).ok().map(|v| v as f32);
        assert_eq!(
            float32(text).map(f32::to_bits),
            general32.map(f32::to_bits),
            "{text}"
        );
    }
    // Strings and literals are not numbers.
    for text in ["\"1\"", "true", "null", "inf", "NaN"] {
        assert_eq!(float64(text), None, "{text}");
    }
}

#[test]
fn dates_match_parse_date() {
    for year in [0, 1, 1582, 1900, 1969, 1970, 2000, 2024, 2100, 9999] {
        for month in 0..=13 {
            for day in [0, 1, 28, 29, 30, 31, 32] {
                let text = format!("{year:04}-{month:02}-{day:02}");
                assert_eq!(date(text.as_bytes()), parse_date(&text).ok(), "{text}");
            }
        }
    }
    // Other forms are left to parse_date (None here), never decoded differently.
    for text in [
        "-0001-01-01",
        "10000-01-01",
        "2024-1-01",
        "2024/01/01",
        "2024-01-01 ",
    ] {
        assert_eq!(date(text.as_bytes()), None, "{text}");
    }
}
