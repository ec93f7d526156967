//! A size-bounded local cache of warehouse files for object-store warehouses.
//!
//! The design keeps buffers, index and a cache on local NVMe and sends only read-optimized
//! files to the store: every file the engine writes is also kept here, and reads (compaction
//! merges, key-index rebuilds, deletion-vector merges) are served locally instead of
//! downloading what was just uploaded. Least recently used files are evicted past the budget.
//!
//! Invariant: a cached file is a byte-exact copy of an immutable warehouse object (the engine
//! never rewrites a location), so a hit never needs revalidation. Files are written to a
//! temporary name and renamed, so a crash leaves either a whole copy or none.

use std::collections::HashMap;
use std::hash::Hasher;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// Read counters of a warehouse: what came from the store and what the cache saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Bytes downloaded from the object store.
    pub store_bytes: u64,
    /// Bytes served from the local cache instead.
    pub cache_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    store: AtomicU64,
    cache: AtomicU64,
}

impl ReadCounters {
    pub(crate) fn count_store(&self, n: usize) {
        self.store.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_cache(&self, n: usize) {
        self.cache.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReadStats {
        ReadStats {
            store_bytes: self.store.load(Ordering::Relaxed),
            cache_bytes: self.cache.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// File name → (size, last use).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    clock: u64,
}

/// The cache directory and its LRU bookkeeping.
#[derive(Debug)]
pub(crate) struct FileCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

/// A stable file name for a location (SipHash-1-3/128 with a fixed key: names only need to
/// be collision-free among our own locations, not secret).
fn file_name(location: &str) -> String {
    let mut hasher = siphasher::sip128::SipHasher13::new();
    hasher.write(location.as_bytes());
    format!(
        "{:032x}",
        siphasher::sip128::Hasher128::finish128(&hasher).as_u128()
    )
}

impl FileCache {
    /// Opens `dir` (created if missing), adopting the files a previous run left in it.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<FileCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if name.ends_with(".tmp") || !meta.is_file() {
                // A copy a crash interrupted.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            found.push((modified, name, meta.len()));
        }
        found.sort();
        let mut state = State::default();
        for (_, name, size) in found {
            state.clock += 1;
            state.total += size;
            state.entries.insert(name, (size, state.clock));
        }
        let cache = FileCache {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(state),
        };
        cache.evict();
        Ok(cache)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self, name: &str) -> bool {
        let mut state = self.state();
        state.clock += 1;
        let clock = state.clock;
        match state.entries.get_mut(name) {
            Some(entry) => {
                entry.1 = clock;
                true
            }
            None => false,
        }
    }

    /// The whole cached file, if present.
    pub(crate) fn get(&self, location: &str) -> Option<Bytes> {
        let name = file_name(location);
        if !self.touch(&name) {
            return None;
        }
        match std::fs::read(self.dir.join(&name)) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(_) => {
                self.forget(&name);
                None
            }
        }
    }

    /// A byte range of the cached file, if present and long enough.
    pub(crate) fn get_range(&self, location: &str, range: Range<u64>) -> Option<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        let name = file_name(location);
        if !self.touch(&name) {
            return None;
        }
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = std::fs::File::open(self.dir.join(&name))?;
            file.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0; range.end.saturating_sub(range.start) as usize];
            file.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().ok().map(Bytes::from)
    }

    /// Keeps a copy of `bytes` (the whole object at `location`). Best effort: a full local
    /// disk only costs future downloads.
    pub(crate) fn insert(&self, location: &str, bytes: &[u8]) {
        let size = bytes.len() as u64;
        if size > self.max_bytes / 2 {
            return;
        }
        let name = file_name(location);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        if std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        {
            let mut state = self.state();
            state.clock += 1;
            let clock = state.clock;
            if let Some((old, _)) = state.entries.insert(name, (size, clock)) {
                state.total -= old;
            }
            state.total += size;
        }
        self.evict();
    }

    /// Drops the copy of a deleted object.
    pub(crate) fn remove(&self, location: &str) {
        let name = file_name(location);
        self.forget(&name);
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    fn forget(&self, name: &str) {
        let mut state = self.state();
        if let Some((size, _)) = state.entries.remove(name) {
            state.total -= size;
        }
    }

    /// Removes least recently used files until the cache fits its budget.
    fn evict(&self) {
        let victims = {
            let mut state = self.state();
            let mut victims = Vec::new();
            if state.total > self.max_bytes {
                let mut by_age: Vec<(u64, String, u64)> = state
                    .entries
                    .iter()
                    .map(|(name, (size, used))| (*used, name.clone(), *size))
                    .collect();
                by_age.sort();
                for (_, name, size) in by_age {
                    if state.total <= self.max_bytes {
                        break;
                    }
                    state.entries.remove(&name);
                    state.total -= size;
                    victims.push(name);
                }
            }
            victims
        };
        for name in victims {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.state().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_ranges_eviction_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::open(dir.path(), 100).unwrap();
        cache.insert("s3://b/t/data/a.parquet", &[1; 40]);
        cache.insert("s3://b/t/data/b.parquet", &[2; 40]);
        assert_eq!(cache.get("s3://b/t/data/a.parquet").unwrap(), vec![1; 40]);
        assert_eq!(
            cache.get_range("s3://b/t/data/b.parquet", 10..15).unwrap(),
            vec![2; 5]
        );
        assert!(cache.get_range("s3://b/t/data/b.parquet", 30..50).is_none());
        // a was used after b was inserted... then b was read: b is newest, a next.
        cache.insert("s3://b/t/data/c.parquet", &[3; 40]);
        assert!(cache.total() <= 100);
        assert!(
            cache.get("s3://b/t/data/a.parquet").is_none(),
            "LRU evicted"
        );
        assert!(cache.get("s3://b/t/data/b.parquet").is_some());
        // Larger than half the budget: not cached at all.
        cache.insert("s3://b/t/data/big.parquet", &[4; 60]);
        assert!(cache.get("s3://b/t/data/big.parquet").is_none());
        cache.remove("s3://b/t/data/c.parquet");
        assert!(cache.get("s3://b/t/data/c.parquet").is_none());
        drop(cache);
        let reopened = FileCache::open(dir.path(), 100).unwrap();
        assert_eq!(
            reopened.get("s3://b/t/data/b.parquet").unwrap(),
            vec![2; 40]
        );
        assert_eq!(reopened.total(), 40);
    }
}
