//! Decoding of `pgoutput` (protocol version 1) logical replication messages, and of the
//! replication stream's framing around them (XLogData, primary keepalive).

use bytes::{Buf, Bytes};

/// A message of the replication stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMessage {
    /// WAL data starting at `start`; `message` is one pgoutput message.
    XLogData { start: u64, message: Bytes },
    /// The server's keepalive; `reply` asks for a status update now.
    Keepalive { wal_end: u64, reply: bool },
}

/// A column as the Relation message describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (the key for keyed tables).
    pub key: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column value of a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum TupleValue {
    Null,
    /// A TOASTed value the update did not change; Postgres does not send it again.
    UnchangedToast,
    Text(Bytes),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: u64,
        /// When the transaction committed (µs since 2000-01-01).
        commit_time_micros: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        /// The position just after the commit: where a resumed stream continues.
        end_lsn: u64,
        commit_time_micros: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<TupleValue>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or whole old row (`O`), sent when the key changed or the
        /// identity is FULL.
        old: Option<Vec<TupleValue>>,
        new: Vec<TupleValue>,
    },
    Delete {
        relation: u32,
        old: Vec<TupleValue>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and logical-decoding messages: nothing to apply.
    Other,
}

/// A message type for error messages: `'R'`, or `0x00` when not printable.
fn tag_name(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// A reader of one message whose every read is checked: a short or malformed message is an
/// error naming it (kind, type, length, offset, what was missing), never a panic.
struct Reader {
    /// "pgoutput message" or "replication message".
    kind: &'static str,
    tag: u8,
    buf: Bytes,
    len: usize,
}

impl Reader {
    /// Starts reading `buf`, whose first byte is its type.
    fn new(kind: &'static str, mut buf: Bytes) -> Result<Reader, String> {
        if buf.is_empty() {
            return Err(format!("malformed {kind}: empty (0 bytes)"));
        }
        let len = buf.len();
        let tag = buf.get_u8();
        Ok(Reader {
            kind,
            tag,
            buf,
            len,
        })
    }

    fn error(&self, why: impl std::fmt::Display) -> String {
        format!(
            "malformed {} {} ({} bytes): {why} at byte {}",
            self.kind,
            tag_name(self.tag),
            self.len,
            self.len - self.buf.len()
        )
    }

    fn need(&self, n: usize, what: &str) -> Result<(), String> {
        if self.buf.remaining() < n {
            return Err(self.error(format_args!(
                "{what} needs {n} bytes, {} left",
                self.buf.remaining()
            )));
        }
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, String> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    fn cstr(&mut self, what: &str) -> Result<String, String> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.error(format_args!("{what} is not NUL-terminated")))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 1);
        Ok(s)
    }

    /// A count that must not be negative.
    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| self.error(format_args!("{what} is negative ({n})")))
    }

    /// Every byte must have been used: trailing garbage means the framing is not understood.
    fn end(&self) -> Result<(), String> {
        if self.buf.has_remaining() {
            return Err(self.error(format_args!(
                "{} unexpected bytes after the message",
                self.buf.remaining()
            )));
        }
        Ok(())
    }
}

/// Splits a CopyData payload of the replication stream.
pub fn parse_stream_message(data: Bytes) -> Result<StreamMessage, String> {
    let mut r = Reader::new("replication message", data)?;
    match r.tag {
        b'w' => {
            let start = r.u64("the XLogData start position")?;
            let _end = r.u64("the XLogData end position")?;
            let _time = r.i64("the XLogData send time")?;
            Ok(StreamMessage::XLogData {
                start,
                message: r.buf,
            })
        }
        b'k' => {
            let wal_end = r.u64("the keepalive WAL end")?;
            let _time = r.i64("the keepalive send time")?;
            let reply = r.u8("the keepalive reply flag")? == 1;
            r.end()?;
            Ok(StreamMessage::Keepalive { wal_end, reply })
        }
        _ => Err(r.error("unknown message type")),
    }
}

fn tuple(r: &mut Reader) -> Result<Vec<TupleValue>, String> {
    let n = r.count("the tuple's column count")?;
    // Each column takes at least one byte: no allocation beyond what arrived.
    let mut values = Vec::with_capacity(n.min(r.buf.remaining()));
    for _ in 0..n {
        values.push(match r.u8("a tuple column kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' | b'b' => {
                let len = r.i32("a value length")?;
                let len = usize::try_from(len)
                    .map_err(|_| r.error(format_args!("negative value length {len}")))?;
                TupleValue::Text(r.bytes(len, "a value")?)
            }
            other => {
                return Err(r.error(format_args!("unknown tuple value kind {}", tag_name(other))))
            }
        });
    }
    Ok(values)
}

/// Decodes one pgoutput message.
pub fn parse_change(buf: Bytes) -> Result<Change, String> {
    let mut r = Reader::new("pgoutput message", buf)?;
    let change = match r.tag {
        b'B' => {
            let final_lsn = r.u64("the Begin final LSN")?;
            let commit_time_micros = r.i64("the Begin commit time")?;
            let xid = r.u32("the Begin xid")?;
            Change::Begin {
                final_lsn,
                commit_time_micros,
                xid,
            }
        }
        b'C' => {
            let _flags = r.u8("the Commit flags")?;
            let commit_lsn = r.u64("the Commit LSN")?;
            let end_lsn = r.u64("the Commit end LSN")?;
            let commit_time_micros = r.i64("the Commit time")?;
            Change::Commit {
                commit_lsn,
                end_lsn,
                commit_time_micros,
            }
        }
        b'R' => {
            let oid = r.u32("the Relation oid")?;
            let namespace = r.cstr("the Relation namespace")?;
            let name = r.cstr("the Relation name")?;
            let replica_identity = r.u8("the Relation replica identity")?;
            let n = r.count("the Relation column count")?;
            let mut columns = Vec::with_capacity(n.min(r.buf.remaining()));
            for _ in 0..n {
                let flags = r.u8("a Relation column's flags")?;
                let name = r.cstr("a Relation column's name")?;
                let type_oid = r.u32("a Relation column's type")?;
                let type_modifier = r.i32("a Relation column's type modifier")?;
                columns.push(RelationColumn {
                    name,
                    type_oid,
                    type_modifier,
                    key: flags & 1 == 1,
                });
            }
            Change::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("the Insert relation")?;
            if r.u8("the Insert tuple marker")? != b'N' {
                return Err(r.error("Insert without a new tuple"));
            }
            Change::Insert {
                relation,
                new: tuple(&mut r)?,
            }
        }
        b'U' => {
            let relation = r.u32("the Update relation")?;
            let mut marker = r.u8("the Update tuple marker")?;
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some(tuple(&mut r)?);
                marker = r.u8("the Update new tuple marker")?;
            }
            if marker != b'N' {
                return Err(r.error("Update without a new tuple"));
            }
            Change::Update {
                relation,
                old,
                new: tuple(&mut r)?,
            }
        }
        b'D' => {
            let relation = r.u32("the Delete relation")?;
            let marker = r.u8("the Delete tuple marker")?;
            if marker != b'K' && marker != b'O' {
                return Err(r.error("Delete without an old key"));
            }
            Change::Delete {
                relation,
                old: tuple(&mut r)?,
            }
        }
        b'T' => {
            let n = r.u32("the Truncate relation count")?;
            let _options = r.u8("the Truncate options")?;
            let n = usize::try_from(n).map_err(|_| r.error("relation count overflows"))?;
            // Checked: on wasm32 `n * 4` could wrap around and pass a too-short message.
            let needed = n
                .checked_mul(4)
                .ok_or_else(|| r.error(format_args!("relation count {n} overflows")))?;
            r.need(needed, "the Truncate relations")?;
            let relations = (0..n)
                .map(|_| r.u32("a Truncate relation"))
                .collect::<Result<_, _>>()?;
            Change::Truncate { relations }
        }
        b'O' | b'Y' | b'M' => return Ok(Change::Other),
        _ => return Err(r.error("unknown message type")),
    };
    r.end()?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn text_tuple(out: &mut Vec<u8>, values: &[Option<&str>]) {
        out.put_i16(values.len() as i16);
        for v in values {
            match v {
                None => out.put_u8(b'n'),
                Some("<unchanged>") => out.put_u8(b'u'),
                Some(s) => {
                    out.put_u8(b't');
                    out.put_i32(s.len() as i32);
                    out.put_slice(s.as_bytes());
                }
            }
        }
    }

    #[test]
    fn decodes_relation_and_row_changes() {
        let mut rel = vec![b'R'];
        rel.put_u32(16384);
        rel.put_slice(b"public\0orders\0");
        rel.put_u8(b'd');
        rel.put_i16(2);
        rel.put_u8(1);
        rel.put_slice(b"id\0");
        rel.put_u32(20);
        rel.put_i32(-1);
        rel.put_u8(0);
        rel.put_slice(b"note\0");
        rel.put_u32(25);
        rel.put_i32(-1);
        let Change::Relation(r) = parse_change(Bytes::from(rel)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("public", "orders")
        );
        assert!(r.columns[0].key && !r.columns[1].key);

        let mut upd = vec![b'U'];
        upd.put_u32(16384);
        upd.put_u8(b'K');
        text_tuple(&mut upd, &[Some("1"), None]);
        upd.put_u8(b'N');
        text_tuple(&mut upd, &[Some("2"), Some("<unchanged>")]);
        let change = parse_change(Bytes::from(upd)).unwrap();
        assert_eq!(
            change,
            Change::Update {
                relation: 16384,
                old: Some(vec![
                    TupleValue::Text(Bytes::from_static(b"1")),
                    TupleValue::Null
                ]),
                new: vec![
                    TupleValue::Text(Bytes::from_static(b"2")),
                    TupleValue::UnchangedToast
                ],
            }
        );

        let mut trunc = vec![b'T'];
        trunc.put_u32(2);
        trunc.put_u8(0);
        trunc.put_u32(1);
        trunc.put_u32(2);
        assert_eq!(
            parse_change(Bytes::from(trunc)).unwrap(),
            Change::Truncate {
                relations: vec![1, 2]
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for bytes in [
            &b"B\x00"[..],
            b"U\x00\x00\x40\x00N\x00\x02t",
            b"R\x00",
            b"Z",
        ] {
            assert!(parse_change(Bytes::copy_from_slice(bytes)).is_err());
        }
    }
}
