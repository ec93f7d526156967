//! The key index over many files against a model: absent, present, dead and re-inserted keys,
//! after compaction's `replace_files` and after a restart from key-index files.

use std::collections::HashMap;

use roaring::RoaringTreemap;

use super::{FileKeys, KeyHash, KeyIndex, Location};
use crate::key_index::KeyHasher;
use crate::key_index_file::{key_index_file_path, read_key_index_file, write_key_index_file};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(n: u64) -> KeyHash {
    // Spread like real key hashes; `check` ties each hash to one key.
    let hash = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5851_f42d_4c95_7f2d;
    KeyHash {
        hash,
        check: n as u32,
    }
}

/// Index and model (key → live location) built from `files` files of `per_file` rows: each
/// file holds mostly new keys and some keys of earlier files (whose old row is killed first,
/// as an upsert does), and some rows are deleted after.
fn build(files: u32, per_file: u64, rng: &mut Rng) -> (KeyIndex, HashMap<KeyHash, Location>, u64) {
    let mut index = KeyIndex::default();
    let mut model: HashMap<KeyHash, Location> = HashMap::new();
    let mut next_key = 0u64;
    for file in 0..files {
        let mut rows = Vec::new();
        for _ in 0..per_file {
            let k = if next_key > 0 && rng.next().is_multiple_of(5) {
                key(rng.next() % next_key)
            } else {
                next_key += 1;
                key(next_key - 1)
            };
            if rows.contains(&k) {
                continue;
            }
            if let Some(old) = model.remove(&k) {
                index.kill(k, old);
            }
            model.insert(k, Location::File(file, rows.len() as u32));
            rows.push(k);
        }
        index.add_file(file, FileKeys::from_row_hashes(&rows), None);
        // Delete a few rows of this or earlier files.
        for _ in 0..per_file / 10 {
            let k = key(rng.next() % next_key);
            if let Some(old) = model.remove(&k) {
                index.kill(k, old);
            }
        }
    }
    (index, model, next_key)
}

fn check(index: &KeyIndex, model: &HashMap<KeyHash, Location>, keys: u64) {
    for n in 0..keys {
        let k = key(n);
        assert_eq!(index.get(k), model.get(&k).copied(), "key {n}");
    }
    // Keys never written, and a written hash with other check bits, are absent.
    for n in keys..keys + 20_000 {
        assert_eq!(index.get(key(n)), None, "absent key {n}");
    }
    let k = key(1);
    let other = KeyHash {
        hash: k.hash,
        check: k.check ^ 1,
    };
    assert_eq!(index.get(other), None);
    assert_eq!(index.len(), model.len());
}

#[test]
fn many_files_agree_with_the_model() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // 200 files: the filter is rebuilt many times along the way.
    let (index, model, keys) = build(200, 300, &mut rng);
    check(&index, &model, keys);
}

#[test]
fn compaction_and_restart_keep_every_answer() {
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    let (mut index, mut model, keys) = build(60, 400, &mut rng);
    // Compaction: files 0..40 become one file 100 of their live rows, and one empty file.
    let old: Vec<u32> = (0..40).collect();
    let mut rows = Vec::new();
    for (k, location) in model.iter_mut() {
        if let Location::File(file, _) = *location {
            if file < 40 {
                *location = Location::File(100, rows.len() as u32);
                rows.push(*k);
            }
        }
    }
    let mut dead_after = RoaringTreemap::new();
    // One row deleted while the compaction ran.
    if let Some(k) = rows.first().copied() {
        dead_after.insert(0);
        model.remove(&k);
    }
    index.replace_files(
        &old,
        vec![
            (100, FileKeys::from_row_hashes(&rows), Some(dead_after)),
            (101, FileKeys::default(), None),
        ],
    );
    check(&index, &model, keys);

    // Restart: every file's keys written to and read from key-index files, with its
    // deleted positions, into a fresh index.
    let dir = tempfile::tempdir().unwrap();
    let hasher = KeyHasher::new([3; 16]);
    let mut restarted = KeyIndex::default();
    for (file, keys) in &index.files {
        let path = key_index_file_path(dir.path(), &format!("/w/data/{file}.parquet"));
        write_key_index_file(&path, keys, &hasher).unwrap();
        let read = read_key_index_file(&path, &hasher).unwrap();
        restarted.add_file(*file, read, index.dead_positions(*file).cloned());
    }
    check(&restarted, &model, keys);
}

#[test]
fn buffered_keys_shadow_files_and_seal_into_one() {
    let mut index = KeyIndex::default();
    assert!(index.has_no_files());
    assert_eq!(index.insert_buffered(key(1), 0), None);
    assert_eq!(index.insert_buffered(key(1), 1), Some(0));
    assert_eq!(index.get(key(1)), Some(Location::Buffer(1)));
    index.seal_buffer(0, FileKeys::from_row_hashes(&[key(9), key(1)]));
    assert!(!index.has_no_files());
    assert_eq!(index.get(key(1)), Some(Location::File(0, 1)));
    assert_eq!(index.get_in_files(key(9)), Some(Location::File(0, 0)));
    assert_eq!(index.get(key(2)), None);
    // An empty file holds nothing any location could point at.
    let mut empty = KeyIndex::default();
    empty.seal_buffer(0, FileKeys::default());
    assert!(empty.has_no_files());
}

/// What the filter saves a key in no file, printed (no assertion on time): `cargo test -p
/// moonlink-engine --lib absent_key_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn absent_key_cost() {
    for files in [1u32, 10, 100] {
        let mut index = KeyIndex::default();
        let per_file = 2_000_000 / u64::from(files);
        for file in 0..files {
            let rows: Vec<KeyHash> = (0..per_file)
                .map(|n| key(u64::from(file) * per_file + n))
                .collect();
            index.add_file(file, FileKeys::from_row_hashes(&rows), None);
        }
        let absent: Vec<KeyHash> = (0..1_000_000).map(|n| key(10_000_000 + n)).collect();
        let started = std::time::Instant::now();
        let found = absent.iter().filter(|&&k| index.get(k).is_some()).count();
        let with_filter = started.elapsed();
        // The same lookups probing every file, as before the filter.
        let started = std::time::Instant::now();
        let probed = absent
            .iter()
            .filter(|&&k| {
                index
                    .files
                    .iter()
                    .rev()
                    .any(|(_, keys)| keys.positions_of(k).next().is_some())
            })
            .count();
        let every_file = started.elapsed();
        assert_eq!((found, probed), (0, 0));
        eprintln!(
            "{files} files of 2M keys: absent key {:.0} ns with the filter, {:.0} ns probing every file",
            with_filter.as_nanos() as f64 / 1e6,
            every_file.as_nanos() as f64 / 1e6
        );
    }
}
