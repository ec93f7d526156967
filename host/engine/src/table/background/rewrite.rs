//! Background compaction, step two: the rewrite (no lock held). The planned files' live rows
//! stream from the input files to the output writers one batch at a time, so memory holds a
//! batch, the writers' current row groups and the moved rows' key hashes, never the rewritten
//! files themselves (which reach the target file size).

use super::*;
use crate::compression::ParquetCompression;

impl Table {
    /// Writes the planned files' live rows as new files (no lock held).
    pub(super) async fn rewrite(&self, plan: &Plan) -> Result<Rewritten> {
        let table_location = self
            .committed
            .borrow()
            .metadata
            .location()
            .trim_end_matches('/')
            .to_string();
        let file_io = self.warehouse.file_io();
        let mut outputs = Outputs {
            file_io: &file_io,
            table_location: &table_location,
            iceberg_schema: &self.iceberg_schema,
            compression: ParquetCompression::of(self.committed.borrow().metadata.properties()),
            open: Vec::new(),
            slots: HashMap::new(),
            closed: Vec::new(),
        };
        let Some(hasher) = self.key_hasher else {
            // Append-only: every live row, by partition, in files sized toward the target.
            let max_bytes = self.arrow_bytes_per_file();
            for input in &plan.inputs {
                for batch in self.live_batches(input).await? {
                    let live = batch?;
                    for (partition, rows) in self.partitioner.group_rows(&live)? {
                        let taken = crate::partition::take_rows(&live, &rows)?;
                        let slot = outputs.slot(&partition, &taken).await?;
                        let output = outputs.get(slot)?;
                        output.writer.write(&taken).await?;
                        if output.writer.arrow_bytes() >= max_bytes {
                            outputs.roll(slot).await?;
                        }
                    }
                }
            }
            return Ok(Rewritten {
                keyed: None,
                files: outputs.finish().await?.into_iter().map(|o| o.0).collect(),
            });
        };
        let key_columns: Vec<usize> = self
            .schema
            .primary_key
            .iter()
            .filter_map(|k| self.schema.column_index(k))
            .collect();
        // Keyed: one output per partition of the current spec, never rolled (a row's new
        // place is its output and position). Old file id → (output, position in it) of each
        // old row; `u32::MAX` for deleted ones.
        let mut places: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for input in &plan.inputs {
            let Some(id) = input.id else { continue };
            let mut map = Vec::new();
            let mut position = 0u64;
            for batch in
                data_files::data_file_batches(&self.warehouse, &input.path, &self.arrow_schema)
                    .await?
            {
                let batch = batch?;
                let keep: Vec<bool> = (0..batch.num_rows() as u64)
                    .map(|i| !input.dead.contains(position + i))
                    .collect();
                position += batch.num_rows() as u64;
                let live = arrow_select::filter::filter_record_batch(
                    &batch,
                    &arrow_array::BooleanArray::from(keep.clone()),
                )?;
                let mut live_places = vec![(u32::MAX, u32::MAX); live.num_rows()];
                if live.num_rows() > 0 {
                    for (partition, rows) in self.partitioner.group_rows(&live)? {
                        let taken = crate::partition::take_rows(&live, &rows)?;
                        let slot = outputs.slot(&partition, &taken).await?;
                        let output = outputs.get(slot)?;
                        for (n, &row) in rows.iter().enumerate() {
                            live_places[row as usize] =
                                (slot as u32, (output.hashes.len() + n) as u32);
                        }
                        output.hashes.extend(hasher.hash_rows(&taken, &key_columns));
                        output.writer.write(&taken).await?;
                    }
                }
                let mut live_places = live_places.into_iter();
                map.extend(keep.iter().map(|&k| {
                    if k {
                        live_places.next().unwrap_or((u32::MAX, u32::MAX))
                    } else {
                        (u32::MAX, u32::MAX)
                    }
                }));
            }
            places.insert(id, map);
        }
        let outputs = outputs.finish().await?;
        // Positions in the outputs laid end to end.
        let mut starts = Vec::with_capacity(outputs.len());
        let mut total = 0u32;
        for (_, _, hashes) in &outputs {
            starts.push(total);
            total += hashes.len() as u32;
        }
        let mapping: HashMap<u32, Vec<u32>> = places
            .into_iter()
            .map(|(id, map)| {
                let map = map
                    .into_iter()
                    .map(|(slot, at)| match starts.get(slot as usize) {
                        Some(start) => start + at,
                        None => u32::MAX,
                    })
                    .collect();
                (id, map)
            })
            .collect();
        let mut written = Vec::with_capacity(outputs.len());
        for (data_file, path, hashes) in outputs {
            let file_id = {
                let mut buffer = self.lock_buffer();
                match buffer.keyed.as_mut() {
                    Some(keys) => keys.allocate_file_id(),
                    None => return Err(EngineError::Unavailable("table closed".into())),
                }
            };
            let rows = hashes.len() as u32;
            let keys = FileKeys::from_row_hashes(&hashes);
            drop(hashes);
            key_index_file::write_key_index_file(
                &key_index_file::key_index_file_path(&self.index_dir, &path),
                &keys,
                &hasher,
            )?;
            written.push(CompactedFile {
                file_id,
                path,
                data_file,
                keys,
                rows,
            });
        }
        tracing::debug!(table = %self.name, files = plan.inputs.len(), outputs = written.len(), rows = total, "rewrote keyed files");
        Ok(Rewritten {
            keyed: Some(KeyedCompaction {
                outputs: written,
                mapping,
            }),
            files: Vec::new(),
        })
    }

    /// An append-only input's rows minus its planned deletion vector, batch by batch.
    async fn live_batches<'a>(
        &'a self,
        input: &'a Input,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + 'a> {
        let batches =
            data_files::data_file_batches(&self.warehouse, &input.path, &self.arrow_schema).await?;
        let mut position = 0u64;
        Ok(batches.map(move |batch| {
            let batch = batch?;
            let start = position;
            position += batch.num_rows() as u64;
            if input.dead.is_empty() {
                return Ok(batch);
            }
            let keep: arrow_array::BooleanArray = (0..batch.num_rows() as u64)
                .map(|i| Some(!input.dead.contains(start + i)))
                .collect();
            Ok(arrow_select::filter::filter_record_batch(&batch, &keep)?)
        }))
    }
}

/// The files a rewrite is writing: one open writer per partition (rolled to a new file when
/// an append-only output reaches the target size), in order of first appearance.
struct Outputs<'a> {
    file_io: &'a iceberg::io::FileIO,
    table_location: &'a str,
    iceberg_schema: &'a Arc<IcebergSchema>,
    compression: ParquetCompression,
    /// By slot; `None` once rolled over (slots stay stable: a keyed row's place is its slot).
    open: Vec<Option<Output>>,
    slots: HashMap<FilePartition, usize>,
    /// Files already rolled over: (file, path, key hashes).
    closed: Vec<(DataFile, String, Vec<KeyHash>)>,
}

/// One file being written, with the key hashes of its rows in order (keyed tables).
struct Output {
    partition: FilePartition,
    path: String,
    writer: data_files::DataFileWriter,
    hashes: Vec<KeyHash>,
}

impl Outputs<'_> {
    /// The open output in `slot` (from [`Outputs::slot`], not rolled since).
    fn get(&mut self, slot: usize) -> Result<&mut Output> {
        self.open
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or_else(|| EngineError::Unavailable("compaction output closed".into()))
    }

    /// The open output for `partition`, created with `first` as its encoding sample.
    async fn slot(&mut self, partition: &FilePartition, first: &RecordBatch) -> Result<usize> {
        if let Some(&slot) = self.slots.get(partition) {
            return Ok(slot);
        }
        let path = format!("{}/data/{}.parquet", self.table_location, Uuid::now_v7());
        let (file_io, schema) = (self.file_io, self.iceberg_schema);
        let sample = std::slice::from_ref(first);
        let writer =
            data_files::DataFileWriter::create(file_io, schema, &path, sample, self.compression)
                .await?;
        self.open.push(Some(Output {
            partition: partition.clone(),
            path,
            writer,
            hashes: Vec::new(),
        }));
        self.slots.insert(partition.clone(), self.open.len() - 1);
        Ok(self.open.len() - 1)
    }

    /// Closes the output in `slot`; the partition's next rows open a new file.
    async fn roll(&mut self, slot: usize) -> Result<()> {
        let Some(done) = self.open.get_mut(slot).and_then(Option::take) else {
            return Ok(());
        };
        self.slots.remove(&done.partition);
        let data_file = done.writer.close(&done.partition).await?;
        self.closed.push((data_file, done.path, done.hashes));
        Ok(())
    }

    /// Closes every file: (file, path, key hashes), rolled files first, then the open ones
    /// in order of first appearance.
    async fn finish(self) -> Result<Vec<(DataFile, String, Vec<KeyHash>)>> {
        let mut files = self.closed;
        for output in self.open.into_iter().flatten() {
            let data_file = output.writer.close(&output.partition).await?;
            files.push((data_file, output.path, output.hashes));
        }
        Ok(files)
    }
}
