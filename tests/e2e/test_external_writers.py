"""Other engines write the tables we write: Spark with Java Iceberg 1.10 on the same catalog
(Iceberg `JdbcCatalog` over our SQLite catalog.db) runs `rewrite_data_files`, `DELETE` (with
deletion vectors and copy-on-write) and `expire_snapshots` while the host holds pending
upserts and deletes, and while it ingests. Our compare-and-swap then fails, the host rebases
on Spark's snapshot, and after a kill -9 and restart DuckDB, PyIceberg and Spark all equal a
Python model: no row lost, duplicated or resurrected.

Needs Java 17, pyspark 3.5 + snowpark-connect-deps-iceberg (tests/requirements.txt) and
`bash scripts/spark_env.sh` (apt packages and the relocated-Jackson jar)."""
import glob
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests

from readers import duckdb_rows, pyiceberg_rows, pyiceberg_table, expect

pyspark = pytest.importorskip("pyspark", reason="pyspark missing: pip install -r tests/requirements.txt")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "v", "data_type": "string", "nullable": True},
]
NAME = "shop.items"
SPARK_TABLE = "moonlink.shop.items"


def _spark_jars():
    if shutil.which("java") is None or not os.path.exists("/usr/share/java/sqlite-jdbc.jar"):
        pytest.skip("Java or sqlite-jdbc missing: run scripts/spark_env.sh")
    import snowpark_connect_deps_iceberg

    runtime = glob.glob(os.path.join(os.path.dirname(snowpark_connect_deps_iceberg.__file__), "jars",
                                     "iceberg-spark-runtime-3.5_2.12-*.jar"))
    assert runtime, "snowpark-connect-deps-iceberg ships no Iceberg runtime for Spark 3.5 / Scala 2.12"
    jackson = subprocess.run(["bash", os.path.join(ROOT, "scripts", "spark_env.sh"), "--jar-only", sys.executable],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return [runtime[0], jackson, "/usr/share/java/sqlite-jdbc.jar"]


def spark_session(data_dir):
    from pyspark.sql import SparkSession

    data_dir = os.path.abspath(data_dir)
    return (SparkSession.builder.master("local[1]").appName("moonlink-external-writer")
            .config("spark.jars", ",".join(_spark_jars()))
            .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
            .config("spark.sql.catalog.moonlink", "org.apache.iceberg.spark.SparkCatalog")
            .config("spark.sql.catalog.moonlink.type", "jdbc")
            .config("spark.sql.catalog.moonlink.uri", f"jdbc:sqlite:{data_dir}/catalog.db")
            .config("spark.sql.catalog.moonlink.jdbc.schema-version", "V1")
            .config("spark.sql.catalog.moonlink.warehouse", f"{data_dir}/warehouse")
            # Every statement sees the catalog's current snapshot (we commit between them).
            .config("spark.sql.catalog.moonlink.cache-enabled", "false")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.driver.memory", "1g")
            .getOrCreate())


def spark_sql(spark, sql):
    """Runs one statement in a new Spark session, hence a new JdbcCatalog. Iceberg 1.10's
    JdbcCatalog leaves a DatabaseMetaData.getColumns result set open on one pooled
    connection (`updateSchemaIfRequired`), and with sqlite-jdbc that pins a read snapshot of
    our WAL-mode catalog.db: a long-lived catalog never sees our later commits again."""
    return spark.newSession().sql(sql).collect()


def spark_rows(spark):
    return expect(*[tuple(r) for r in spark_sql(spark, f"SELECT id, v FROM {SPARK_TABLE}")])


RETRYABLE = ("conflict", "Conflict", "CommitFailed", "ValidationException", "SQLITE_BUSY")


class Quiet:
    """Lets a Spark statement pause the ingest thread's commits (see `spark_retry`)."""

    def __init__(self):
        self.wanted, self.idle = threading.Event(), threading.Event()

    def __enter__(self):
        self.wanted.set()
        assert self.idle.wait(60), "the ingest thread did not pause"

    def __exit__(self, *exc):
        self.wanted.clear()
        self.idle.clear()

    def pause_if_wanted(self):
        while self.wanted.is_set():
            self.idle.set()
            time.sleep(0.05)


def spark_retry(spark, sql, attempts=15, quiet=None):
    """Runs a Spark statement, retrying when the host committed while it ran (Java's conflict
    validation; with the pinned snapshot above, SQLITE_BUSY_SNAPSHOT at Spark's commit). With
    `quiet`, the last attempt runs while the ingest thread pauses, so the statement lands."""
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        try:
            if last and quiet is not None:
                with quiet:
                    return spark_sql(spark, sql)
            return spark_sql(spark, sql)
        except Exception as e:  # noqa: BLE001 (py4j wraps Java's exceptions)
            if last or not any(w in str(e) for w in RETRYABLE):
                raise
            time.sleep(0.3)


def model_rows(model):
    return expect(*[(k, v) for k, v in model.items()])


def check(server, spark, model):
    want = model_rows(model)
    assert duckdb_rows(server.table(NAME)["metadata_location"]) == want
    assert pyiceberg_rows(server.data_dir, "shop", "items") == want
    assert spark_rows(spark) == want


def summaries(server):
    tbl = pyiceberg_table(server.data_dir, "shop", "items")
    return [(s.summary.operation.value, dict(s.summary.additional_properties)) for s in tbl.snapshots()]


def test_spark_rewrites_deletes_and_expires_while_the_host_writes(make_server):
    # A long interval: async writes stay pending until /commit, so each Spark commit lands
    # between ours and our next swap must rebase.
    server = make_server(["--commit-interval-ms", "3600000"])
    server.create_table(NAME, SCHEMA, primary_key=["id"])
    model = {}

    def upsert(ids, tag, mode="async"):
        server.ingest(NAME, [{"id": i, "v": f"{tag}{i}"} for i in ids], operation="upsert", mode=mode)
        model.update({i: f"{tag}{i}" for i in ids})

    def delete(ids, mode="async"):
        server.ingest(NAME, [{"id": i} for i in ids], operation="delete", mode=mode)
        for i in ids:
            model.pop(i, None)

    # Several data files of ours, with deletion vectors.
    for start in range(0, 200, 50):
        upsert(range(start, start + 50), "a", mode="sync")
    delete(range(0, 200, 9), mode="sync")
    upsert(range(40, 60), "b", mode="sync")
    t0 = time.time()
    spark = spark_session(server.data_dir)
    spark_start = time.time() - t0
    try:
        check(server, spark, model)
        # Our DV-only commit is a `delete` with Java's counters.
        op, props = next(s for s in summaries(server) if s[1].get("added-dvs") and not s[1].get("added-data-files"))
        assert op == "delete", (op, props)
        assert "added-position-delete-files" not in props and int(props["added-delete-files"]) == int(props["added-dvs"])

        # 1. Pending upserts and deletes into files Spark's rewrite_data_files replaces.
        upsert(range(100, 130), "c")
        delete([101, 120, 150])
        spark_retry(spark, "CALL moonlink.system.rewrite_data_files(table => 'shop.items', "
                           "options => map('rewrite-all', 'true', 'min-input-files', '1'))")
        assert spark_sql(spark, f"SELECT count(*) FROM {SPARK_TABLE}.files")[0][0] == 1
        server.commit(NAME)
        check(server, spark, model)
        assert server.table(NAME)["last_error"] is None

        # 2. Spark DELETE writing deletion vectors (merge-on-read); then our deletes in the
        # same file must OR Spark's vector in, and an upsert of a key Spark deleted comes back.
        spark_sql(spark, f"ALTER TABLE {SPARK_TABLE} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read')")
        upsert([7, 8], "d")
        spark_retry(spark, f"DELETE FROM {SPARK_TABLE} WHERE id >= 160 AND id < 175")
        for i in range(160, 175):
            model.pop(i, None)
        server.commit(NAME)
        delete([180, 181])
        upsert([165], "e")
        server.commit(NAME)
        check(server, spark, model)

        # 3. Copy-on-write DELETE of keys we hold pending upserts for: ours come after it.
        spark_sql(spark, f"ALTER TABLE {SPARK_TABLE} SET TBLPROPERTIES ('write.delete.mode'='copy-on-write')")
        upsert([5, 6], "f")
        spark_retry(spark, f"DELETE FROM {SPARK_TABLE} WHERE id < 30")
        for i in [k for k in model if k < 30]:
            model.pop(i)
        model.update({5: "f5", 6: "f6"})
        server.commit(NAME)
        check(server, spark, model)

        # 4. While the host ingests (sync, so every batch commits): Spark compacts and deletes,
        # retrying its own conflict validation; keys it deletes are not written meanwhile.
        stop, quiet = threading.Event(), Quiet()
        errors = []

        def ingest():
            rng = random.Random(7)
            n = 0
            try:
                while not stop.is_set() and n < 400:
                    quiet.pause_if_wanted()
                    n += 1
                    ids = rng.sample(range(200, 400), 5)
                    if rng.random() < 0.3:
                        delete(ids, mode="sync")
                    else:
                        upsert(ids, f"g{n}-", mode="sync")
                    time.sleep(0.2)
            except AssertionError as e:
                errors.append(e)
            finally:
                quiet.idle.set()  # a stopped thread commits nothing either

        thread = threading.Thread(target=ingest)
        thread.start()
        try:
            time.sleep(1)
            spark_retry(spark, "CALL moonlink.system.rewrite_data_files(table => 'shop.items', "
                               "options => map('rewrite-all', 'true', 'min-input-files', '1'))", attempts=4, quiet=quiet)
            spark_retry(spark, f"DELETE FROM {SPARK_TABLE} WHERE id >= 30 AND id < 60", attempts=4, quiet=quiet)
            spark_deleted = [k for k in model if 30 <= k < 60]
            time.sleep(1)
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        for k in spark_deleted:
            model.pop(k, None)
        check(server, spark, model)

        # 5. expire_snapshots keeps only Spark's latest: our checkpoint survives in the table
        # properties. Pending async writes survive a kill -9 through the log, applied once.
        upsert([200, 201], "h", mode="sync")
        spark_retry(spark, f"DELETE FROM {SPARK_TABLE} WHERE id = 199")
        model.pop(199, None)
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
        spark_retry(spark, f"CALL moonlink.system.expire_snapshots(table => 'shop.items', "
                           f"older_than => TIMESTAMP '{ts}', retain_last => 1)")
        assert spark_sql(spark, f"SELECT count(*) FROM {SPARK_TABLE}.snapshots")[0][0] == 1
        upsert([300, 301], "i")
        delete([200])
        server.kill()
        server.start()
        info = server.table(NAME)
        # The log past our checkpoint (found in the table properties) is replayed, once.
        assert info["last_lsn"] - info["committed_lsn"] == 2, info
        server.commit(NAME)
        check(server, spark, model)
        assert server.table(NAME)["last_error"] is None
        upsert([302], "j", mode="sync")
        check(server, spark, model)
        print(f"spark session start {spark_start:.1f}s, whole test {time.time() - t0:.1f}s")
    finally:
        spark.stop()
