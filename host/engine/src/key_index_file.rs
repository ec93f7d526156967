//! On-disk key-index files: one immutable file per keyed data file in the local cache
//! directory, so a restart reads 16 bytes per row instead of the Parquet key columns; and the
//! table's key secret (`key-secret`), under which every key is hashed.
//!
//! The cache is only a cache: a missing or damaged file, or one written under another
//! secret, is rebuilt from the data file. Layout, little-endian: `b"MLIDX002" |
//! secret fingerprint: u64 | rows: u64 | hashes: [u64; rows] | checks: [u32; rows] |
//! positions: [u32; rows] | crc32 of everything before`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::key_index::{FileKeys, KeyHasher};

const MAGIC: &[u8; 8] = b"MLIDX002";
const HEADER_LEN: usize = 24;
const SECRET_FILE: &str = "key-secret";

/// Where the key-index file of `data_file` (a warehouse location) lives under `dir`.
pub fn key_index_file_path(dir: &Path, data_file: &str) -> PathBuf {
    let name = data_file.rsplit('/').next().unwrap_or(data_file);
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    dir.join(format!("{stem}.idx"))
}

/// The table's key secret, created (random, readable only by this user) on first use. A lost
/// secret only costs a rebuild of the key-index files from the data files.
pub fn key_secret(dir: &Path) -> Result<[u8; 16]> {
    let path = dir.join(SECRET_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(secret) = <[u8; 16]>::try_from(bytes.as_slice()) {
            return Ok(secret);
        }
        tracing::warn!(path = %path.display(), "key secret is damaged; making a new one (the key index is rebuilt)");
    }
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret)
        .map_err(|e| EngineError::io(&path, std::io::Error::other(e.to_string())))?;
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&tmp)
        .and_then(|mut f| f.write_all(&secret).and_then(|()| f.sync_all()))
        .map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
    Ok(secret)
}

pub fn write_key_index_file(path: &Path, keys: &FileKeys, hasher: &KeyHasher) -> Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + 4 + keys.len() * 16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&hasher.fingerprint().to_le_bytes());
    bytes.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for h in &keys.hashes {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    for c in &keys.checks {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    for p in &keys.positions {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    let tmp = path.with_extension("idx.tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

/// Reads a key-index file; `None` if it is missing, fails its checks or was written under another
/// secret (then rebuild it).
pub fn read_key_index_file(path: &Path, hasher: &KeyHasher) -> Option<FileKeys> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let le64 = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    if le64(8)? != hasher.fingerprint() {
        return None;
    }
    let rows = usize::try_from(le64(16)?).ok()?;
    if body.len() != HEADER_LEN.checked_add(rows.checked_mul(16)?)? {
        return None;
    }
    let (hashes, rest) = body[HEADER_LEN..].split_at(rows * 8);
    let (checks, positions) = rest.split_at(rows * 4);
    let u32s = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Some(FileKeys {
        hashes: hashes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        checks: u32s(checks),
        positions: u32s(positions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_index::KeyHash;

    #[test]
    fn round_trips_and_rejects_damage_or_another_secret() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = KeyHasher::new(key_secret(dir.path()).unwrap());
        assert_eq!(
            key_secret(dir.path()).unwrap(),
            key_secret(dir.path()).unwrap()
        );
        let path = key_index_file_path(dir.path(), "/w/t/data/0190-abc.parquet");
        assert!(path.ends_with("0190-abc.idx"));
        let keys = [9, 1, 5].map(|hash| KeyHash {
            hash,
            check: hash as u32 * 3,
        });
        let keys = FileKeys::from_row_hashes(&keys);
        write_key_index_file(&path, &keys, &hasher).unwrap();
        assert_eq!(read_key_index_file(&path, &hasher), Some(keys));
        assert_eq!(read_key_index_file(&path, &KeyHasher::new([1; 16])), None);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_key_index_file(&path, &hasher), None);
        assert_eq!(
            read_key_index_file(&dir.path().join("missing.idx"), &hasher),
            None
        );
    }
}
