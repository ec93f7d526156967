//! On-disk key-index segments: one immutable file per keyed data file in the local cache
//! directory, so a restart reads 12 bytes per row instead of the Parquet key columns.
//!
//! The cache is only a cache: a missing or damaged segment is rebuilt from the data file.
//! Layout, little-endian: `b"MLIDX001" | rows: u64 | hashes: [u64; rows] |
//! positions: [u32; rows] | crc32 of everything before`.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::key_index::Segment;

const MAGIC: &[u8; 8] = b"MLIDX001";

/// Where the segment of `data_file` (a warehouse location) lives under `dir`.
pub fn segment_path(dir: &Path, data_file: &str) -> PathBuf {
    let name = data_file.rsplit('/').next().unwrap_or(data_file);
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    dir.join(format!("{stem}.idx"))
}

pub fn write_segment(path: &Path, segment: &Segment) -> Result<()> {
    let mut bytes = Vec::with_capacity(20 + segment.len() * 12);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(segment.len() as u64).to_le_bytes());
    for h in &segment.hashes {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    for p in &segment.positions {
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

/// Reads a segment; `None` if it is missing or fails its checks (then rebuild it).
pub fn read_segment(path: &Path) -> Option<Segment> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let rows = u64::from_le_bytes(body[8..16].try_into().ok()?) as usize;
    if body.len() != 16 + rows * 12 {
        return None;
    }
    let hashes_end = 16 + rows * 8;
    let hashes = body[16..hashes_end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let positions = body[hashes_end..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Some(Segment { hashes, positions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), "/w/t/data/0190-abc.parquet");
        assert!(path.ends_with("0190-abc.idx"));
        let segment = Segment::from_row_hashes(&[9, 1, 5]);
        write_segment(&path, &segment).unwrap();
        assert_eq!(read_segment(&path), Some(segment));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_segment(&path), None);
        assert_eq!(read_segment(&dir.path().join("missing.idx")), None);
    }
}
