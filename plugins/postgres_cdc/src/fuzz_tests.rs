//! Fuzz-style tests of every decoder of backend input: thousands of random byte strings and
//! of valid messages mutated (truncated, bytes flipped, length and count fields set to
//! extremes, bytes inserted or cut), seeded so a failure reproduces. Nothing may panic (a
//! panic is a trap in the plugin, reported without saying which message), and every error
//! must name the message it is about.

use bytes::{BufMut, Bytes, BytesMut};

use crate::pgoutput::{parse_change, parse_stream_message};
use crate::wire::{
    frame_size, parse_auth, parse_data_row, parse_row_description, server_error, tag_name,
    take_message, PgError,
};

/// xorshift64*: tiny, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `lo..hi` random bytes.
    fn bytes_in(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = lo + self.below(hi - lo);
        self.bytes(n)
    }

    /// Random bytes, mostly few, sometimes many.
    fn some_bytes(&mut self) -> Vec<u8> {
        let n = self.len();
        self.bytes(n)
    }

    /// Mostly short, sometimes long.
    fn len(&mut self) -> usize {
        if self.below(8) == 0 {
            self.below(300)
        } else {
            self.below(24)
        }
    }
}

/// Values that break length and count arithmetic.
const EXTREMES: [u32; 8] = [
    0,
    1,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// One to three mutations of a valid message.
fn mutate(rng: &mut Rng, message: &[u8]) -> Vec<u8> {
    let mut m = message.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(m.len() + 1);
        match rng.below(6) {
            0 => m.truncate(at),
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 + rng.below(255) as u8;
            }
            2 if m.len() >= 4 => {
                // A 2- or 4-byte field (count or length) set to an extreme.
                let value = EXTREMES[rng.below(EXTREMES.len())].to_be_bytes();
                let width = if rng.below(2) == 0 { 2 } else { 4 };
                let i = rng.below(m.len() - width + 1);
                m[i..i + width].copy_from_slice(&value[4 - width..]);
            }
            3 => {
                let extra = rng.bytes_in(1, 9);
                m.splice(at..at, extra);
            }
            4 if at < m.len() => {
                let end = (at + 1 + rng.below(8)).min(m.len());
                m.drain(at..end);
            }
            _ => m.extend(rng.bytes_in(1, 5)),
        }
    }
    m
}

fn tuple(out: &mut Vec<u8>, rng: &mut Rng) {
    let n = rng.below(4);
    out.put_i16(n as i16);
    for _ in 0..n {
        match rng.below(3) {
            0 => out.put_u8(b'n'),
            1 => out.put_u8(b'u'),
            _ => {
                let text = rng.bytes_in(0, 6);
                out.put_u8(b't');
                out.put_i32(text.len() as i32);
                out.put_slice(&text);
            }
        }
    }
}

/// A valid pgoutput message of a random kind.
fn valid_change(rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    match rng.below(9) {
        0 => {
            m.put_u8(b'B');
            m.put_u64(rng.next());
            m.put_i64(rng.next() as i64);
            m.put_u32(rng.next() as u32);
        }
        1 => {
            m.put_u8(b'C');
            m.put_u8(0);
            m.put_u64(rng.next());
            m.put_u64(rng.next());
            m.put_i64(rng.next() as i64);
        }
        2 => {
            m.put_u8(b'R');
            m.put_u32(16384);
            m.put_slice(b"public\0orders\0");
            m.put_u8(b'd');
            let n = rng.below(4);
            m.put_i16(n as i16);
            for i in 0..n {
                m.put_u8((i == 0) as u8);
                m.put_slice(format!("c{i}\0").as_bytes());
                m.put_u32(23);
                m.put_i32(-1);
            }
        }
        3 => {
            m.put_u8(b'I');
            m.put_u32(16384);
            m.put_u8(b'N');
            tuple(&mut m, rng);
        }
        4 => {
            m.put_u8(b'U');
            m.put_u32(16384);
            if rng.below(2) == 0 {
                m.put_u8(b'K');
                tuple(&mut m, rng);
            }
            m.put_u8(b'N');
            tuple(&mut m, rng);
        }
        5 => {
            m.put_u8(b'D');
            m.put_u32(16384);
            m.put_u8(b'K');
            tuple(&mut m, rng);
        }
        6 => {
            m.put_u8(b'T');
            let n = rng.below(4);
            m.put_u32(n as u32);
            m.put_u8(0);
            for _ in 0..n {
                m.put_u32(rng.next() as u32);
            }
        }
        7 => {
            m.put_u8(b'O');
            m.put_u64(rng.next());
            m.put_slice(b"origin\0");
        }
        _ => {
            m.put_u8(b'Y');
            m.put_u32(25);
            m.put_slice(b"pg_catalog\0text\0");
        }
    }
    m
}

/// A valid replication CopyData payload: XLogData around a change, or a keepalive.
fn valid_stream_message(rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    if rng.below(4) == 0 {
        m.put_u8(b'k');
        m.put_u64(rng.next());
        m.put_i64(rng.next() as i64);
        m.put_u8(rng.below(2) as u8);
    } else {
        m.put_u8(b'w');
        m.put_u64(rng.next());
        m.put_u64(rng.next());
        m.put_i64(rng.next() as i64);
        m.extend(valid_change(rng));
    }
    m
}

/// A pgoutput error must say what it is about: the kind, the type and the length.
fn check_change_error(input: &[u8], error: &str) {
    assert!(
        error.starts_with("malformed pgoutput message"),
        "{error} for {input:?}"
    );
    assert!(
        error.contains(&format!("({} bytes)", input.len())),
        "{error} for {input:?}"
    );
    if let Some(&tag) = input.first() {
        assert!(error.contains(&tag_name(tag)), "{error} for {input:?}");
    }
}

#[test]
fn pgoutput_decoder_survives_random_and_mutated_messages() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20_000 {
        let input = match i % 4 {
            0 => rng.some_bytes(),
            // A valid type byte with a random body reaches deeper.
            1 => {
                let mut m = vec![b"BCRIUDTOYM"[rng.below(10)]];
                m.extend(rng.some_bytes());
                m
            }
            _ => {
                let valid = valid_change(&mut rng);
                mutate(&mut rng, &valid)
            }
        };
        match parse_change(Bytes::from(input.clone())) {
            Ok(_) => accepted += 1,
            Err(e) => {
                check_change_error(&input, &e);
                refused += 1;
            }
        }
    }
    // Both outcomes were exercised, not just one.
    assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    // Every valid message still decodes.
    for _ in 0..1000 {
        let valid = valid_change(&mut rng);
        assert!(
            parse_change(Bytes::from(valid.clone())).is_ok(),
            "{valid:?}"
        );
    }
}

#[test]
fn replication_framing_survives_random_and_mutated_messages() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..20_000 {
        let input = if i % 3 == 0 {
            rng.some_bytes()
        } else {
            let valid = valid_stream_message(&mut rng);
            mutate(&mut rng, &valid)
        };
        match parse_stream_message(Bytes::from(input.clone())) {
            Ok(crate::pgoutput::StreamMessage::XLogData { message, .. }) => {
                // What the stream carries goes on to the pgoutput decoder.
                if let Err(e) = parse_change(message.clone()) {
                    check_change_error(&message, &e);
                }
            }
            Ok(_) => {}
            Err(e) => {
                assert!(e.starts_with("malformed replication message"), "{e}");
                assert!(e.contains(&format!("({} bytes)", input.len())), "{e}");
            }
        }
    }
    // The messages the issue names: empty, unknown type, a zero-column Relation.
    assert!(parse_change(Bytes::new()).unwrap_err().contains("empty"));
    assert!(parse_change(Bytes::from_static(b"R"))
        .unwrap_err()
        .contains("'R' (1 bytes)"));
    assert!(parse_stream_message(Bytes::from_static(b"x"))
        .unwrap_err()
        .contains("unknown message type"));
    assert!(parse_change(Bytes::from_static(b"Q\0"))
        .unwrap_err()
        .contains("unknown message type"));
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.put_u32(body.len() as u32 + 4);
    m.put_slice(body);
    m
}

/// A valid backend message of a random kind, framed.
fn valid_backend_message(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    let tag = match rng.below(10) {
        0 => {
            match rng.below(5) {
                0 => body.put_i32(0),
                1 => body.put_i32(3),
                2 => {
                    body.put_i32(5);
                    body.put_slice(&rng.bytes(4));
                }
                3 => {
                    body.put_i32(10);
                    body.put_slice(b"SCRAM-SHA-256\0\0");
                }
                _ => {
                    body.put_i32(11);
                    body.put_slice(b"r=abc,s=c2FsdA==,i=4096");
                }
            }
            b'R'
        }
        1 => {
            body.put_slice(b"TimeZone\0UTC\0");
            b'S'
        }
        2 => {
            body.put_slice(&rng.bytes(8));
            b'K'
        }
        3 => {
            body.put_u8(b'I');
            b'Z'
        }
        4 => {
            body.put_i16(1);
            body.put_slice(b"wal_level\0");
            body.put_slice(&[0; 18]);
            b'T'
        }
        5 => {
            let n = rng.below(4);
            body.put_i16(n as i16);
            for _ in 0..n {
                if rng.below(3) == 0 {
                    body.put_i32(-1);
                } else {
                    let v = rng.bytes_in(0, 6);
                    body.put_i32(v.len() as i32);
                    body.put_slice(&v);
                }
            }
            b'D'
        }
        6 => {
            body.put_slice(b"SELECT 1\0");
            b'C'
        }
        7 => {
            body.put_slice(b"SERROR\0C42P01\0Mno such table\0Hcreate it\0\0");
            if rng.below(2) == 0 {
                b'E'
            } else {
                b'N'
            }
        }
        8 => {
            body.put_slice(&rng.bytes_in(0, 20));
            b'd'
        }
        _ => {
            body.put_u8(0);
            body.put_i16(0);
            if rng.below(2) == 0 {
                b'H'
            } else {
                b'W'
            }
        }
    };
    frame(tag, &body)
}

/// Runs the parser that the client uses for this message type.
fn parse_backend_message(tag: u8, body: Bytes) -> Result<(), PgError> {
    match tag {
        b'R' => parse_auth(body).map(drop),
        b'T' => parse_row_description(body).map(drop),
        b'D' => parse_data_row(body).map(drop),
        b'E' | b'N' => {
            let _ = server_error(body);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_backend_error(error: &PgError) {
    let PgError::Protocol(text) = error else {
        panic!("not a protocol error: {error}");
    };
    assert!(text.contains("message"), "{text}");
}

#[test]
fn backend_framing_and_parsers_survive_random_and_mutated_streams() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut messages = 0;
    for i in 0..5_000 {
        // A conversation: several messages, then mutated as a whole or per message.
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let m = valid_backend_message(&mut rng);
            if i % 2 == 0 {
                stream.extend(mutate(&mut rng, &m));
            } else {
                stream.extend(m);
            }
        }
        if i % 2 == 1 {
            stream = mutate(&mut rng, &stream);
        }
        if i % 5 == 0 {
            stream = rng.some_bytes();
        }
        // Arrives in pieces, as from a socket.
        let mut input = BytesMut::new();
        let mut rest = &stream[..];
        'reading: while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            input.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match take_message(&mut input) {
                    Ok(Some(msg)) => {
                        messages += 1;
                        let len = msg.body.len();
                        if let Err(e) = parse_backend_message(msg.tag, msg.body) {
                            check_backend_error(&e);
                            let text = e.to_string();
                            assert!(text.contains(&tag_name(msg.tag)), "{text}");
                            assert!(text.contains(&format!("({len} bytes)")), "{text}");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        check_backend_error(&e);
                        break 'reading;
                    }
                }
            }
        }
    }
    assert!(messages > 3_000, "{messages}");
    // Each parser also on bare random bodies.
    for _ in 0..20_000 {
        let body = Bytes::from(rng.some_bytes());
        for tag in [b'R', b'T', b'D', b'E'] {
            if let Err(e) = parse_backend_message(tag, body.clone()) {
                check_backend_error(&e);
            }
        }
    }
}

#[test]
fn the_messages_the_issue_names_are_errors_naming_them() {
    // Empty `R`, empty `D`, a length that overflows 32-bit arithmetic, an unknown type.
    let err = parse_auth(Bytes::new()).unwrap_err().to_string();
    assert!(err.contains("'R' (0 bytes)"), "{err}");
    let err = parse_auth(Bytes::from_static(&[0, 0, 0, 5]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("md5 salt"), "{err}");
    let err = parse_data_row(Bytes::new()).unwrap_err().to_string();
    assert!(err.contains("'D' (0 bytes)"), "{err}");
    let err = parse_data_row(Bytes::from_static(&[0, 1, 0x7f, 0xff, 0xff, 0xff]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'D'"), "{err}");
    assert_eq!(parse_data_row(Bytes::from_static(&[0, 0])).unwrap(), vec![]);
    let err = frame_size(b"R\xff\xff\xff\xff").unwrap_err().to_string();
    assert!(err.contains("'R'") && err.contains("4294967295"), "{err}");
    let err = frame_size(b"R\0\0\0\x03").unwrap_err().to_string();
    assert!(err.contains("invalid length field 3"), "{err}");
    let err = frame_size(b"HTTP/1.1 400").unwrap_err().to_string();
    assert!(err.contains("'H'"), "{err}");
    let err = frame_size(b"<html>").unwrap_err().to_string();
    assert!(err.contains("unknown backend message type '<'"), "{err}");
    assert_eq!(frame_size(b"Z\0\0\0\x05I").unwrap(), Some(6));
}
