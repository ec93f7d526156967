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

fn err(what: &str) -> String {
    format!("malformed pgoutput message: {what}")
}

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), String> {
    if buf.remaining() < n {
        Err(err(what))
    } else {
        Ok(())
    }
}

fn cstr(buf: &mut Bytes) -> Result<String, String> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| err("unterminated string"))?;
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Ok(s)
}

/// Splits a CopyData payload of the replication stream.
pub fn parse_stream_message(mut data: Bytes) -> Result<Option<StreamMessage>, String> {
    need(&data, 1, "empty replication message")?;
    match data.get_u8() {
        b'w' => {
            need(&data, 24, "XLogData header")?;
            let start = data.get_u64();
            let _end = data.get_u64();
            let _time = data.get_i64();
            Ok(Some(StreamMessage::XLogData {
                start,
                message: data,
            }))
        }
        b'k' => {
            need(&data, 17, "keepalive")?;
            let wal_end = data.get_u64();
            let _time = data.get_i64();
            let reply = data.get_u8() == 1;
            Ok(Some(StreamMessage::Keepalive { wal_end, reply }))
        }
        _ => Ok(None),
    }
}

fn tuple(buf: &mut Bytes) -> Result<Vec<TupleValue>, String> {
    need(buf, 2, "tuple")?;
    let n = buf.get_i16().max(0) as usize;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        need(buf, 1, "tuple column")?;
        values.push(match buf.get_u8() {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' | b'b' => {
                need(buf, 4, "value length")?;
                let len = buf.get_i32().max(0) as usize;
                need(buf, len, "value")?;
                TupleValue::Text(buf.split_to(len))
            }
            other => {
                return Err(err(&format!(
                    "unknown tuple value kind '{}'",
                    other as char
                )))
            }
        });
    }
    Ok(values)
}

/// Decodes one pgoutput message.
pub fn parse_change(mut buf: Bytes) -> Result<Change, String> {
    need(&buf, 1, "empty message")?;
    let kind = buf.get_u8();
    Ok(match kind {
        b'B' => {
            need(&buf, 20, "Begin")?;
            let final_lsn = buf.get_u64();
            let _time = buf.get_i64();
            let xid = buf.get_u32();
            Change::Begin { final_lsn, xid }
        }
        b'C' => {
            need(&buf, 25, "Commit")?;
            let _flags = buf.get_u8();
            let commit_lsn = buf.get_u64();
            let end_lsn = buf.get_u64();
            let commit_time_micros = buf.get_i64();
            Change::Commit {
                commit_lsn,
                end_lsn,
                commit_time_micros,
            }
        }
        b'R' => {
            need(&buf, 4, "Relation")?;
            let oid = buf.get_u32();
            let namespace = cstr(&mut buf)?;
            let name = cstr(&mut buf)?;
            need(&buf, 3, "Relation")?;
            let replica_identity = buf.get_u8();
            let n = buf.get_i16().max(0) as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                need(&buf, 1, "Relation column")?;
                let flags = buf.get_u8();
                let name = cstr(&mut buf)?;
                need(&buf, 8, "Relation column type")?;
                let type_oid = buf.get_u32();
                let type_modifier = buf.get_i32();
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
            need(&buf, 5, "Insert")?;
            let relation = buf.get_u32();
            if buf.get_u8() != b'N' {
                return Err(err("Insert without a new tuple"));
            }
            Change::Insert {
                relation,
                new: tuple(&mut buf)?,
            }
        }
        b'U' => {
            need(&buf, 5, "Update")?;
            let relation = buf.get_u32();
            let mut marker = buf.get_u8();
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some(tuple(&mut buf)?);
                need(&buf, 1, "Update new tuple")?;
                marker = buf.get_u8();
            }
            if marker != b'N' {
                return Err(err("Update without a new tuple"));
            }
            Change::Update {
                relation,
                old,
                new: tuple(&mut buf)?,
            }
        }
        b'D' => {
            need(&buf, 5, "Delete")?;
            let relation = buf.get_u32();
            let marker = buf.get_u8();
            if marker != b'K' && marker != b'O' {
                return Err(err("Delete without an old key"));
            }
            Change::Delete {
                relation,
                old: tuple(&mut buf)?,
            }
        }
        b'T' => {
            need(&buf, 5, "Truncate")?;
            let n = buf.get_u32() as usize;
            let _options = buf.get_u8();
            need(&buf, n * 4, "Truncate relations")?;
            Change::Truncate {
                relations: (0..n).map(|_| buf.get_u32()).collect(),
            }
        }
        b'O' | b'Y' | b'M' => Change::Other,
        other => return Err(err(&format!("unknown message type '{}'", other as char))),
    })
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
