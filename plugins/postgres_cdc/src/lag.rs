//! How far the mirror is behind the server, reported to the host (`report-lag`) for
//! `GET /metrics` and `GET /status`:
//! - **bytes**: the server's WAL end minus the LSN the host has acknowledged (what operators
//!   compute as `pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)`);
//! - **seconds**: the age, by the server's clock, of the oldest transaction this stream has
//!   read but the host has not acknowledged; 0 when nothing read is outstanding (WAL not
//!   yet read has no known age).
//!
//! The WAL end is not in the replication stream (a logical walsender's keepalive carries how
//! far it has *sent*), so a plain connection asks `pg_current_wal_lsn()` about once a second.
//! Measuring is best effort: a failed probe never fails the source; it drops the connection
//! and tries again later.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::conn::{col, ConnectOptions, Connection};
use crate::sql::parse_lsn;

/// How often the server's WAL end is asked for.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a probe may hold up a poll (less when the poll itself is shorter).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait before probing again after a failed probe.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The server's WAL end and clock, read together; the clock is microseconds since
/// 2000-01-01, as in pgoutput's commit times.
const PROBE_SQL: &str = "SELECT pg_current_wal_lsn()::text, \
     (extract(epoch from clock_timestamp()) * 1000000)::bigint - 946684800000000";

/// Tracks the outstanding transactions and the server's position.
pub struct LagMeter {
    connect: ConnectOptions,
    conn: Option<Connection>,
    next_probe: Instant,
    /// The WAL end at the last probe.
    wal_end: Option<u64>,
    /// The server's clock at the last probe, and when that probe answered.
    server_clock: Option<(i64, Instant)>,
    /// (end LSN, commit time) of transactions read and not yet acknowledged, oldest first.
    outstanding: VecDeque<(u64, i64)>,
    /// Commit time of the transaction being read.
    reading: Option<i64>,
    warned: bool,
}

impl LagMeter {
    pub fn new(connect: ConnectOptions) -> LagMeter {
        LagMeter {
            connect,
            conn: None,
            next_probe: Instant::now(),
            wal_end: None,
            server_clock: None,
            outstanding: VecDeque::new(),
            reading: None,
            warned: false,
        }
    }

    /// A transaction committed at `commit_time` (µs since 2000-01-01) starts.
    pub fn begin(&mut self, commit_time: i64) {
        self.reading = Some(commit_time);
    }

    /// The transaction being read ends at `end_lsn`.
    pub fn commit(&mut self, end_lsn: u64, commit_time: i64) {
        self.reading = None;
        self.outstanding.push_back((end_lsn, commit_time));
    }

    /// Everything up to `lsn` is acknowledged (or holds nothing for us).
    pub fn confirmed(&mut self, lsn: u64) {
        while self.outstanding.front().is_some_and(|&(end, _)| end <= lsn) {
            self.outstanding.pop_front();
        }
    }

    /// Asks the server for its WAL end when a probe is due, waiting at most `budget` (and
    /// never more than a second) for any answer: the stream comes first.
    pub fn probe_if_due(&mut self, budget: Duration) {
        if Instant::now() < self.next_probe {
            return;
        }
        let timeout = budget.min(PROBE_TIMEOUT).max(Duration::from_millis(10));
        self.connect.connect_timeout = timeout;
        self.connect.reply_timeout = timeout;
        match self.probe() {
            Ok(()) => self.next_probe = Instant::now() + PROBE_INTERVAL,
            Err(e) => {
                self.conn = None;
                self.next_probe = Instant::now() + RETRY_AFTER_FAILURE;
                if !std::mem::replace(&mut self.warned, true) {
                    moonlink_sdk::warn!("cannot measure the lag behind the server: {e}");
                }
            }
        }
    }

    fn probe(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            self.conn = Some(Connection::connect(&self.connect, false).map_err(|e| e.to_string())?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let rows = conn.query(PROBE_SQL).map_err(|e| e.to_string())?;
        let row = rows.first().ok_or("the probe returned no row")?;
        let wal_end = col(row, 0).and_then(parse_lsn);
        let clock = col(row, 1).and_then(|v| v.parse::<i64>().ok());
        match (wal_end, clock) {
            (Some(wal_end), Some(clock)) => {
                self.wal_end = Some(wal_end);
                self.server_clock = Some((clock, Instant::now()));
                Ok(())
            }
            _ => Err(format!("the probe returned {row:?}")),
        }
    }

    /// (bytes, milliseconds) behind the server, given the acknowledged LSN.
    pub fn lag(&self, confirmed: u64) -> (Option<u64>, Option<u64>) {
        let bytes = self.wal_end.map(|end| end.saturating_sub(confirmed));
        let oldest = self.outstanding.front().map(|&(_, t)| t).or(self.reading);
        let millis = match oldest {
            Some(commit_time) => self.server_clock.map(|(clock, at)| {
                let now = clock.saturating_add(at.elapsed().as_micros() as i64);
                (now.saturating_sub(commit_time).max(0) / 1000) as u64
            }),
            // Nothing read is outstanding. WAL the stream has not read yet has no known age
            // (it is usually WAL of other tables or databases, or read within a poll).
            None => self.server_clock.map(|_| 0),
        };
        (bytes, millis)
    }

    /// Tells the host the current lag.
    pub fn report(&self, confirmed: u64) {
        let (bytes, millis) = self.lag(confirmed);
        moonlink_sdk::source::report_lag(bytes, millis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> LagMeter {
        LagMeter::new(ConnectOptions {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: None,
            database: "d".into(),
            connect_timeout: Duration::from_millis(10),
            reply_timeout: Duration::from_millis(10),
        })
    }

    #[test]
    fn lag_is_the_oldest_outstanding_transaction_and_the_unacknowledged_wal() {
        let mut m = meter();
        assert_eq!(m.lag(100), (None, None), "nothing known before a probe");
        m.wal_end = Some(1_000);
        m.server_clock = Some((10_000_000, Instant::now()));
        assert_eq!(m.lag(1_000), (Some(0), Some(0)), "caught up");
        assert_eq!(
            m.lag(400),
            (Some(600), Some(0)),
            "WAL not yet read has no age"
        );
        m.begin(7_000_000);
        assert_eq!(m.lag(400).1, Some(3_000), "the transaction being read");
        m.commit(500, 7_000_000);
        m.begin(8_000_000);
        m.commit(600, 8_000_000);
        assert_eq!(m.lag(400), (Some(600), Some(3_000)));
        m.confirmed(500);
        assert_eq!(
            m.lag(500),
            (Some(500), Some(2_000)),
            "the oldest was acknowledged"
        );
        m.confirmed(1_000);
        assert_eq!(m.lag(1_000), (Some(0), Some(0)));
    }

    #[test]
    fn a_failed_probe_is_not_an_error() {
        let mut m = meter();
        let started = Instant::now();
        m.probe_if_due(Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(m.conn.is_none());
        assert!(m.next_probe > Instant::now() + Duration::from_secs(20));
        assert_eq!(m.lag(0), (None, None));
    }
}
