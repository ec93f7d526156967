"""Manifest merging (issue 12): under trickle traffic (a commit after every few upserts and
deletes) the number of manifests in a snapshot stays bounded, and DuckDB, PyIceberg and (when
pyspark is installed) Java Iceberg read the merged table equal to a model — the current
snapshot and an older one by time travel."""
import random

import pytest

from readers import _duckdb, duckdb_rows, expect, load_json, pyiceberg_rows, pyiceberg_table

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "v", "data_type": "string", "nullable": True},
]


def manifest_count(metadata_location):
    metadata = load_json(metadata_location)
    current = metadata["current-snapshot-id"]
    snapshot = next(s for s in metadata["snapshots"] if s["snapshot-id"] == current)
    con = _duckdb()
    try:
        return con.execute(f"SELECT count(*) FROM read_avro('{snapshot['manifest-list']}')").fetchone()[0]
    finally:
        con.close()


def test_trickle_commits_keep_manifests_bounded_and_readers_agree(server):
    # Data files are not merged: every commit's files stay live, so only manifest merging
    # keeps the count down.
    server.create_table("m.kv", SCHEMA, primary_key=["id"], table_config={"compaction": False})
    rng = random.Random(12)
    model = {}
    most = 0
    older = None
    commits = 120
    for n in range(commits):
        ids = sorted({rng.randrange(200) for _ in range(3)})
        if rng.random() < 0.3 and model:
            ids = sorted(set(rng.sample(sorted(model), min(2, len(model)))))
            server.ingest("m.kv", [{"id": i} for i in ids], operation="delete", mode="async")
            for i in ids:
                model.pop(i)
        else:
            rows = [{"id": i, "v": f"c{n}-{i}"} for i in ids]
            server.ingest("m.kv", rows, operation="upsert", mode="async")
            model.update({r["id"]: r["v"] for r in rows})
        server.commit("m.kv")
        location = server.table("m.kv")["metadata_location"]
        most = max(most, manifest_count(location))
        if n == commits - 30:
            older = (location, load_json(location)["current-snapshot-id"], expect(*model.items()))
    # 16 per (content, spec) by default, plus the commit's own.
    assert most <= 2 * 17, most
    want = expect(*model.items())
    location = server.table("m.kv")["metadata_location"]
    assert duckdb_rows(location, "id, v") == want
    assert pyiceberg_rows(server.data_dir, "m", "kv") == want

    # Time travel to a snapshot taken before later merges.
    old_location, old_snapshot, old_want = older
    assert duckdb_rows(old_location, "id, v") == old_want
    old = pyiceberg_table(server.data_dir, "m", "kv").scan(snapshot_id=old_snapshot).to_arrow()
    assert expect(*[(r["id"], r["v"]) for r in old.to_pylist()]) == old_want

    # After a restart the table still reads the same, and keeps taking writes.
    server.restart()
    server.ingest("m.kv", [{"id": 1000, "v": "after"}], operation="upsert")
    model[1000] = "after"
    location = server.table("m.kv")["metadata_location"]
    assert duckdb_rows(location, "id, v") == expect(*model.items())

    # Java Iceberg reads the merged manifests too.
    pytest.importorskip("pyspark", reason="pyspark missing: pip install -r tests/requirements.txt")
    from test_external_writers import spark_session, spark_sql

    spark = spark_session(server.data_dir)
    try:
        got = expect(*[tuple(r) for r in spark_sql(spark, "SELECT id, v FROM moonlink.m.kv")])
        assert got == expect(*model.items())
        got = expect(*[tuple(r) for r in spark_sql(
            spark, f"SELECT id, v FROM moonlink.m.kv VERSION AS OF {old_snapshot}")])
        assert got == old_want
        manifests = spark_sql(spark, "SELECT count(*) FROM moonlink.m.kv.manifests")[0][0]
        assert manifests <= 2 * 17
    finally:
        spark.stop()

