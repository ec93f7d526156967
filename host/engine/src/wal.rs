//! The write-ahead log: an accepted batch is on local disk, fsynced, before the caller hears 200.
//!
//! One log per table, split into segments named by the first LSN they hold
//! (`00000000000000000001.wal`). Record layout, little-endian:
//! `len: u32 | crc32(lsn ‖ payload): u32 | lsn: u64 | payload: [u8; len]`, where the payload is
//! one byte per row operation followed by the rows as an Arrow IPC stream.
//!
//! Appends are group-committed: a dedicated thread drains every queued record, writes them, and
//! fsyncs once for the whole group. A segment is deleted once every LSN in it is in a committed
//! Iceberg snapshot; on restart the records past the committed checkpoint are replayed.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use tokio::sync::oneshot;

use crate::batch::{ChangeBatch, Operation};
use crate::error::{EngineError, Result};

const HEADER_LEN: usize = 16;

/// Serialises a batch into a WAL payload. Done before taking any lock: it is the costly part.
pub fn encode_batch(batch: &ChangeBatch) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(batch.num_rows() + batch.rows().get_array_memory_size());
    payload.extend_from_slice(&(batch.num_rows() as u32).to_le_bytes());
    payload.extend(batch.operations().iter().map(|op| match op {
        Operation::Insert => 0u8,
        Operation::Upsert => 1,
        Operation::Delete => 2,
    }));
    let mut writer = StreamWriter::try_new(&mut payload, batch.rows().schema_ref())?;
    writer.write(batch.rows())?;
    writer.finish()?;
    drop(writer);
    Ok(payload)
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
    tx: mpsc::Sender<Command>,
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
    /// committed checkpoint). A torn record at the end of the newest segment, left by a crash
    /// mid-write, is cut off; new appends go to a fresh segment starting at `next_lsn`.
    pub fn open(dir: &Path, after_lsn: u64) -> Result<(Wal, Vec<WalRecord>)> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let mut records = Vec::new();
        let mut max_lsn = after_lsn;
        for (_, path) in list_segments(dir)? {
            read_segment(&path, |lsn, batch| {
                max_lsn = max_lsn.max(lsn);
                if lsn > after_lsn {
                    records.push(WalRecord { lsn, batch });
                }
            })?;
        }
        let next_lsn = max_lsn + 1;
        let wal = Wal::start(dir, next_lsn)?;
        Ok((wal, records))
    }

    fn start(dir: &Path, next_lsn: u64) -> Result<Wal> {
        let (tx, rx) = mpsc::channel();
        let writer = SegmentWriter::create(dir, next_lsn)?;
        std::thread::Builder::new()
            .name("moonlink-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            tx,
        })
    }

    /// Queues a record; the returned receiver resolves once it is fsynced.
    pub fn append(&self, lsn: u64, payload: Vec<u8>) -> oneshot::Receiver<Result<()>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Command::Append { done, .. })) =
            self.tx.send(Command::Append { lsn, payload, done })
        {
            let _ = done.send(Err(EngineError::Unavailable(
                "write-ahead log writer stopped".into(),
            )));
        }
        rx
    }

    /// Starts a new segment for LSNs from `next_lsn` on, so the previous ones can be deleted
    /// as a unit once committed.
    pub fn rotate(&self, next_lsn: u64) {
        let _ = self.tx.send(Command::Rotate { next_lsn });
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

fn read_segment(path: &Path, mut on_record: impl FnMut(u64, ChangeBatch)) -> Result<()> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    loop {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(EngineError::io(path, e)),
        }
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as u64;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
        let lsn = u64::from_le_bytes(header[8..16].try_into().unwrap());
        if offset + HEADER_LEN as u64 + len > file_len {
            tracing::warn!(path = %path.display(), offset, "cutting off a torn record at the end of the write-ahead log");
            break;
        }
        let mut payload = vec![0u8; len as usize];
        reader
            .read_exact(&mut payload)
            .map_err(|e| EngineError::io(path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            // Only a crash mid-write produces this, and only at the end: nothing after it was
            // acknowledged, because acknowledgement waits for the fsync of the whole group.
            tracing::warn!(path = %path.display(), offset, "cutting off a record with a bad checksum in the write-ahead log");
            break;
        }
        let batch = decode_batch(&payload).map_err(|message| EngineError::WalCorrupt {
            path: path.to_path_buf(),
            offset,
            message,
        })?;
        on_record(lsn, batch);
        offset += HEADER_LEN as u64 + len;
    }
    Ok(())
}

struct SegmentWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    empty: bool,
}

impl SegmentWriter {
    fn create(dir: &Path, first_lsn: u64) -> Result<Self> {
        let path = segment_path(dir, first_lsn);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            path,
            file,
            empty: true,
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
                        if result.is_ok() {
                            result = this.write_record(lsn, &payload);
                        }
                        waiting.push(done);
                    }
                    Command::Rotate { next_lsn } => {
                        if result.is_ok() && !this.empty {
                            result = this.sync();
                            if result.is_ok() {
                                match SegmentWriter::create(&this.dir, next_lsn) {
                                    Ok(next) => this = next,
                                    Err(e) => result = Err(e),
                                }
                            }
                        }
                    }
                }
            }
            if result.is_ok() && !waiting.is_empty() {
                result = this.sync();
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

    fn write_record(&mut self, lsn: u64, payload: &[u8]) -> Result<()> {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn.to_le_bytes());
        hasher.update(payload);
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&lsn.to_le_bytes());
        self.file
            .write_all(&header)
            .and_then(|()| self.file.write_all(payload))
            .map_err(|e| EngineError::io(&self.path, e))?;
        self.empty = false;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| EngineError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType, TableSchema};
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn batch(values: Vec<i64>) -> ChangeBatch {
        let schema = TableSchema {
            columns: vec![ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            }],
            primary_key: vec![],
            field_ids: Vec::new(),
            element_ids: Vec::new(),
        };
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
    async fn replays_what_was_appended_after_the_checkpoint() {
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
