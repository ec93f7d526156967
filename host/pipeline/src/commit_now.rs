//! Commits never wait for nothing: when a source goes idle (a poll brings no changes) or
//! finishes the initial copy of a table, the tables it wrote since are committed at once
//! instead of at the next commit tick. The commit interval stays the upper bound on staleness
//! while a source is busy.

use std::collections::BTreeSet;
use std::sync::Mutex;

use moonlink_engine::Engine;

use crate::registry::lock;

/// The tables a source wrote (or truncated) since their last early commit.
#[derive(Default)]
pub(crate) struct CommitNow {
    written: Mutex<BTreeSet<String>>,
}

impl CommitNow {
    /// Notes that `table` has changes that may not be committed yet.
    pub(crate) fn wrote(&self, table: &str) {
        let mut written = lock(&self.written);
        if !written.contains(table) {
            written.insert(table.to_string());
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
                Some(table) => written.take(table).into_iter().collect(),
                None => std::mem::take(&mut *written).into_iter().collect(),
            }
        };
        for table in tables {
            let engine = engine.clone();
            // Failures are the commit loop's to report and retry; this only starts it early.
            handle.spawn(async move {
                if let Err(e) = engine.commit(&table).await {
                    tracing::debug!(table, error = %e, "early commit failed; the commit loop retries");
                }
            });
        }
    }
}
