//! The acknowledgement and resume-point rules, as pure functions over plain values.
//!
//! 1. Every applied step that carries a checkpoint waits for its table to commit past the LSN
//!    the engine gave it ([`AckQueue::wait_for`]). A checkpoint is acknowledged only once every
//!    entry up to it has committed ([`AckQueue::take_ackable`]): commits land out of order
//!    across tables, so the queue is acknowledged in order, as far as its committed prefix.
//! 2. A poll whose checkpoint no applied step carries (only progress, or changes to nothing
//!    mirrored) still gets acknowledged, once everything before it is committed
//!    ([`AckQueue::poll_done`]).
//! 3. The acknowledged checkpoint is recorded in the catalog before the plugin hears of it
//!    ([`acknowledge`]): a restart resumes from what the plugin may have released.
//! 4. A restart resumes from the acknowledged checkpoint, plus every table the source
//!    produced, each with how far it is committed: its snapshot's checkpoint when further
//!    ahead (a crash can land between two tables' commits), else the acknowledged one. A table
//!    the source declares that is not listed was never committed by it ([`resume_point`]).

use std::cmp::Ordering;
use std::collections::VecDeque;

use moonlink_runtime::ResumePoint;

/// The order of a source's checkpoints (see the WIT `source` interface): by length, then bytes.
pub fn checkpoint_order(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The checkpoint step `index` of a poll with `count` steps is applied under. Only the last
/// step carries the poll's checkpoint (`after`): a commit that lands between steps must not
/// claim the rest of the poll, so earlier steps carry the one before the poll (`before`).
pub fn step_checkpoint(
    index: usize,
    count: usize,
    before: &Option<String>,
    after: &Option<String>,
) -> Option<String> {
    if index + 1 == count {
        after.clone()
    } else {
        before.clone()
    }
}

/// A table commit a checkpoint waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLsn {
    /// The host table.
    pub table: String,
    /// The LSN the engine gave the step; the table must commit at least this far.
    pub lsn: u64,
}

/// A checkpoint applied but not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unacked {
    /// What it waits for; `None` for a checkpoint no applied step carries (nothing to commit).
    pub waits_for: Option<TableLsn>,
    /// The source's checkpoint.
    pub checkpoint: String,
}

/// The checkpoints applied but not yet acknowledged, oldest first.
#[derive(Debug, Default)]
pub struct AckQueue {
    entries: VecDeque<Unacked>,
}

impl AckQueue {
    /// Records that `checkpoint` is durable once `table` has committed through `lsn`.
    pub fn wait_for(&mut self, table: String, lsn: u64, checkpoint: String) {
        self.entries.push_back(Unacked {
            waits_for: Some(TableLsn { table, lsn }),
            checkpoint,
        });
    }

    /// Records the end of a poll: a checkpoint the plugin gave the poll that no applied step
    /// carried waits only for what was applied before it.
    pub fn poll_done(&mut self, poll_checkpoint: Option<String>) {
        let Some(checkpoint) = poll_checkpoint else {
            return;
        };
        if self.entries.back().map(|u| &u.checkpoint) != Some(&checkpoint) {
            self.entries.push_back(Unacked {
                waits_for: None,
                checkpoint,
            });
        }
    }

    /// Removes and returns the newest checkpoint whose entries (and all before them) are
    /// committed; `committed_lsn` gives a table's committed LSN.
    pub fn take_ackable(&mut self, committed_lsn: impl Fn(&str) -> u64) -> Option<String> {
        let done = self
            .entries
            .iter()
            .take_while(|u| {
                u.waits_for
                    .as_ref()
                    .is_none_or(|w| committed_lsn(&w.table) >= w.lsn)
            })
            .count();
        let last = self.entries.drain(..done).next_back()?;
        Some(last.checkpoint)
    }

    /// The entries still waiting, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Unacked> {
        self.entries.iter()
    }
}

/// Acknowledges `checkpoint`: first `record` (in the catalog), then `notify` (the plugin). If
/// recording fails the plugin never hears of it.
pub fn acknowledge<E>(
    checkpoint: &str,
    record: impl FnOnce(&str) -> Result<(), E>,
    notify: impl FnOnce(&str) -> Result<(), E>,
) -> Result<(), E> {
    record(checkpoint)?;
    notify(checkpoint)
}

/// Where a source resumes. `acked` is the checkpoint last acknowledged (from the catalog);
/// `committed` lists (the source's table name, the checkpoint its committed snapshot carries).
/// Without an acknowledgement the least advanced table is the safe start. Every table is
/// listed, with the further of its own checkpoint and the start: everything up to the
/// acknowledged checkpoint is committed in every table, so a table behind it holds that too.
pub fn resume_point(acked: Option<String>, committed: Vec<(String, String)>) -> ResumePoint {
    let checkpoint = acked.or_else(|| {
        committed
            .iter()
            .map(|(_, cp)| cp.clone())
            .min_by(|a, b| checkpoint_order(a, b))
    });
    let tables = committed
        .into_iter()
        .map(|(table, cp)| match &checkpoint {
            Some(start) if checkpoint_order(&cp, start).is_lt() => (table, start.clone()),
            _ => (table, cp),
        })
        .collect();
    ResumePoint { checkpoint, tables }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn committed(pairs: &[(&str, u64)]) -> impl Fn(&str) -> u64 {
        let map: HashMap<String, u64> = pairs.iter().map(|(t, l)| (s(t), *l)).collect();
        move |t| map.get(t).copied().unwrap_or(0)
    }

    #[test]
    fn checkpoints_order_by_length_then_bytes() {
        assert!(checkpoint_order("9", "10").is_lt());
        assert!(checkpoint_order("10", "9").is_gt());
        assert!(checkpoint_order("ab", "ac").is_lt());
        assert!(checkpoint_order("5", "5").is_eq());
    }

    #[test]
    fn only_the_last_step_of_a_poll_carries_its_checkpoint() {
        let before = Some(s("1"));
        let after = Some(s("2"));
        assert_eq!(step_checkpoint(0, 3, &before, &after), before);
        assert_eq!(step_checkpoint(1, 3, &before, &after), before);
        assert_eq!(step_checkpoint(2, 3, &before, &after), after);
        assert_eq!(step_checkpoint(0, 1, &None, &after), after);
    }

    #[test]
    fn nothing_is_acked_before_its_table_commits() {
        let mut q = AckQueue::default();
        q.wait_for(s("a"), 5, s("1"));
        assert_eq!(q.take_ackable(committed(&[("a", 4)])), None);
        assert_eq!(q.pending().count(), 1);
        assert_eq!(q.take_ackable(committed(&[("a", 5)])), Some(s("1")));
        assert_eq!(q.pending().count(), 0);
        assert_eq!(q.take_ackable(committed(&[("a", 5)])), None);
    }

    #[test]
    fn out_of_order_commits_across_tables_ack_only_the_committed_prefix() {
        let mut q = AckQueue::default();
        q.wait_for(s("a"), 10, s("1"));
        q.wait_for(s("b"), 3, s("2"));
        q.wait_for(s("a"), 11, s("3"));
        // b committed first: checkpoint 2 still waits for a's LSN 10.
        assert_eq!(q.take_ackable(committed(&[("b", 3)])), None);
        // a commits through 10: 1 and 2 are durable, 3 is not.
        assert_eq!(
            q.take_ackable(committed(&[("a", 10), ("b", 3)])),
            Some(s("2"))
        );
        assert_eq!(
            q.pending().cloned().collect::<Vec<_>>(),
            vec![Unacked {
                waits_for: Some(TableLsn {
                    table: s("a"),
                    lsn: 11
                }),
                checkpoint: s("3")
            }]
        );
        assert_eq!(q.take_ackable(committed(&[("a", 11)])), Some(s("3")));
    }

    #[test]
    fn a_later_commit_does_not_ack_past_an_uncommitted_earlier_entry() {
        let mut q = AckQueue::default();
        q.wait_for(s("a"), 1, s("1"));
        q.wait_for(s("b"), 1, s("2"));
        q.wait_for(s("a"), 2, s("3"));
        // a is fully committed, b is not: only 1.
        assert_eq!(q.take_ackable(committed(&[("a", 2)])), Some(s("1")));
        assert_eq!(
            q.take_ackable(committed(&[("a", 2), ("b", 1)])),
            Some(s("3"))
        );
    }

    #[test]
    fn a_progress_only_poll_is_acked_once_what_came_before_commits() {
        let mut q = AckQueue::default();
        // A poll of only progress, nothing before it: acked at once.
        q.poll_done(Some(s("1")));
        assert_eq!(q.take_ackable(committed(&[])), Some(s("1")));
        // Changes, then a progress-only poll: its checkpoint waits for the changes' commit.
        q.wait_for(s("a"), 7, s("2"));
        q.poll_done(Some(s("2")));
        assert_eq!(
            q.pending().count(),
            1,
            "the poll's own step already carries 2"
        );
        q.poll_done(Some(s("3")));
        assert_eq!(q.take_ackable(committed(&[("a", 6)])), None);
        assert_eq!(q.take_ackable(committed(&[("a", 7)])), Some(s("3")));
        // A poll without a checkpoint adds nothing.
        q.poll_done(None);
        assert_eq!(q.pending().count(), 0);
    }

    #[test]
    fn the_catalog_hears_of_an_ack_before_the_plugin() {
        let order = std::cell::RefCell::new(Vec::new());
        let r: Result<(), ()> = acknowledge(
            "7",
            |cp| {
                order.borrow_mut().push(format!("record {cp}"));
                Ok(())
            },
            |cp| {
                order.borrow_mut().push(format!("notify {cp}"));
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(*order.borrow(), vec![s("record 7"), s("notify 7")]);
        let mut notified = false;
        let r = acknowledge(
            "8",
            |_| Err("catalog down"),
            |_| {
                notified = true;
                Ok(())
            },
        );
        assert_eq!(r, Err("catalog down"));
        assert!(!notified, "the plugin must not hear of an unrecorded ack");
    }

    #[test]
    fn resume_from_the_ack_listing_every_table_committed() {
        // A crash between two tables' commits: a committed checkpoint 12, b only 10 (= acked).
        let resume = resume_point(Some(s("10")), vec![(s("a"), s("12")), (s("b"), s("10"))]);
        assert_eq!(resume.checkpoint, Some(s("10")));
        assert_eq!(resume.tables, vec![(s("a"), s("12")), (s("b"), s("10"))]);
        // A table behind the ack (no change since) holds everything up to the ack.
        let resume = resume_point(Some(s("10")), vec![(s("a"), s("9"))]);
        assert_eq!(resume.tables, vec![(s("a"), s("10"))]);
    }

    #[test]
    fn resume_without_an_ack_starts_at_the_least_advanced_table() {
        let resume = resume_point(None, vec![(s("a"), s("100")), (s("b"), s("99"))]);
        assert_eq!(resume.checkpoint, Some(s("99")));
        assert_eq!(resume.tables, vec![(s("a"), s("100")), (s("b"), s("99"))]);
        assert_eq!(resume_point(None, vec![]), ResumePoint::default());
    }
}
