//! Checkpoints that obey the host's ordering rule.
//!
//! The host orders a source's checkpoints by (length, bytes) and expects them to grow. A
//! number written as plain decimal without leading zeros, or as fixed-width hex, sorts that
//! way exactly as the number does; anything else (`"9"` then `"10"` as padded text of
//! varying width, a timestamp with a time zone) may not. Build checkpoints with these
//! helpers and read them back with the matching parser.

/// A checkpoint string whose (length, bytes) order is the order of the number it holds.
///
/// ```
/// use moonlink_sdk::Checkpoint;
/// assert_eq!(Checkpoint::counter(42).as_str(), "42");
/// assert_eq!(Checkpoint::read_counter("42"), Ok(42));
/// assert_eq!(Checkpoint::lsn(0x16_B374D848).as_str(), "00000016B374D848");
/// let resumed: String = Checkpoint::counter(7).into(); // what `PollResult` carries
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint(String);

impl Checkpoint {
    /// A count (rows emitted, the next row's index, an offset) in decimal, no leading zeros.
    pub fn counter(n: u64) -> Checkpoint {
        Checkpoint(n.to_string())
    }

    /// A log sequence number (e.g. a Postgres LSN) as 16 upper-case hex digits.
    pub fn lsn(lsn: u64) -> Checkpoint {
        Checkpoint(format!("{lsn:016X}"))
    }

    /// The number in a [`counter`](Checkpoint::counter) checkpoint.
    pub fn read_counter(checkpoint: &str) -> Result<u64, String> {
        let canonical = !checkpoint.is_empty()
            && checkpoint.bytes().all(|b| b.is_ascii_digit())
            && (checkpoint == "0" || !checkpoint.starts_with('0'));
        canonical
            .then(|| checkpoint.parse().ok())
            .flatten()
            .ok_or_else(|| format!("checkpoint '{checkpoint}' is not a counter"))
    }

    /// The number in an [`lsn`](Checkpoint::lsn) checkpoint.
    pub fn read_lsn(checkpoint: &str) -> Result<u64, String> {
        let canonical = checkpoint.len() == 16
            && checkpoint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        canonical
            .then(|| u64::from_str_radix(checkpoint, 16).ok())
            .flatten()
            .ok_or_else(|| format!("checkpoint '{checkpoint}' is not an LSN (16 hex digits)"))
    }

    /// The checkpoint's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Checkpoint> for String {
    fn from(c: Checkpoint) -> String {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's order: length first, then bytes.
    fn host_order(a: &str, b: &str) -> std::cmp::Ordering {
        (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
    }

    fn samples() -> Vec<u64> {
        let mut n: Vec<u64> = vec![0, 1, 9, 10, 11, 99, 100, 255, 256, 4095, 4096, 65_535];
        n.extend((0..64).map(|bit| 1u64 << bit));
        n.extend((0..64).map(|bit| (1u64 << bit) - 1));
        n.extend([u64::MAX - 1, u64::MAX]);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            n.push(x >> (x % 64));
        }
        n
    }

    #[test]
    fn checkpoints_sort_as_their_numbers_do() {
        let n = samples();
        for (make, name) in [
            (Checkpoint::counter as fn(u64) -> Checkpoint, "counter"),
            (Checkpoint::lsn, "lsn"),
        ] {
            for a in &n {
                for b in n.iter().step_by(7) {
                    let (ca, cb) = (make(*a), make(*b));
                    assert_eq!(
                        host_order(ca.as_str(), cb.as_str()),
                        a.cmp(b),
                        "{name} {a} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn checkpoints_read_back_and_refuse_other_text() {
        for n in samples() {
            assert_eq!(
                Checkpoint::read_counter(Checkpoint::counter(n).as_str()),
                Ok(n)
            );
            assert_eq!(Checkpoint::read_lsn(Checkpoint::lsn(n).as_str()), Ok(n));
        }
        for bad in ["", "01", "-1", "1.0", " 1", "18446744073709551616", "x"] {
            assert!(Checkpoint::read_counter(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "1",
            "00000016b374d848",
            "0000000000000000F",
            "000000000000000G",
        ] {
            assert!(Checkpoint::read_lsn(bad).is_err(), "{bad}");
        }
    }
}
