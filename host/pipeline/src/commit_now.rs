//! Commits never wait for nothing: when a source goes idle (a poll brings no changes) or
//! finishes the initial copy of a table, the tables it wrote since are committed at once
//! instead of at the next commit tick. The commit interval stays the upper bound on staleness
//! while a source is busy.
//!
//! While an initial copy runs, its copied prefix is committed as it grows (one early commit in
//! flight per table, each at least [`COPY_COMMIT_ROWS`] and an eighth of the rows copied so
//! far), so the commit at the copy's end has only a tail to write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use moonlink_engine::Engine;

use crate::registry::lock;

/// The least rows a copy's prefix commit writes (a smaller one would only add files for
/// compaction to merge).
pub(crate) const COPY_COMMIT_ROWS: u64 = 256 * 1024;

/// The tables a source wrote (or truncated) since their last early commit.
#[derive(Default)]
pub(crate) struct CommitNow {
    /// Rows written per table since its last early commit.
    written: Mutex<BTreeMap<String, u64>>,
    /// Per table, the copy's prefix commit started last (at most one in flight).
    prefix: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Per table, the rows copied when its last prefix commit started.
    copied_at_commit: Mutex<HashMap<String, u64>>,
}

impl CommitNow {
    /// Notes that `table` has `rows` more changes that may not be committed yet.
    pub(crate) fn wrote(&self, table: &str, rows: u64) {
        let mut written = lock(&self.written);
        match written.get_mut(table) {
            Some(n) => *n += rows,
            None => {
                written.insert(table.to_string(), rows);
            }
        }
    }

    /// Starts a commit of every table written since the last request (or of `only`).
    pub(crate) fn request(
        &self,
        engine: &Engine,
        handle: &tokio::runtime::Handle,
        only: Option<&str>,
    ) {
        let tables: Vec<String> = {
            let mut written = lock(&self.written);
            match only {
                Some(table) => written
                    .remove_entry(table)
                    .map(|(t, _)| t)
                    .into_iter()
                    .collect(),
                None => std::mem::take(&mut *written).into_keys().collect(),
            }
        };
        for table in tables {
            spawn_commit(engine, handle, table);
        }
    }

    /// During a copy of `table` (`copied` rows so far): commits what it wrote since the last
    /// early commit if that is large enough and no prefix commit of it is still running.
    pub(crate) fn request_if_large(
        &self,
        engine: &Engine,
        handle: &tokio::runtime::Handle,
        table: &str,
        copied: u64,
    ) {
        let mut prefix = lock(&self.prefix);
        if prefix.get(table).is_some_and(|h| !h.is_finished()) {
            return;
        }
        {
            let mut written = lock(&self.written);
            let pending = written.get(table).copied().unwrap_or(0);
            let mut at_commit = lock(&self.copied_at_commit);
            let since = copied.saturating_sub(at_commit.get(table).copied().unwrap_or(0));
            if pending < COPY_COMMIT_ROWS || since < copied / 8 {
                return;
            }
            written.remove(table);
            at_commit.insert(table.to_string(), copied);
        }
        prefix.insert(
            table.to_string(),
            spawn_commit(engine, handle, table.to_string()),
        );
    }
}

fn spawn_commit(
    engine: &Engine,
    handle: &tokio::runtime::Handle,
    table: String,
) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    // Failures are the commit loop's to report and retry; this only starts it early.
    handle.spawn(async move {
        if let Err(e) = engine.commit(&table).await {
            tracing::debug!(table, error = %e, "early commit failed; the commit loop retries");
        }
    })
}
