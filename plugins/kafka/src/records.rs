//! Record batches (magic v2) out of a Fetch response: framing, the five compressions, control
//! batches. Batch and record fields are decoded by `kafka-protocol`; the framing around it is
//! checked here first so that hostile bytes cannot make it allocate or panic: a batch's length
//! must fit the buffer, its record count must fit its (decompressed) bytes, and decompression
//! stops at a limit.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

/// Bytes before a batch's records: base offset (8), length (4), leader epoch (4), magic (1),
/// crc (4), attributes (2), last offset delta (4), timestamps (16), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
const BATCH_HEADER: usize = 61;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length, header count (one byte each).
const MIN_RECORD: usize = 7;

/// One record batch of a partition.
#[derive(Debug)]
pub struct Batch {
    /// The first offset the batch covers.
    pub base_offset: i64,
    /// The offset after the batch (records removed by compaction still count).
    pub next_offset: i64,
    /// A transaction marker batch: no user records.
    pub control: bool,
    /// The records, in offset order (empty for control batches).
    pub records: Vec<Record>,
}

/// A batch that cannot be decoded, and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchError {
    /// The batch's base offset.
    pub offset: i64,
    /// Why.
    pub reason: String,
}

/// Decodes the complete batches in `data` (a partition's `records` field). A truncated batch
/// at the end (the broker cuts at its size limit) is left out, as the protocol allows.
/// `max_batch_bytes` bounds a batch's decompressed size. Batches decoded before an error are
/// returned with it.
pub fn decode_batches(mut data: Bytes, max_batch_bytes: usize) -> (Vec<Batch>, Option<BatchError>) {
    let mut batches = Vec::new();
    while data.remaining() >= 12 {
        let base_offset = i64::from_be_bytes(data[0..8].try_into().unwrap_or_default());
        let length = i32::from_be_bytes(data[8..12].try_into().unwrap_or_default());
        let fail = |reason: String| BatchError {
            offset: base_offset,
            reason,
        };
        if length < 0 {
            return (
                batches,
                Some(fail(format!("negative batch length {length}"))),
            );
        }
        let total = 12 + length as usize;
        if total > data.remaining() {
            break; // partial batch at the end of the response
        }
        let mut one = data.split_to(total);
        match decode_batch(&mut one, base_offset, max_batch_bytes) {
            Ok(batch) => batches.push(batch),
            Err(reason) => return (batches, Some(fail(reason))),
        }
    }
    (batches, None)
}

fn decode_batch(buf: &mut Bytes, base_offset: i64, max_bytes: usize) -> Result<Batch, String> {
    if buf.len() < BATCH_HEADER {
        return Err(format!(
            "batch of {} bytes is shorter than its header",
            buf.len()
        ));
    }
    let magic = buf[16];
    if magic != 2 {
        return Err(format!(
            "record batch format v{magic} is not supported (only v2, Kafka 0.11 and later)"
        ));
    }
    let attributes = i16::from_be_bytes([buf[21], buf[22]]);
    let last_delta = i32::from_be_bytes([buf[23], buf[24], buf[25], buf[26]]);
    let count = i32::from_be_bytes([buf[57], buf[58], buf[59], buf[60]]);
    if count < 0 || last_delta < 0 {
        return Err(format!(
            "bad record count {count} or offset delta {last_delta}"
        ));
    }
    let control = attributes & (1 << 5) != 0;
    let next_offset = base_offset
        .checked_add(last_delta as i64 + 1)
        .ok_or_else(|| "offset overflows".to_string())?;
    let count = count as usize;
    let decompress = |data: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let out = decompress(data, compression, max_bytes).map_err(anyhow::Error::msg)?;
        check_records(&out, count).map_err(anyhow::Error::msg)?;
        Ok(out)
    };
    let set = RecordBatchDecoder::decode_with_custom_compression(buf, Some(decompress))
        .map_err(|e| format!("{e:#}"))?;
    if buf.has_remaining() {
        return Err("bytes after the batch's records".into());
    }
    Ok(Batch {
        base_offset,
        next_offset,
        control,
        records: if control { Vec::new() } else { set.records },
    })
}

/// Walks `count` records' framing before the protocol crate decodes them: every length must
/// fit in its record, so no count read from the bytes can make the decoder reserve more than
/// the bytes could hold.
fn check_records(mut data: &[u8], count: usize) -> Result<(), String> {
    if count.saturating_mul(MIN_RECORD) > data.len() {
        return Err(format!(
            "{count} records cannot fit in {} bytes",
            data.len()
        ));
    }
    for i in 0..count {
        let bad = |what: &str| format!("record {i} of the batch: {what}");
        let size = varint(&mut data).ok_or_else(|| bad("bad length"))?;
        if size < 0 || size as usize > data.len() {
            return Err(bad("length past the end of the batch"));
        }
        let (mut record, rest) = data.split_at(size as usize);
        data = rest;
        if record.is_empty() {
            return Err(bad("empty"));
        }
        record = &record[1..]; // attributes
        skip_varlong(&mut record).ok_or_else(|| bad("bad timestamp"))?;
        varint(&mut record).ok_or_else(|| bad("bad offset delta"))?;
        for what in ["key", "value"] {
            let len = varint(&mut record).ok_or_else(|| bad(what))?;
            if len < -1 || len > record.len() as i64 {
                return Err(bad(&format!("{what} length {len} does not fit")));
            }
            record = &record[len.max(0) as usize..];
        }
        let headers = varint(&mut record).ok_or_else(|| bad("bad header count"))?;
        if headers < 0 || (headers as usize).saturating_mul(2) > record.len() {
            return Err(bad(&format!("{headers} headers do not fit")));
        }
    }
    Ok(())
}

/// A zig-zag varint as the protocol crate reads it (at most 5 bytes, then taken as it is),
/// advancing `data`: the checks above must see the numbers its decoder will see.
fn varint(data: &mut &[u8]) -> Option<i64> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u32::from(byte & 0x7f) << (i * 7);
        if byte < 0x80 {
            break;
        }
    }
    Some((((value >> 1) as i32) ^ -((value & 1) as i32)) as i64)
}

/// Skips a zig-zag varlong (at most 10 bytes, as the protocol crate reads it).
fn skip_varlong(data: &mut &[u8]) -> Option<()> {
    for _ in 0..10 {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        if byte < 0x80 {
            break;
        }
    }
    Some(())
}

/// Decompresses one batch's records with pure-Rust codecs, at most `limit` bytes.
pub fn decompress(data: &[u8], compression: Compression, limit: usize) -> Result<Bytes, String> {
    let too_big = || format!("records decompress to more than {limit} bytes");
    let read_all = |mut reader: Box<dyn Read + '_>, name: &str| -> Result<Bytes, String> {
        let mut out = Vec::new();
        (&mut reader)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("{name}: {e}"))?;
        if out.len() > limit {
            return Err(too_big());
        }
        Ok(Bytes::from(out))
    };
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(data)),
        Compression::Gzip => read_all(Box::new(flate2::read::MultiGzDecoder::new(data)), "gzip"),
        Compression::Lz4 => read_all(Box::new(lz4_flex::frame::FrameDecoder::new(data)), "lz4"),
        Compression::Zstd => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| format!("zstd: {e}"))?;
            read_all(Box::new(decoder), "zstd")
        }
        Compression::Snappy => snappy(data, limit).map(Bytes::from),
    }
}

/// The Java client frames snappy as xerial's stream (magic, then length-prefixed blocks);
/// librdkafka sends one raw block, and reads both.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
        if out.len().saturating_add(len) > limit {
            return Err(format!("records decompress to more than {limit} bytes"));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if data.len() >= 16 && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("snappy: truncated xerial block".into());
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                return Err("snappy: truncated xerial block".into());
            }
            raw(&rest[..len], &mut out)?;
            rest = &rest[len..];
        }
    } else {
        raw(data, &mut out)?;
    }
    Ok(out)
}
