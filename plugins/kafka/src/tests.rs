//! Native tests: record batches in every codec (encoded here by the protocol crate), hostile
//! bytes, JSON records into rows, settings, checkpoints.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use moonlink_sdk::source::SourceEvent;
use moonlink_sdk::{ColumnValues, Config, Operation};
use serde_json::json;

use crate::records::decode_batches;
use crate::rows::{Origin, TableRows};
use crate::settings::{Format, OnError, SchemaSetting, Settings};

fn record(offset: i64, key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp: 1_700_000_000_000 + offset,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: IndexMap::new(),
    }
}

fn compress(input: &[u8], codec: Compression, xerial: bool) -> Vec<u8> {
    match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(input).unwrap();
            e.finish().unwrap()
        }
        Compression::Snappy if xerial => {
            // xerial framing as the Java client writes it: magic, versions, blocks.
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            for chunk in input.chunks(1000) {
                let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Snappy => snap::raw::Encoder::new().compress_vec(input).unwrap(),
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(input).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(input, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// One batch of `records` as a broker sends it.
fn batch(records: &[Record], codec: Compression, xerial: bool) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: codec,
    };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        records,
        &options,
        Some(|input: &mut BytesMut, out: &mut BytesMut, c: Compression| {
            out.put_slice(&compress(input, c, xerial));
            Ok(())
        }),
    )
    .unwrap();
    buf.freeze()
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn batches_decode_in_every_codec() {
    let records: Vec<Record> = (100..400)
        .map(|i| record(i, Some(&format!("k{i}")), Some(&format!("{{\"id\":{i}}}"))))
        .collect();
    for codec in CODECS {
        for xerial in [false, true] {
            let (batches, error) = decode_batches(batch(&records, codec, xerial), 1 << 20);
            assert_eq!(error, None, "{codec:?}");
            assert_eq!(batches.len(), 1);
            let b = &batches[0];
            assert_eq!((b.base_offset, b.next_offset, b.control), (100, 400, false));
            let got: Vec<_> = b
                .records
                .iter()
                .map(|r| (r.offset, r.value.clone()))
                .collect();
            let want: Vec<_> = records
                .iter()
                .map(|r| (r.offset, r.value.clone()))
                .collect();
            assert_eq!(got, want, "{codec:?} xerial={xerial}");
        }
    }
}

#[test]
fn a_truncated_last_batch_is_left_for_the_next_fetch() {
    let first = batch(&[record(0, None, Some("{}"))], Compression::None, false);
    let second = batch(&[record(1, None, Some("{}"))], Compression::Gzip, false);
    let mut both = BytesMut::new();
    both.put_slice(&first);
    both.put_slice(&second[..second.len() - 3]);
    let (batches, error) = decode_batches(both.freeze(), 1 << 20);
    assert_eq!(error, None);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].next_offset, 1);
}

#[test]
fn a_corrupt_batch_names_its_offset_and_a_decompression_bomb_is_refused() {
    let mut bytes = batch(
        &[record(42, None, Some("{\"a\":1}"))],
        Compression::None,
        false,
    )
    .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let (batches, error) = decode_batches(Bytes::from(bytes), 1 << 20);
    assert!(batches.is_empty());
    let error = error.unwrap();
    assert_eq!(error.offset, 42);
    assert!(
        error.reason.contains("Cyclic redundancy check"),
        "{}",
        error.reason
    );

    let big = "x".repeat(100_000);
    let records: Vec<Record> = (0..20).map(|i| record(i, None, Some(&big))).collect();
    let (_, error) = decode_batches(batch(&records, Compression::Zstd, false), 1 << 20);
    assert!(error.unwrap().reason.contains("more than"));
}

#[test]
fn control_batches_advance_the_offset_without_records() {
    let mut marker = record(7, Some("\0\0\0\0"), Some("\0\0\0\0\0\0"));
    marker.control = true;
    marker.transactional = true;
    let (batches, error) = decode_batches(batch(&[marker], Compression::None, false), 1 << 20);
    assert_eq!(error, None);
    assert!(batches[0].control && batches[0].records.is_empty());
    assert_eq!(batches[0].next_offset, 8);
}

/// xorshift: deterministic randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Recomputes a batch's CRC so that mutations reach the record decoder.
fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= 21 {
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[test]
fn fuzz_hostile_bytes_never_panic() {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let records: Vec<Record> = (0..30)
        .map(|i| {
            let mut r = record(i, Some("key"), Some("{\"id\":1,\"name\":\"x\"}"));
            r.headers.insert("h".into(), Some(Bytes::from_static(b"v")));
            r
        })
        .collect();
    let seeds: Vec<Vec<u8>> = CODECS
        .iter()
        .map(|c| batch(&records, *c, false).to_vec())
        .collect();
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        match rng.below(4) {
            // Random bytes of random length.
            0 => {
                let len = rng.below(300);
                bytes = (0..len).map(|_| rng.next() as u8).collect();
            }
            // Bit flips anywhere, CRC fixed so that the records are decoded.
            1 | 2 => {
                for _ in 0..1 + rng.below(6) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                if round % 2 == 0 {
                    fix_crc(&mut bytes);
                }
            }
            // Truncated or extended.
            _ => {
                let len = rng.below(bytes.len() + 40);
                bytes.resize(len, rng.next() as u8);
                fix_crc(&mut bytes);
            }
        }
        // Any outcome but a panic (or an abort from a huge allocation) is fine.
        let _ = decode_batches(Bytes::from(bytes), 1 << 20);
    }
}

fn settings(pairs: serde_json::Value) -> Result<Settings, String> {
    let config = Config::parse(&pairs.to_string()).map_err(String::from)?;
    Settings::parse(&config).map_err(String::from)
}

#[test]
fn settings_are_checked_and_name_what_is_wrong() {
    let s = settings(json!({
        "bootstrap_servers": "a:9092, b:9092",
        "tables": {"orders.v1": "shop.orders", "x": "plain"},
        "schema": [{"name": "id", "data_type": "int64", "nullable": false},
                   {"name": "amount", "data_type": "decimal(10,2)"}],
        "primary_key": ["id"],
        "on_error": "dead_letter",
        "start": "latest",
    }))
    .unwrap();
    assert_eq!(s.bootstrap, vec!["a:9092", "b:9092"]);
    assert_eq!(s.table_of("orders.v1"), Some("shop.orders"));
    assert_eq!(s.table_of("x"), Some("kafka.plain"));
    assert_eq!(s.on_error, OnError::DeadLetter);
    assert!(!s.start_earliest);
    assert!(
        matches!(s.schemas.get("shop.orders"), Some(SchemaSetting::Declared(f)) if f.len() == 2)
    );
    let t = settings(
        json!({"bootstrap_servers": ["a:1"], "topics": ["my.topic-1"], "schema": "infer"}),
    )
    .unwrap();
    assert_eq!(t.table_of("my.topic-1"), Some("kafka.my_topic_1"));

    for (bad, says) in [
        (
            json!({"topics": ["t"], "schema": "infer"}),
            "bootstrap_servers",
        ),
        (
            json!({"bootstrap_servers": "nohost", "topics": ["t"], "schema": "infer"}),
            "host:port",
        ),
        (
            json!({"bootstrap_servers": "a:1", "schema": "infer"}),
            "no topics",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"]}),
            "schema",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "schema": [{"name": "a", "data_type": "nope"}]}),
            "unknown data type",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "schema": "infer", "format": "avro"}),
            "format",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "schema": "infer", "on_error": "skip"}),
            "on_error",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "format": "raw", "primary_key": ["id"]}),
            "append-only",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "schema": [{"name": "a", "data_type": "int64"}], "primary_key": ["id"]}),
            "primary_key column 'id'",
        ),
        (
            json!({"bootstrap_servers": "a:1", "topics": ["t"], "schema": "infer", "max_poll_records": 0}),
            "positive",
        ),
    ] {
        let err = settings(bad.clone()).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

fn orders_table(keyed: bool) -> TableRows {
    let s = settings(json!({
        "bootstrap_servers": "a:1", "topics": ["orders"],
        "schema": [{"name": "id", "data_type": "int64", "nullable": false},
                   {"name": "note", "data_type": "string"},
                   {"name": "at", "data_type": "timestamptz"}],
    }))
    .unwrap();
    let Some(SchemaSetting::Declared(fields)) = s.schemas.get("kafka.orders") else {
        panic!("declared")
    };
    let key = if keyed {
        vec!["id".to_string()]
    } else {
        vec![]
    };
    TableRows::new("kafka.orders", fields.clone(), key, false, Format::Json)
}

const AT: Origin<'static> = Origin {
    topic: "orders",
    partition: 0,
};

fn flushed(t: &mut TableRows) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    t.flush(&mut events);
    events
}

#[test]
fn json_records_become_inserts_upserts_and_deletes() {
    let mut t = orders_table(false);
    assert_eq!(
        t.add(
            AT,
            &record(0, None, Some(r#"{"id": 1, "note": "a", "extra": true}"#))
        ),
        Ok(true)
    );
    assert_eq!(
        t.add(AT, &record(1, None, None)),
        Ok(false),
        "a tombstone appends nothing"
    );
    let err = t
        .add(AT, &record(2, None, Some(r#"{"id": "one"}"#)))
        .unwrap_err();
    assert!(err.contains("column 'id'"), "{err}");
    let err = t.add(AT, &record(3, None, Some("[1]"))).unwrap_err();
    assert!(err.contains("JSON object"), "{err}");
    let err = t
        .add(AT, &record(4, None, Some(r#"{"note": "no id"}"#)))
        .unwrap_err();
    assert!(err.contains("'id'"), "{err}");
    let err = t
        .add(
            AT,
            &record(5, None, Some(r#"{"id": 2, "at": "yesterday"}"#)),
        )
        .unwrap_err();
    assert!(err.contains("column 'at'"), "{err}");
    let SourceEvent::Changes(b) = &flushed(&mut t)[0] else {
        panic!()
    };
    assert_eq!(
        b.operations,
        vec![Operation::Insert],
        "failed records leave no row"
    );

    let mut t = orders_table(true);
    t.add(
        AT,
        &record(0, Some(r#"{"id": 5}"#), Some(r#"{"id": 999, "note": "x"}"#)),
    )
    .unwrap();
    t.add(AT, &record(1, Some("6"), Some(r#"{"note": "scalar key"}"#)))
        .unwrap();
    t.add(
        AT,
        &record(2, Some("\"7\""), Some(r#"{"note": "json string key"}"#)),
    )
    .unwrap();
    t.add(AT, &record(3, Some(r#"{"id": 5}"#), None)).unwrap();
    let err = t.add(AT, &record(4, None, None)).unwrap_err();
    assert!(err.contains("without a key"), "{err}");
    let SourceEvent::Changes(b) = &flushed(&mut t)[0] else {
        panic!()
    };
    assert_eq!(
        b.operations,
        vec![
            Operation::Upsert,
            Operation::Upsert,
            Operation::Upsert,
            Operation::Delete
        ]
    );
    let ids = b.columns.iter().find(|c| c.name == "id").unwrap();
    assert!(
        matches!(&ids.values, ColumnValues::Int64(v) if v == &vec![5, 6, 7, 5]),
        "the record key is the row's key: {:?}",
        ids.values
    );
}

#[test]
fn inferred_tables_learn_columns_and_announce_new_ones() {
    let mut t = TableRows::new("kafka.t", vec![], vec!["id".into()], true, Format::Json);
    let mut events = Vec::new();
    t.learn(None, Some(br#"{"note": "no key yet"}"#), &mut events);
    assert!(!t.ready(), "a keyed table waits for its key column");
    t.learn(
        Some(b"1"),
        Some(br#"{"id": 1, "n": 1.5, "tags": ["a"], "o": {"x": 1}, "z": null}"#),
        &mut events,
    );
    assert!(
        t.ready() && events.is_empty(),
        "the first columns are the table's, not a change"
    );
    let names: Vec<_> = t
        .fields
        .iter()
        .map(|f| (f.name.as_str(), crate::types::type_name(&f.data_type)))
        .collect();
    assert_eq!(
        names,
        vec![
            ("id", "int64".into()),
            ("n", "float64".into()),
            ("o", "string".into()),
            ("tags", "list<string>".into())
        ]
    );
    t.add(
        AT,
        &record(0, Some("1"), Some(r#"{"id": 1, "n": 2, "o": {"x": 1}}"#)),
    )
    .unwrap();
    t.learn(None, Some(br#"{"id": 2, "z": "now"}"#), &mut events);
    assert!(
        matches!(&events[..], [SourceEvent::Changes(_), SourceEvent::SchemaChange(d)] if d.schema.fields.len() == 5),
        "rows before the change are flushed first"
    );
}

#[test]
fn type_names_parse_as_post_tables_does() {
    use crate::types::{parse_type, type_name};
    for name in [
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
        "boolean",
        "string",
        "date32",
        "decimal(12,2)",
        "timestamp",
        "timestamptz",
        "binary",
        "uuid",
        "time",
        "list<int32>",
    ] {
        assert_eq!(type_name(&parse_type(name).unwrap()), name);
    }
    assert_eq!(type_name(&parse_type("TEXT").unwrap()), "string");
    assert!(parse_type("list<list<int32>>").is_err());
    assert!(parse_type("decimal(40,2)").is_err());
}

/// A one-record batch whose record bytes are `record` (framing and CRC made right).
fn batch_with_record_bytes(record: &[u8]) -> Bytes {
    let mut bytes = batch(&[record_at(0)], Compression::None, false)[..61].to_vec();
    let mut framed = Vec::new();
    framed.push((record.len() as u8) << 1); // zig-zag varint length (short records)
    framed.extend_from_slice(record);
    bytes.extend_from_slice(&framed);
    let len = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut bytes);
    Bytes::from(bytes)
}

fn record_at(offset: i64) -> Record {
    record(offset, None, Some("{}"))
}

#[test]
fn counts_read_from_the_bytes_cannot_make_the_decoder_allocate() {
    // attributes, timestamp delta, offset delta, no key, no value, then a header count of
    // 2^31 - 1 (zig-zag varint): the decoder would reserve that many headers.
    let huge_headers = [0, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f];
    let (batches, error) = decode_batches(batch_with_record_bytes(&huge_headers), 1 << 20);
    assert!(batches.is_empty());
    assert!(error.unwrap().reason.contains("headers do not fit"));
    // A record count of 2^31 - 1 in an uncompressed batch.
    let mut bytes = batch(&[record_at(0)], Compression::None, false).to_vec();
    bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    fix_crc(&mut bytes);
    let (_, error) = decode_batches(Bytes::from(bytes), 1 << 20);
    assert!(error.unwrap().reason.contains("cannot fit"));
}
