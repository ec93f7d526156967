//! Where an initial copy is, as a checkpoint: every chunk before (table, page) is handed to
//! the host. 15 upper-case hex digits — 3 for the table's position in the copy, 8 for the
//! first page of the first chunk not yet complete, 4 for a hash of the copy's table list and
//! that table's file node — so copy points sort by progress, and before every LSN checkpoint
//! (16 digits; the host orders checkpoints by length, then bytes).
//!
//! A restart from a copy point copies only the chunks from there on, under a new snapshot,
//! then streams from the slot's consistent point. Keyed tables converge: every change since
//! the consistent point is replayed as upserts and deletes of whole rows over rows copied
//! at either snapshot. A keyless table cannot absorb a replayed insert, so a copy cut short
//! before its keyless tables are complete starts over. So does one whose table list or
//! current table's file node changed (a rewrite by VACUUM FULL or CLUSTER moves rows
//! between pages), or where a table not completely copied changed its columns (the replay
//! would announce the older shape over rows copied in the newer one).

/// Tables a copy point can name.
pub const MAX_TABLES: usize = 0xFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPoint {
    pub table: usize,
    pub page: u64,
    pub hash: u16,
}

/// The hash a copy point carries: the copied tables, in order, the file node of the table
/// it points into, and the shapes (columns and types) of that table and every later one.
pub fn copy_hash(tables: &[&str], filenode: u64, shapes: &str) -> u16 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in tables
        .join(",")
        .bytes()
        .chain(b":".iter().copied())
        .chain(filenode.to_le_bytes())
        .chain(shapes.bytes())
    {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16
}

impl CopyPoint {
    pub fn checkpoint(&self) -> String {
        format!(
            "{:03X}{:08X}{:04X}",
            self.table.min(MAX_TABLES),
            self.page.min(0xFFFF_FFFF),
            self.hash
        )
    }

    /// A copy point, or `None` for any other checkpoint.
    pub fn parse(checkpoint: &str) -> Option<CopyPoint> {
        if checkpoint.len() != 15 || !checkpoint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(CopyPoint {
            table: usize::from_str_radix(&checkpoint[..3], 16).ok()?,
            page: u64::from_str_radix(&checkpoint[3..11], 16).ok()?,
            hash: u16::from_str_radix(&checkpoint[11..], 16).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_points_round_trip_and_sort_by_progress_before_every_lsn() {
        let p = |table, page| CopyPoint {
            table,
            page,
            hash: 0xBEEF,
        };
        let points = [p(0, 0), p(0, 4096), p(0, 0x1_0000), p(1, 0), p(2, 8192)];
        for w in points.windows(2) {
            assert!(w[0].checkpoint() < w[1].checkpoint());
        }
        for point in points {
            let cp = point.checkpoint();
            assert_eq!(
                cp.len(),
                15,
                "shorter than an LSN checkpoint, so it sorts first"
            );
            assert_eq!(CopyPoint::parse(&cp), Some(point));
        }
        assert_eq!(CopyPoint::parse("0000000000000000"), None);
        assert_eq!(CopyPoint::parse("00000000000000G"), None);
    }

    #[test]
    fn the_hash_follows_the_table_list_and_the_file_node() {
        let h = copy_hash(&["public.a", "public.b"], 16384, "id:20");
        assert_eq!(h, copy_hash(&["public.a", "public.b"], 16384, "id:20"));
        assert_ne!(h, copy_hash(&["public.a", "public.b"], 16385, "id:20"));
        assert_ne!(h, copy_hash(&["public.b", "public.a"], 16384, "id:20"));
        assert_ne!(h, copy_hash(&["public.a"], 16384, "id:20"));
        assert_ne!(h, copy_hash(&["public.a", "public.b"], 16384, "id:20,x:23"));
    }
}
