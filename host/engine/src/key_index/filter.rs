//! A split-block Bloom filter over the key hashes of a table's data files, so that a key in
//! no file (every row of an initial copy, most CDC inserts) costs one cache line instead of a
//! probe of every file's sorted keys.
//!
//! Each key sets one bit in each of the 8 words of one 256-bit block. The block comes from
//! the high bits of the (already uniform) key hash, so inserting a file's keys, which are
//! sorted by hash, walks the blocks in order; the bits come from the low 32 bits.
//!
//! Keys are never removed: keys of deleted rows and of files compacted away stay set until the
//! next rebuild, and only make some absent keys probe the files (a false positive never gives
//! a wrong answer; a false negative would, and cannot happen: every file's keys are inserted).

/// Bits reserved per key of capacity. The owner sizes the filter for twice the keys it holds,
/// so it spends 10-20 bits (1.25-2.5 bytes) per key; the false-positive rate is ~1% when full
/// and ~0.1% just after a rebuild.
const BITS_PER_KEY: usize = 10;
/// The smallest capacity, in keys (a small table's filter: 320 bytes).
const MIN_CAPACITY: usize = 256;
/// One odd multiplier per word of a block, picking that word's bit from the key.
const SALTS: [u32; 8] = [
    0x9e37_79b1,
    0x85eb_ca77,
    0xc2b2_ae3d,
    0x27d4_eb2f,
    0x1656_67b1,
    0xd3a2_646d,
    0xfd70_46c5,
    0xb55a_4f09,
];

/// Possibly-present key hashes: `false` from [`KeyFilter::may_contain`] is certain.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    blocks: Vec<[u32; 8]>,
    /// Keys it was sized for; past this many insertions the owner rebuilds it.
    capacity: usize,
    /// Keys inserted since it was built, stale ones included.
    inserted: usize,
}

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter::with_capacity(0)
    }
}

impl KeyFilter {
    /// An empty filter sized for `keys` keys (at least [`MIN_CAPACITY`]).
    pub fn with_capacity(keys: usize) -> Self {
        let capacity = keys.max(MIN_CAPACITY);
        let blocks = (capacity * BITS_PER_KEY).div_ceil(256);
        KeyFilter {
            blocks: vec![[0; 8]; blocks],
            capacity,
            inserted: 0,
        }
    }

    fn block(&self, hash: u64) -> usize {
        ((hash as u128 * self.blocks.len() as u128) >> 64) as usize
    }

    fn mask(hash: u64) -> [u32; 8] {
        let low = hash as u32;
        SALTS.map(|salt| 1u32 << (low.wrapping_mul(salt) >> 27))
    }

    /// Adds a key hash.
    pub fn insert(&mut self, hash: u64) {
        let block = self.block(hash);
        let mask = Self::mask(hash);
        for (word, bit) in self.blocks[block].iter_mut().zip(mask) {
            *word |= bit;
        }
        self.inserted += 1;
    }

    /// Adds many key hashes (fastest sorted: the blocks are then visited in order).
    pub fn extend(&mut self, hashes: &[u64]) {
        for &hash in hashes {
            self.insert(hash);
        }
    }

    /// Whether `hash` may have been inserted (`false`: it certainly was not).
    pub fn may_contain(&self, hash: u64) -> bool {
        let block = &self.blocks[self.block(hash)];
        let mask = Self::mask(hash);
        block.iter().zip(mask).all(|(word, bit)| word & bit != 0)
    }

    /// Whether inserting `more` keys would pass the capacity it was sized for.
    pub fn would_overflow(&self, more: usize) -> bool {
        self.inserted.saturating_add(more) > self.capacity
    }

    /// Resident bytes.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn inserted_keys_are_always_found_and_absent_ones_rarely() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let keys: Vec<u64> = (0..100_000).map(|_| xorshift(&mut state)).collect();
        let mut filter = KeyFilter::with_capacity(keys.len());
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        filter.extend(&sorted);
        assert!(keys.iter().all(|&k| filter.may_contain(k)));
        let false_positives = (0..100_000)
            .filter(|_| filter.may_contain(xorshift(&mut state)))
            .count();
        // ~1% expected at capacity; 2.5% would mean the bits are badly spread.
        assert!(false_positives < 2_500, "{false_positives} false positives");
        assert!(!filter.would_overflow(0));
        assert!(filter.would_overflow(1));
        assert!(!KeyFilter::default().may_contain(42));
    }
}
