//! SQL over committed files, deletion vectors, pending deletes and buffered rows.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, StringArray};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema,
};
use moonlink_query::{output, QueryConfig, QueryEngine, QueryError};

fn schema() -> TableSchema {
    TableSchema::new(
        vec![
            ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            },
            ColumnSchema {
                name: "name".into(),
                data_type: ColumnType::Utf8,
                nullable: true,
            },
        ],
        vec!["id".into()],
    )
}

fn batch(op: Operation, ids: impl Iterator<Item = i64>) -> ChangeBatch {
    let ids: Vec<i64> = ids.collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    ChangeBatch::from_columns(
        &schema(),
        vec![op; ids.len()],
        vec![
            ("id".into(), Arc::new(Int64Array::from(ids)) as ArrayRef),
            (
                "name".into(),
                Arc::new(StringArray::from(names)) as ArrayRef,
            ),
        ],
    )
    .unwrap()
}

async fn setup(dir: &std::path::Path) -> Engine {
    let engine = Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap();
    engine
        .create_table(CreateTable {
            name: "s.t".into(),
            namespace: "s".into(),
            table: "t".into(),
            schema: schema(),
            options: Default::default(),
        })
        .await
        .unwrap();
    engine
}

async fn json(q: &QueryEngine, sql: &str, snapshot: Option<i64>) -> String {
    let result = q.query(sql, snapshot).await.unwrap();
    String::from_utf8(output::json_rows(&result).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_deleted_pending_and_buffered_rows_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let q = QueryEngine::new(engine.clone(), QueryConfig::default()).unwrap();
    let apply = |op, ids: std::ops::Range<i64>| {
        let engine = engine.clone();
        async move {
            engine
                .apply("s.t", batch(op, ids), Durability::Logged)
                .await
                .unwrap()
        }
    };
    apply(Operation::Insert, 0..1000).await;
    let first = engine.commit("s.t").await.unwrap().snapshot_id;
    apply(Operation::Delete, 0..100).await; // committed DV after the next commit
    engine.commit("s.t").await.unwrap();
    apply(Operation::Delete, 100..150).await; // pending deletes
    apply(Operation::Insert, 1000..1010).await; // buffered
    apply(Operation::Delete, 1005..1010).await; // killed in the buffer
    let sql = "SELECT count(*) AS n, sum(id) AS s FROM s.t";
    let expected_sum: i64 = (150..1005).sum();
    assert_eq!(
        json(&q, sql, None).await,
        format!(r#"[{{"n":855,"s":{expected_sum}}}]"#)
    );
    // A filter prunes and still sees every source.
    assert_eq!(
        json(
            &q,
            "SELECT id, name FROM s.t WHERE id IN (5, 120, 160, 1004, 1007) ORDER BY id",
            None
        )
        .await,
        r#"[{"id":160,"name":"n160"},{"id":1004,"name":"n1004"}]"#
    );
    // A self-join reads one view.
    assert_eq!(
        json(
            &q,
            "SELECT count(*) AS n FROM s.t a JOIN s.t b ON a.id = b.id",
            None
        )
        .await,
        r#"[{"n":855}]"#
    );
    // The first snapshot alone: 1000 rows, nothing deleted.
    assert_eq!(
        json(&q, "SELECT count(*) AS n FROM s.t", first).await,
        r#"[{"n":1000}]"#
    );
    let err = q.query("SELECT 1 FROM s.t", Some(7)).await.unwrap_err();
    assert!(matches!(err, QueryError::UnknownSnapshot { .. }), "{err}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sql_ddl_dml_and_memory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    engine
        .apply(
            "s.t",
            batch(Operation::Insert, 0..20_000),
            Durability::Logged,
        )
        .await
        .unwrap();
    let q = QueryEngine::new(
        engine.clone(),
        QueryConfig {
            memory_bytes: 256 << 10,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    for sql in [
        "SELEC 1",
        "SELECT * FROM s.nope",
        "SELECT nope FROM s.t",
        "CREATE TABLE x (a int)",
        "INSERT INTO s.t VALUES (1, 'a')",
        "DROP TABLE s.t",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
    ] {
        let err = q.query(sql, None).await.unwrap_err();
        assert!(matches!(err, QueryError::Sql(_)), "{sql}: {err:?}");
        assert!(err.is_client_error());
    }
    let err = q
        .query(
            "SELECT a.id FROM s.t a JOIN s.t b ON a.name = b.name ORDER BY a.name",
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::MemoryExceeded { .. }), "{err:?}");
    let slow = QueryEngine::new(
        engine.clone(),
        QueryConfig {
            timeout: Duration::from_millis(300),
            ..QueryConfig::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = slow
        .query(
            "SELECT sum(a.id + b.id + c.id) FROM s.t a, s.t b, s.t c",
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Still serving.
    assert_eq!(
        json(&q, "SELECT count(*) AS n FROM s.t", None).await,
        r#"[{"n":20000}]"#
    );
    engine.shutdown().await;
}

/// Footers and deleted-row selections are kept across queries; a query after the deleted rows
/// of a file changed (pending deletes, a new deletion vector, an older snapshot) must not skip
/// rows by the older ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_deletes_change_between_queries_is_read_with_the_new_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let q = QueryEngine::new(engine.clone(), QueryConfig::default()).unwrap();
    let apply = |op, ids: Vec<i64>| {
        let engine = engine.clone();
        async move {
            engine
                .apply("s.t", batch(op, ids.into_iter()), Durability::Logged)
                .await
                .unwrap()
        }
    };
    let count = "SELECT count(*) AS n, sum(id) AS s FROM s.t";
    let expect = |live: &dyn Fn(i64) -> bool| {
        let ids: Vec<i64> = (0..1000).filter(|&i| live(i)).collect();
        format!(r#"[{{"n":{},"s":{}}}]"#, ids.len(), ids.iter().sum::<i64>())
    };
    apply(Operation::Insert, (0..1000).collect()).await;
    engine.commit("s.t").await.unwrap();
    apply(Operation::Delete, (0..1000).step_by(10).collect()).await;
    let dv1 = engine.commit("s.t").await.unwrap().snapshot_id;
    let after_dv1 = |i: i64| i % 10 != 0;
    // Twice with the same deletion vector (the second from the cache).
    for _ in 0..2 {
        assert_eq!(json(&q, count, None).await, expect(&after_dv1));
    }
    // Pending deletes on the same file.
    apply(Operation::Delete, (1..1000).step_by(10).collect()).await;
    let after_pending = |i: i64| i % 10 > 1;
    assert_eq!(json(&q, count, None).await, expect(&after_pending));
    // The same deletes committed: a new deletion vector, the same rows.
    engine.commit("s.t").await.unwrap();
    assert_eq!(json(&q, count, None).await, expect(&after_pending));
    // One more delete, committed.
    apply(Operation::Delete, vec![505]).await;
    engine.commit("s.t").await.unwrap();
    let latest = |i: i64| i % 10 > 1 && i != 505;
    assert_eq!(json(&q, count, None).await, expect(&latest));
    // The older snapshot's deletion vector again, then the live rows again.
    assert_eq!(json(&q, count, dv1).await, expect(&after_dv1));
    assert_eq!(json(&q, count, None).await, expect(&latest));
    // A filter reads the same live rows.
    assert_eq!(
        json(
            &q,
            "SELECT id FROM s.t WHERE id BETWEEN 500 AND 506 ORDER BY id",
            None
        )
        .await,
        r#"[{"id":502},{"id":503},{"id":504},{"id":506}]"#
    );
    engine.shutdown().await;
}

/// A file of several row groups is read by several partitions (row groups split between
/// them), with its deleted rows skipped in each.
#[tokio::test(flavor = "multi_thread")]
async fn one_large_file_is_read_by_several_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let q = QueryEngine::new(
        engine.clone(),
        QueryConfig {
            target_partitions: 3,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    // Parquet's default row group is 1Mi rows: this file has several.
    const ROWS: i64 = 2_300_000;
    for start in (0..ROWS).step_by(500_000) {
        let ids = start..(start + 500_000).min(ROWS);
        engine
            .apply("s.t", batch(Operation::Insert, ids), Durability::Logged)
            .await
            .unwrap();
    }
    engine.commit("s.t").await.unwrap();
    let deleted: Vec<i64> = (0..ROWS).step_by(7).collect();
    engine
        .apply(
            "s.t",
            batch(Operation::Delete, deleted.into_iter()),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine.commit("s.t").await.unwrap();
    let live: Vec<i64> = (0..ROWS).filter(|i| i % 7 != 0).collect();
    let sql = "SELECT count(*) AS n, sum(id) AS s, max(name) AS m FROM s.t";
    let max_name = live.iter().map(|i| format!("n{i}")).max().unwrap();
    let want = format!(
        r#"[{{"n":{},"s":{},"m":"{max_name}"}}]"#,
        live.len(),
        live.iter().sum::<i64>()
    );
    assert_eq!(json(&q, sql, None).await, want);
    let plan = q.query(&format!("EXPLAIN {sql}"), None).await.unwrap();
    let text = String::from_utf8(output::csv(&plan).unwrap()).unwrap();
    // The one file (`view/0`) is in more than one partition.
    let scan = text
        .lines()
        .find(|l| l.contains("DataSourceExec: file_groups="))
        .unwrap_or_else(|| panic!("no file scan in {text}"));
    let groups: usize = scan
        .split("file_groups={")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{scan}"));
    assert!(groups > 1, "{scan}");
    assert!(!scan.contains("view/1"), "{scan}");
    engine.shutdown().await;
}
