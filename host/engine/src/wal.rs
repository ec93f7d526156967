//! The write-ahead log: an accepted batch is on local disk, fsynced, before the caller hears 200.
//!
//! One log per table, split into segments named by the first LSN they hold
//! (`00000000000000000001.wal`). Record layout, little-endian:
//! `len: u32 | crc32(lsn ‖ payload): u32 | lsn: u64 | payload: [u8; len]`, where the payload is
//! one byte per row operation followed by the rows as an Arrow IPC stream.
//!
//! Appends are group-committed: a dedicated thread drains every queued record, writes them, and
//! fsyncs once for the whole group. A segment is deleted once every LSN in it is in a committed
//! Iceberg snapshot; on restart the records past the committed LSN are replayed.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{
    write_message, CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions,
    StreamWriter,
};
use arrow_schema::SchemaRef;
use tokio::sync::oneshot;

use crate::batch::{ChangeBatch, Operation};
use crate::error::{EngineError, Result};

const HEADER_LEN: usize = 16;

/// Serialises a batch into a WAL payload. Done before taking any lock: it is the costly part.
///
/// The rows are a complete Arrow IPC stream (schema message, one record batch, end marker),
/// byte for byte what `StreamWriter` writes, so every record stays readable on its own. Only
/// the schema message is not encoded again for every batch: it is taken from
/// [`encoded_schema`].
pub fn encode_batch(batch: &ChangeBatch) -> Result<Vec<u8>> {
    let rows = batch.rows();
    let mut payload = Vec::with_capacity(batch.num_rows() + rows.get_array_memory_size() + 4096);
    payload.extend_from_slice(&(batch.num_rows() as u32).to_le_bytes());
    payload.extend(batch.operations().iter().map(|op| match op {
        Operation::Insert => 0u8,
        Operation::Upsert => 1,
        Operation::Delete => 2,
    }));
    let schema = rows.schema_ref();
    if schema
        .flattened_fields()
        .iter()
        .any(|f| matches!(f.data_type(), arrow_schema::DataType::Dictionary(..)))
    {
        // Never the case for a table's rows; a stream writer handles dictionaries.
        let mut writer = StreamWriter::try_new(&mut payload, schema)?;
        writer.write(rows)?;
        writer.finish()?;
        drop(writer);
        return Ok(payload);
    }
    let options = IpcWriteOptions::default();
    payload.extend_from_slice(&encoded_schema(schema, &options)?);
    let (dictionaries, message) = IpcDataGenerator::default().encode(
        rows,
        &mut DictionaryTracker::new(false),
        &options,
        &mut CompressionContext::default(),
    )?;
    debug_assert!(dictionaries.is_empty());
    write_message(&mut payload, message, &options)?;
    // End of stream: the continuation marker and a zero length (IPC metadata V5).
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    Ok(payload)
}

/// The IPC schema message of `schema` as a stream starts with it, encoded once per distinct
/// schema (it was ~40% of the cost of encoding a small batch). Keyed by the `Arc` first:
/// batches of one table share theirs (`TableSchema::arrow_schema`).
fn encoded_schema(schema: &SchemaRef, options: &IpcWriteOptions) -> Result<Arc<[u8]>> {
    /// Schemas remembered; a miss only costs an encoding.
    const CACHED: usize = 32;
    static CACHE: Mutex<Vec<(SchemaRef, Arc<[u8]>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let hit = cache
        .iter()
        .rposition(|(s, _)| Arc::ptr_eq(s, schema))
        .or_else(|| cache.iter().rposition(|(s, _)| s == schema));
    if let Some(i) = hit {
        return Ok(cache[i].1.clone());
    }
    let message = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut DictionaryTracker::new(false),
        options,
    );
    let mut bytes = Vec::new();
    write_message(&mut bytes, message, options)?;
    let bytes: Arc<[u8]> = bytes.into();
    if cache.len() >= CACHED {
        cache.remove(0);
    }
    cache.push((schema.clone(), bytes.clone()));
    Ok(bytes)
}

fn decode_batch(payload: &[u8]) -> std::result::Result<ChangeBatch, String> {
    let n =
        u32::from_le_bytes(payload.get(..4).ok_or("short payload")?.try_into().unwrap()) as usize;
    let ops_bytes = payload.get(4..4 + n).ok_or("short payload")?;
    let operations = ops_bytes
        .iter()
        .map(|b| match b {
            0 => Ok(Operation::Insert),
            1 => Ok(Operation::Upsert),
            2 => Ok(Operation::Delete),
            other => Err(format!("unknown operation byte {other}")),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let reader = StreamReader::try_new(&payload[4 + n..], None).map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<std::result::Result<Vec<RecordBatch>, _>>()
        .map_err(|e| e.to_string())?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or("no batch in record")?;
    let rows =
        arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| e.to_string())?;
    if rows.num_rows() != operations.len() {
        return Err("row count does not match operations".into());
    }
    Ok(ChangeBatch::from_parts(operations, rows))
}

/// A record read back from the log.
pub struct WalRecord {
    pub lsn: u64,
    pub batch: ChangeBatch,
}

/// What replay found besides the records.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Corrupt records skipped because the records after them were provably intact.
    pub skipped: usize,
    /// Bytes cut off the end of segments (a write that never completed).
    pub torn_bytes: u64,
}

/// The file operations the log needs. Tests substitute an implementation that fails
/// (`ENOSPC`, `EIO` on fsync, short writes) to check that the log fails safe.
pub trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl SegmentFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len))?;
        Ok(())
    }
}

/// Creates (or empties) a segment file for writing.
pub type SegmentOpener = Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn SegmentFile>> + Send + Sync>;

fn open_real_segment(path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    Ok(Box::new(file))
}

enum Command {
    Append {
        lsn: u64,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Start a new segment whose first LSN will be `next_lsn`.
    Rotate { next_lsn: u64 },
}

/// Handle to one table's log. Appends are ordered by the order of `append` calls.
pub struct Wal {
    dir: PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Wal {
    /// Waits for the writer thread to drain what was queued: a log reopened on the same
    /// directory (a table reopened after a schema change) must never race a queued segment
    /// roll of the old writer, which could truncate the new writer's segment.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// Segments in the directory, oldest first, as (first_lsn, path).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(EngineError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(dir, e))?;
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
        else {
            continue;
        };
        if let Ok(first_lsn) = stem.parse::<u64>() {
            segments.push((first_lsn, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EngineError::io(dir, e))
}

impl Wal {
    /// Opens the log in `dir`, returning the records with an LSN above `after_lsn` (the
    /// committed LSN). See [`Wal::open_with`].
    pub fn open(dir: &Path, after_lsn: u64) -> Result<(Wal, Vec<WalRecord>)> {
        let (wal, records, _) = Wal::open_with(dir, after_lsn, Arc::new(open_real_segment))?;
        Ok((wal, records))
    }

    /// Opens the log, writing new segments through `opener`.
    ///
    /// Replay rules: a record cut short or unreadable at the end of a segment, with no valid
    /// record after it, is a write that never completed (nothing after it was acknowledged) and
    /// is cut off. A corrupt record followed by an intact one that starts exactly where the
    /// corrupt one's header says it ends is skipped (logged as an error). Anything else — a
    /// corrupt record whose framing cannot be trusted with valid records after it — fails the
    /// open: replay never silently drops acknowledged records. New appends go to a fresh
    /// segment, so no LSN is reused.
    pub fn open_with(
        dir: &Path,
        after_lsn: u64,
        opener: SegmentOpener,
    ) -> Result<(Wal, Vec<WalRecord>, ReplayReport)> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let mut records = Vec::new();
        let mut report = ReplayReport::default();
        let mut max_lsn = after_lsn;
        for (_, path) in list_segments(dir)? {
            read_segment(&path, &mut max_lsn, &mut report, |lsn, batch| {
                if lsn > after_lsn {
                    records.push(WalRecord { lsn, batch });
                }
            })?;
        }
        let wal = Wal::start(dir, max_lsn + 1, opener)?;
        Ok((wal, records, report))
    }

    fn start(dir: &Path, next_lsn: u64, opener: SegmentOpener) -> Result<Wal> {
        let (tx, rx) = mpsc::channel();
        let writer = SegmentWriter::create(dir, next_lsn, opener)?;
        let writer = std::thread::Builder::new()
            .name("moonlink-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Queues a record; the returned receiver resolves once it is fsynced.
    pub fn append(&self, lsn: u64, payload: Vec<u8>) -> oneshot::Receiver<Result<()>> {
        let (done, rx) = oneshot::channel();
        let command = Command::Append { lsn, payload, done };
        let refused = match &self.tx {
            Some(tx) => tx.send(command).err().map(|e| e.0),
            None => Some(command),
        };
        if let Some(Command::Append { done, .. }) = refused {
            let _ = done.send(Err(EngineError::Unavailable(
                "write-ahead log writer stopped".into(),
            )));
        }
        rx
    }

    /// Starts a new segment for LSNs from `next_lsn` on, so the previous ones can be deleted
    /// as a unit once committed.
    pub fn rotate(&self, next_lsn: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Rotate { next_lsn });
        }
    }

    /// Deletes the segments whose records are all at or below `committed_lsn`.
    pub fn truncate_through(&self, committed_lsn: u64) -> Result<()> {
        let segments = list_segments(&self.dir)?;
        for pair in segments.windows(2) {
            let (_, path) = &pair[0];
            let (next_first, _) = pair[1];
            if next_first <= committed_lsn + 1 {
                std::fs::remove_file(path).map_err(|e| EngineError::io(path, e))?;
            }
        }
        Ok(())
    }

    /// Removes the log's directory (the table was dropped).
    pub fn destroy(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EngineError::io(dir, e)),
        }
    }
}

/// One record parsed at an offset of a segment.
enum Parsed<'a> {
    Valid {
        lsn: u64,
        payload: &'a [u8],
        end: usize,
    },
    /// The header fits but the checksum does not match; `end` is where the header says the
    /// record ends.
    BadChecksum { end: usize },
    /// The header or the payload runs past the end of the file.
    Truncated,
}

fn parse_record(bytes: &[u8], offset: usize) -> Parsed<'_> {
    let Some(header) = bytes.get(offset..offset + HEADER_LEN) else {
        return Parsed::Truncated;
    };
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let len = le32(&header[0..4]) as usize;
    let crc = le32(&header[4..8]);
    let lsn_bytes = &header[8..16];
    let end = offset + HEADER_LEN + len;
    let Some(payload) = bytes.get(offset + HEADER_LEN..end) else {
        return Parsed::Truncated;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(lsn_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Parsed::BadChecksum { end };
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(lsn_bytes);
    Parsed::Valid {
        lsn: u64::from_le_bytes(lsn),
        payload,
        end,
    }
}

/// The first offset after `from` where a valid record with an LSN above `after_lsn` starts.
/// Only used on damage, so a linear scan is fine; cheap checks run before the checksum.
fn next_valid_record(bytes: &[u8], from: usize, after_lsn: u64) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_LEN - 1)).find(|&offset| {
        let lsn = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap_or([0; 8]));
        lsn > after_lsn
            && matches!(parse_record(bytes, offset), Parsed::Valid { lsn: l, .. } if l == lsn)
    })
}

fn read_segment(
    path: &Path,
    max_lsn: &mut u64,
    report: &mut ReplayReport,
    mut on_record: impl FnMut(u64, ChangeBatch),
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let corrupt = |offset: usize, message: String| EngineError::WalCorrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        message,
    };
    let mut offset = 0;
    let mut last_lsn = 0u64;
    while offset < bytes.len() {
        let (lsn, payload, end) = match parse_record(&bytes, offset) {
            Parsed::Valid { lsn, payload, end } => (lsn, payload, end),
            damaged => {
                let Some(next) = next_valid_record(&bytes, offset + 1, last_lsn) else {
                    // Nothing valid follows: the tail of a write that never completed (a crash
                    // or a failed write mid-record), never acknowledged.
                    tracing::warn!(path = %path.display(), offset, bytes = bytes.len() - offset,
                        "cutting off an incomplete record at the end of a write-ahead log segment");
                    report.torn_bytes += (bytes.len() - offset) as u64;
                    break;
                };
                match damaged {
                    Parsed::BadChecksum { end } if end == next => {
                        tracing::error!(path = %path.display(), offset, after_lsn = last_lsn,
                            "skipping a corrupt write-ahead log record (bad checksum); the records after it are intact");
                        report.skipped += 1;
                        offset = next;
                        continue;
                    }
                    _ => {
                        return Err(corrupt(
                            offset,
                            format!(
                            "a damaged record after LSN {last_lsn} is followed by valid records \
                                 at offset {next}, and its length cannot be trusted; move this \
                                 segment aside to open the table without the records from here on"
                        ),
                        ))
                    }
                }
            }
        };
        if lsn <= last_lsn {
            return Err(corrupt(
                offset,
                format!("LSN {lsn} does not follow LSN {last_lsn}"),
            ));
        }
        let batch = decode_batch(payload).map_err(|message| corrupt(offset, message))?;
        last_lsn = lsn;
        *max_lsn = (*max_lsn).max(lsn);
        on_record(lsn, batch);
        offset = end;
    }
    Ok(())
}

/// The log's writer thread state. After any failed write or fsync the segment is poisoned:
/// its unconfirmed tail is cut back (best effort) and the next append starts a new segment,
/// so a record is never written after bytes of unknown state.
struct SegmentWriter {
    dir: PathBuf,
    path: PathBuf,
    file: Box<dyn SegmentFile>,
    opener: SegmentOpener,
    /// Bytes of the segment known to be on disk (fsynced).
    synced_len: u64,
    /// Bytes written, synced or not.
    written_len: u64,
    poisoned: bool,
}

impl SegmentWriter {
    fn create(dir: &Path, first_lsn: u64, opener: SegmentOpener) -> Result<Self> {
        let path = segment_path(dir, first_lsn);
        let file = opener(&path).map_err(|e| EngineError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            path,
            file,
            opener,
            synced_len: 0,
            written_len: 0,
            poisoned: false,
        })
    }

    fn run(self, rx: mpsc::Receiver<Command>) {
        let mut this = self;
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            let mut waiting = Vec::new();
            let mut result = Ok(());
            for command in group {
                match command {
                    Command::Append { lsn, payload, done } => {
                        if result.is_ok() && this.poisoned {
                            result = this.roll(lsn);
                        }
                        if result.is_ok() {
                            result = this.write_record(lsn, &payload);
                        }
                        waiting.push(done);
                    }
                    Command::Rotate { next_lsn } => {
                        if result.is_ok() && !this.poisoned && this.written_len > 0 {
                            result = this.sync().and_then(|()| this.roll(next_lsn));
                        }
                    }
                }
            }
            if result.is_ok() && !waiting.is_empty() {
                result = this.sync();
            }
            if let Err(e) = &result {
                this.poison(e);
            }
            for done in waiting {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(EngineError::Unavailable(format!(
                        "write-ahead log write failed: {e}"
                    ))),
                });
            }
        }
    }

    /// Continues in a new segment whose first LSN is `next_lsn`.
    fn roll(&mut self, next_lsn: u64) -> Result<()> {
        let next = SegmentWriter::create(&self.dir, next_lsn, self.opener.clone())?;
        *self = next;
        Ok(())
    }

    /// After a failure, nothing more is written to this segment; its unconfirmed bytes are
    /// cut off if possible (replay also cuts an incomplete tail).
    fn poison(&mut self, error: &EngineError) {
        if !self.poisoned {
            tracing::error!(path = %self.path.display(), error = %error,
                "write-ahead log write failed; continuing in a new segment with the next record");
        }
        self.poisoned = true;
        if self.written_len > self.synced_len {
            let cut = self
                .file
                .truncate(self.synced_len)
                .and_then(|()| self.file.sync());
            if cut.is_ok() {
                self.written_len = self.synced_len;
            }
        }
    }

    fn write_record(&mut self, lsn: u64, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            EngineError::Unsupported(format!(
                "a batch of {} bytes is too large for one log record (4 GiB)",
                payload.len()
            ))
        })?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn.to_le_bytes());
        hasher.update(payload);
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&lsn.to_le_bytes());
        // Counted before writing: a failed write leaves bytes of unknown extent to cut off.
        self.written_len += (HEADER_LEN + payload.len()) as u64;
        self.file
            .write_all(&header)
            .and_then(|()| self.file.write_all(payload))
            .map_err(|e| EngineError::io(&self.path, e))
    }

    fn sync(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        self.file
            .sync()
            .map_err(|e| EngineError::io(&self.path, e))?;
        metrics::histogram!("moonlink_wal_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.synced_len = self.written_len;
        Ok(())
    }
}

#[cfg(test)]
#[path = "wal_fault_tests.rs"]
mod fault_tests;

#[cfg(test)]
#[path = "wal_format_tests.rs"]
mod format_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType, TableSchema};
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn batch(values: Vec<i64>) -> ChangeBatch {
        let schema = TableSchema::new(
            vec![ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            }],
            vec![],
        );
        ChangeBatch::from_columns(
            &schema,
            vec![Operation::Insert; values.len()],
            vec![("id".into(), Arc::new(Int64Array::from(values)) as ArrayRef)],
        )
        .unwrap()
    }

    fn ids(records: &[WalRecord]) -> Vec<(u64, usize)> {
        records
            .iter()
            .map(|r| (r.lsn, r.batch.num_rows()))
            .collect()
    }

    #[tokio::test]
    async fn replays_what_was_appended_after_the_committed_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert!(replay.is_empty());
        for lsn in 1..=3 {
            let payload = encode_batch(&batch(vec![lsn as i64; lsn as usize])).unwrap();
            wal.append(lsn, payload).await.unwrap().unwrap();
        }
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(ids(&replay), vec![(2, 2), (3, 3)]);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_off_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(1, encode_batch(&batch(vec![1])).unwrap())
            .await
            .unwrap()
            .unwrap();
        wal.append(2, encode_batch(&batch(vec![2, 2])).unwrap())
            .await
            .unwrap()
            .unwrap();
        drop(wal);
        let (_, seg) = list_segments(dir.path()).unwrap().pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(ids(&replay), vec![(1, 1)]);
    }

    #[tokio::test]
    async fn committed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(1, encode_batch(&batch(vec![1])).unwrap())
            .await
            .unwrap()
            .unwrap();
        wal.rotate(2);
        wal.append(2, encode_batch(&batch(vec![2])).unwrap())
            .await
            .unwrap()
            .unwrap();
        wal.truncate_through(1).unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(ids(&replay), vec![(2, 1)]);
    }
}
