//! Parquet data files: writing buffered rows (compressed as the table's properties say, see
//! `compression.rs`; with Iceberg column statistics) and reading small files back when they
//! are merged.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{new_null_array, Array, RecordBatch};
use arrow_schema::SchemaRef;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, Schema as IcebergSchema};
use iceberg::writer::file_writer::{
    FileWriter, FileWriterBuilder, ParquetWriter, ParquetWriterBuilder,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::compression::ParquetCompression;
use crate::error::Result;
use crate::partition::FilePartition;
use crate::schema::PARQUET_FIELD_ID_KEY;
use crate::storage::Warehouse;

/// Writes `batches` (all in the table's Arrow schema, all in `partition`) as one Parquet file
/// at `location`.
pub async fn write_data_file(
    file_io: &FileIO,
    iceberg_schema: &Arc<IcebergSchema>,
    location: &str,
    batches: &[RecordBatch],
    partition: &FilePartition,
    compression: ParquetCompression,
) -> Result<DataFile> {
    let mut writer =
        DataFileWriter::create(file_io, iceberg_schema, location, batches, compression).await?;
    for batch in batches {
        writer.write(batch).await?;
    }
    writer.close(partition).await
}

/// A Parquet data file written batch by batch, so a rewrite of large files holds one batch
/// (and the writer's current row group) in memory rather than every row it moves.
pub(crate) struct DataFileWriter {
    inner: ParquetWriter,
    writer_schema: arrow_schema::Schema,
    arrow_bytes: usize,
}

impl DataFileWriter {
    /// Opens the file at `location`; `sample` (the first rows it will hold) chooses each
    /// column's encoding ([`writer_properties`]).
    pub(crate) async fn create(
        file_io: &FileIO,
        iceberg_schema: &Arc<IcebergSchema>,
        location: &str,
        sample: &[RecordBatch],
        compression: ParquetCompression,
    ) -> Result<Self> {
        let props = writer_properties(sample, compression);
        let writer_schema = iceberg::arrow::schema_to_arrow_schema(iceberg_schema)?;
        let builder = ParquetWriterBuilder::new(props, iceberg_schema.clone());
        let inner = builder.build(file_io.new_output(location)?).await?;
        Ok(DataFileWriter {
            inner,
            writer_schema,
            arrow_bytes: 0,
        })
    }

    /// Appends `batch` (in the table's Arrow schema).
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.arrow_bytes += batch.get_array_memory_size();
        match in_writer_types(batch, &self.writer_schema)? {
            Some(cast) => self.inner.write(&cast).await?,
            None => self.inner.write(batch).await?,
        }
        Ok(())
    }

    /// Arrow bytes written so far (what a file's size target is measured in).
    pub(crate) fn arrow_bytes(&self) -> usize {
        self.arrow_bytes
    }

    /// Finishes the file: its Iceberg data-file entry, in `partition`.
    pub(crate) async fn close(self, partition: &FilePartition) -> Result<DataFile> {
        let mut files = self.inner.close().await?;
        let mut data_file = files.pop().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "parquet writer produced no file for a non-empty batch",
            )
        })?;
        Ok(data_file
            .content(DataContentType::Data)
            .partition_spec_id(partition.spec_id)
            .partition(partition.value.clone())
            .build()
            .map_err(|e| iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string()))?)
    }
}

/// Rows of a file sampled (from its start) to choose each column's encoding.
const SAMPLE_ROWS: usize = 1024;
/// With fewer non-null values than this in the sample, a column keeps the default.
const MIN_SAMPLE: usize = 64;

/// The table's compression, and dictionary encoding off for the top-level columns whose
/// sampled values are mostly distinct — ids, e-mails, URLs with ids, but also unique integer
/// keys, measurements and event times: their dictionary would hold nearly every value, so
/// interning each one costs CPU (the largest single cost of writing such a file) and saves no
/// space. Low-cardinality columns keep it. Iceberg readers read either encoding.
fn writer_properties(batches: &[RecordBatch], compression: ParquetCompression) -> WriterProperties {
    let mut builder = WriterProperties::builder().set_compression(compression.codec());
    if let Some(first) = batches.first() {
        for (i, field) in first.schema_ref().fields().iter().enumerate() {
            if mostly_distinct(batches, i) {
                let path = ColumnPath::from(field.name().as_str());
                builder = builder.set_column_dictionary_enabled(path, false);
            }
        }
    }
    builder.build()
}

/// Whether more than half of the first [`SAMPLE_ROWS`] non-null values of column `column`
/// are distinct (false for booleans and nested types, whose values are not sampled, and for
/// samples under [`MIN_SAMPLE`]).
fn mostly_distinct(batches: &[RecordBatch], column: usize) -> bool {
    let mut sample: Vec<Cow<'_, [u8]>> = Vec::new();
    for batch in batches {
        let room = SAMPLE_ROWS - sample.len();
        if room == 0 || !sample_values(batch.column(column).as_ref(), room, &mut sample) {
            break;
        }
    }
    if sample.len() < MIN_SAMPLE {
        return false;
    }
    let distinct: HashSet<&[u8]> = sample.iter().map(AsRef::as_ref).collect();
    distinct.len() * 2 > sample.len()
}

/// Appends up to `room` non-null values of a string, binary or fixed-width primitive array
/// to `out` (a primitive as its little-endian bytes); false for any other type.
fn sample_values<'a>(array: &'a dyn Array, room: usize, out: &mut Vec<Cow<'a, [u8]>>) -> bool {
    use arrow_schema::DataType as D;
    let values: Box<dyn Iterator<Item = Option<&'a [u8]>> + 'a> = match array.data_type() {
        D::Utf8 => Box::new(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
        ),
        D::LargeUtf8 => Box::new(
            array
                .as_string::<i64>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
        ),
        D::Binary => Box::new(array.as_binary::<i32>().iter()),
        D::LargeBinary => Box::new(array.as_binary::<i64>().iter()),
        D::FixedSizeBinary(_) => Box::new(array.as_fixed_size_binary().iter()),
        t => {
            let Some(width) = t.is_primitive().then(|| t.primitive_width()).flatten() else {
                return false;
            };
            let data = array.to_data();
            let Some(buffer) = data.buffers().first() else {
                return false;
            };
            let bytes = buffer.as_slice();
            let valid = (0..array.len()).filter(|&i| array.is_valid(i));
            for i in valid.take(room) {
                let at = (data.offset() + i) * width;
                match bytes.get(at..at + width) {
                    Some(value) => out.push(Cow::Owned(value.to_vec())),
                    None => return false,
                }
            }
            return true;
        }
    };
    out.extend(values.flatten().take(room).map(Cow::Borrowed));
    true
}

/// `batch` with its nested columns cast to the types the Parquet writer derives from the
/// Iceberg schema, or `None` when none differ. The writer accepts our `Binary` for its
/// `LargeBinary` at the top level but compares nested types exactly, so a `list<binary>` or a
/// map with binary keys or values would fail every commit of its table.
fn in_writer_types(
    batch: &RecordBatch,
    writer_schema: &arrow_schema::Schema,
) -> Result<Option<RecordBatch>> {
    let nested = |t: &arrow_schema::DataType| t.is_nested();
    let differs: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let ours = batch.schema_ref().field(i).data_type();
            nested(ours)
                && writer_schema
                    .fields()
                    .get(i)
                    .is_some_and(|theirs| theirs.data_type() != ours)
        })
        .collect();
    if differs.is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<arrow_schema::FieldRef> = batch.schema_ref().fields().to_vec();
    let mut columns = batch.columns().to_vec();
    for i in differs {
        let target = writer_schema.field(i).data_type();
        columns[i] = arrow_cast::cast(&columns[i], target)?;
        fields[i] = Arc::new(fields[i].as_ref().clone().with_data_type(target.clone()));
    }
    let schema = Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        batch.schema_ref().metadata().clone(),
    ));
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

/// Reads a data file back as record batches in `schema` (the table's current Arrow schema).
///
/// Columns are matched by Iceberg field id, as every Iceberg reader does: a file written
/// before a column was added gets its default (or nulls), columns dropped since are left out,
/// and widened columns are cast to their new type.
pub async fn read_data_file(
    warehouse: &Warehouse,
    location: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    data_file_batches(warehouse, location, schema)
        .await?
        .collect()
}

/// [`read_data_file`] one batch at a time: the file's bytes are fetched whole (compressed),
/// its rows decoded only as the iterator is advanced.
pub(crate) async fn data_file_batches(
    warehouse: &Warehouse,
    location: &str,
    schema: &SchemaRef,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let bytes = warehouse.get(location).await?;
    relabel(ParquetRecordBatchReaderBuilder::try_new(bytes)?, schema)
}

/// Reads what `builder` selects and maps its columns onto `schema` by field id, batch by batch.
fn relabel(
    builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    schema: &SchemaRef,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let file_ids: Vec<Option<String>> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.metadata().get(PARQUET_FIELD_ID_KEY).cloned())
        .collect();
    let sources: Vec<Option<usize>> = schema
        .fields()
        .iter()
        .map(|f| {
            let id = f.metadata().get(PARQUET_FIELD_ID_KEY);
            file_ids.iter().position(|fid| fid.as_ref() == id)
        })
        .collect();
    let schema = schema.clone();
    Ok(builder.build()?.map(move |batch| {
        let batch = batch?;
        let columns = schema
            .fields()
            .iter()
            .zip(&sources)
            .map(|(field, source)| match source {
                // Same field, maybe labelled differently inside (a list's element field).
                Some(i) if batch.column(*i).data_type() != field.data_type() => {
                    arrow_cast::cast(batch.column(*i), field.data_type())
                        .unwrap_or_else(|_| batch.column(*i).clone())
                }
                Some(i) => batch.column(*i).clone(),
                // A column added after the file was written: its `initial-default`, else
                // null (spec: "Default values").
                None => field
                    .metadata()
                    .get(crate::schema_change::INITIAL_DEFAULT_KEY)
                    .and_then(|json| {
                        crate::schema_change::default_array(
                            json,
                            field.data_type(),
                            batch.num_rows(),
                        )
                    })
                    .unwrap_or_else(|| new_null_array(field.data_type(), batch.num_rows())),
            })
            .collect();
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }))
}

/// Reads the rows at `positions` (ascending, distinct) of a data file, in that order, in
/// `schema` (matched by field id as in [`read_data_file`]).
pub async fn read_rows_at(
    warehouse: &Warehouse,
    location: &str,
    schema: &SchemaRef,
    positions: &[u32],
) -> Result<Vec<RecordBatch>> {
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let mut selectors = Vec::new();
    let mut next = 0usize;
    for &p in positions {
        let p = p as usize;
        if p > next {
            selectors.push(RowSelector::skip(p - next));
        }
        selectors.push(RowSelector::select(1));
        next = p + 1;
    }
    let bytes = warehouse.get(location).await?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_row_selection(RowSelection::from(selectors));
    relabel(builder, schema)?.collect()
}

#[cfg(test)]
#[path = "data_files_tests.rs"]
mod tests;
