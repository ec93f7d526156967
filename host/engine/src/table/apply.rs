//! Accepting a batch: shape and key checks, the write-ahead log, the buffer, and waiting for
//! the durability the caller asked for.

use super::*;

impl Table {
    /// Makes a batch durable per `durability` and buffers it for the next commit. A batch from
    /// a pull source carries its [`SourceCheckpoint`]: the snapshot that contains it records
    /// it, which is where the source resumes after a restart.
    pub async fn apply(
        &self,
        batch: ChangeBatch,
        durability: Durability,
        source_checkpoint: Option<SourceCheckpoint>,
    ) -> Result<ApplyReceipt> {
        let keyed = !self.schema.primary_key.is_empty();
        if !keyed {
            if let Some(op) = batch.operations().iter().find(|o| **o != Operation::Insert) {
                return Err(EngineError::OperationNotAllowed(format!(
                    "'{}' needs a primary key, and table '{}' has none (it is append-only)",
                    if *op == Operation::Upsert {
                        "upsert"
                    } else {
                        "delete"
                    },
                    self.name
                )));
            }
        }
        // Before anything is logged: a batch decoded against an older schema of this name
        // (dropped and recreated, or evolved, meanwhile) would be unreadable on replay.
        batch.check_shape(&self.name, &self.arrow_schema)?;
        let batch = self.fill_unchanged(batch).await?;
        let rows = batch.num_rows();
        if rows == 0 {
            let state = self.committed.borrow().clone();
            return Ok(ApplyReceipt {
                rows,
                matched: 0,
                lsn: state.committed_lsn,
                snapshot_id: None,
                metadata_location: None,
            });
        }
        let payload = match durability {
            Durability::Replayable => None,
            _ => Some(wal::encode_batch(&batch)?),
        };
        let (lsn, matched, logged, over_limit) = {
            let mut buffer = self.lock_buffer();
            if buffer.dropped {
                return Err(match buffer.reopening {
                    true => EngineError::SchemaChanged(self.name.clone()),
                    false => EngineError::TableNotFound(self.name.clone()),
                });
            }
            // Keys are hashed once per batch: for the conflict check and for applying.
            let hashes = buffer.keyed.as_ref().map(|keys| keys.hash(batch.rows()));
            if let (Some(keys), Some(hashes)) = (&buffer.keyed, &hashes) {
                let conflicts = keys.insert_conflicts(batch.operations(), hashes);
                if !conflicts.is_empty() {
                    return Err(EngineError::KeyConflict {
                        rows: conflicts.clone(),
                        keys: self.render_keys(batch.rows(), &conflicts),
                    });
                }
            }
            let lsn = buffer.next_lsn;
            let wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
            let Some(wal) = wal.as_ref() else {
                return Err(EngineError::TableNotFound(self.name.clone()));
            };
            // Appending under the buffer lock keeps log order equal to LSN order, and the
            // conflict check above valid for this batch.
            let logged = payload.map(|payload| wal.append(lsn, payload));
            buffer.next_lsn += 1;
            let matched = buffer.append(&self.arrow_schema, &batch, hashes)?;
            if let Some(checkpoint) = source_checkpoint {
                buffer
                    .source_checkpoints
                    .insert(checkpoint.source, checkpoint.position);
            }
            (
                lsn,
                matched,
                logged,
                buffer.bytes >= self.config.max_buffer_bytes,
            )
        };
        if over_limit {
            self.wake.notify_one();
        }
        if let Some(logged) = logged {
            logged
                .await
                .map_err(|_| EngineError::Unavailable("write-ahead log writer stopped".into()))??;
        }
        let mut receipt = ApplyReceipt {
            rows,
            matched,
            lsn,
            snapshot_id: None,
            metadata_location: None,
        };
        if durability == Durability::Committed {
            let state = self.wait_committed(lsn).await?;
            receipt.snapshot_id = state.metadata.current_snapshot_id();
            receipt.metadata_location = Some(state.metadata_location);
        }
        Ok(receipt)
    }

    /// `id=7, region='eu'`-style renderings of the key of each row in `rows`.
    fn render_keys(&self, batch: &RecordBatch, rows: &[usize]) -> Vec<String> {
        rows.iter()
            .take(20)
            .map(|&row| {
                self.schema
                    .primary_key
                    .iter()
                    .filter_map(|k| {
                        let column = batch.column(self.schema.column_index(k)?);
                        let value = arrow_cast::display::array_value_to_string(column, row).ok()?;
                        Some(format!("{k}={value}"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect()
    }

    /// Flow control for pull sources: once the buffer holds twice `max_buffer_bytes` (one
    /// buffer-full being written by a commit, another filled behind it), waits for commits
    /// until it is below that. A source faster than Parquet encoding (an initial copy) then
    /// runs at the commits' pace instead of growing memory without bound. Never fails: while
    /// commits fail the source waits, and a dropped table is reported by its next apply.
    pub(crate) async fn wait_for_room(&self) {
        let mut rx = self.committed.subscribe();
        loop {
            {
                let buffer = self.lock_buffer();
                if buffer.dropped || buffer.bytes < self.config.max_buffer_bytes.saturating_mul(2) {
                    return;
                }
            }
            self.wake.notify_one();
            // Any commit outcome (success or failure) is a reason to look again.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Admission for writers that can be told to retry: waits up to `backlog_wait` while the
    /// buffer holds twice `max_buffer_bytes` (see `wait_for_room`), then refuses. Pull sources
    /// wait without a limit instead; a client can come back, a replication stream cannot.
    pub(crate) async fn admit(&self) -> Result<()> {
        let wait = self.config.backlog_wait;
        if tokio::time::timeout(wait, self.wait_for_room())
            .await
            .is_ok()
        {
            return Ok(());
        }
        let buffered_bytes = self.lock_buffer().bytes;
        let last_error = self.committed.borrow().last_error.clone();
        Err(EngineError::Backlogged {
            table: self.name.clone(),
            buffered_bytes,
            last_error: last_error.unwrap_or_else(|| "none".into()),
        })
    }

    /// Waits until a snapshot containing `lsn` is committed, asking for a commit now.
    async fn wait_committed(&self, lsn: u64) -> Result<CommitState> {
        let mut rx = self.committed.subscribe();
        let failures_before = rx.borrow().failures;
        self.wake.notify_one();
        let wait = async {
            loop {
                {
                    let state = rx.borrow_and_update();
                    if state.committed_lsn >= lsn {
                        return Ok(state.clone());
                    }
                    if state.failures > failures_before + 1 {
                        return Err(EngineError::Unavailable(format!(
                            "commit failed: {}",
                            state.last_error.clone().unwrap_or_default()
                        )));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(EngineError::TableNotFound(self.name.clone()));
                }
            }
        };
        tokio::time::timeout(self.config.sync_timeout, wait)
            .await
            .map_err(|_| {
                EngineError::Unavailable(format!("no commit within {:?}", self.config.sync_timeout))
            })?
    }
}
