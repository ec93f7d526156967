//! A small Postgres client: startup and authentication (trust, cleartext, md5, SCRAM-SHA-256),
//! simple queries, `COPY ... TO STDOUT`, and the streaming-replication sub-protocol, over one
//! blocking TCP socket (WASI sockets inside the plugin), with every wait bounded.
//!
//! Frontend messages and the password hashing come from `postgres-protocol`; backend messages
//! are framed and parsed in [`crate::wire`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

use crate::wire::{
    frame_size, parse_auth, parse_data_row, parse_row_description, server_error, tag_name,
    take_message, Auth, Message, PgError, PgResult,
};

/// Where and as whom to connect, and how long to wait.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// The longest wait for the TCP connection and for each answer until the session is
    /// ready (startup, authentication); also bounds every write.
    pub connect_timeout: Duration,
    /// The longest silence once connected while an answer is due: a query's result, the
    /// next COPY row, the start of replication, a keepalive the plugin asked for.
    pub reply_timeout: Duration,
}

/// What [`Connection::copy_rows`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyRows {
    /// Messages taken, with this many rows (0: only other messages of the COPY).
    Rows(usize),
    /// The COPY ended: the connection is ready for the next command.
    End,
    /// Nothing arrived in time.
    Waiting,
}

/// A query's result rows, each column as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// Column `i` of a result row as text: `None` for NULL, and for a column the server did not
/// send (so a short row from a broken server is a clear error upstream, never a panic).
pub fn col(row: &[Option<String>], i: usize) -> Option<&str> {
    row.get(i).and_then(|v| v.as_deref())
}

/// A wait for error messages: `10 s`, `250 ms`.
pub fn span(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// The size of one ordinary socket read (a copy connection's: [`COPY_READ_BYTES`]).
const SCRATCH_BYTES: usize = 64 * 1024;

/// The size of one ordinary read on a connection that copies a table: bulk data, so fewer,
/// larger reads (a streaming connection's reads are mostly small, and each costs the host a
/// buffer of the size asked for).
pub const COPY_READ_BYTES: usize = 256 * 1024;

pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    /// Where ordinary reads land before joining `input` (allocated at the first read).
    scratch: Option<Box<[u8]>>,
    /// The size of the scratch buffer, so of one ordinary read.
    read_bytes: usize,
    output: BytesMut,
    /// `host:port`, for messages.
    peer: String,
    connect_timeout: Duration,
    reply_timeout: Duration,
    /// Setup (startup, authentication) is over.
    ready: bool,
    /// Any byte arrived yet.
    heard: bool,
    /// The last request sent or byte received: silence is measured from here.
    last_activity: Instant,
    /// When a keepalive was requested (status update with the reply flag) and not yet heard.
    reply_due_since: Option<Instant>,
}

impl Connection {
    /// Connects and authenticates. `replication` opens a walsender connection
    /// (`replication=database`), which accepts replication commands besides SQL.
    pub fn connect(options: &ConnectOptions, replication: bool) -> PgResult<Connection> {
        let peer = format!("{}:{}", options.host, options.port);
        let cannot = |e: std::io::Error| {
            let hint = if e.kind() == ErrorKind::PermissionDenied {
                " (the sandbox allows only the host:port in the plugin's settings and \
                 [capabilities] network)"
            } else {
                ""
            };
            PgError::Io(format!("cannot connect to {peer}: {e}{hint}"))
        };
        let addresses: Vec<SocketAddr> = (options.host.as_str(), options.port)
            .to_socket_addrs()
            .map_err(cannot)?
            .collect();
        let mut stream = None;
        let mut last_error = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    last_error = Some(PgError::Stalled(format!(
                        "cannot connect to {peer}: no answer within {}",
                        span(options.connect_timeout)
                    )))
                }
                Err(e) => last_error = Some(cannot(e)),
            }
        }
        let Some(stream) = stream else {
            return Err(last_error.unwrap_or_else(|| {
                PgError::Io(format!("cannot connect to {peer}: the name has no address"))
            }));
        };
        let _ = stream.set_nodelay(true);
        // A write that cannot proceed (the server stopped reading) fails instead of blocking.
        stream.set_write_timeout(Some(options.connect_timeout.max(Duration::from_millis(1))))?;
        let mut conn = Connection {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            scratch: None,
            read_bytes: SCRATCH_BYTES,
            output: BytesMut::with_capacity(1024),
            peer,
            connect_timeout: options.connect_timeout.max(Duration::from_millis(1)),
            reply_timeout: options.reply_timeout.max(Duration::from_millis(1)),
            ready: false,
            heard: false,
            last_activity: Instant::now(),
            reply_due_since: None,
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
            let msg = conn.answer("waiting for the server to be ready")?;
            match msg.tag {
                b'Z' => {
                    conn.ready = true;
                    return Ok(conn);
                }
                b'E' => return Err(server_error(msg.body)),
                b'S' | b'K' | b'v' => {}
                other => return Err(conn.unexpected(other, "during startup")),
            }
        }
    }

    fn unexpected(&self, tag: u8, when: &str) -> PgError {
        PgError::Protocol(format!(
            "unexpected backend message {} {when} from {}",
            tag_name(tag),
            self.peer
        ))
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
            let msg = self.answer("authenticating")?;
            if msg.tag == b'E' {
                return Err(server_error(msg.body));
            }
            if msg.tag != b'R' {
                return Err(PgError::Protocol(format!(
                    "expected an authentication request, got message {}",
                    tag_name(msg.tag)
                )));
            }
            match parse_auth(msg.body)? {
                Auth::Ok => return Ok(()),
                Auth::Cleartext => {
                    let pw = password()?;
                    frontend::password_message(pw.as_bytes(), &mut self.output)?;
                    self.flush()?;
                }
                Auth::Md5(salt) => {
                    let hashed = md5_hash(options.user.as_bytes(), password()?.as_bytes(), salt);
                    frontend::password_message(hashed.as_bytes(), &mut self.output)?;
                    self.flush()?;
                }
                Auth::Sasl(mechanisms) => {
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(PgError::Protocol(format!(
                            "the server offers SASL mechanisms {mechanisms:?}; only SCRAM-SHA-256 is supported"
                        )));
                    }
                    self.scram(password()?.as_bytes())?;
                }
                Auth::SaslContinue(_) | Auth::SaslFinal(_) => {
                    return Err(PgError::Protocol(
                        "a SASL message arrived before SASL started".into(),
                    ))
                }
                Auth::Unsupported(other) => {
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
        let expect = |conn: &mut Connection, last: bool| -> PgResult<Bytes> {
            let msg = conn.answer("authenticating (SCRAM)")?;
            if msg.tag == b'E' {
                return Err(server_error(msg.body));
            }
            if msg.tag != b'R' {
                return Err(conn.unexpected(msg.tag, "during SCRAM"));
            }
            match (parse_auth(msg.body)?, last) {
                (Auth::SaslContinue(data), false) | (Auth::SaslFinal(data), true) => Ok(data),
                (other, _) => Err(PgError::Protocol(format!(
                    "unexpected authentication request during SCRAM: {other:?}"
                ))),
            }
        };
        let cont = expect(self, false)?;
        scram.update(&cont)?;
        frontend::sasl_response(scram.message(), &mut self.output)?;
        self.flush()?;
        let fin = expect(self, true)?;
        scram.finish(&fin)?;
        Ok(())
    }

    fn flush(&mut self) -> PgResult<()> {
        self.stream.write_all(&self.output).map_err(|e| {
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                PgError::Stalled(format!(
                    "postgres at {} stopped reading: a write made no progress for {}",
                    self.peer,
                    span(self.connect_timeout)
                ))
            } else {
                e.into()
            }
        })?;
        self.output.clear();
        self.last_activity = Instant::now();
        Ok(())
    }

    /// The longest silence accepted while an answer is due.
    fn silence_limit(&self) -> Duration {
        if self.ready {
            self.reply_timeout
        } else {
            self.connect_timeout
        }
    }

    fn stalled(&self, what: &str) -> PgError {
        let limit = span(self.silence_limit());
        PgError::Stalled(if self.heard {
            format!(
                "postgres at {} sent nothing for {limit} while {what}",
                self.peer
            )
        } else {
            format!(
                "postgres at {} accepted the connection but sent nothing for {limit}",
                self.peer
            )
        })
    }

    /// The next message of an answer that is due; a silence longer than the limit is an error
    /// saying what was awaited.
    fn answer(&mut self, what: &str) -> PgResult<Message> {
        match self.next_message(None, Some(what), false)? {
            Some(m) => Ok(m),
            None => Err(self.stalled(what)),
        }
    }

    /// The next message, or `None` once `until` passes (with `take_ready`, only once nothing
    /// more is readable at once: data already there is not left behind). With `answer_due`,
    /// silence beyond the limit is an error; a keepalive requested and not heard in time is
    /// one too. Every wait is bounded: no read blocks past `until` or the limit.
    pub fn next_message(
        &mut self,
        until: Option<Instant>,
        answer_due: Option<&str>,
        take_ready: bool,
    ) -> PgResult<Option<Message>> {
        // Silence is an error only once a read here found nothing: the host may simply have
        // been slow to call again, with the answer waiting in the socket.
        let mut read_here = false;
        loop {
            if let Some(msg) = take_message(&mut self.input)? {
                // Notices are informational; they never interrupt a conversation.
                if msg.tag == b'N' {
                    continue;
                }
                return Ok(Some(msg));
            }
            if !self.wait_input(until, answer_due, take_ready, &mut read_here)? {
                return Ok(None);
            }
        }
    }

    /// One bounded read for [`Connection::next_message`]'s rules; false once `until` has
    /// passed (and, with `take_ready`, a read here found nothing more at once).
    fn wait_input(
        &mut self,
        until: Option<Instant>,
        answer_due: Option<&str>,
        take_ready: bool,
        read_here: &mut bool,
    ) -> PgResult<bool> {
        let answer_due = match (until, answer_due) {
            (None, None) => Some("waiting for an answer"),
            (_, due) => due,
        };
        let now = Instant::now();
        let mut wake = until;
        let mut stalled = None;
        if let Some(what) = answer_due {
            let stall_at = self.last_activity + self.silence_limit();
            if now >= stall_at {
                stalled = Some(self.stalled(what));
            }
            wake = Some(wake.map_or(stall_at, |w| w.min(stall_at)));
        }
        if let Some(since) = self.reply_due_since {
            let stall_at = since + self.reply_timeout;
            if now >= stall_at {
                stalled = Some(PgError::Stalled(format!(
                    "postgres at {} sent nothing for {}, not even the keepalive it was asked for",
                    self.peer,
                    span(self.reply_timeout)
                )));
            }
            wake = Some(wake.map_or(stall_at, |w| w.min(stall_at)));
        }
        let timeout = match stalled {
            Some(e) if *read_here => return Err(e),
            Some(_) => Duration::from_millis(1),
            None if until.is_some_and(|u| now >= u) => {
                if !take_ready || *read_here {
                    return Ok(false);
                }
                Duration::from_millis(1)
            }
            None => wake
                .unwrap_or(now + self.silence_limit())
                .saturating_duration_since(now),
        };
        self.fill(timeout)?;
        *read_here = true;
        Ok(true)
    }

    /// Hands the COPY rows already received to `each` (one CopyData body at a time, straight
    /// from the input buffer; `each` returns the rows it decoded), until `max_rows` or the
    /// input runs out. With nothing received yet it reads: with `until`, waiting up to then
    /// (like [`Connection::copy_row`]); without, only what the socket holds at once (so a
    /// caller can turn to another connection instead of waiting on this one).
    pub fn copy_rows<E: From<PgError>>(
        &mut self,
        until: Option<Instant>,
        max_rows: usize,
        mut each: impl FnMut(&[u8]) -> Result<usize, E>,
    ) -> Result<CopyRows, E> {
        let mut read_here = false;
        loop {
            let mut at = 0;
            let mut rows = 0;
            let mut ended = false;
            while rows < max_rows {
                let Some(size) = frame_size(&self.input[at..])? else {
                    break;
                };
                if self.input.len() - at < size {
                    break;
                }
                let (tag, body) = (self.input[at], at + 5..at + size);
                let before = at;
                at += size;
                match tag {
                    b'd' => rows += each(&self.input[body])?,
                    b'c' | b'C' | b'N' => {}
                    b'E' => {
                        let e = server_error(Bytes::copy_from_slice(&self.input[body]));
                        let _ = self.input.split_to(at);
                        self.wait_ready()?;
                        return Err(e.into());
                    }
                    b'Z' => {
                        // The end is reported alone: rows taken before it are counted first.
                        if before > 0 {
                            at = before;
                        } else {
                            ended = true;
                        }
                        break;
                    }
                    other => {
                        let _ = self.input.split_to(at);
                        return Err(self.unexpected(other, "during a COPY").into());
                    }
                }
            }
            if at > 0 {
                // One move for every message taken (no per-message split of the buffer).
                let _ = self.input.split_to(at);
                return Ok(if ended {
                    CopyRows::End
                } else {
                    CopyRows::Rows(rows)
                });
            }
            match until {
                Some(until) => {
                    if !self.wait_input(Some(until), Some("copying rows"), true, &mut read_here)? {
                        return Ok(CopyRows::Waiting);
                    }
                }
                None if read_here => return Ok(CopyRows::Waiting),
                None => {
                    self.fill_now()?;
                    read_here = true;
                }
            }
        }
    }

    /// Sets the size of one ordinary read (the scratch buffer holds nothing between reads).
    pub fn set_read_bytes(&mut self, bytes: usize) {
        self.read_bytes = bytes.max(SCRATCH_BYTES);
        self.scratch = None;
    }

    /// Reads what the socket holds now, without waiting (a 1 ms wait where the socket
    /// cannot be made non-blocking).
    fn fill_now(&mut self) -> PgResult<()> {
        if self.stream.set_nonblocking(true).is_err() {
            return self.fill(Duration::from_millis(1));
        }
        let read = self.fill(Duration::from_millis(1));
        self.stream.set_nonblocking(false)?;
        read
    }

    /// Reads what arrives within `timeout` (at least 1 ms: zero means "forever" to sockets).
    fn fill(&mut self, timeout: Duration) -> PgResult<()> {
        let want = match frame_size(&self.input)? {
            Some(size) if size > self.input.len() => size - self.input.len(),
            _ => 64 * 1024,
        };
        if want > 1 << 20 && self.input.capacity() - self.input.len() < want {
            // A message too large for the plugin's memory is an error naming it, not a trap.
            let mut probe: Vec<u8> = Vec::new();
            if probe.try_reserve_exact(self.input.len() + want).is_err() {
                return Err(PgError::Protocol(format!(
                    "a backend message of {} bytes does not fit in the plugin's memory \
                     (raise [capabilities] memory_mib)",
                    self.input.len() + want
                )));
            }
            drop(probe);
            self.input.reserve(want);
        }
        // Large messages arrive in reads of up to 1 MiB; small ones share 64 KiB reads.
        let room = want.clamp(self.read_bytes, 1 << 20);
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let start = self.input.len();
        let read = if room == self.read_bytes {
            // Into the scratch buffer, zeroed once: a read that brings a few bytes (the usual
            // case while streaming) copies those, instead of zeroing 64 KiB of input first.
            let scratch = self.scratch.get_or_insert_with(|| vec![0; room].into());
            let read = self.stream.read(&mut scratch[..]);
            if let Ok(n) = read {
                self.input.extend_from_slice(&scratch[..n]);
            }
            read
        } else {
            self.input.resize(start + room, 0);
            let read = self.stream.read(&mut self.input[start..]);
            self.input.truncate(start + *read.as_ref().unwrap_or(&0));
            read
        };
        match read {
            Ok(0) => Err(PgError::Io(format!(
                "postgres at {} closed the connection",
                self.peer
            ))),
            Ok(_) => {
                self.heard = true;
                self.last_activity = Instant::now();
                self.reply_due_since = None;
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs one or more SQL statements (or a replication command) and returns the rows of
    /// the last result, columns as text.
    pub fn query(&mut self, sql: &str) -> PgResult<Rows> {
        frontend::query(sql, &mut self.output)?;
        self.flush()?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut error = None;
        loop {
            let msg = self.answer("waiting for the result of a query")?;
            match msg.tag {
                b'T' => {
                    rows.clear();
                    columns = Some(parse_row_description(msg.body)?);
                }
                b'D' => {
                    let row = parse_data_row(msg.body)?;
                    if columns != Some(row.len()) {
                        return Err(PgError::Protocol(format!(
                            "data row 'D' has {} columns, but the row description announced {}",
                            row.len(),
                            columns.map_or("none".to_string(), |n| n.to_string())
                        )));
                    }
                    rows.push(row);
                }
                b'E' => error = Some(server_error(msg.body)),
                b'Z' => break,
                b'H' | b'W' | b'G' => {
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
            let msg = self.answer("waiting for a COPY to start")?;
            match msg.tag {
                b'H' => return Ok(()),
                b'E' => {
                    let e = server_error(msg.body);
                    self.wait_ready()?;
                    return Err(e);
                }
                b'Z' => return Err(self.unexpected(b'Z', "instead of a COPY")),
                _ => {}
            }
        }
    }

    fn wait_ready(&mut self) -> PgResult<()> {
        loop {
            if self.answer("waiting for the server to be ready")?.tag == b'Z' {
                return Ok(());
            }
        }
    }

    /// Sends `START_REPLICATION ...` and waits for the server to start streaming.
    pub fn start_replication(&mut self, command: &str) -> PgResult<()> {
        frontend::query(command, &mut self.output)?;
        self.flush()?;
        loop {
            let msg = self.answer("waiting for replication to start")?;
            match msg.tag {
                b'W' => return Ok(()),
                b'E' => return Err(server_error(msg.body)),
                b'Z' => return Err(self.unexpected(b'Z', "instead of replication")),
                _ => {}
            }
        }
    }

    /// The next replication CopyData payload, or `None` if nothing arrived before `deadline`.
    /// Nothing is due while the stream is idle, except a keepalive asked for (see
    /// [`Connection::send_status`]).
    pub fn replication_data(&mut self, deadline: Instant) -> PgResult<Option<Bytes>> {
        loop {
            let Some(msg) = self.next_message(Some(deadline), None, false)? else {
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
    /// server may advance the slot and recycle WAL before it. With `reply`, the server is
    /// asked to answer at once: a silent one is then noticed within the reply timeout.
    pub fn send_status(&mut self, written: u64, flushed: u64, reply: bool) -> PgResult<()> {
        let mut payload = Vec::with_capacity(34);
        payload.push(b'r');
        payload.extend_from_slice(&written.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&postgres_epoch_micros().to_be_bytes());
        payload.push(u8::from(reply));
        frontend::CopyData::new(&payload[..])?.write(&mut self.output);
        self.flush()?;
        if reply && self.reply_due_since.is_none() {
            self.reply_due_since = Some(Instant::now());
        }
        Ok(())
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
