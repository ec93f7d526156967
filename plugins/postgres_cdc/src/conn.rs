//! A small Postgres client: startup and authentication (trust, cleartext, md5, SCRAM-SHA-256),
//! simple queries, `COPY ... TO STDOUT`, and the streaming-replication sub-protocol, over one
//! blocking TCP socket (WASI sockets inside the plugin).
//!
//! Frontend messages and the password hashing come from `postgres-protocol`; backend messages
//! are framed here, because that crate does not know `CopyBothResponse` (replication).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

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

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// One backend message: its type byte and body.
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

/// A query's result rows, each column as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

fn read_cstr(body: &mut Bytes) -> PgResult<String> {
    let end = body
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| PgError::Protocol("unterminated string".into()))?;
    let s = String::from_utf8_lossy(&body[..end]).into_owned();
    body.advance(end + 1);
    Ok(s)
}

/// Parses an ErrorResponse/NoticeResponse body.
fn server_error(mut body: Bytes) -> PgError {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
    while body.has_remaining() {
        let field = body.get_u8();
        if field == 0 {
            break;
        }
        let Ok(value) = read_cstr(&mut body) else {
            break;
        };
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

impl Connection {
    /// Connects and authenticates. `replication` opens a walsender connection
    /// (`replication=database`), which accepts replication commands besides SQL.
    pub fn connect(options: &ConnectOptions, replication: bool) -> PgResult<Connection> {
        let stream = TcpStream::connect((options.host.as_str(), options.port)).map_err(|e| {
            let hint = if e.kind() == ErrorKind::PermissionDenied {
                " (the sandbox allows only the host:port in the plugin's settings and \
                 [capabilities] network)"
            } else {
                ""
            };
            PgError::Io(format!(
                "cannot connect to {}:{}: {e}{hint}",
                options.host, options.port
            ))
        })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            output: BytesMut::with_capacity(1024),
        };
        // Values arrive in text form; fix the formats so they parse the same everywhere.
        let mut params: Vec<(&str, &str)> = vec![
            ("user", options.user.as_str()),
            ("database", options.database.as_str()),
            ("application_name", "moonlink"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "iso_8601"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut conn.output)?;
        conn.flush()?;
        conn.authenticate(options)?;
        // Parameter statuses and the backend key, until the server is ready.
        loop {
            let msg = conn.read_message(None)?;
            match msg.tag {
                b'Z' => return Ok(conn),
                b'E' => return Err(server_error(msg.body)),
                _ => {}
            }
        }
    }

    fn authenticate(&mut self, options: &ConnectOptions) -> PgResult<()> {
        let password = || {
            options.password.clone().ok_or_else(|| {
                PgError::Protocol(
                    "the server asks for a password: set `password` or `password_env`".into(),
                )
            })
        };
        loop {
            let msg = self.read_message(None)?;
            if msg.tag == b'E' {
                return Err(server_error(msg.body));
            }
            if msg.tag != b'R' {
                return Err(PgError::Protocol(format!(
                    "expected an authentication request, got message '{}'",
                    msg.tag as char
                )));
            }
            let mut body = msg.body;
            match body.get_i32() {
                0 => return Ok(()),
                3 => {
                    let pw = password()?;
                    frontend::password_message(pw.as_bytes(), &mut self.output)?;
                    self.flush()?;
                }
                5 => {
                    let mut salt = [0u8; 4];
                    body.copy_to_slice(&mut salt);
                    let hashed = md5_hash(options.user.as_bytes(), password()?.as_bytes(), salt);
                    frontend::password_message(hashed.as_bytes(), &mut self.output)?;
                    self.flush()?;
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = read_cstr(&mut body)?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(m);
                    }
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(PgError::Protocol(format!(
                            "the server offers SASL mechanisms {mechanisms:?}; only SCRAM-SHA-256 is supported"
                        )));
                    }
                    self.scram(password()?.as_bytes())?;
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "authentication method {other} is not supported (use trust, password, md5 or scram-sha-256)"
                    )))
                }
            }
        }
    }

    fn scram(&mut self, password: &[u8]) -> PgResult<()> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.output)?;
        self.flush()?;
        let expect = |conn: &mut Connection, kind: i32| -> PgResult<Bytes> {
            let msg = conn.read_message(None)?;
            if msg.tag == b'E' {
                return Err(server_error(msg.body));
            }
            let mut body = msg.body;
            if msg.tag != b'R' || body.get_i32() != kind {
                return Err(PgError::Protocol("unexpected message during SCRAM".into()));
            }
            Ok(body)
        };
        let cont = expect(self, 11)?;
        scram.update(&cont)?;
        frontend::sasl_response(scram.message(), &mut self.output)?;
        self.flush()?;
        let fin = expect(self, 12)?;
        scram.finish(&fin)?;
        Ok(())
    }

    fn flush(&mut self) -> PgResult<()> {
        self.stream.write_all(&self.output)?;
        self.output.clear();
        Ok(())
    }

    /// Reads the next message; running past `deadline` is an error (see
    /// [`Connection::try_read_message`] for a wait that may end empty).
    fn read_message(&mut self, deadline: Option<Instant>) -> PgResult<Message> {
        match self.try_read_message(deadline)? {
            Some(m) => Ok(m),
            None => Err(PgError::Io("timed out waiting for the server".into())),
        }
    }

    /// The next message, or `None` if none arrived before `deadline`.
    pub fn try_read_message(&mut self, deadline: Option<Instant>) -> PgResult<Option<Message>> {
        loop {
            if self.input.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.input[1],
                    self.input[2],
                    self.input[3],
                    self.input[4],
                ]) as usize;
                if len < 4 {
                    return Err(PgError::Protocol("invalid message length".into()));
                }
                if self.input.len() > len {
                    let mut frame = self.input.split_to(len + 1).freeze();
                    let tag = frame.get_u8();
                    frame.advance(4);
                    // Notices are informational; they never interrupt a conversation.
                    if tag == b'N' {
                        continue;
                    }
                    return Ok(Some(Message { tag, body: frame }));
                }
                self.input.reserve(len + 1 - self.input.len());
            }
            let timeout = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    Some((d - now).max(Duration::from_millis(1)))
                }
                None => None,
            };
            self.stream.set_read_timeout(timeout)?;
            let start = self.input.len();
            self.input.resize(start + 64 * 1024, 0);
            match self.stream.read(&mut self.input[start..]) {
                Ok(0) => {
                    self.input.truncate(start);
                    return Err(PgError::Io("the server closed the connection".into()));
                }
                Ok(n) => self.input.truncate(start + n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.input.truncate(start);
                    return Ok(None);
                }
                Err(e) => {
                    self.input.truncate(start);
                    return Err(e.into());
                }
            }
        }
    }

    /// Runs one or more SQL statements (or a replication command) and returns the rows of
    /// the last result, columns as text.
    pub fn query(&mut self, sql: &str) -> PgResult<Rows> {
        frontend::query(sql, &mut self.output)?;
        self.flush()?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let msg = self.read_message(None)?;
            match msg.tag {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_data_row(msg.body)?),
                b'E' => error = Some(server_error(msg.body)),
                b'Z' => break,
                b'H' | b'W' => {
                    return Err(PgError::Protocol(
                        "a COPY started where a plain query was expected".into(),
                    ))
                }
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Runs statements whose results do not matter.
    pub fn execute(&mut self, sql: &str) -> PgResult<()> {
        self.query(sql).map(|_| ())
    }

    /// Starts `COPY ... TO STDOUT`; read rows with [`Connection::copy_row`].
    pub fn start_copy_out(&mut self, sql: &str) -> PgResult<()> {
        frontend::query(sql, &mut self.output)?;
        self.flush()?;
        loop {
            let msg = self.read_message(None)?;
            match msg.tag {
                b'H' => return Ok(()),
                b'E' => {
                    let e = server_error(msg.body);
                    self.wait_ready()?;
                    return Err(e);
                }
                _ => {}
            }
        }
    }

    /// The next COPY row (one text line, without the newline), or `None` at the end.
    pub fn copy_row(&mut self) -> PgResult<Option<Bytes>> {
        loop {
            let msg = self.read_message(None)?;
            match msg.tag {
                b'd' => return Ok(Some(msg.body)),
                b'c' => {}
                b'C' => {}
                b'E' => {
                    let e = server_error(msg.body);
                    self.wait_ready()?;
                    return Err(e);
                }
                b'Z' => return Ok(None),
                _ => {}
            }
        }
    }

    fn wait_ready(&mut self) -> PgResult<()> {
        loop {
            if self.read_message(None)?.tag == b'Z' {
                return Ok(());
            }
        }
    }

    /// Sends `START_REPLICATION ...` and waits for the server to start streaming.
    pub fn start_replication(&mut self, command: &str) -> PgResult<()> {
        frontend::query(command, &mut self.output)?;
        self.flush()?;
        loop {
            let msg = self.read_message(None)?;
            match msg.tag {
                b'W' => return Ok(()),
                b'E' => return Err(server_error(msg.body)),
                _ => {}
            }
        }
    }

    /// The next replication CopyData payload, or `None` if nothing arrived before `deadline`.
    pub fn replication_data(&mut self, deadline: Instant) -> PgResult<Option<Bytes>> {
        loop {
            let Some(msg) = self.try_read_message(Some(deadline))? else {
                return Ok(None);
            };
            match msg.tag {
                b'd' => return Ok(Some(msg.body)),
                b'E' => return Err(server_error(msg.body)),
                b'c' | b'C' | b'Z' => {
                    return Err(PgError::Io("the server ended replication".into()))
                }
                _ => {}
            }
        }
    }

    /// Sends a Standby Status Update: everything up to `flushed` is durable here, so the
    /// server may advance the slot and recycle WAL before it.
    pub fn send_status(&mut self, written: u64, flushed: u64) -> PgResult<()> {
        let mut payload = Vec::with_capacity(34);
        payload.push(b'r');
        payload.extend_from_slice(&written.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&postgres_epoch_micros().to_be_bytes());
        payload.push(0);
        frontend::CopyData::new(&payload[..])?.write(&mut self.output);
        self.flush()
    }

    /// Ends the session politely (the server drops a lost one after its timeout anyway).
    pub fn close(mut self) {
        frontend::terminate(&mut self.output);
        let _ = self.flush();
    }
}

/// Microseconds since 2000-01-01 (the Postgres epoch).
fn postgres_epoch_micros() -> i64 {
    const UNIX_TO_PG_MICROS: i64 = 946_684_800_000_000;
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64 - UNIX_TO_PG_MICROS)
        .unwrap_or(0)
}

fn parse_data_row(mut body: Bytes) -> PgResult<Vec<Option<String>>> {
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            if body.remaining() < len {
                return Err(PgError::Protocol("truncated data row".into()));
            }
            row.push(Some(String::from_utf8_lossy(&body[..len]).into_owned()));
            body.advance(len);
        }
    }
    Ok(row)
}

/// Quotes an identifier for SQL (`"my ""table"""`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `X/Y` (Postgres's LSN text form) to a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A number to Postgres's `X/Y` LSN text form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
