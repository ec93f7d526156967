//! Checkpoints: the next offset of every assigned partition (and, for inferred schemas, the
//! columns known so far), ordered as the host requires.
//!
//! The host orders a source's checkpoints by length, then bytes. Offsets alone would not sort
//! (a reset partition, a shorter number), so each checkpoint starts with a fixed-width
//! sequence number that grows with every checkpoint, across restarts too (the next one
//! continues from the resumed one), and is padded with trailing spaces to at least the length
//! of the last one: equal lengths compare by sequence, and lengths never shrink.
//!
//! Text: `0000000000000007 {"o":{"orders":{"0":42,"1":17}},"s":{...}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{KafkaError, Result};

/// Where the source stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// topic → partition → next offset to read.
    #[serde(rename = "o", default)]
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Inferred tables → their columns `[name, type]` as of this position.
    #[serde(rename = "s", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, Vec<(String, String)>>,
}

impl Position {
    /// The next offset of a partition, if it has one.
    pub fn offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(topic)?.get(&partition).copied()
    }
}

/// Hands out checkpoints in the host's order.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// The sequence number of the last checkpoint (produced or resumed).
    seq: u64,
    /// The length of the longest checkpoint so far.
    min_len: usize,
}

impl Sequencer {
    /// Continues after every checkpoint in `resumed`.
    pub fn after<'a>(resumed: impl IntoIterator<Item = &'a str>) -> Result<Sequencer> {
        let mut s = Sequencer::default();
        for c in resumed {
            let (seq, _) = parse(c)?;
            s.seq = s.seq.max(seq);
            s.min_len = s.min_len.max(c.len());
        }
        Ok(s)
    }

    /// The checkpoint for `position`, later than every one before.
    pub fn next(&mut self, position: &Position) -> String {
        self.seq += 1;
        let json = serde_json::to_string(position).unwrap_or_else(|_| "{}".into());
        let mut text = format!("{:016X} {json}", self.seq);
        while text.len() < self.min_len {
            text.push(' ');
        }
        self.min_len = text.len();
        text
    }
}

/// Reads a checkpoint back.
pub fn parse(checkpoint: &str) -> Result<(u64, Position)> {
    let bad = |why: &str| {
        let shown: String = checkpoint.chars().take(60).collect();
        KafkaError::Checkpoint(format!("'{shown}' is not a kafka checkpoint: {why}"))
    };
    let (seq, json) = checkpoint
        .split_once(' ')
        .ok_or_else(|| bad("no sequence number"))?;
    if seq.len() != 16 {
        return Err(bad("the sequence number is not 16 hex digits"));
    }
    let seq = u64::from_str_radix(seq, 16).map_err(|_| bad("bad sequence number"))?;
    let position = serde_json::from_str(json.trim_end()).map_err(|e| bad(&e.to_string()))?;
    Ok((seq, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(a: &str, b: &str) -> std::cmp::Ordering {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }

    #[test]
    fn checkpoints_sort_in_production_order_across_resets_and_restarts() {
        let mut s = Sequencer::default();
        let mut p = Position::default();
        let mut all = Vec::new();
        for (offset, partitions) in [(9, 2), (10, 2), (1000, 3), (5, 3), (0, 1), (11, 1)] {
            p.offsets
                .insert("t".into(), (0..partitions).map(|i| (i, offset)).collect());
            all.push(s.next(&p));
        }
        // A restart resumes after the last acknowledged one.
        let mut s = Sequencer::after([all[5].as_str(), all[2].as_str()]).unwrap();
        all.push(s.next(&p));
        for w in all.windows(2) {
            assert_eq!(order(&w[0], &w[1]), std::cmp::Ordering::Less, "{w:?}");
        }
        for c in &all {
            let (_, back) = parse(c).unwrap();
            assert!(back.offsets.contains_key("t"));
        }
        assert_eq!(parse(all.last().unwrap()).unwrap().1, p);
        assert!(parse("12").is_err());
        assert!(parse("000000000000000G {}").is_err());
    }
}
