//! The primary-key index: key → where the live row with that key is.
//!
//! Keys are hashed with SipHash-1-3 (128-bit output) under a random secret kept per table
//! (`key-secret` in the table's index directory), so nobody outside the process can craft
//! two keys that collide. Each key becomes a [`KeyHash`]: 64 bits to find it and 32 more
//! bits to confirm it, compared on every hit — two distinct keys alias only if all 96 bits
//! match (about n²/2^97 for n honest keys; ~6·10^-12 at a billion keys). The index has two parts:
//! - buffered rows: a hash map `key hash → buffer row`, small and short-lived;
//! - data files: one immutable [`FileKeys`] per file, the file's key hashes sorted, with their
//!   check bits and row positions: 16 bytes per row. They are written to the local
//!   cache (`key_index_file.rs`) so a restart reads them instead of Parquet.
//!
//! A `FileKeys` never changes; a deleted row stays in it and is masked by the file's deleted
//! positions (the same positions its deletion vector holds).
//!
//! In front of the files sits one [`KeyFilter`] over all their keys (1.25-2.5 bytes per key), so a
//! key in no file costs one cache line, not a probe of every file: the files are only searched
//! (newest first) for keys the filter may hold.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use roaring::RoaringTreemap;
use siphasher::sip128::{Hasher128, SipHasher13};

mod filter;
#[cfg(test)]
mod tests;

use filter::KeyFilter;

/// The most buffer slots reserved ahead for the next buffer (see [`KeyIndex::seal_buffer`]).
const MAX_BUFFER_RESERVE: usize = 1 << 20;

/// Where a live row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Row `0` of the table's in-memory buffer (counting every buffered row, live or not).
    Buffer(u32),
    /// Row position `1` of the data file with table-local id `0`.
    File(u32, u32),
}

/// A key's 96-bit fingerprint: `hash` places it, `check` confirms a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash {
    pub hash: u64,
    pub check: u32,
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Already uniform: maps use `hash` as is (see `PreHashed`).
        state.write_u64(self.hash);
    }
}

/// Hashes keys under a table's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHasher {
    secret: [u8; 16],
}

impl KeyHasher {
    pub fn new(secret: [u8; 16]) -> Self {
        KeyHasher { secret }
    }

    /// Identifies the secret in persisted files without revealing it.
    pub fn fingerprint(&self) -> u64 {
        // A fixed input (named before key-index files were): changing it changes every fingerprint.
        let mut h = SipHasher13::new_with_key(&self.secret);
        std::hash::Hasher::write(&mut h, b"moonlink key-index segment");
        h.finish128().h1
    }

    /// Hashes the key columns (`key_columns`, indices into `batch`) of every row.
    pub fn hash_rows(&self, batch: &RecordBatch, key_columns: &[usize]) -> Vec<KeyHash> {
        let mut states = vec![SipHasher13::new_with_key(&self.secret); batch.num_rows()];
        for &index in key_columns {
            feed_column(batch.column(index).as_ref(), &mut states);
        }
        states
            .into_iter()
            .map(|state| {
                let h = state.finish128();
                KeyHash {
                    hash: h.h1,
                    check: h.h2 as u32,
                }
            })
            .collect()
    }
}

/// The sorted key hashes of one data file, with check bits and the row position of each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileKeys {
    pub hashes: Vec<u64>,
    pub checks: Vec<u32>,
    pub positions: Vec<u32>,
}

impl FileKeys {
    /// Builds the keys of a file from the key hash of every row, in file order.
    ///
    /// Sorted by (hash, check, position) in linear time: hashes are uniform, so one counting
    /// pass on their top bits scatters the rows into buckets of about 16, each then sorted
    /// on its own (a comparison sort of a buffer's rows ran under the buffer lock and cost a
    /// few percent of a copy).
    pub fn from_row_hashes(row_hashes: &[KeyHash]) -> FileKeys {
        let n = row_hashes.len();
        // (hash, check, position) packed so one integer comparison orders them.
        let pack = |h: &KeyHash, position: usize| {
            (u128::from(h.hash) << 64) | (u128::from(h.check) << 32) | position as u128
        };
        let bits = (usize::BITS - (n / 16).leading_zeros()).clamp(1, 20);
        let bucket = |h: &KeyHash| (h.hash >> (64 - bits)) as usize;
        // Positions are u32 (a data file holds fewer than 2^32 rows), and so are the bucket starts.
        let mut starts = vec![0u32; (1 << bits) + 1];
        for h in row_hashes {
            starts[bucket(h) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut next = starts.clone();
        let mut packed = vec![0u128; n];
        for (position, h) in row_hashes.iter().enumerate() {
            let slot = &mut next[bucket(h)];
            packed[*slot as usize] = pack(h, position);
            *slot += 1;
        }
        for range in starts.windows(2) {
            packed[range[0] as usize..range[1] as usize].sort_unstable();
        }
        FileKeys {
            hashes: packed.iter().map(|p| (p >> 64) as u64).collect(),
            checks: packed.iter().map(|p| (p >> 32) as u32).collect(),
            positions: packed.iter().map(|&p| p as u32).collect(),
        }
    }

    /// The first index whose hash is not below `hash`. Hashes are uniform, so the value itself
    /// predicts its index; a gallop from there brackets it within a few cache lines, where a
    /// plain binary search over a large keys would take a cache miss per probe.
    fn lower_bound(&self, hash: u64) -> usize {
        let n = self.hashes.len();
        if n == 0 {
            return 0;
        }
        let guess = ((hash as u128 * n as u128) >> 64) as usize;
        // Invariant after either gallop: every index below `lo` holds a smaller hash, and
        // `hi == n` or `hashes[hi] >= hash`; the answer lies in `lo..=hi`.
        let (mut lo, mut hi) = (guess, guess);
        let mut step = 1;
        if self.hashes[guess] < hash {
            lo = guess + 1;
            hi = lo;
            while hi < n && self.hashes[hi] < hash {
                lo = hi + 1;
                hi = guess + 1 + step;
                step *= 2;
            }
            hi = hi.min(n);
        } else {
            while lo > 0 && self.hashes[lo - 1] >= hash {
                hi = lo - 1;
                lo = guess.saturating_sub(step);
                step *= 2;
            }
        }
        lo + self.hashes[lo..hi].partition_point(|&h| h < hash)
    }

    /// Row positions holding `key` (both its hash and its check bits).
    fn positions_of(&self, key: KeyHash) -> impl Iterator<Item = u32> + '_ {
        let start = self.lower_bound(key.hash);
        self.hashes[start..]
            .iter()
            .take_while(move |&&h| h == key.hash)
            .zip(&self.checks[start..])
            .zip(&self.positions[start..])
            .filter(move |((_, &check), _)| check == key.check)
            .map(|(_, &p)| p)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    fn memory_bytes(&self) -> usize {
        self.hashes.capacity() * 8 + self.checks.capacity() * 4 + self.positions.capacity() * 4
    }
}

/// Key hashes are already uniformly distributed: hashing them again (SipHash) would only
/// cost time, so maps keyed by them use the value itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A hash map keyed by key hashes.
pub type KeyHashMap<V> = HashMap<KeyHash, V, std::hash::BuildHasherDefault<PreHashed>>;

/// key hash → location, over the buffer and every data file's keys.
#[derive(Debug, Default)]
pub struct KeyIndex {
    buffer: KeyHashMap<u32>,
    /// (file id, keys), oldest first.
    files: Vec<(u32, FileKeys)>,
    /// Every key of `files` (and possibly stale ones): `false` means in no file.
    filter: KeyFilter,
    /// Deleted positions per file id: committed deletion vectors plus pending deletes.
    dead: HashMap<u32, RoaringTreemap>,
}

impl KeyIndex {
    /// The live location of `hash`, newest first.
    pub fn get(&self, hash: KeyHash) -> Option<Location> {
        if let Some(&row) = self.buffer.get(&hash) {
            return Some(Location::Buffer(row));
        }
        self.get_in_files(hash)
    }

    /// The live location of `hash` in the data files, newest first (the buffer not consulted).
    pub fn get_in_files(&self, hash: KeyHash) -> Option<Location> {
        if !self.filter.may_contain(hash.hash) {
            return None;
        }
        for (file, keys) in self.files.iter().rev() {
            let dead = self.dead.get(file);
            for position in keys.positions_of(hash) {
                if !dead.is_some_and(|d| d.contains(position as u64)) {
                    return Some(Location::File(*file, position));
                }
            }
        }
        None
    }

    /// Whether no data file has keys (a just-created or just-truncated table, or one whose
    /// rows are all still buffered): then only the buffer can hold a key.
    pub fn has_no_files(&self) -> bool {
        self.files.is_empty()
    }

    /// Points `hash` at a buffered row; returns the buffered row it pointed at before, if
    /// any (that row is replaced; the caller marks it dead).
    pub fn insert_buffered(&mut self, hash: KeyHash, row: u32) -> Option<u32> {
        self.buffer.insert(hash, row)
    }

    /// Forgets a location because its row was deleted or replaced.
    pub fn kill(&mut self, hash: KeyHash, location: Location) {
        match location {
            Location::Buffer(_) => {
                self.buffer.remove(&hash);
            }
            Location::File(file, position) => {
                self.dead.entry(file).or_default().insert(position as u64);
            }
        }
    }

    /// Replaces the buffer part with the keys of the file the buffer became.
    pub fn seal_buffer(&mut self, file: u32, keys: FileKeys) {
        // The next buffer likely fills like this one: reserving its slots now saves the
        // rehash at every doubling (bounded, so an idle table does not keep a large map).
        let reserve = self.buffer.len().min(MAX_BUFFER_RESERVE);
        self.buffer = KeyHashMap::with_capacity_and_hasher(reserve, Default::default());
        self.add_file(file, keys, None);
    }

    /// Adds a data file's keys, with the positions its deletion vector masks.
    pub fn add_file(&mut self, file: u32, keys: FileKeys, dead: Option<RoaringTreemap>) {
        if let Some(dead) = dead {
            self.dead.insert(file, dead);
        }
        if keys.is_empty() {
            // No location can point into it.
            return;
        }
        if self.filter.would_overflow(keys.len()) {
            self.files.push((file, keys));
            self.rebuild_filter();
        } else {
            self.filter.extend(&keys.hashes);
            self.files.push((file, keys));
        }
    }

    /// Sizes the filter anew for twice the keys the files hold, dropping keys of files that
    /// are gone. Amortised: it runs once the filter has taken as many keys as it was sized for.
    fn rebuild_filter(&mut self) {
        let keys: usize = self.files.iter().map(|(_, k)| k.len()).sum();
        let mut filter = KeyFilter::with_capacity(keys.saturating_mul(2));
        for (_, file_keys) in &self.files {
            filter.extend(&file_keys.hashes);
        }
        self.filter = filter;
    }

    /// Positions of `file` deleted so far (committed and not), if any.
    pub fn dead_positions(&self, file: u32) -> Option<&RoaringTreemap> {
        self.dead.get(&file)
    }

    /// Replaces the keys of compacted files with the keys of the files they became (one per
    /// partition), each as (file id, keys, positions in it already deleted).
    pub fn replace_files(
        &mut self,
        old: &[u32],
        new: Vec<(u32, FileKeys, Option<RoaringTreemap>)>,
    ) {
        self.files.retain(|(id, _)| !old.contains(id));
        for id in old {
            self.dead.remove(id);
        }
        for (file, keys, dead) in new {
            if !keys.is_empty() {
                self.add_file(file, keys, dead);
            }
        }
    }

    /// Live keys (rows in files and buffer, minus deleted ones).
    pub fn len(&self) -> usize {
        let in_files: usize = self
            .files
            .iter()
            .map(|(file, s)| s.len() - self.dead.get(file).map_or(0, |d| d.len() as usize))
            .sum();
        in_files + self.buffer.len()
    }

    /// Resident bytes of the index, for reporting.
    pub fn memory_bytes(&self) -> usize {
        let files: usize = self.files.iter().map(|(_, s)| s.memory_bytes()).sum();
        let dead: usize = self.dead.values().map(|d| d.serialized_size()).sum();
        let buffer = self.buffer.capacity() * (std::mem::size_of::<(KeyHash, u32)>() + 1);
        files + dead + buffer + self.filter.memory_bytes()
    }
}

/// Feeds one key column into every row's hasher, in a canonical encoding: fixed-width values
/// little-endian, variable-width ones prefixed by their length (so `("ab","c")` and
/// `("a","bc")` differ).
fn feed_column(column: &dyn Array, states: &mut [SipHasher13]) {
    use std::hash::Hasher;
    macro_rules! primitive {
        ($t:ty) => {{
            let values = column.as_primitive::<$t>();
            for (row, state) in states.iter_mut().enumerate() {
                state.write(&values.value(row).to_le_bytes());
            }
        }};
    }
    macro_rules! variable {
        ($values:expr) => {{
            let values = $values;
            for (row, state) in states.iter_mut().enumerate() {
                let v: &[u8] = values.value(row).as_ref();
                state.write(&(v.len() as u64).to_le_bytes());
                state.write(v);
            }
        }};
    }
    match column.data_type() {
        DataType::Int32 => primitive!(Int32Type),
        DataType::Int64 => primitive!(Int64Type),
        DataType::Date32 => primitive!(Date32Type),
        DataType::Timestamp(_, _) => primitive!(TimestampMicrosecondType),
        DataType::Time64(_) => primitive!(Time64MicrosecondType),
        DataType::Decimal128(_, _) => primitive!(Decimal128Type),
        DataType::Float32 => primitive!(Float32Type),
        DataType::Float64 => primitive!(Float64Type),
        DataType::Boolean => {
            let values = column.as_boolean();
            for (row, state) in states.iter_mut().enumerate() {
                state.write(&[values.value(row) as u8]);
            }
        }
        DataType::Utf8 => variable!(column.as_string::<i32>()),
        DataType::Binary => variable!(column.as_binary::<i32>()),
        DataType::FixedSizeBinary(_) => {
            let values = column.as_fixed_size_binary();
            for (row, state) in states.iter_mut().enumerate() {
                state.write(values.value(row));
            }
        }
        // `TableSchema::validate` refuses key columns of any other type.
        other => {
            for state in states.iter_mut() {
                state.write(other.to_string().as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    fn kh(hash: u64) -> KeyHash {
        KeyHash { hash, check: 0 }
    }

    #[test]
    fn composite_keys_hash_by_value_and_order() {
        let batch = RecordBatch::try_from_iter(vec![
            ("a", Arc::new(Int64Array::from(vec![1, 1, 2])) as ArrayRef),
            (
                "b",
                Arc::new(StringArray::from(vec!["x", "y", "x"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let hasher = KeyHasher::new([7; 16]);
        let h = hasher.hash_rows(&batch, &[0, 1]);
        assert_ne!(h[0], h[1]);
        assert_ne!(h[0], h[2]);
        let again = hasher.hash_rows(&batch.slice(2, 1), &[0, 1]);
        assert_eq!(again[0], h[2]);
        assert_eq!(
            hasher.hash_rows(&batch, &[0])[0],
            hasher.hash_rows(&batch, &[0])[1]
        );
        // Another table's secret gives unrelated hashes.
        let other = KeyHasher::new([8; 16]);
        assert_ne!(other.hash_rows(&batch, &[0, 1])[0], h[0]);
        assert_ne!(other.fingerprint(), hasher.fingerprint());
        // Variable-width values are length-prefixed: ("ab","c") is not ("a","bc").
        let split = |a: &str, b: &str| {
            let batch = RecordBatch::try_from_iter(vec![
                ("a", Arc::new(StringArray::from(vec![a])) as ArrayRef),
                ("b", Arc::new(StringArray::from(vec![b])) as ArrayRef),
            ])
            .unwrap();
            hasher.hash_rows(&batch, &[0, 1])[0]
        };
        assert_ne!(split("ab", "c"), split("a", "bc"));
    }

    #[test]
    fn file_keys_are_sorted_by_hash_check_and_position() {
        let mut state = 0x51_7cc1_b727_220au64;
        for n in [0usize, 1, 2, 7, 1000, 70_000] {
            let mut rows: Vec<KeyHash> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    KeyHash {
                        hash: state,
                        check: (state >> 7) as u32,
                    }
                })
                .collect();
            // Equal hashes (deleted rows of a key) and extremes.
            rows.extend([kh(0), kh(u64::MAX), kh(42), kh(42), kh(u64::MAX)]);
            let keys = FileKeys::from_row_hashes(&rows);
            let mut expected: Vec<(KeyHash, u32)> = rows
                .iter()
                .enumerate()
                .map(|(p, &h)| (h, p as u32))
                .collect();
            expected.sort();
            assert_eq!(
                keys.hashes,
                expected.iter().map(|e| e.0.hash).collect::<Vec<_>>()
            );
            assert_eq!(
                keys.checks,
                expected.iter().map(|e| e.0.check).collect::<Vec<_>>()
            );
            assert_eq!(
                keys.positions,
                expected.iter().map(|e| e.1).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn lower_bound_matches_binary_search() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut hashes: Vec<u64> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            })
            .collect();
        hashes.extend([0, 1, u64::MAX, u64::MAX, 42, 42, 42]);
        let keys: Vec<KeyHash> = hashes.iter().map(|&h| kh(h)).collect();
        let keys = FileKeys::from_row_hashes(&keys);
        for probe in hashes.iter().copied().chain([2, 3, u64::MAX - 1, 1 << 63]) {
            let expected = keys.hashes.partition_point(|&h| h < probe);
            assert_eq!(keys.lower_bound(probe), expected, "probe {probe}");
        }
        assert_eq!(keys.positions_of(kh(42)).count(), 3);
        assert_eq!(FileKeys::default().lower_bound(5), 0);
    }

    #[test]
    fn newest_live_location_wins() {
        let mut index = KeyIndex::default();
        index.add_file(0, FileKeys::from_row_hashes(&[kh(7), kh(3), kh(7)]), None);
        // Two rows with hash 7 can only happen if one was deleted; mask position 0.
        index.kill(kh(7), Location::File(0, 0));
        assert_eq!(index.get(kh(7)), Some(Location::File(0, 2)));
        assert_eq!(index.get(kh(3)), Some(Location::File(0, 1)));
        index.kill(kh(3), Location::File(0, 1));
        assert_eq!(index.get(kh(3)), None);
        assert_eq!(index.insert_buffered(kh(3), 0), None);
        assert_eq!(index.get(kh(3)), Some(Location::Buffer(0)));
        index.seal_buffer(1, FileKeys::from_row_hashes(&[kh(3)]));
        assert_eq!(index.get(kh(3)), Some(Location::File(1, 0)));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn keys_sharing_64_hash_bits_stay_distinct() {
        let a = KeyHash { hash: 99, check: 1 };
        let b = KeyHash { hash: 99, check: 2 };
        let mut index = KeyIndex::default();
        index.add_file(0, FileKeys::from_row_hashes(&[a, kh(5)]), None);
        assert_eq!(index.get(a), Some(Location::File(0, 0)));
        assert_eq!(
            index.get(b),
            None,
            "a hash hit with other check bits is another key"
        );
        assert_eq!(index.insert_buffered(b, 0), None);
        assert_eq!(index.get(b), Some(Location::Buffer(0)));
        assert_eq!(index.get(a), Some(Location::File(0, 0)));
    }
}
