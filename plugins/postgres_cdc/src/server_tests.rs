//! The client against scripted fake servers on localhost (natively; inside the plugin the
//! same std sockets are WASI sockets): servers that stall, and servers that send malformed
//! messages. Each wait must end in time with an error naming what went wrong, never a panic
//! or a read that blocks forever.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use moonlink_sdk::source::{ResumePoint, Source};
use moonlink_sdk::Config;
use serde_json::json;

use crate::conn::{ConnectOptions, Connection, CopyRows};
use crate::stream::Stream;
use crate::wire::PgError;
use crate::{PostgresCdc, Settings};

/// A backend message.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// "Authenticated, ready for queries."
fn ready() -> Vec<u8> {
    [msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat()
}

/// Reads one frontend message (`None` at end of stream): (type, body).
fn read_frontend(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0; len.checked_sub(4)?];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// A fake Postgres for one connection: answers the startup message with `startup`, then
/// each query (`Q`) with the next of `answers`. An empty answer means silence: the server
/// keeps the connection open and never writes again (it reads until the client leaves).
fn fake_server(startup: Vec<u8>, answers: Vec<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let silent = |s: &mut TcpStream| while s.read(&mut [0; 256]).is_ok_and(|n| n > 0) {};
        // The startup message has no type byte: length, then the rest.
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut rest = vec![0; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        if s.read_exact(&mut rest).is_err() {
            return;
        }
        if startup.is_empty() {
            return silent(&mut s);
        }
        let _ = s.write_all(&startup);
        let mut answers = answers.into_iter();
        while let Some((tag, _)) = read_frontend(&mut s) {
            match tag {
                b'Q' => match answers.next() {
                    Some(a) if !a.is_empty() => {
                        let _ = s.write_all(&a);
                    }
                    _ => return silent(&mut s),
                },
                b'X' => return,
                _ => {} // status updates and the like
            }
        }
    });
    port
}

fn options(port: u16, connect_ms: u64, reply_ms: u64) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: None,
        database: "app".into(),
        connect_timeout: Duration::from_millis(connect_ms),
        reply_timeout: Duration::from_millis(reply_ms),
    }
}

/// Runs `f` on a thread and waits at most 10 s for it: a wait that never ends fails the test
/// instead of hanging it.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("still blocked after 10 s")
}

fn connect_error(startup: Vec<u8>, answers: Vec<Vec<u8>>) -> String {
    let port = fake_server(startup, answers);
    within_10s(
        move || match Connection::connect(&options(port, 2000, 2000), false) {
            Ok(_) => panic!("connected"),
            Err(e) => e.to_string(),
        },
    )
}

#[test]
fn a_server_that_accepts_and_never_answers_is_an_error_in_time() {
    let port = fake_server(Vec::new(), Vec::new());
    let started = Instant::now();
    let err = within_10s(move || Connection::connect(&options(port, 300, 60_000), false).err())
        .expect("connected");
    assert!(matches!(err, PgError::Stalled(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!("postgres at 127.0.0.1:{port} accepted the connection but sent nothing for 300 ms")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_server_that_goes_silent_during_a_query_is_an_error_in_time() {
    let port = fake_server(ready(), vec![Vec::new()]);
    let err = within_10s(move || {
        let mut conn = Connection::connect(&options(port, 2000, 300), false).expect("connect");
        conn.query("SHOW wal_level").err()
    })
    .expect("answered");
    assert_eq!(
        err.to_string(),
        format!(
            "postgres at 127.0.0.1:{port} sent nothing for 300 ms while waiting for the result \
             of a query"
        )
    );
}

#[test]
fn malformed_startup_answers_are_errors_naming_the_message() {
    for (startup, words) in [
        (msg(b'R', b""), "'R' (0 bytes)"),
        (msg(b'R', &[0, 0, 0, 5, 1]), "md5 salt"),
        (msg(b'R', &[0, 0, 0, 10, b'x']), "SASL mechanism"),
        (
            b"R\xff\xff\xff\xff".to_vec(),
            "invalid length field 4294967295",
        ),
        (b"R\0\0\0\x02".to_vec(), "invalid length field 2"),
        (msg(b'X', b""), "unknown backend message type 'X'"),
        (
            msg(b'D', b""),
            "expected an authentication request, got message 'D'",
        ),
        (
            [msg(b'R', &[0, 0, 0, 0]), msg(b'D', b"")].concat(),
            "unexpected backend message 'D' during startup",
        ),
    ] {
        let err = connect_error(startup, Vec::new());
        assert!(err.contains(words), "{err} (wanted {words})");
    }
}

#[test]
fn malformed_query_answers_are_errors_naming_the_message() {
    let row_description = |n: i16| {
        let mut body = n.to_be_bytes().to_vec();
        for _ in 0..n {
            body.extend_from_slice(b"c\0");
            body.extend_from_slice(&[0; 18]);
        }
        msg(b'T', &body)
    };
    let done = [msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
    for (answer, words) in [
        // An empty DataRow.
        (
            [row_description(1), msg(b'D', b""), done.clone()].concat(),
            "'D' (0 bytes)",
        ),
        // A zero-column row where one column was announced.
        (
            [row_description(1), msg(b'D', &[0, 0]), done.clone()].concat(),
            "data row 'D' has 0 columns, but the row description announced 1",
        ),
        // A value longer than the message.
        (
            [
                row_description(1),
                msg(b'D', &[0, 1, 0x7f, 0xff, 0xff, 0xff, b'x']),
                done.clone(),
            ]
            .concat(),
            "'D' (7 bytes)",
        ),
        ([msg(b'T', b""), done.clone()].concat(), "'T' (0 bytes)"),
    ] {
        let port = fake_server(ready(), vec![answer]);
        let err = within_10s(move || {
            let mut conn = Connection::connect(&options(port, 2000, 2000), false).expect("connect");
            conn.query("SHOW wal_level").err().map(|e| e.to_string())
        })
        .expect("accepted");
        assert!(err.contains(words), "{err} (wanted {words})");
    }
}

#[test]
fn a_zero_column_result_stops_open_with_a_message_not_a_panic() {
    // `SHOW wal_level` answered by a row description and a row with no columns at all.
    let answer = [
        msg(b'T', &[0, 0]),
        msg(b'D', &[0, 0]),
        msg(b'C', b"SHOW\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    let port = fake_server(ready(), vec![answer]);
    let err = within_10s(move || {
        let config = Config::from_pairs([
            ("host", json!("127.0.0.1")),
            ("port", json!(port)),
            ("tables", json!(["public.t"])),
        ]);
        PostgresCdc::open(config, ResumePoint::fresh()).err()
    })
    .expect("opened");
    assert!(err.contains("wal_level = ''"), "{err}");
}

fn settings(port: u16, reply_ms: u64) -> Settings {
    Settings::parse(&Config::from_pairs([
        ("host", json!("127.0.0.1")),
        ("port", json!(port)),
        ("tables", json!(["public.t"])),
        ("connect_timeout_ms", json!(2000)),
        ("reply_timeout_ms", json!(reply_ms)),
    ]))
    .expect("settings")
}

#[test]
fn an_idle_stream_returns_in_time_and_a_silent_one_is_noticed() {
    // The server starts replication (CopyBothResponse), then never writes again: not even the
    // keepalives the plugin asks for.
    let port = fake_server(ready(), vec![msg(b'W', &[0, 0, 0])]);
    let (polls, err) = within_10s(move || {
        let mut stream = Stream::start(&settings(port, 400), 0x100, Default::default())
            .expect("start replication");
        let mut polls = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let result = stream.poll(&mut [], 1000, 150, &mut Vec::new());
            polls.push(started.elapsed());
            if let Err(e) = result {
                return (polls, Some(e));
            }
        }
        (polls, None)
    });
    // Idle polls come back with the poll's timeout, not later.
    assert!(polls.len() >= 2, "{polls:?}");
    for p in &polls[..polls.len() - 1] {
        assert!(*p < Duration::from_millis(1000), "{polls:?}");
    }
    let err = err.expect("the silent server was not noticed");
    assert!(
        err.contains(&format!(
            "postgres at 127.0.0.1:{port} sent nothing for 400 ms, not even the keepalive it was asked for"
        )),
        "{err}"
    );
}

#[test]
fn timeouts_are_settings_and_zero_is_refused() {
    let s = settings(5432, 1500);
    assert_eq!(s.connect.connect_timeout, Duration::from_millis(2000));
    assert_eq!(s.connect.reply_timeout, Duration::from_millis(1500));
    let defaults = Settings::parse(&Config::from_pairs([("tables", json!(["t"]))])).unwrap();
    assert_eq!(defaults.connect.connect_timeout, Duration::from_secs(4));
    assert_eq!(defaults.connect.reply_timeout, Duration::from_secs(60));
    let err = Settings::parse(&Config::from_pairs([
        ("tables", json!(["t"])),
        ("connect_timeout_ms", json!(0)),
    ]))
    .err()
    .unwrap();
    assert!(err.contains("connect_timeout_ms"), "{err}");
}

#[test]
fn a_copy_returns_at_the_poll_deadline_and_a_stalled_one_is_an_error() {
    // COPY starts, one row arrives, then the server goes silent.
    let answer = [msg(b'H', &[0, 0, 0]), msg(b'd', b"1\tx\n")].concat();
    let port = fake_server(ready(), vec![answer]);
    let (first, idle, waits, err) = within_10s(move || {
        let mut conn = Connection::connect(&options(port, 2000, 400), false).expect("connect");
        conn.start_copy_out("COPY t TO STDOUT").expect("copy");
        let mut first = Vec::new();
        let got = conn
            .copy_rows(
                Some(Instant::now() + Duration::from_millis(100)),
                10,
                |row| {
                    first.push(row.to_vec());
                    Ok::<_, PgError>(1)
                },
            )
            .expect("row");
        assert_eq!(got, CopyRows::Rows(1));
        // Without a deadline only what is there is taken: nothing, so no wait.
        let idle = conn
            .copy_rows(None, 10, |_| Ok::<_, PgError>(1))
            .expect("no row");
        let mut waits = Vec::new();
        loop {
            let started = Instant::now();
            let until = Instant::now() + Duration::from_millis(100);
            match conn.copy_rows(Some(until), 10, |_| Ok::<_, PgError>(1)) {
                Ok(CopyRows::Waiting) => waits.push(started.elapsed()),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => return (first, idle, waits, e.to_string()),
            }
        }
    });
    assert_eq!(first, vec![b"1\tx\n".to_vec()]);
    assert_eq!(idle, CopyRows::Waiting);
    // The copy waits no longer than the poll's deadline, then notices the silence.
    assert!(!waits.is_empty());
    assert!(
        waits.iter().all(|w| *w < Duration::from_millis(500)),
        "{waits:?}"
    );
    assert_eq!(
        err,
        format!("postgres at 127.0.0.1:{port} sent nothing for 400 ms while copying rows")
    );
}

#[test]
fn rows_that_arrive_with_the_end_of_a_copy_are_counted_before_it() {
    // The last rows, CopyDone, CommandComplete and ReadyForQuery in one packet.
    let answer = [
        msg(b'H', &[0, 0, 0]),
        msg(b'd', b"1\n"),
        msg(b'd', b"2\n"),
        msg(b'c', b""),
        msg(b'C', b"COPY 2\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    let port = fake_server(ready(), vec![answer]);
    let (rows, steps) = within_10s(move || {
        let mut conn = Connection::connect(&options(port, 2000, 400), false).expect("connect");
        conn.start_copy_out("COPY t TO STDOUT").expect("copy");
        let (mut rows, mut steps) = (Vec::new(), Vec::new());
        loop {
            let until = Instant::now() + Duration::from_millis(100);
            let step = conn
                .copy_rows(Some(until), 10, |row| {
                    rows.push(row.to_vec());
                    Ok::<_, PgError>(1)
                })
                .expect("copy");
            steps.push(step);
            if step == CopyRows::End {
                return (rows, steps);
            }
        }
    });
    assert_eq!(rows, vec![b"1\n".to_vec(), b"2\n".to_vec()]);
    let counted: usize = steps
        .iter()
        .map(|s| match s {
            CopyRows::Rows(n) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(counted, 2, "{steps:?}");
}
