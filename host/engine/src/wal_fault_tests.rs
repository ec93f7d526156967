//! Fault injection for the write-ahead log: seeded failing writes (`ENOSPC`, short writes),
//! failing fsyncs (`EIO`) and bit flips on replay. After every restart, every acknowledged
//! record must be replayed exactly once and no LSN may appear twice.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

use super::*;
use crate::schema::{ColumnSchema, ColumnType, TableSchema};

/// A tiny deterministic generator (xorshift64*), so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A segment file whose writes and fsyncs fail at random, driven by a shared generator.
struct FaultyFile {
    file: File,
    rng: Arc<Mutex<Rng>>,
}

impl SegmentFile for FaultyFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rng = self.rng.lock().unwrap();
        if rng.chance(4) {
            // A short write: part of the bytes land, then the disk is full.
            let part = (rng.next() as usize) % bytes.len().max(1);
            Write::write_all(&mut self.file, &bytes[..part])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Write::write_all(&mut self.file, bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.rng.lock().unwrap().chance(3) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.rng.lock().unwrap().chance(30) {
            return Err(io::Error::from_raw_os_error(5));
        }
        SegmentFile::truncate(&mut self.file, len)
    }
}

fn faulty_opener(rng: Arc<Mutex<Rng>>) -> SegmentOpener {
    Arc::new(move |path: &Path| {
        if rng.lock().unwrap().chance(5) {
            return Err(io::Error::from_raw_os_error(28));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        Ok(Box::new(FaultyFile {
            file,
            rng: rng.clone(),
        }) as Box<dyn SegmentFile>)
    })
}

/// A record whose rows all hold its LSN, so replay can be checked value by value.
fn payload(lsn: u64) -> Vec<u8> {
    let schema = TableSchema::new(
        vec![ColumnSchema {
            name: "v".into(),
            data_type: ColumnType::Int64,
            nullable: false,
        }],
        vec![],
    );
    let rows = 1 + (lsn % 5) as usize;
    let batch = ChangeBatch::from_columns(
        &schema,
        vec![Operation::Insert; rows],
        vec![(
            "v".into(),
            Arc::new(arrow_array::Int64Array::from(vec![lsn as i64; rows])) as _,
        )],
    )
    .unwrap();
    encode_batch(&batch).unwrap()
}

fn check_record(record: &WalRecord) {
    let values = record.batch.rows().column(0).as_primitive::<Int64Type>();
    assert_eq!(values.len(), 1 + (record.lsn % 5) as usize);
    assert!(values.iter().all(|v| v == Some(record.lsn as i64)));
}

/// Replays the directory and checks LSNs are unique and increasing across segments.
fn replay(dir: &Path, opener: SegmentOpener) -> Result<(Wal, BTreeMap<u64, ()>, ReplayReport)> {
    let (wal, records, report) = Wal::open_with(dir, 0, opener)?;
    let mut seen = BTreeMap::new();
    let mut last = 0;
    for record in &records {
        assert!(
            record.lsn > last,
            "LSN {} replayed after {last}",
            record.lsn
        );
        last = record.lsn;
        check_record(record);
        seen.insert(record.lsn, ());
    }
    Ok((wal, seen, report))
}

#[tokio::test]
async fn acknowledged_records_survive_failing_writes_and_fsyncs() {
    for seed in 1..=40u64 {
        let dir = tempfile::tempdir().unwrap();
        let rng = Arc::new(Mutex::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        let mut acked: Vec<u64> = Vec::new();
        let mut next_lsn = 1;
        for _restart in 0..4 {
            let opened = replay(dir.path(), faulty_opener(rng.clone()));
            let (wal, seen, report) = match opened {
                Ok(opened) => opened,
                // Creating the fresh segment can fail (injected ENOSPC): retry like a restart.
                Err(EngineError::Io { .. }) => continue,
                Err(e) => panic!("seed {seed}: replay failed: {e}"),
            };
            assert_eq!(report.skipped, 0, "seed {seed}: no bit flips were injected");
            for lsn in &acked {
                assert!(
                    seen.contains_key(lsn),
                    "seed {seed}: acknowledged LSN {lsn} lost"
                );
            }
            // The table continues after the highest replayed LSN (and its own counter).
            next_lsn = next_lsn.max(seen.keys().last().map_or(1, |l| l + 1));
            for _ in 0..30 {
                let lsn = next_lsn;
                next_lsn += 1;
                let done = wal.append(lsn, payload(lsn)).await.unwrap();
                if done.is_ok() {
                    acked.push(lsn);
                }
                if rng.lock().unwrap().chance(10) {
                    wal.rotate(next_lsn);
                }
            }
            drop(wal);
        }
        let (_, seen, _) = replay(dir.path(), Arc::new(open_real_segment)).unwrap();
        for lsn in &acked {
            assert!(
                seen.contains_key(lsn),
                "seed {seed}: acknowledged LSN {lsn} lost at the end"
            );
        }
    }
}

#[tokio::test]
async fn a_bit_flip_loses_at_most_its_own_record_or_fails_loudly() {
    for seed in 1..=200u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let (wal, _) = Wal::open(dir.path(), 0).unwrap();
        let count = 12;
        for lsn in 1..=count {
            wal.append(lsn, payload(lsn)).await.unwrap().unwrap();
            if lsn == count / 2 {
                wal.rotate(lsn + 1);
            }
        }
        drop(wal);
        let segments: Vec<_> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .filter(|(_, p)| std::fs::metadata(p).unwrap().len() > 0)
            .collect();
        let (_, victim) = &segments[(rng.next() as usize) % segments.len()];
        let mut bytes = std::fs::read(victim).unwrap();
        let at = (rng.next() as usize) % bytes.len();
        bytes[at] ^= 1 << (rng.next() % 8);
        std::fs::write(victim, &bytes).unwrap();
        match replay(dir.path(), Arc::new(open_real_segment)) {
            Ok((_, seen, report)) => {
                let lost = (1..=count).filter(|l| !seen.contains_key(l)).count();
                assert!(
                    lost <= 1,
                    "seed {seed}: a flip at byte {at} lost {lost} records"
                );
                if lost == 1 {
                    assert!(
                        report.skipped == 1 || report.torn_bytes > 0,
                        "seed {seed}: a record vanished without a report"
                    );
                }
            }
            Err(EngineError::WalCorrupt { .. }) => {}
            Err(e) => panic!("seed {seed}: unexpected error {e}"),
        }
    }
}
