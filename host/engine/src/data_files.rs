//! Parquet data files: writing buffered rows (zstd, with Iceberg column statistics) and reading
//! small files back when they are merged.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, Schema as IcebergSchema};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Result;
use crate::storage::Warehouse;

/// Writes `batches` (all in the table's Arrow schema) as one Parquet file at `location`.
pub async fn write_data_file(
    file_io: &FileIO,
    iceberg_schema: &Arc<IcebergSchema>,
    location: &str,
    batches: &[RecordBatch],
) -> Result<DataFile> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let builder = ParquetWriterBuilder::new(props, iceberg_schema.clone());
    let mut writer = builder.build(file_io.new_output(location)?).await?;
    for batch in batches {
        writer.write(batch).await?;
    }
    let mut files = writer.close().await?;
    let mut data_file = files.pop().ok_or_else(|| {
        iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "parquet writer produced no file for a non-empty batch",
        )
    })?;
    Ok(data_file
        .content(DataContentType::Data)
        .partition_spec_id(0)
        .build()
        .map_err(|e| iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string()))?)
}

/// Reads a data file back as record batches in `schema` (the table's Arrow schema).
pub async fn read_data_file(
    warehouse: &Warehouse,
    location: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let bytes = warehouse.get(location).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut batches = Vec::new();
    for batch in reader {
        // Same columns, same order: re-label with the table schema (field ids, nullability).
        batches.push(RecordBatch::try_new(
            schema.clone(),
            batch?.columns().to_vec(),
        )?);
    }
    Ok(batches)
}
