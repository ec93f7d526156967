//! postgres_cdc: mirrors Postgres tables into moonlink through logical replication.
//!
//! On first start it creates (if missing) a publication and a `pgoutput` logical slot whose
//! exported snapshot it copies table by table, in chunks of pages read over several
//! connections; then it streams from exactly the slot's consistent point. Checkpoints are
//! the end LSN of the last complete transaction, as 16 hex digits (so they sort); the slot is
//! advanced (Standby Status Update) only when the host acknowledges a checkpoint, i.e. after
//! the Iceberg commit that contains it.
//!
//! Settings (see `example.toml`): `host`, `port`, `user`, `password` or `password_env`,
//! `database`, `tables` (`schema.table`, ...) or `publication`, `slot`, `namespace`,
//! `keyless` (`refuse` | `append-only`), `snapshot_connections`, `snapshot_chunk_pages`,
//! `copy_format` (`binary` | `text`: the initial copy's COPY format; `binary.rs`),
//! `connect_timeout_ms`, `reply_timeout_ms` (every wait on the server is bounded; README.md),
//! `publication_check_ms` (publication mode: how often tables joining or leaving the
//! publication are looked for; `publication.rs`).

mod binary;
mod conn;
mod copy_point;
mod defaults;
mod lag;
mod pgoutput;
mod publication;
mod snapshot;
mod sql;
mod stream;
mod tables;
mod types;
mod wire;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use moonlink_sdk::source::{PollResult, ResumePoint, Source, SourceEvent, TableDef};
use moonlink_sdk::Config;

use conn::{col, ConnectOptions, Connection};
use copy_point::CopyPoint;
use publication::Watch;
use snapshot::Snapshot;
use sql::{quote_ident, quote_literal};
use stream::Stream;
use tables::{MirroredTable, PgColumn};
use wire::PgError;

/// The checkpoint of an initial copy in progress before copy points (`copy_point.rs`)
/// existed: sorts before every LSN. Resuming from it starts the copy over.
const COPYING: &str = "0000000000000000";

/// An LSN as a checkpoint: fixed-width hex, so checkpoints sort by length then bytes.
pub fn checkpoint_of(lsn: u64) -> String {
    format!("{lsn:016X}")
}

fn lsn_of(checkpoint: &str) -> Result<u64, String> {
    u64::from_str_radix(checkpoint, 16)
        .map_err(|_| format!("checkpoint '{checkpoint}' is not a Postgres position"))
}

/// Settings, validated.
pub struct Settings {
    pub connect: ConnectOptions,
    pub tables: Vec<String>,
    /// Partition specs by table (`[tables."public.orders"] partition_by = [..]`), used when
    /// the host creates the table.
    pub partition_by: HashMap<String, Vec<String>>,
    pub publication: String,
    pub publication_given: bool,
    pub slot: String,
    pub namespace: Option<String>,
    pub append_only_keyless: bool,
    pub snapshot_connections: usize,
    pub snapshot_chunk_pages: u64,
    /// The initial copy reads COPY's binary format (`binary.rs`), else its text format.
    pub copy_binary: bool,
    /// How often the publication's tables are read while streaming.
    pub publication_check: Duration,
}

impl Settings {
    fn parse(config: &Config) -> Result<Settings, String> {
        let password = match (config.opt_str("password")?, config.opt_str("password_env")?) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                format!(
                    "setting `password_env`: environment variable {var} is not set (the host \
                     passes only the variables named by *_env settings)"
                )
            })?),
            (None, None) => None,
        };
        let port = config.opt_u64("port")?.unwrap_or(5432);
        let port =
            u16::try_from(port).map_err(|_| format!("setting `port`: {port} is not a port"))?;
        let slot = config.opt_str("slot")?.unwrap_or("moonlink").to_string();
        if slot.is_empty()
            || !slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "setting `slot`: '{slot}' is not a valid slot name (lower-case letters, digits, _)"
            ));
        }
        // A bare table name is in schema `public`, as in Postgres's default search path.
        let qualified = |t: String| {
            if t.contains('.') {
                t
            } else {
                format!("public.{t}")
            }
        };
        // `tables` is a list of names, or a table of names with per-table settings.
        let mut partition_by = HashMap::new();
        let tables: Vec<String> = match config.raw("tables") {
            Some(serde_json::Value::Object(map)) => {
                let mut names = Vec::new();
                for (name, table) in map {
                    let spec = match table.get("partition_by") {
                        None => Vec::new(),
                        Some(serde_json::Value::Array(items)) => items
                            .iter()
                            .map(|i| i.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| {
                                format!("setting `tables.{name}.partition_by`: a list of strings")
                            })?,
                        Some(_) => {
                            return Err(format!(
                                "setting `tables.{name}.partition_by`: a list of strings, \
                                 e.g. [\"day(created_at)\"]"
                            ))
                        }
                    };
                    let name = qualified(name.clone());
                    partition_by.insert(name.clone(), spec);
                    names.push(name);
                }
                names
            }
            _ => config
                .str_list("tables")?
                .into_iter()
                .map(qualified)
                .collect(),
        };
        let publication = config.opt_str("publication")?;
        if tables.is_empty() && publication.is_none() {
            return Err("set `tables` (a list of schema.table) or `publication`".into());
        }
        for t in &tables {
            if t.split('.').count() != 2 {
                return Err(format!("setting `tables`: '{t}' is not schema.table"));
            }
        }
        let keyless = config.opt_str("keyless")?.unwrap_or("refuse");
        let append_only_keyless = match keyless {
            "refuse" => false,
            "append-only" | "append_only" => true,
            other => {
                return Err(format!(
                    "setting `keyless`: '{other}' (expected refuse or append-only)"
                ))
            }
        };
        let copy_binary = match config.opt_str("copy_format")?.unwrap_or("binary") {
            "binary" => true,
            "text" => false,
            other => {
                return Err(format!(
                    "setting `copy_format`: '{other}' (expected binary or text)"
                ))
            }
        };
        let millis = |key: &str, default: u64| -> Result<Duration, String> {
            match config.opt_u64(key)?.unwrap_or(default) {
                0 => Err(format!(
                    "setting `{key}`: must be at least 1 (milliseconds)"
                )),
                ms => Ok(Duration::from_millis(ms)),
            }
        };
        let connect_timeout = millis("connect_timeout_ms", 4_000)?;
        let reply_timeout = millis("reply_timeout_ms", 60_000)?;
        let publication_check = millis("publication_check_ms", 5_000)?;
        Ok(Settings {
            partition_by,
            connect: ConnectOptions {
                connect_timeout,
                reply_timeout,
                host: config.opt_str("host")?.unwrap_or("127.0.0.1").to_string(),
                port,
                user: config.opt_str("user")?.unwrap_or("postgres").to_string(),
                password,
                database: config
                    .opt_str("database")?
                    .unwrap_or("postgres")
                    .to_string(),
            },
            tables,
            publication: publication
                .map(str::to_string)
                .unwrap_or_else(|| format!("moonlink_{slot}")),
            publication_given: publication.is_some(),
            slot,
            namespace: config.opt_str("namespace")?.map(str::to_string),
            append_only_keyless,
            snapshot_connections: config
                .opt_u64("snapshot_connections")?
                .unwrap_or(2)
                .clamp(1, 16) as usize,
            snapshot_chunk_pages: config
                .opt_u64("snapshot_chunk_pages")?
                .unwrap_or(4096)
                .max(1),
            copy_binary,
            publication_check,
        })
    }

    fn target_name(&self, schema: &str, table: &str) -> String {
        format!("{}.{table}", self.namespace.as_deref().unwrap_or(schema))
    }
}

/// Where the source is: copying the slot's snapshot, or streaming.
enum Phase {
    Copying(Snapshot),
    /// Between the two, only while `poll` switches.
    Switching,
    Streaming(Stream),
}

pub struct PostgresCdc {
    settings: Settings,
    tables: Vec<MirroredTable>,
    phase: Phase,
    /// Copies tables new to the host at a restart and, in publication mode, follows tables
    /// joining and leaving the publication.
    watch: Option<Watch>,
}

fn pg(context: &str) -> impl Fn(PgError) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Checks what logical replication needs, with messages that say how to fix each gap.
fn preflight(conn: &mut Connection, settings: &Settings) -> Result<(), String> {
    let rows = conn.query("SHOW wal_level").map_err(pg("SHOW wal_level"))?;
    let level = rows.first().and_then(|r| col(r, 0)).unwrap_or_default();
    if level != "logical" {
        return Err(format!(
            "Postgres has wal_level = '{level}'; logical replication needs 'logical': run \
             ALTER SYSTEM SET wal_level = logical; and restart Postgres"
        ));
    }
    let user = &settings.connect.user;
    let rows = conn
        .query(&format!(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = {}",
            quote_literal(user)
        ))
        .map_err(pg("checking privileges"))?;
    if rows.first().and_then(|r| col(r, 0)) != Some("t") {
        return Err(format!(
            "role '{user}' may not start replication: ALTER ROLE {} REPLICATION; (or use a superuser)",
            quote_ident(user)
        ));
    }
    Ok(())
}

/// The tables to mirror: configured ones, or the publication's.
fn table_names(conn: &mut Connection, settings: &Settings) -> Result<Vec<String>, String> {
    if !settings.tables.is_empty() {
        return Ok(settings.tables.clone());
    }
    let rows = conn
        .query(&format!(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
             WHERE pubname = {} ORDER BY 1",
            quote_literal(&settings.publication)
        ))
        .map_err(pg("reading the publication"))?;
    if rows.is_empty() {
        return Err(format!(
            "publication '{}' does not exist or has no tables: create it \
             (CREATE PUBLICATION {} FOR TABLE ...) or set `tables`",
            settings.publication,
            quote_ident(&settings.publication)
        ));
    }
    Ok(rows
        .iter()
        .filter_map(|r| col(r, 0).map(str::to_string))
        .collect())
}

/// Reads a table's columns and key from the catalog.
fn describe_table(
    conn: &mut Connection,
    settings: &Settings,
    name: &str,
) -> Result<MirroredTable, String> {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    let regclass = quote_literal(&format!("{}.{}", quote_ident(schema), quote_ident(table)));
    let info = conn
        .query(&format!(
            "SELECT c.oid, c.relreplident, c.relkind, \
                    has_table_privilege(c.oid, 'SELECT') \
             FROM pg_class c WHERE c.oid = to_regclass({regclass})"
        ))
        .map_err(pg(&format!("looking up table {name}")))?;
    let Some(row) = info.first() else {
        return Err(format!(
            "table {name} does not exist in database '{}'",
            settings.connect.database
        ));
    };
    // The oid goes into SQL below: it must be a number, whatever the server sent.
    let oid: u32 = col(row, 0)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("looking up table {name}: the server sent no valid oid"))?;
    let identity = col(row, 1).unwrap_or_default().to_string();
    if col(row, 2) != Some("r") && col(row, 2) != Some("p") {
        return Err(format!("{name} is not a table"));
    }
    if col(row, 3) != Some("t") {
        return Err(format!(
            "role '{}' cannot read table {name}: GRANT SELECT ON {}.{} TO {};",
            settings.connect.user,
            quote_ident(schema),
            quote_ident(table),
            quote_ident(&settings.connect.user)
        ));
    }
    let columns: Vec<PgColumn> = conn
        .query(&format!(
            "SELECT attname, atttypid, atttypmod, format_type(atttypid, atttypmod) \
             FROM pg_attribute WHERE attrelid = {oid} AND attnum > 0 AND NOT attisdropped \
             AND attgenerated = '' ORDER BY attnum"
        ))
        .map_err(pg(&format!("reading the columns of {name}")))?
        .into_iter()
        .map(|r| PgColumn {
            name: col(&r, 0).unwrap_or_default().to_string(),
            type_oid: col(&r, 1).and_then(|v| v.parse().ok()).unwrap_or(0),
            type_modifier: col(&r, 2).and_then(|v| v.parse().ok()).unwrap_or(-1),
            type_name: col(&r, 3).unwrap_or_default().to_string(),
        })
        .collect();
    // The key: the primary key under the default identity, or the identity index.
    let key_index = match identity.as_str() {
        "d" | "f" => "i.indisprimary",
        "i" => "i.indisreplident",
        _ => "false",
    };
    let key: Vec<String> = conn
        .query(&format!(
            "SELECT a.attname FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = {oid} AND {key_index} ORDER BY k.n"
        ))
        .map_err(pg(&format!("reading the key of {name}")))?
        .into_iter()
        .filter_map(|r| col(&r, 0).map(str::to_string))
        .collect();
    if key.is_empty() && !settings.append_only_keyless {
        return Err(format!(
            "table {name} has no primary key, so its updates and deletes cannot be mirrored. \
             Give it one (ALTER TABLE {t} ADD PRIMARY KEY (...)) or a unique replica identity \
             (ALTER TABLE {t} REPLICA IDENTITY USING INDEX ...), or set keyless = \"append-only\" \
             to mirror only its inserts. moonlink never changes the table for you.",
            t = format!("{}.{}", quote_ident(schema), quote_ident(table))
        ));
    }
    MirroredTable::new(
        name.to_string(),
        settings.target_name(schema, table),
        columns,
        key,
    )
}

/// Creates the publication if missing, and adds configured tables it lacks.
fn ensure_publication(
    conn: &mut Connection,
    settings: &Settings,
    tables: &[MirroredTable],
) -> Result<(), String> {
    if settings.tables.is_empty() {
        return Ok(()); // the user's own publication, used as it is
    }
    let quoted: Vec<String> = tables
        .iter()
        .map(|t| {
            let (s, n) = t
                .source_name
                .split_once('.')
                .unwrap_or(("public", &t.source_name));
            format!("{}.{}", quote_ident(s), quote_ident(n))
        })
        .collect();
    let exists = !conn
        .query(&format!(
            "SELECT 1 FROM pg_publication WHERE pubname = {}",
            quote_literal(&settings.publication)
        ))
        .map_err(pg("reading publications"))?
        .is_empty();
    let hint = |e: PgError| {
        format!(
            "cannot create or extend publication '{}': {e}. Create it as the tables' owner: \
             CREATE PUBLICATION {} FOR TABLE {};",
            settings.publication,
            quote_ident(&settings.publication),
            quoted.join(", ")
        )
    };
    if !exists {
        return conn
            .execute(&format!(
                // Partitioned tables publish their changes under the table's own name.
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                quote_ident(&settings.publication),
                quoted.join(", ")
            ))
            .map_err(hint);
    }
    let published: Vec<String> = conn
        .query(&format!(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = {}",
            quote_literal(&settings.publication)
        ))
        .map_err(pg("reading the publication"))?
        .into_iter()
        .filter_map(|r| col(&r, 0).map(str::to_string))
        .collect();
    for (table, q) in tables.iter().zip(&quoted) {
        if !published.contains(&table.source_name) {
            conn.execute(&format!(
                "ALTER PUBLICATION {} ADD TABLE {q}",
                quote_ident(&settings.publication)
            ))
            .map_err(hint)?;
        }
    }
    Ok(())
}

impl Source for PostgresCdc {
    fn open(config: Config, resume: ResumePoint) -> Result<(Self, Vec<TableDef>), String> {
        let settings = Settings::parse(&config)?;
        let mut sql = Connection::connect(&settings.connect, false).map_err(pg(&format!(
            "connecting to database '{}'",
            settings.connect.database
        )))?;
        preflight(&mut sql, &settings)?;
        let names = table_names(&mut sql, &settings)?;
        let tables = names
            .iter()
            .map(|n| describe_table(&mut sql, &settings, n))
            .collect::<Result<Vec<_>, _>>()?;
        ensure_publication(&mut sql, &settings, &tables)?;
        let slot_exists = !sql
            .query(&format!(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&settings.slot)
            ))
            .map_err(pg("reading replication slots"))?
            .is_empty();
        sql.close();
        let defs: Vec<TableDef> = tables
            .iter()
            .map(|t| match settings.partition_by.get(&t.source_name) {
                Some(spec) => t.def().partitioned_by(spec.iter().map(String::as_str)),
                None => t.def(),
            })
            .collect();

        let copy_point = resume.checkpoint.as_deref().and_then(CopyPoint::parse);
        let resume_lsn = match resume.checkpoint.as_deref() {
            None | Some(COPYING) => None,
            Some(_) if copy_point.is_some() => None,
            Some(cp) => Some(lsn_of(cp)?),
        };
        // The tables the host holds from this source. An empty list cannot tell new tables
        // from old ones (a host that lists only tables ahead, or a data directory whose
        // every table was copied within the first poll): none is copied again then.
        let known: Option<HashSet<String>> = match resume_lsn {
            Some(_) if resume.tables.is_empty() => {
                Some(tables.iter().map(|t| t.target.clone()).collect())
            }
            Some(_) => Some(resume.tables.iter().map(|(t, _)| t.clone()).collect()),
            None => None,
        };
        let watch = Watch::new(
            &settings,
            &tables,
            known.as_ref(),
            settings.tables.is_empty(),
        )?;
        let phase = match resume_lsn {
            Some(lsn) => {
                if !slot_exists {
                    return Err(format!(
                        "replication slot '{}' is gone, so changes after {} cannot be replayed; \
                         drop the mirrored tables (or use a new slot name) to copy afresh",
                        settings.slot,
                        sql::format_lsn(lsn)
                    ));
                }
                let mut skip = HashMap::new();
                for (table, cp) in &resume.tables {
                    if cp != COPYING && CopyPoint::parse(cp).is_none() {
                        skip.insert(table.clone(), lsn_of(cp)?);
                    }
                }
                moonlink_sdk::info!(
                    "resuming slot {} at {}",
                    settings.slot,
                    sql::format_lsn(lsn)
                );
                Phase::Streaming(Stream::start(&settings, lsn, skip)?)
            }
            None => {
                // A copy cut short resumes from its chunks committed, if it can; otherwise
                // (or with nothing durable) everything is copied afresh from a new slot.
                let resumed = match copy_point {
                    Some(point) if slot_exists => {
                        // Tables committed further than the acknowledged point.
                        let committed: Vec<(String, CopyPoint)> = resume
                            .tables
                            .iter()
                            .filter_map(|(t, cp)| Some((t.clone(), CopyPoint::parse(cp)?)))
                            .collect();
                        Snapshot::resume(&settings, &tables, point, &committed)?
                    }
                    _ => None,
                };
                Phase::Copying(match resumed {
                    Some(snapshot) => snapshot,
                    None => Snapshot::start(&settings, &tables, slot_exists)?,
                })
            }
        };
        Ok((
            PostgresCdc {
                settings,
                tables,
                phase,
                watch,
            },
            defs,
        ))
    }

    fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<PollResult, String> {
        let mut events: Vec<SourceEvent> = Vec::new();
        let checkpoint = match &mut self.phase {
            Phase::Copying(snapshot) => {
                if snapshot.poll(&mut self.tables, max_rows as usize, timeout_ms, &mut events)? {
                    // Copied: stream from the slot's consistent point on, and make that point
                    // the checkpoint of the copy's last rows.
                    let Phase::Copying(snapshot) =
                        std::mem::replace(&mut self.phase, Phase::Switching)
                    else {
                        unreachable!("matched above")
                    };
                    let lsn = snapshot.consistent_lsn();
                    moonlink_sdk::info!(
                        "initial copy done; streaming from {}",
                        sql::format_lsn(lsn)
                    );
                    self.phase = Phase::Streaming(snapshot.into_stream(&self.settings)?);
                    Some(checkpoint_of(lsn))
                } else {
                    Some(snapshot.copy_point())
                }
            }
            Phase::Streaming(stream) => {
                if let Some(watch) = &mut self.watch {
                    // An added table's copy holds the stream: its rows carry no checkpoint
                    // (the host keeps the last one; see `publication.rs` for restarts).
                    let copying = watch.poll(
                        &self.settings,
                        &mut self.tables,
                        stream,
                        max_rows as usize,
                        timeout_ms,
                        &mut events,
                    )?;
                    if copying {
                        return Ok(PollResult {
                            events,
                            checkpoint: None,
                            finished: false,
                        });
                    }
                }
                stream
                    .poll(&mut self.tables, max_rows as usize, timeout_ms, &mut events)?
                    .map(checkpoint_of)
            }
            Phase::Switching => return Err("a previous poll failed while the copy ended".into()),
        };
        Ok(PollResult {
            events,
            checkpoint,
            finished: false,
        })
    }

    fn ack(&mut self, checkpoint: String) {
        // A copy's checkpoints confirm nothing to the slot: it stays at its consistent point.
        if checkpoint == COPYING || CopyPoint::parse(&checkpoint).is_some() {
            return;
        }
        let Ok(lsn) = lsn_of(&checkpoint) else {
            return;
        };
        if let Phase::Streaming(stream) = &mut self.phase {
            if let Err(e) = stream.acknowledge(lsn) {
                moonlink_sdk::warn!("cannot confirm {checkpoint} to Postgres: {e}");
            }
        }
        if let Some(watch) = &mut self.watch {
            watch.acknowledged(&self.settings, lsn);
        }
    }
}

moonlink_sdk::export_source!(PostgresCdc);

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod server_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_name_what_is_wrong() {
        let parse = |pairs: Vec<(&str, serde_json::Value)>| {
            Settings::parse(&Config::from_pairs(pairs)).map(|s| (s.tables, s.publication))
        };
        // A bare table name is in `public`; the default publication follows the slot.
        assert_eq!(
            parse(vec![
                ("tables", json!(["orders", "shop.items"])),
                ("slot", json!("s1"))
            ])
            .unwrap(),
            (
                vec!["public.orders".to_string(), "shop.items".to_string()],
                "moonlink_s1".to_string()
            )
        );
        let err = |pairs| parse(pairs).err().unwrap();
        assert!(err(vec![]).contains("`tables`"));
        assert!(err(vec![("tables", json!(["t"])), ("slot", json!("Bad-Slot"))]).contains("slot"));
        assert!(
            err(vec![("tables", json!(["t"])), ("keyless", json!("drop"))]).contains("keyless")
        );
        assert!(err(vec![("tables", json!(["t"])), ("port", json!(70000))]).contains("port"));
        assert!(err(vec![
            ("tables", json!(["t"])),
            ("password_env", json!("MOONLINK_NO_SUCH_VAR"))
        ])
        .contains("MOONLINK_NO_SUCH_VAR"));
    }
}
