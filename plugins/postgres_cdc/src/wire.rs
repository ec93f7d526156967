//! The backend side of the Postgres wire protocol: the client's error type, message framing
//! (type byte, checked length, 1 GiB cap, unknown types refused) and checked readers for the
//! messages the client parses (authentication requests, row descriptions, data rows, error
//! responses). Every read is bounds-checked: malformed input is an error naming the message,
//! never a panic.
//!
//! Backend messages are framed here rather than by `postgres-protocol`, because that crate
//! does not know `CopyBothResponse` (replication).

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Why a Postgres call failed.
#[derive(Debug, Clone)]
pub enum PgError {
    /// The connection broke or could not be made.
    Io(String),
    /// The server refused: SQLSTATE code, message and hint.
    Server {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// The server sent something this client does not understand.
    Protocol(String),
    /// The server went silent while an answer was due (or stopped reading).
    Stalled(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Io(m) => write!(f, "connection to Postgres failed: {m}"),
            PgError::Server {
                code,
                message,
                detail,
                hint,
            } => {
                write!(f, "Postgres error {code}: {message}")?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                if let Some(h) = hint {
                    write!(f, " hint: {h}")?;
                }
                Ok(())
            }
            PgError::Protocol(m) => write!(f, "Postgres protocol error: {m}"),
            PgError::Stalled(m) => f.write_str(m),
        }
    }
}

impl PgError {
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> Self {
        PgError::Io(e.to_string())
    }
}

pub type PgResult<T> = Result<T, PgError>;

/// One backend message: its type byte and body.
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

/// Postgres never sends a message over 1 GiB (its own allocation limit): a larger length
/// is garbage, or the peer is not Postgres at all.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// The message types a backend sends (protocol 3.0); anything else is garbage.
const BACKEND_TAGS: &[u8] = b"123ACDEGHIKNRSTVWZcdnstv";

/// [`BACKEND_TAGS`] as a table by byte: one load per message (the copy frames every row).
const IS_BACKEND_TAG: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < BACKEND_TAGS.len() {
        table[BACKEND_TAGS[i] as usize] = true;
        i += 1;
    }
    table
};

/// A message type for error messages: `'R'`, or `0x00` when not printable.
pub fn tag_name(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// The size of the frame at the start of `input` (type byte + length + body), once its header
/// is there; checked, so no length can overflow (wasm32 has 32-bit `usize`).
pub fn frame_size(input: &[u8]) -> PgResult<Option<usize>> {
    let [tag, a, b, c, d, ..] = *input else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if !IS_BACKEND_TAG[tag as usize] {
        return Err(PgError::Protocol(format!(
            "unknown backend message type {} (length field {len}); is this a Postgres server?",
            tag_name(tag)
        )));
    }
    let body_len = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_sub(4))
        .filter(|l| *l <= MAX_MESSAGE_LEN)
        .ok_or_else(|| {
            PgError::Protocol(format!(
                "backend message {} has an invalid length field {len} (4 to {} bytes)",
                tag_name(tag),
                MAX_MESSAGE_LEN + 4
            ))
        })?;
    Ok(Some(body_len + 5))
}

/// Splits the first complete message off `input`, if there is one.
pub fn take_message(input: &mut BytesMut) -> PgResult<Option<Message>> {
    let Some(size) = frame_size(input)? else {
        return Ok(None);
    };
    if input.len() < size {
        return Ok(None);
    }
    let mut frame = input.split_to(size).freeze();
    let tag = frame[0];
    frame.advance(5);
    Ok(Some(Message { tag, body: frame }))
}

/// A reader of one message's body whose every read is checked: a short or malformed body is
/// an error naming the message, its length and what was missing, never a panic.
pub struct Fields {
    tag: u8,
    body: Bytes,
    len: usize,
}

impl Fields {
    pub fn new(tag: u8, body: Bytes) -> Fields {
        let len = body.len();
        Fields { tag, body, len }
    }

    pub fn error(&self, why: impl fmt::Display) -> PgError {
        PgError::Protocol(format!(
            "malformed backend message {} ({} bytes): {why} at byte {}",
            tag_name(self.tag),
            self.len,
            self.len - self.body.len()
        ))
    }

    fn need(&self, n: usize, what: &str) -> PgResult<()> {
        if self.body.len() < n {
            return Err(self.error(format_args!(
                "{what} needs {n} bytes, {} left",
                self.body.len()
            )));
        }
        Ok(())
    }

    pub fn i16(&mut self, what: &str) -> PgResult<i16> {
        self.need(2, what)?;
        Ok(self.body.get_i16())
    }

    pub fn i32(&mut self, what: &str) -> PgResult<i32> {
        self.need(4, what)?;
        Ok(self.body.get_i32())
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> PgResult<Bytes> {
        self.need(n, what)?;
        Ok(self.body.split_to(n))
    }

    pub fn cstr(&mut self, what: &str) -> PgResult<String> {
        let end = self
            .body
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.error(format_args!("{what} is not NUL-terminated")))?;
        let s = String::from_utf8_lossy(&self.body[..end]).into_owned();
        self.body.advance(end + 1);
        Ok(s)
    }

    pub fn rest(self) -> Bytes {
        self.body
    }

    pub fn remaining(&self) -> usize {
        self.body.len()
    }
}

/// Parses an ErrorResponse/NoticeResponse body (lenient: it is already bad news).
pub fn server_error(mut body: Bytes) -> PgError {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
    while body.has_remaining() {
        let field = body.get_u8();
        if field == 0 {
            break;
        }
        let Some(end) = body.iter().position(|b| *b == 0) else {
            break;
        };
        let value = String::from_utf8_lossy(&body[..end]).into_owned();
        body.advance(end + 1);
        match field {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    PgError::Server {
        code,
        message,
        detail,
        hint,
    }
}

/// An authentication request (`R`).
#[derive(Debug, PartialEq)]
pub enum Auth {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    Unsupported(i32),
}

pub fn parse_auth(body: Bytes) -> PgResult<Auth> {
    let mut f = Fields::new(b'R', body);
    Ok(match f.i32("the authentication code")? {
        0 => Auth::Ok,
        3 => Auth::Cleartext,
        5 => {
            let salt = f.bytes(4, "the md5 salt")?;
            Auth::Md5([salt[0], salt[1], salt[2], salt[3]])
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = f.cstr("a SASL mechanism name")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Auth::Sasl(mechanisms)
        }
        11 => Auth::SaslContinue(f.rest()),
        12 => Auth::SaslFinal(f.rest()),
        other => Auth::Unsupported(other),
    })
}

/// The number of columns a RowDescription (`T`) announces.
pub fn parse_row_description(body: Bytes) -> PgResult<usize> {
    let mut f = Fields::new(b'T', body);
    let n = f.i16("the column count")?;
    usize::try_from(n).map_err(|_| f.error(format_args!("negative column count {n}")))
}

/// A DataRow (`D`): each column as text (`None` for NULL).
pub fn parse_data_row(body: Bytes) -> PgResult<Vec<Option<String>>> {
    let mut f = Fields::new(b'D', body);
    let n = f.i16("the column count")?;
    let n = usize::try_from(n).map_err(|_| f.error(format_args!("negative column count {n}")))?;
    // Each column takes at least its 4-byte length: no allocation beyond what arrived.
    let mut row = Vec::with_capacity(n.min(f.remaining() / 4));
    for i in 0..n {
        let len = f.i32("a column length")?;
        if len == -1 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len)
            .map_err(|_| f.error(format_args!("column {i} has length {len}")))?;
        let value = f.bytes(len, "a column value")?;
        row.push(Some(String::from_utf8_lossy(&value).into_owned()));
    }
    if f.remaining() != 0 {
        return Err(f.error(format_args!(
            "{} bytes after the last column",
            f.remaining()
        )));
    }
    Ok(row)
}
