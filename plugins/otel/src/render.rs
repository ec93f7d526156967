//! Attribute values rendered as column text into reused buffers: no `serde_json::Value`, no
//! `String` per value. The text is exactly what `serde_json` prints for the same JSON
//! (objects with sorted keys, the last of repeated keys winning; doubles in shortest form).

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// A value of a map being built: borrowed from the request, or a range of the buffer.
#[derive(Clone, Copy)]
enum Piece<'r> {
    Null,
    Borrowed(&'r str),
    Rendered(usize, usize),
}

/// One row's attributes as `map<string, string>` entries (keys and string values borrowed
/// from the request), reused from row to row.
#[derive(Default)]
pub struct AttributeText<'r> {
    text: String,
    entries: Vec<(&'r str, Piece<'r>)>,
}

impl<'r> AttributeText<'r> {
    /// Renders `attributes`, replacing what was held. OTLP requires unique keys; when a client
    /// repeats one, the last value wins so the map never holds duplicates.
    pub fn render(&mut self, attributes: &'r [KeyValue]) {
        self.text.clear();
        self.entries.clear();
        for kv in attributes {
            let piece = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                None => Piece::Null,
                Some(Any::StringValue(s)) => Piece::Borrowed(s),
                Some(Any::BoolValue(b)) => Piece::Borrowed(if *b { "true" } else { "false" }),
                Some(other) => {
                    let start = self.text.len();
                    push_text(&mut self.text, other);
                    Piece::Rendered(start, self.text.len())
                }
            };
            match self.entries.iter().position(|(k, _)| *k == kv.key) {
                Some(i) => self.entries[i].1 = piece,
                None => self.entries.push((&kv.key, piece)),
            }
        }
    }

    /// The entries as `set_map` takes them.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.entries.iter().map(|(key, piece)| {
            let value = match *piece {
                Piece::Null => None,
                Piece::Borrowed(s) => Some(s),
                Piece::Rendered(start, end) => Some(&self.text[start..end]),
            };
            (*key, value)
        })
    }
}

/// Texts of one row's list column (e.g. each span event's attributes as a JSON object), in
/// one buffer reused from row to row.
#[derive(Default)]
pub struct ListText {
    text: String,
    ends: Vec<usize>,
}

impl ListText {
    /// Empties the list.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Adds `attributes` as a JSON object's text.
    pub fn push_object(&mut self, attributes: &[KeyValue]) {
        push_object(&mut self.text, attributes);
        self.ends.push(self.text.len());
    }

    /// The elements as `set_list` takes them.
    pub fn items(&self) -> impl Iterator<Item = Option<&str>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| Some(&self.text[start..end]))
    }
}

/// A value as column text: a string as it is, bytes as base64, anything else as its JSON text
/// (`42`, `1.5`, `"NaN"`, `["a",1]`, `{"k":"v"}`).
pub fn push_text(out: &mut String, value: &Any) {
    match value {
        Any::StringValue(s) => out.push_str(s),
        Any::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
        other => push_json(out, Some(other)),
    }
}

/// The JSON text of a value: strings are JSON strings, bytes base64 strings, non-finite
/// doubles the strings OTLP/JSON uses.
pub fn push_json(out: &mut String, value: Option<&Any>) {
    match value {
        None => out.push_str("null"),
        Some(Any::StringValue(s)) => push_json_str(out, s),
        Some(Any::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        // Writing into a `String` cannot fail.
        Some(Any::IntValue(i)) => push_int(out, *i),
        Some(Any::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None if d.is_nan() => out.push_str("\"NaN\""),
            None if *d > 0.0 => out.push_str("\"Infinity\""),
            None => out.push_str("\"-Infinity\""),
        },
        Some(Any::BytesValue(b)) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(Any::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(out, v.value.as_ref());
            }
            out.push(']');
        }
        Some(Any::KvlistValue(kv)) => push_object(out, &kv.values),
        // Profiles' string-table indexes: not used by logs, traces or metrics.
        Some(Any::StringValueStrindex(i)) => push_int(out, i64::from(*i)),
    }
}

/// An integer's decimal text (what `i64`'s `Display` prints), without the formatting
/// machinery: integer attributes are common, and `write!` cost more than the digits.
pub fn push_int(out: &mut String, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    // Digits in 32-bit arithmetic once the rest fits: wasm has no 64x64->128 multiply, so a
    // 64-bit division by 10 stays a division there, a 32-bit one becomes a multiplication.
    while rest > u64::from(u32::MAX) {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut rest = rest as u32;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    // ASCII digits are UTF-8.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// Key/values as a JSON object: keys sorted, the last of repeated keys winning (as a
/// `serde_json::Map` prints them).
pub fn push_object(out: &mut String, attributes: &[KeyValue]) {
    let mut order: Vec<usize> = (0..attributes.len()).collect();
    // Stable: among equal keys the last stays last, and is the one kept.
    order.sort_by(|&a, &b| attributes[a].key.cmp(&attributes[b].key));
    out.push('{');
    let mut first = true;
    for (n, &i) in order.iter().enumerate() {
        let key = &attributes[i].key;
        if order.get(n + 1).is_some_and(|&j| attributes[j].key == *key) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(out, key);
        out.push(':');
        push_json(
            out,
            attributes[i].value.as_ref().and_then(|v| v.value.as_ref()),
        );
    }
    out.push('}');
}

/// A JSON string literal, escaped as `serde_json` escapes.
pub fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 15) as usize] as char);
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
