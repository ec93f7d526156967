//! The fast path: NDJSON bodies and JSON envelopes whose rows are flat objects of scalars,
//! scanned by hand in one pass straight into typed columns (`columns.rs`: no serde structure,
//! no `Value` per field, column lookup predicted from the previous key).
//!
//! It only ever accepts: anything it does not handle itself (an escape in a key, an array
//! value, a duplicate or unknown key, any value refused by its column, odd structure) makes it
//! give up, and the body is decoded again by the general path, which then produces the result
//! or the exact error (with row and column) the API documents. Values convert to exactly what
//! the general path builds (`fast_tests.rs` compares both on generated bodies).

use moonlink_sdk::rest::{IngestRequest, RequestInfo};

use crate::columns::Columns;
use crate::{is_ndjson, parse_mode, parse_operation};

/// The most rows columns are sized for up front; beyond, they grow as needed.
const MAX_ROWS_HINT: usize = 1 << 16;

/// Decodes `body` if every part of it is on the fast path; `None` means "use the general path".
pub fn decode(info: &RequestInfo, body: &[u8]) -> Option<IngestRequest> {
    let text = std::str::from_utf8(body).ok()?;
    let param = |key: &str| info.param(key);
    if is_ndjson(info.content_type.as_deref()) {
        let operation = parse_operation(param("operation").unwrap_or("insert")).ok()?;
        let mode = parse_mode(param("request_mode").unwrap_or("async")).ok()?;
        // Room for as many rows as the body holds if they are all as long as the first, up to
        // a cap (a short first line must not reserve memory for millions of rows).
        let first_line = body.iter().position(|&b| b == b'\n').unwrap_or(body.len()) + 1;
        let rows_hint = (body.len() / first_line + 1).min(MAX_ROWS_HINT);
        let mut rows = Columns::new(&info.table, &info.schema, operation, rows_hint);
        // One pass over the body: a row may not span lines (the general path decodes one
        // line at a time), so inside a row a newline is not whitespace.
        let mut s = Scanner::new(text, false);
        loop {
            s.ws_lines();
            if s.at_end() {
                break;
            }
            s.row(&mut rows)?;
            s.ws();
            match s.next() {
                None | Some(b'\n') => {}
                Some(_) => return None,
            }
        }
        return Some(rows.finish(mode));
    }
    envelope(text, info)
}

/// `{"operation": "...", "request_mode": "...", "data": [rows] | row}`, fields in any order;
/// `data` before `operation` is decoded with the default and redone if `operation` differs.
fn envelope(text: &str, info: &RequestInfo) -> Option<IngestRequest> {
    let default_operation = parse_operation(info.param("operation").unwrap_or("insert")).ok()?;
    let mut s = Scanner::new(text, true);
    let (mut operation, mut mode) = (None::<&str>, None::<&str>);
    let (mut seen, mut data) = ([false; 4], None::<Columns>);
    s.ws();
    s.eat(b'{')?;
    loop {
        s.ws();
        let key = s.plain_string()?;
        let slot = ["operation", "request_mode", "data", "table"]
            .iter()
            .position(|k| *k == key)?;
        if std::mem::replace(&mut seen[slot], true) {
            return None; // duplicate field: the general path refuses it
        }
        s.ws();
        s.eat(b':')?;
        s.ws();
        match slot {
            0 | 1 | 3 => {
                let value = match s.peek()? {
                    b'"' => Some(s.plain_string()?),
                    b'n' => s.literal("null").map(|_| None)?,
                    _ => return None,
                };
                match slot {
                    0 => operation = value,
                    1 => mode = value,
                    _ => {}
                }
            }
            _ => {
                let op = match operation {
                    Some(name) => parse_operation(name).ok()?,
                    None => default_operation,
                };
                let mut rows = Columns::new(&info.table, &info.schema, op, 0);
                match s.peek()? {
                    b'[' => {
                        s.pos += 1;
                        s.ws();
                        if s.peek()? == b']' {
                            s.pos += 1;
                        } else {
                            loop {
                                s.ws();
                                s.row(&mut rows)?;
                                s.ws();
                                match s.next()? {
                                    b',' => continue,
                                    b']' => break,
                                    _ => return None,
                                }
                            }
                        }
                    }
                    b'{' => s.row(&mut rows)?,
                    _ => return None,
                }
                data = Some(rows);
            }
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if !s.at_end() {
        return None;
    }
    let operation = match operation {
        Some(name) => parse_operation(name).ok()?,
        None => default_operation,
    };
    // No data, or rows decoded before the operation was known: the general path decides.
    let rows = data.filter(|rows| rows.operation() == operation)?;
    let mode = parse_mode(mode.or(info.param("request_mode")).unwrap_or("async")).ok()?;
    Some(rows.finish(mode))
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Whether `ws` skips newlines (not inside an NDJSON row).
    newline_ws: bool,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, newline_ws: bool) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            newline_ws,
        }
    }

    /// Text the scanner has checked; boundaries are ASCII, so always on char boundaries.
    fn slice(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.pos)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// JSON whitespace only (what serde_json skips); newlines only if `newline_ws`.
    fn ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'\n' if self.newline_ws => {}
                _ => break,
            }
            self.pos += 1;
        }
    }

    /// JSON whitespace and newlines (between NDJSON rows: blank lines are skipped).
    fn ws_lines(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn literal(&mut self, word: &str) -> Option<&'a str> {
        let start = self.pos;
        let end = start + word.len();
        if self.bytes.get(start..end)? != word.as_bytes() {
            return None;
        }
        self.pos = end;
        self.slice(start)
    }

    /// A string literal without escapes or control characters; returns its contents.
    fn plain_string(&mut self) -> Option<&'a str> {
        let raw = self.string_raw()?;
        Some(&raw[1..raw.len() - 1])
    }

    /// A string literal without escapes or control characters, quotes included.
    fn string_raw(&mut self) -> Option<&'a str> {
        let start = self.pos;
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => return None,
                b if b < 0x20 => return None,
                _ => {}
            }
        }
        self.slice(start)
    }

    /// A number with JSON's grammar exactly: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number_raw(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digit()?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digit()?;
            self.digits();
        }
        if let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
            return None; // e.g. `01`: not JSON
        }
        self.slice(start)
    }

    /// A JSON number that is an integer (`-?(0|[1-9][0-9]*)`, no fraction or exponent),
    /// parsed while scanned; `None` for any other number or one beyond `i64`.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        // Accumulated negatively so that i64::MIN fits.
        let mut value = match self.next()? {
            b'0' => 0,
            d @ b'1'..=b'9' => {
                let mut value = -((d - b'0') as i64);
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    value = value.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
                    self.pos += 1;
                }
                value
            }
            _ => return None,
        };
        if let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
            return None; // a fraction, an exponent, or not JSON (`01`)
        }
        if !negative {
            value = value.checked_neg()?;
        }
        Some(value)
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// The raw text of a scalar value (string, number, true, false, null); `None` for arrays,
    /// objects and anything malformed.
    fn scalar_raw(&mut self) -> Option<&'a str> {
        match self.peek()? {
            b'"' => self.string_raw(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number_raw(),
            _ => None,
        }
    }

    /// A string literal's contents appended to `out`, escapes decoded exactly as serde_json
    /// decodes them; `None` for a control character, a bad escape or a lone surrogate.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'"')?;
        let mut start = self.pos;
        loop {
            self.pos = special_byte(self.bytes, self.pos)?;
            out.extend_from_slice(&self.bytes[start..self.pos]);
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    let decoded = match self.next()? {
                        b @ (b'"' | b'\\' | b'/') => b as char,
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
                    start = self.pos;
                }
                _ => return None, // a control character: not JSON
            }
        }
    }

    /// The character of a `\uXXXX` escape (after the `u`), a surrogate pair as one.
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if !(0xD800..0xE000).contains(&high) {
            return char::from_u32(high);
        }
        if high >= 0xDC00 || self.next()? != b'\\' || self.next()? != b'u' {
            return None; // a lone surrogate
        }
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        digits
            .iter()
            .try_fold(0u32, |acc, &b| Some(acc * 16 + (b as char).to_digit(16)?))
    }

    /// One row object into `rows`, or `None` (the row is then left half-written: the caller
    /// abandons the whole fast attempt).
    fn row(&mut self, rows: &mut Columns) -> Option<()> {
        self.eat(b'{')?;
        rows.start_row();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            let mut guess = 0;
            loop {
                self.ws();
                // The predicted key, matched in place; else scanned and looked up.
                let index = match rows.match_key(guess, self.bytes, self.pos) {
                    Some(len) => {
                        self.pos += len;
                        guess
                    }
                    None => rows.index(self.plain_string()?, guess)?,
                };
                rows.claim(index)?;
                guess = index + 1;
                self.ws();
                self.eat(b':')?;
                self.ws();
                match self.peek()? {
                    b'"' if rows.is_utf8(index) => {
                        self.string_into(rows.str_data(index)?)?;
                        rows.end_str(index);
                    }
                    b'n' => {
                        self.literal("null")?;
                        rows.set_null(index)?;
                    }
                    b'-' | b'0'..=b'9' if rows.is_integer(index) => {
                        rows.set_integer(index, self.integer()?)?;
                    }
                    _ => {
                        let raw = self.scalar_raw()?;
                        rows.set_raw(index, raw)?;
                    }
                }
                self.ws();
                match self.next()? {
                    b',' => continue,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        rows.finish_row()
    }
}

/// The position of the first `"`, `\\` or control character at or after `pos` (what ends
/// the plain part of a string literal), looking at eight bytes at a time.
pub(crate) fn special_byte(bytes: &[u8], mut pos: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Non-zero exactly when some byte is '"', '\\' or below 0x20 (the classic "has zero
        // byte" / "has byte less than" tests); the byte loop below then finds which.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let less_than = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) | less_than != 0 {
            break;
        }
        pos += 8;
    }
    let rest = bytes.get(pos..)?;
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|n| pos + n)
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
