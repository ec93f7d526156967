//! Deletes become deletion vectors: one roaring bitmap of deleted row positions per data file,
//! stored as a Puffin `deletion-vector-v1` blob and referenced from a v3 delete manifest.
//!
//! Blob layout (Iceberg v3 spec): `length: u32 BE` (magic + vector) | magic `D1 D3 39 64` |
//! the positions as a portable 64-bit roaring bitmap | `crc32(magic ‖ vector): u32 BE`.

use std::collections::HashMap;

use bytes::Bytes;
use iceberg::io::FileIO;
use iceberg::puffin::{Blob, CompressionCodec, PuffinWriter, DELETION_VECTOR_V1};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat};
use roaring::RoaringTreemap;

use crate::error::{EngineError, Result};
use crate::storage::Warehouse;

const MAGIC: [u8; 4] = [0xD1, 0xD3, 0x39, 0x64];
/// Field id of the reserved `_pos` metadata column, which a deletion vector indexes.
const ROW_POSITION_FIELD_ID: i32 = 2147483645;
/// Puffin files start with a 4-byte magic; blobs follow back to back.
const PUFFIN_HEADER_LEN: i64 = 4;

/// Serializes positions into a `deletion-vector-v1` blob.
pub fn encode_blob(positions: &RoaringTreemap) -> Vec<u8> {
    let mut vector = Vec::with_capacity(positions.serialized_size());
    positions
        .serialize_into(&mut vector)
        .expect("writing to a Vec cannot fail");
    let mut blob = Vec::with_capacity(vector.len() + 12);
    blob.extend_from_slice(&((vector.len() + MAGIC.len()) as u32).to_be_bytes());
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(&vector);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&MAGIC);
    crc.update(&vector);
    blob.extend_from_slice(&crc.finalize().to_be_bytes());
    blob
}

/// Parses a `deletion-vector-v1` blob, checking its length, magic and checksum.
pub fn decode_blob(blob: &[u8]) -> std::result::Result<RoaringTreemap, String> {
    if blob.len() < 12 {
        return Err("deletion vector blob is too short".into());
    }
    let len = u32::from_be_bytes(blob[0..4].try_into().unwrap()) as usize;
    if len + 8 != blob.len() || blob[4..8] != MAGIC {
        return Err("deletion vector blob has a bad length or magic".into());
    }
    let vector = &blob[8..4 + len];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&MAGIC);
    crc.update(vector);
    let stored = u32::from_be_bytes(blob[4 + len..].try_into().unwrap());
    if crc.finalize() != stored {
        return Err("deletion vector blob fails its checksum".into());
    }
    RoaringTreemap::deserialize_from(vector).map_err(|e| e.to_string())
}

/// Writes one Puffin file holding a deletion vector for each data file in `vectors`, and
/// returns the delete-manifest entries that reference them.
/// The vectors' data files are all in `partition`, which their entries carry (a delete file
/// belongs to its data file's partition and spec).
pub async fn write_deletion_vectors(
    file_io: &FileIO,
    location: &str,
    vectors: &[(String, RoaringTreemap)],
    partition: &crate::partition::FilePartition,
) -> Result<Vec<DataFile>> {
    let output = file_io.new_output(location)?;
    let mut writer = PuffinWriter::new(&output, HashMap::new(), false).await?;
    let mut offset = PUFFIN_HEADER_LEN;
    let mut placed = Vec::with_capacity(vectors.len());
    for (data_file, positions) in vectors {
        let data = encode_blob(positions);
        let length = data.len() as i64;
        let blob = Blob::builder()
            .r#type(DELETION_VECTOR_V1.to_string())
            .fields(vec![ROW_POSITION_FIELD_ID])
            .snapshot_id(-1)
            .sequence_number(-1)
            .data(data)
            .properties(HashMap::from([
                ("referenced-data-file".to_string(), data_file.clone()),
                ("cardinality".to_string(), positions.len().to_string()),
            ]))
            .build();
        writer.add(blob, CompressionCodec::None).await?;
        placed.push((data_file, positions.len(), offset, length));
        offset += length;
    }
    writer.close().await?;
    let file_size = file_io.new_input(location)?.metadata().await?.size;
    placed
        .into_iter()
        .map(|(data_file, cardinality, offset, length)| {
            DataFileBuilder::default()
                .content(DataContentType::PositionDeletes)
                .file_path(location.to_string())
                .file_format(DataFileFormat::Puffin)
                .record_count(cardinality)
                .file_size_in_bytes(file_size)
                .referenced_data_file(Some(data_file.clone()))
                .content_offset(Some(offset))
                .content_size_in_bytes(Some(length))
                .partition_spec_id(partition.spec_id)
                .partition(partition.value.clone())
                .build()
                .map_err(|e| EngineError::Catalog(format!("cannot describe deletion vector: {e}")))
        })
        .collect()
}

/// Reads the deletion vector a delete-manifest entry points at.
pub async fn read_deletion_vector(
    warehouse: &Warehouse,
    entry: &DataFile,
) -> Result<RoaringTreemap> {
    let (Some(offset), Some(length)) = (entry.content_offset(), entry.content_size_in_bytes())
    else {
        return Err(EngineError::Catalog(format!(
            "delete file {} is not a deletion vector (no content offset)",
            entry.file_path()
        )));
    };
    let bytes: Bytes = warehouse.get(entry.file_path()).await?;
    let blob = bytes
        .get(offset as usize..(offset + length) as usize)
        .ok_or_else(|| {
            EngineError::Catalog(format!("deletion vector outside {}", entry.file_path()))
        })?;
    decode_blob(blob).map_err(|m| EngineError::Catalog(format!("{}: {m}", entry.file_path())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trips_and_detects_corruption() {
        let positions: RoaringTreemap = [0u64, 7, 1 << 33].into_iter().collect();
        let mut blob = encode_blob(&positions);
        assert_eq!(&blob[4..8], &MAGIC);
        assert_eq!(decode_blob(&blob).unwrap(), positions);
        let last = blob.len() - 5;
        blob[last] ^= 1;
        assert!(decode_blob(&blob).is_err());
    }

    #[tokio::test]
    async fn puffin_file_offsets_point_at_each_blob() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::local(dir.path()).unwrap();
        let location = format!("{}/t/data/dv.puffin", warehouse.root());
        let a: RoaringTreemap = [1u64, 2].into_iter().collect();
        let b: RoaringTreemap = [5u64].into_iter().collect();
        let entries = write_deletion_vectors(
            &warehouse.file_io(),
            &location,
            &[
                ("/a.parquet".into(), a.clone()),
                ("/b.parquet".into(), b.clone()),
            ],
            &crate::partition::FilePartition::unpartitioned(0),
        )
        .await
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1].referenced_data_file().as_deref(),
            Some("/b.parquet")
        );
        assert_eq!(
            read_deletion_vector(&warehouse, &entries[0]).await.unwrap(),
            a
        );
        assert_eq!(
            read_deletion_vector(&warehouse, &entries[1]).await.unwrap(),
            b
        );
    }
}
