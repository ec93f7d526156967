//! The fast path: NDJSON bodies and JSON envelopes whose rows are flat objects of plain
//! scalars, scanned by hand straight into the column builders (no serde structure, no member
//! list per row, column lookup predicted from the previous key).
//!
//! It only ever accepts: anything it does not handle itself (an escape in a key or string, an
//! array value, a duplicate or unknown key, any value refused by its column, odd structure)
//! makes it give up, and the body is decoded again by the general path, which then produces
//! the result or the exact error (with row and column) the API documents. Values are converted
//! by the same code as the general path (`RowWriter::set` on the value's raw JSON text).

use moonlink_sdk::rest::{IngestRequest, RequestInfo};
use moonlink_sdk::{DataType, Operation};

use crate::{is_ndjson, parse_mode, parse_operation, RowWriter};

/// Decodes `body` if every part of it is on the fast path; `None` means "use the general path".
pub fn decode(info: &RequestInfo, body: &[u8]) -> Option<IngestRequest> {
    let text = std::str::from_utf8(body).ok()?;
    let param = |key: &str| info.param(key);
    let mut rows = RowWriter::new(&info.table, &info.schema);
    if is_ndjson(info.content_type.as_deref()) {
        let operation = parse_operation(param("operation").unwrap_or("insert")).ok()?;
        let mode = parse_mode(param("request_mode").unwrap_or("async")).ok()?;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let mut s = Scanner::new(line);
            s.ws();
            s.row(&mut rows, operation)?;
            s.ws();
            if !s.at_end() {
                return None;
            }
        }
        return Some(rows.finish(mode));
    }
    envelope(text, info, rows)
}

/// `{"operation": "...", "request_mode": "...", "data": [rows] | row}`, fields in any order;
/// `data` before `operation` is decoded with the default and redone if `operation` differs.
fn envelope(text: &str, info: &RequestInfo, mut rows: RowWriter) -> Option<IngestRequest> {
    let default_operation = parse_operation(info.param("operation").unwrap_or("insert")).ok()?;
    let mut s = Scanner::new(text);
    let (mut operation, mut mode) = (None::<&str>, None::<&str>);
    let (mut seen, mut data_with) = ([false; 4], None);
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
                match s.peek()? {
                    b'[' => {
                        s.pos += 1;
                        s.ws();
                        if s.peek()? == b']' {
                            s.pos += 1;
                        } else {
                            loop {
                                s.ws();
                                s.row(&mut rows, op)?;
                                s.ws();
                                match s.next()? {
                                    b',' => continue,
                                    b']' => break,
                                    _ => return None,
                                }
                            }
                        }
                    }
                    b'{' => s.row(&mut rows, op)?,
                    _ => return None,
                }
                data_with = Some(op);
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
    if data_with != Some(operation) {
        return None; // no data, or rows decoded before the operation was known
    }
    let mode = parse_mode(mode.or(info.param("request_mode")).unwrap_or("async")).ok()?;
    Some(rows.finish(mode))
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
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

    /// JSON whitespace only (what serde_json skips).
    fn ws(&mut self) {
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

    /// One row object into `rows`, or `None` (the row is then left half-written: the caller
    /// abandons the whole fast attempt).
    fn row(&mut self, rows: &mut RowWriter, operation: Operation) -> Option<()> {
        self.eat(b'{')?;
        let row = rows.row;
        rows.builder.start_row(operation);
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            let mut guess = 0;
            loop {
                self.ws();
                let key = self.plain_string()?;
                let columns = rows.set_in.len();
                let index = if guess < columns && rows.builder.field(guess).name == key {
                    guess
                } else {
                    rows.builder.column_index(key)?
                };
                if rows.set_in[index] == row + 1 {
                    return None;
                }
                rows.set_in[index] = row + 1;
                guess = index + 1;
                self.ws();
                self.eat(b':')?;
                self.ws();
                let raw = self.scalar_raw()?;
                if matches!(rows.builder.field(index).data_type, DataType::Utf8)
                    && raw.starts_with('"')
                {
                    // What `RowWriter::set` does with a string without escapes, minus its checks.
                    rows.builder.set_str(index, &raw[1..raw.len() - 1]).ok()?;
                } else {
                    rows.set(index, raw).ok()?;
                }
                self.ws();
                match self.next()? {
                    b',' => continue,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        rows.builder.finish_row().ok()?;
        rows.row += 1;
        Some(())
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
