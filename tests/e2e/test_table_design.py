"""Table design over time (issue 17): schema evolution over HTTP with v3 column defaults,
`GET /tables/{name}` with the table's design, and partitioned tables. Every change is read back
by DuckDB and PyIceberg; bad input is refused with its 4xx and leaves the table unchanged."""
import json

import pytest
import requests

from readers import duckdb_rows, expect, load_json, pyiceberg_rows, pyiceberg_table


def change(server, name, changes, expect_status=200):
    r = requests.post(f"{server.url}/tables/{name}/schema", json={"changes": changes}, timeout=60)
    assert r.status_code == expect_status, r.text
    return r.json()


def both(server, name, namespace, table, columns="*"):
    loc = server.table(name)["metadata_location"]
    return duckdb_rows(loc, columns), pyiceberg_rows(server.data_dir, namespace, table)


def fields(server, name):
    return {f["name"]: f for f in server.table(name)["fields"]}


BASE = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
    {"name": "n", "data_type": "int32", "nullable": True},
    {"name": "f", "data_type": "float32", "nullable": True},
    {"name": "amount", "data_type": "decimal(6,2)", "nullable": True},
    {"name": "legacy", "data_type": "string", "nullable": True},
    {"name": "req", "data_type": "int32", "nullable": False},
]


def test_every_evolution_op_then_ingest_then_read_with_a_restart_between(make_server):
    server = make_server()
    server.create_table("d.evo", BASE, primary_key=["id"])
    server.ingest("d.evo", [
        {"id": 1, "name": "Ada", "n": 7, "f": 1.5, "amount": "1234.56", "legacy": "x", "req": 1},
        {"id": 2, "name": "Grace", "n": -3, "f": 2.25, "amount": "-0.01", "legacy": "y", "req": 2},
    ])
    before = fields(server, "d.evo")
    # Rows buffered (async, not yet committed) under the old schema when the change lands.
    server.ingest("d.evo", [{"id": 3, "name": "Edsger", "n": 2147483647, "f": 0.5, "amount": "9999.99",
                             "legacy": "z", "req": 3}], mode="async")
    reply = change(server, "d.evo", [
        {"add": {"name": "score", "data_type": "int64", "nullable": False, "default": 42}},
        {"add": {"name": "tag", "data_type": "string", "default": "none"}},
        {"add": {"name": "plain", "data_type": "bool"}},
        {"rename": {"from": "name", "to": "full_name"}},
        {"widen": {"name": "n", "to": "int64"}},
        {"widen": {"name": "f", "to": "float64"}},
        {"widen": {"name": "amount", "to": "decimal(12,2)"}},
        {"nullable": "req"},
        {"drop": "legacy"},
    ])
    after = {f["name"]: f for f in reply["fields"]}
    # Renames keep the field id; widened columns keep theirs; added ones get new ids.
    assert after["full_name"]["id"] == before["name"]["id"]
    assert after["n"]["id"] == before["n"]["id"] and after["n"]["data_type"] == "int64"
    assert after["f"]["data_type"] == "float64" and after["amount"]["data_type"] == "decimal(12,2)"
    assert after["req"]["nullable"] is True and "legacy" not in after
    assert after["score"]["id"] > max(f["id"] for f in before.values())
    assert after["score"]["default"] == 42 and after["tag"]["default"] == "none"
    assert reply["schema_id"] >= 1

    # The Iceberg metadata carries the v3 defaults every reader uses for old rows.
    meta = load_json(reply["metadata_location"])
    schema = next(s for s in meta["schemas"] if s["schema-id"] == meta["current-schema-id"])
    score = next(f for f in schema["fields"] if f["name"] == "score")
    assert score["initial-default"] == 42 and score["write-default"] == 42 and score["required"] is True
    n = next(f for f in schema["fields"] if f["name"] == "n")
    assert n["type"] == "long"

    # The REST ingest path takes the new schema at once; a left-out column gets its default.
    server.ingest("d.evo", [{"id": 4, "full_name": "Barbara", "n": 2 ** 40, "f": 1e300, "amount": "1234567890.12",
                             "score": 5, "tag": "t", "plain": True},
                            {"id": 5, "full_name": "Tony"}])
    # The old name is gone for writers.
    r = requests.post(f"{server.url}/ingest/d.evo", json={"request_mode": "sync", "data": {"id": 6, "name": "x"}})
    assert r.status_code == 422, r.text

    server.restart()
    server.ingest("d.evo", [{"id": 6, "full_name": "Alan", "req": 6}])
    cols = "id, full_name, n, f, amount, req, score, tag, plain"
    want = expect(
        (1, "Ada", 7, 1.5, Decimal("1234.56"), 1, 42, "none", None),
        (2, "Grace", -3, 2.25, Decimal("-0.01"), 2, 42, "none", None),
        (3, "Edsger", 2147483647, 0.5, Decimal("9999.99"), 3, 42, "none", None),
        (4, "Barbara", 2 ** 40, 1e300, Decimal("1234567890.12"), None, 5, "t", True),
        (5, "Tony", None, None, None, None, 42, "none", None),
        (6, "Alan", None, None, None, 6, 42, "none", None),
    )
    duck = duckdb_rows(server.table("d.evo")["metadata_location"], cols)
    assert duck == want
    py = pyiceberg_table(server.data_dir, "d", "evo").scan(selected_fields=tuple(cols.split(", "))).to_arrow()
    assert expect(*[tuple(r[c] for c in cols.split(", ")) for r in py.to_pylist()]) == want

    # Compaction reads old files with the new schema: defaults and widened values survive it.
    server.ingest("d.evo", {"id": 1, "full_name": "Ada L."}, operation="upsert")
    r = requests.post(f"{server.url}/tables/d.evo/optimize", timeout=60)
    assert r.status_code == 200, r.text
    duck = duckdb_rows(server.table("d.evo")["metadata_location"], cols)
    assert duck == expect(
        (1, "Ada L.", None, None, None, None, 42, "none", None),
        *[row for row in want if row[0] != 1])


from decimal import Decimal  # noqa: E402


def test_bad_schema_changes_are_refused_and_change_nothing(server):
    server.create_table("d.bad", BASE, primary_key=["id"])
    server.ingest("d.bad", [{"id": 1, "name": "a", "n": 1, "req": 1}])
    before = server.table("d.bad")
    cases = [
        ([{"drop": "id"}], 409, "primary key"),
        ([{"nullable": "id"}], 409, "primary key"),
        ([{"widen": {"name": "id", "to": "decimal(20,0)"}}], 409, "primary key"),
        ([{"widen": {"name": "n", "to": "int16"}}], 422, "cannot be widened"),
        ([{"widen": {"name": "name", "to": "int64"}}], 422, "cannot be widened"),
        ([{"widen": {"name": "amount", "to": "decimal(8,3)"}}], 422, "scale"),
        ([{"widen": {"name": "amount", "to": "decimal(4,2)"}}], 422, "cannot be widened"),
        ([{"widen": {"name": "n", "to": "nonsense"}}], 422, "unknown data type"),
        ([{"drop": "nope"}], 422, "does not exist"),
        ([{"rename": {"from": "name", "to": "n"}}], 422, "already exists"),
        ([{"add": {"name": "n", "data_type": "int32"}}], 422, "already exists"),
        ([{"add": {"name": "r", "data_type": "int32", "nullable": False}}], 422, "default"),
        ([{"add": {"name": "r", "data_type": "int32", "default": "abc"}}], 422, "default"),
        # Valid changes first, a bad one last: nothing of the list is applied.
        ([{"add": {"name": "ok", "data_type": "int32"}}, {"rename": {"from": "name", "to": "nm"}},
          {"drop": "id"}], 409, "primary key"),
        ([], 422, "no changes"),
    ]
    for changes, status, words in cases:
        body = change(server, "d.bad", changes, expect_status=status)
        assert words in body["message"], (changes, body)
        assert body["error"] in ("key_column", "invalid_schema_change"), body
    for raw in [b"{", json.dumps({"changes": [{"explode": "x"}]}).encode(),
                json.dumps({"changes": [{"add": {"name": "x"}}]}).encode()]:
        r = requests.post(f"{server.url}/tables/d.bad/schema", data=raw,
                          headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, r.text
    assert requests.post(f"{server.url}/tables/no.such/schema", json={"changes": [{"drop": "x"}]}).status_code == 404
    after = server.table("d.bad")
    assert after["fields"] == before["fields"] and after["schema_id"] == before["schema_id"]
    assert after["metadata_location"] == before["metadata_location"]
    # A bare list works too.
    r = requests.post(f"{server.url}/tables/d.bad/schema", json=[{"drop": "legacy"}], timeout=30)
    assert r.status_code == 200, r.text
    assert "legacy" not in fields(server, "d.bad")


def test_get_table_reports_the_design_and_the_schema_alias(server):
    created = server.create_table("d.users", BASE[:3], database="d", table="users", primary_key=["id"])
    server.ingest("d.users", [{"id": 1, "name": "a"}])
    server.ingest("d.users", [{"id": 2}])
    t = server.table("d.users")
    # What GET /tables/{name} reported before is all still there.
    for key in ("name", "database", "table", "schema", "primary_key", "metadata_location", "snapshot_id"):
        assert key in t, key
    assert t["schema"][0] == {"name": "id", "data_type": "int64", "nullable": False}
    assert [(f["id"], f["name"]) for f in t["fields"]] == [(1, "id"), (2, "name"), (3, "n")]
    assert t["format_version"] == 3 and t["schema_id"] == 0
    assert t["partition_spec"] == {"spec_id": 0, "fields": []}
    assert t["properties"]["write.parquet.compression-codec"] == "zstd"
    history = t["snapshot_history"]
    assert len(history) == 2 and history[-1]["snapshot_id"] == t["snapshot_id"]
    assert history[-1]["parent_id"] == history[0]["snapshot_id"]
    assert history[0]["operation"] == "append" and history[0]["summary"]["added-records"] == "1"
    alias = requests.get(f"{server.url}/schema/d/users", timeout=10)
    assert alias.status_code == 200, alias.text
    assert alias.json()["fields"] == t["fields"] and alias.json()["name"] == "d.users"
    assert requests.get(f"{server.url}/schema/d/nope", timeout=10).status_code == 404
    assert created["schema"] == t["schema"]


# --- partitioning ------------------------------------------------------------------------------
from readers import utc  # noqa: E402

EVENTS = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "created_at", "data_type": "timestamptz", "nullable": False},
    {"name": "region", "data_type": "string", "nullable": True},
    {"name": "sku", "data_type": "string", "nullable": True},
    {"name": "qty", "data_type": "int32", "nullable": True},
]


def manifest_partitions(metadata_location):
    """(file_path, content, partition dict) of each live manifest entry, and the manifest
    list's partition summaries, read with DuckDB's avro reader."""
    import duckdb  # noqa: F401
    from readers import _duckdb, local_path

    meta = load_json(metadata_location)
    snap = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    con = _duckdb()
    try:
        lists = con.execute(f"SELECT manifest_path, partition_spec_id, partitions FROM read_avro('{snap['manifest-list']}')").fetchall()
        entries = []
        for path, spec_id, _ in lists:
            rows = con.execute(f"SELECT data_file.file_path, data_file.content, data_file.partition "
                               f"FROM read_avro('{local_path(path)}') WHERE status != 2").fetchall()
            entries.extend((p, c, part, spec_id) for p, c, part in rows)
        return entries, [summary for _, _, summary in lists]
    finally:
        con.close()


def event_rows(n_days=3, per_day=4):
    rows = []
    for d in range(n_days):
        for i in range(per_day):
            k = d * per_day + i
            rows.append({"id": k, "created_at": f"2026-03-{d + 1:02d}T{i:02d}:30:00+00:00",
                         "region": ["eu", "us"][k % 2], "sku": f"sku-{k % 3}x", "qty": k})
    return rows


def as_tuple(r):
    day, hour = int(r["created_at"][8:10]), int(r["created_at"][11:13])
    return (r["id"], utc(2026, 3, day, hour, 30), r["region"], r["sku"], r["qty"])


def test_partitioned_table_one_partition_per_file_read_and_pruned(server):
    created = server.create_table("p.events", EVENTS, database="p", table="events",
                                  partition_by=["day(created_at)", "bucket(4, id)", "region", "truncate(4, sku)"])
    assert created["partition_by"] == ["day(created_at)", "bucket(4, id)", "region", "truncate(4, sku)"]
    rows = event_rows()
    server.ingest("p.events", rows[:7])
    server.ingest("p.events", rows[7:])
    t = server.table("p.events")
    assert [(f["name"], f["transform"], f["source"]) for f in t["partition_spec"]["fields"]] == [
        ("created_at_day", "day", "created_at"), ("id_bucket", "bucket[4]", "id"),
        ("region", "identity", "region"), ("sku_trunc", "truncate[4]", "sku")]
    want = expect(*[as_tuple(r) for r in rows])
    assert both(server, "p.events", "p", "events") == (want, want)

    entries, summaries = manifest_partitions(t["metadata_location"])
    data = [e for e in entries if e[1] == 0]
    # Every file holds exactly one partition: its rows' values are the entry's tuple.
    assert len(data) >= len({(r["created_at"][:10], r["region"], r["sku"][:4]) for r in rows})
    from readers import _duckdb, local_path
    con = _duckdb()
    try:
        for path, _, part, _ in data:
            assert set(part) == {"created_at_day", "id_bucket", "region", "sku_trunc"}, part
            found = con.execute(f"SELECT DISTINCT CAST(created_at AS DATE), region, left(sku, 4) "
                                f"FROM read_parquet('{local_path(path)}')").fetchall()
            assert len(found) == 1, (path, found)
            day, region, trunc = found[0]
            assert (region, trunc) == (part["region"], part["sku_trunc"]), (found, part)
            assert str(day) == str(part["created_at_day"])[:10] or \
                (day - __import__("datetime").date(1970, 1, 1)).days == part["created_at_day"], (day, part)
    finally:
        con.close()
    # Manifest lists carry partition summaries (readers prune manifests with them).
    assert all(s for s in summaries), summaries

    # PyIceberg plans only the files of the matching partitions.
    tbl = pyiceberg_table(server.data_dir, "p", "events")
    all_files = list(tbl.scan().plan_files())
    eu = list(tbl.scan(row_filter="region == 'eu'").plan_files())
    day2 = list(tbl.scan(row_filter="created_at >= '2026-03-02T00:00:00+00:00' and created_at < '2026-03-03T00:00:00+00:00'").plan_files())
    assert 0 < len(eu) < len(all_files) and 0 < len(day2) < len(all_files), (len(eu), len(day2), len(all_files))
    eu_rows = tbl.scan(row_filter="region == 'eu'").to_arrow().to_pylist()
    assert sorted(r["id"] for r in eu_rows) == sorted(r["id"] for r in rows if r["region"] == "eu")

    # Small files merge within their partition only: after optimize, still one partition a file.
    for i in range(3):
        server.ingest("p.events", [dict(rows[0], id=100 + i), dict(rows[1], id=200 + i)])
    r = requests.post(f"{server.url}/tables/p.events/optimize", timeout=60)
    assert r.status_code == 200, r.text
    entries, _ = manifest_partitions(server.table("p.events")["metadata_location"])
    data = [e for e in entries if e[1] == 0]
    parts = [json.dumps(e[2], sort_keys=True, default=str) for e in data]
    assert len(parts) == len(set(parts)), "two files of one partition after optimize"
    assert duckdb_rows(server.table("p.events")["metadata_location"], "count(*)") == [(len(rows) + 6,)]


def test_keyed_partitioned_upserts_move_rows_across_partitions_with_a_kill(make_server):
    server = make_server()
    server.create_table("p.k", EVENTS, database="p", table="k", primary_key=["id"],
                        partition_by=["region", "month(created_at)"])
    rows = event_rows(2, 5)
    server.ingest("p.k", rows)
    # Move every row to the other region (another partition), some twice, and delete one.
    moved = [dict(r, region="us" if r["region"] == "eu" else "eu", qty=r["qty"] + 1000) for r in rows]
    server.ingest("p.k", moved, operation="upsert")
    server.ingest("p.k", [dict(moved[0], region="ap", qty=7)], operation="upsert", mode="async")
    server.ingest("p.k", [{"id": moved[1]["id"]}], operation="delete", mode="async")
    server.kill()  # kill -9: the async writes are only in the log
    server.start()
    final = {r["id"]: r for r in moved}
    final[moved[0]["id"]] = dict(moved[0], region="ap", qty=7)
    del final[moved[1]["id"]]
    server.commit("p.k")
    want = expect(*[as_tuple(r) for r in final.values()])
    assert both(server, "p.k", "p", "k") == (want, want)
    entries, _ = manifest_partitions(server.table("p.k")["metadata_location"])
    data = {e[0]: e for e in entries if e[1] == 0}
    dvs = [e for e in entries if e[1] == 1]
    assert dvs, "moved rows are deleted from their old files by deletion vectors"
    for path, _, part, _ in dvs:
        # A deletion vector is in its data file's partition.
        assert part in [d[2] for d in data.values()], (part, path)
    regions = {e[2]["region"] for e in data.values()}
    assert {"eu", "us", "ap"} <= regions
    # Readers prune by the new partition and see the moved row once.
    tbl = pyiceberg_table(server.data_dir, "p", "k")
    ap = tbl.scan(row_filter="region == 'ap'")
    assert len(list(ap.plan_files())) == 1
    assert [r["id"] for r in ap.to_arrow().to_pylist()] == [moved[0]["id"]]
    # Compaction keeps partitions apart and the key index right.
    r = requests.post(f"{server.url}/tables/p.k/optimize", timeout=60)
    assert r.status_code == 200, r.text
    server.ingest("p.k", [dict(moved[2], region="eu", qty=1)], operation="upsert")
    final[moved[2]["id"]] = dict(moved[2], region="eu", qty=1)
    want = expect(*[as_tuple(r) for r in final.values()])
    assert both(server, "p.k", "p", "k") == (want, want)


def test_bad_partitioning_is_refused_naming_the_problem(server):
    cases = [
        (["week(created_at)"], "unknown transform 'week'"),
        (["day(region)"], "cannot be applied to column 'region'"),
        (["bucket(id)"], "number of buckets"),
        (["bucket(0, id)"], "positive integer"),
        (["truncate(sku)"], "width"),
        (["missing"], "no column 'missing'"),
        (["day(nope)"], "no column 'nope'"),
        (["hour(created_at"], "expected name(args)"),
    ]
    for partition_by, words in cases:
        r = requests.post(f"{server.url}/tables/p.bad", json={"schema": EVENTS, "partition_by": partition_by}, timeout=30)
        assert r.status_code == 422, (partition_by, r.text)
        body = r.json()
        assert body["error"] == "invalid_partition" and words in body["message"], (partition_by, body)
        assert requests.get(f"{server.url}/tables/p.bad", timeout=10).status_code == 404
    r = requests.post(f"{server.url}/tables/p.bad", json={"schema": EVENTS, "partition_by": "region"}, timeout=30)
    assert r.status_code == 400, r.text
    assert server.tables() == []
    # A partition source cannot be dropped.
    server.create_table("p.src", EVENTS, partition_by=["region"])
    body = change(server, "p.src", [{"drop": "region"}], expect_status=409)
    assert "partition source" in body["message"]


def test_java_iceberg_reads_an_evolved_and_a_partitioned_table(server):
    """Spark with Java Iceberg 1.10 (the pattern of test_external_writers.py) reads the old rows
    of an evolved table with their defaults, renamed and widened columns, and a partitioned
    table, pruning by partition."""
    import pytest

    pytest.importorskip("pyspark", reason="pyspark missing: pip install -r tests/requirements.txt")
    from test_external_writers import spark_session, spark_sql

    server.create_table("j.evo", BASE[:3], database="j", table="evo", primary_key=["id"])
    server.ingest("j.evo", [{"id": 1, "name": "Ada", "n": 7}, {"id": 2, "name": "Grace", "n": -3}])
    change(server, "j.evo", [
        {"add": {"name": "score", "data_type": "int64", "nullable": False, "default": 42}},
        {"rename": {"from": "name", "to": "full_name"}},
        {"widen": {"name": "n", "to": "int64"}},
    ])
    server.ingest("j.evo", [{"id": 3, "full_name": "Barbara", "n": 2 ** 40, "score": 5}])
    server.create_table("j.events", EVENTS, database="j", table="events",
                        partition_by=["day(created_at)", "region", "bucket(4, id)"])
    rows = event_rows()
    server.ingest("j.events", rows)
    spark = spark_session(server.data_dir)
    try:
        got = expect(*[tuple(r) for r in spark_sql(spark, "SELECT id, full_name, n, score FROM moonlink.j.evo")])
        assert got == expect((1, "Ada", 7, 42), (2, "Grace", -3, 42), (3, "Barbara", 2 ** 40, 5))
        got = expect(*[tuple(r) for r in spark_sql(spark, "SELECT id, region, qty FROM moonlink.j.events")])
        assert got == expect(*[(r["id"], r["region"], r["qty"]) for r in rows])
        eu = spark_sql(spark, "SELECT count(*) FROM moonlink.j.events WHERE region = 'eu'")[0][0]
        assert eu == sum(1 for r in rows if r["region"] == "eu")
        files = spark_sql(spark, "SELECT partition.region, count(*) FROM moonlink.j.events.files GROUP BY 1")
        assert {r[0] for r in files} == {"eu", "us"}
    finally:
        spark.stop()


def test_partition_evolution_keeps_old_files_and_moves_them_on_merge(make_server):
    server = make_server()
    server.create_table("p.evo", EVENTS, database="p", table="evo", partition_by=["region"])
    rows = event_rows(3, 4)
    server.ingest("p.evo", rows[:6])
    r = requests.put(f"{server.url}/tables/p.evo/partitioning", json={"partition_by": ["day(created_at)", "region"]}, timeout=60)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["partition_by"] == ["day(created_at)", "region"] and t["partition_spec"]["spec_id"] == 1
    assert [f["name"] for f in t["partition_spec"]["fields"]] == ["created_at_day", "region"]
    # Files written before keep their spec (0: region only) ...
    entries, _ = manifest_partitions(t["metadata_location"])
    assert {e[3] for e in entries} == {0} and all(set(e[2]) == {"region"} for e in entries)
    old = {e[0] for e in entries}
    partial = expect(*[as_tuple(r) for r in rows[:6]])
    assert both(server, "p.evo", "p", "evo") == (partial, partial)
    server.restart()
    server.ingest("p.evo", rows[6:])
    want = expect(*[as_tuple(r) for r in rows])
    assert both(server, "p.evo", "p", "evo") == (want, want)
    # ... new files are in spec 1, and the next commit moved the small old files into it.
    entries, _ = manifest_partitions(server.table("p.evo")["metadata_location"])
    assert {e[3] for e in entries} == {1}, entries
    assert all(set(e[2]) == {"created_at_day", "region"} for e in entries)
    assert not old & {e[0] for e in entries}
    r = requests.post(f"{server.url}/tables/p.evo/optimize", timeout=60)
    assert r.status_code == 200, r.text
    assert both(server, "p.evo", "p", "evo") == (want, want)
    tbl = pyiceberg_table(server.data_dir, "p", "evo")
    day1 = tbl.scan(row_filter="created_at < '2026-03-02T00:00:00+00:00'")
    assert 0 < len(list(day1.plan_files())) < len(list(tbl.scan().plan_files()))
    # Refused: bad expressions (422, nothing changed). Keyed tables evolve too.
    before = server.table("p.evo")
    for partition_by, words in [(["week(created_at)"], "unknown transform"), (["nope"], "no column 'nope'"),
                                (["day(region)"], "cannot be applied to column 'region'"),
                                (["bucket(id)"], "number of buckets")]:
        r = requests.put(f"{server.url}/tables/p.evo/partitioning", json={"partition_by": partition_by}, timeout=30)
        assert r.status_code == 422 and words in r.json()["message"], r.text
    assert server.table("p.evo")["partition_spec"] == before["partition_spec"]
    assert server.table("p.evo")["metadata_location"] == before["metadata_location"]
    server.create_table("p.keyed", EVENTS, primary_key=["id"])
    r = requests.put(f"{server.url}/tables/p.keyed/partitioning", json={"partition_by": ["region"]}, timeout=30)
    assert r.status_code == 200 and r.json()["partition_spec"]["spec_id"] == 1, r.text
    assert requests.put(f"{server.url}/tables/p.none/partitioning", json={"partition_by": []}).status_code == 404


def live_entries(metadata_location):
    """(file_path, content, partition, spec_id, referenced_data_file) of each live manifest
    entry, the spec id being the manifest's (`partition-spec-id` in the manifest list)."""
    from readers import _duckdb, local_path

    meta = load_json(metadata_location)
    snap = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    con = _duckdb()
    try:
        lists = con.execute(f"SELECT manifest_path, partition_spec_id FROM read_avro('{snap['manifest-list']}')").fetchall()
        entries = []
        for path, spec_id in lists:
            rows = con.execute(f"SELECT data_file.file_path, data_file.content, data_file.partition, "
                               f"data_file.referenced_data_file FROM read_avro('{local_path(path)}') "
                               f"WHERE status != 2").fetchall()
            entries.extend((p, c, part, spec_id, ref) for p, c, part, ref in rows)
        return entries
    finally:
        con.close()


def check_specs(server, name, namespace, table, model, want_specs):
    """Both readers read exactly `model`; PyIceberg sees data files of exactly `want_specs`;
    every deletion vector is in the spec and partition of the live data file it points at."""
    want = expect(*[as_tuple(r) for r in model.values()])
    assert both(server, name, namespace, table) == (want, want)
    files = pyiceberg_table(server.data_dir, namespace, table).inspect.files().to_pylist()
    assert {f["spec_id"] for f in files if f["content"] == 0} == want_specs, files
    entries = live_entries(server.table(name)["metadata_location"])
    data = {e[0]: e for e in entries if e[1] == 0}
    for path, _, part, spec_id, ref in (e for e in entries if e[1] == 1):
        assert ref in data, (path, ref)
        assert (spec_id, part) == (data[ref][3], data[ref][2]), (path, part, spec_id, data[ref])
    return entries


def test_keyed_partition_evolution_upserts_and_deletes_across_specs_with_a_kill(make_server):
    """A keyed table partitioned by bucket(4, id) moves to region: upserts and deletes reach
    rows in old-spec files (deletion vectors in spec 0) and new ones, a kill -9 loses nothing,
    and optimize moves the old-spec files into the new spec."""
    server = make_server()
    # Background compaction off: old-spec files stay until optimize.
    server.create_table("p.ke", EVENTS, database="p", table="ke", primary_key=["id"],
                        partition_by=["bucket(4, id)"], table_config={"compaction": False})
    rows = event_rows(3, 4)
    server.ingest("p.ke", rows)
    model = {r["id"]: r for r in rows}
    r = requests.put(f"{server.url}/tables/p.ke/partitioning", json={"partition_by": ["region"]}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["partition_spec"]["spec_id"] == 1
    check_specs(server, "p.ke", "p", "ke", model, {0})

    def upsert(changed, mode="sync"):
        server.ingest("p.ke", changed, operation="upsert", mode=mode)
        model.update({c["id"]: c for c in changed})

    def delete(ids, mode="sync"):
        server.ingest("p.ke", [{"id": i} for i in ids], operation="delete", mode=mode)
        for i in ids:
            del model[i]

    # Old rows move regions, new keys arrive, one new row changes again, deletes on both specs.
    upsert([dict(model[i], region="ap", qty=i + 500) for i in (0, 1, 5)] +
           [dict(rows[0], id=100, region="eu"), dict(rows[1], id=101, region="us")])
    upsert([dict(model[100], region="us", qty=1)])
    delete([2, 7, 101])
    entries = check_specs(server, "p.ke", "p", "ke", model, {0, 1})
    assert any(e[1] == 1 and e[3] == 0 for e in entries), "old rows are deleted by spec-0 vectors"
    assert any(e[1] == 1 and e[3] == 1 for e in entries), "new rows are deleted by spec-1 vectors"

    # Changes only in the log when the host is killed.
    upsert([dict(model[3], region="eu", qty=33), dict(model[100], region="ap", qty=2)], mode="async")
    delete([4, 1], mode="async")
    server.kill()
    server.start()
    server.commit("p.ke")
    check_specs(server, "p.ke", "p", "ke", model, {0, 1})
    # The rebuilt key index finds rows of either spec.
    upsert([dict(model[6], region="us", qty=66), dict(model[3], region="us", qty=34)])
    delete([8])
    check_specs(server, "p.ke", "p", "ke", model, {0, 1})

    r = requests.post(f"{server.url}/tables/p.ke/optimize", timeout=60)
    assert r.status_code == 200, r.text
    entries = check_specs(server, "p.ke", "p", "ke", model, {1})
    assert {e[3] for e in entries} == {1}, entries
    # One region per file: the partition tuple names the rows' region.
    from readers import _duckdb, local_path
    con = _duckdb()
    try:
        for path, content, part, _, _ in entries:
            if content == 0:
                found = con.execute(f"SELECT DISTINCT region FROM read_parquet('{local_path(path)}')").fetchall()
                assert found == [(part["region"],)], (path, found, part)
    finally:
        con.close()
    # PyIceberg prunes by the new spec.
    tbl = pyiceberg_table(server.data_dir, "p", "ke")
    ap = tbl.scan(row_filter="region == 'ap'")
    assert 0 < len(list(ap.plan_files())) < len(list(tbl.scan().plan_files()))
    assert sorted(r["id"] for r in ap.to_arrow().to_pylist()) == sorted(i for i, r in model.items() if r["region"] == "ap")
    # The key index follows the rewrite, across a restart too.
    upsert([dict(model[9], region="ap", qty=99)])
    delete([10])
    server.restart()
    upsert([dict(model[11], region="eu", qty=111), dict(model[0], region="us", qty=0)])
    check_specs(server, "p.ke", "p", "ke", model, {1})


def test_java_iceberg_reads_a_keyed_table_across_partition_specs(server):
    """Spark with Java Iceberg reads a keyed table whose deletion vectors are in the old spec
    and the new one, before and after optimize moves the old-spec files."""
    import pytest

    pytest.importorskip("pyspark", reason="pyspark missing: pip install -r tests/requirements.txt")
    from test_external_writers import spark_session, spark_sql

    server.create_table("j.ke", EVENTS, database="j", table="ke", primary_key=["id"],
                        partition_by=["bucket(4, id)"], table_config={"compaction": False})
    rows = event_rows(3, 4)
    server.ingest("j.ke", rows)
    r = requests.put(f"{server.url}/tables/j.ke/partitioning", json={"partition_by": ["region"]}, timeout=60)
    assert r.status_code == 200, r.text
    model = {r["id"]: (r["id"], r["region"], r["qty"]) for r in rows}
    moved = [dict(rows[i], region="ap", qty=i + 500) for i in (0, 1, 5)] + [dict(rows[0], id=100, region="eu")]
    server.ingest("j.ke", moved, operation="upsert")
    model.update({m["id"]: (m["id"], m["region"], m["qty"]) for m in moved})
    server.ingest("j.ke", [{"id": 2}, {"id": 100}], operation="delete")
    del model[2], model[100]
    spark = spark_session(server.data_dir)
    try:
        def read():
            return expect(*[tuple(r) for r in spark_sql(spark, "SELECT id, region, qty FROM moonlink.j.ke")])

        assert read() == expect(*model.values())
        specs = spark_sql(spark, "SELECT DISTINCT spec_id FROM moonlink.j.ke.files WHERE content = 0")
        assert {r[0] for r in specs} == {0, 1}
        r = requests.post(f"{server.url}/tables/j.ke/optimize", timeout=60)
        assert r.status_code == 200, r.text
        assert read() == expect(*model.values())
        specs = spark_sql(spark, "SELECT DISTINCT spec_id FROM moonlink.j.ke.files")
        assert {r[0] for r in specs} == {1}
        ap = spark_sql(spark, "SELECT count(*) FROM moonlink.j.ke WHERE region = 'ap'")[0][0]
        assert ap == sum(1 for m in model.values() if m[1] == "ap")
    finally:
        spark.stop()


def codecs_of_live_files(server, namespace, table):
    """{data file path: its Parquet codec} for every live data file (PyIceberg's plan)."""
    import pyarrow.parquet as pq

    from readers import local_path

    out = {}
    for task in pyiceberg_table(server.data_dir, namespace, table).scan().plan_files():
        meta = pq.ParquetFile(local_path(task.file.file_path)).metadata
        codecs = {meta.row_group(g).column(c).compression
                  for g in range(meta.num_row_groups) for c in range(meta.num_columns)}
        assert len(codecs) == 1, codecs
        out[task.file.file_path] = codecs.pop()
    return out


def test_data_files_are_compressed_as_the_table_properties_say(make_server):
    """`write.parquet.compression-codec` / `-level` (Java Iceberg's names), set with Spark's
    `ALTER TABLE ... SET TBLPROPERTIES` while the host runs, decide how its later commits
    write; unset means zstd; a value that does not parse is ignored (commits go on in the
    default) instead of poisoning the table."""
    pytest.importorskip("pyspark", reason="pyspark missing: pip install -r tests/requirements.txt")
    from test_external_writers import spark_session, spark_sql

    server = make_server()
    server.create_table("c.logs", BASE, database="c", table="logs", primary_key=["id"])
    row = lambda i: {"id": i, "name": f"n{i}" * 20, "n": i, "f": 0.5, "amount": "1.00", "legacy": "x", "req": i}
    server.ingest("c.logs", [row(i) for i in range(100)])
    seen = codecs_of_live_files(server, "c", "logs")
    assert set(seen.values()) == {"ZSTD"}, seen

    def set_properties(props):
        pairs = ", ".join(f"'{k}'='{v}'" for k, v in props.items())
        spark = spark_session(server.data_dir)
        try:
            spark_sql(spark, f"ALTER TABLE moonlink.c.logs SET TBLPROPERTIES ({pairs})")
        finally:
            spark.stop()

    def newest(first, last):
        """Ingests rows [first, last) in two requests; the codecs of the live files the
        second one added (the first may still be written before the host sees the change)."""
        mid = (first + last) // 2
        server.ingest("c.logs", [row(i) for i in range(first, mid)])
        before = set(codecs_of_live_files(server, "c", "logs"))
        server.ingest("c.logs", [row(i) for i in range(mid, last)])
        return {p: c for p, c in codecs_of_live_files(server, "c", "logs").items() if p not in before}

    set_properties({"write.parquet.compression-codec": "snappy"})
    new = newest(100, 200)
    assert new and set(new.values()) == {"SNAPPY"}, new
    assert server.table("c.logs")["properties"]["write.parquet.compression-codec"] == "snappy"

    set_properties({"write.parquet.compression-codec": "gzip", "write.parquet.compression-level": "9"})
    server.restart()
    new = newest(200, 300)
    assert new and set(new.values()) == {"GZIP"}, new

    # Garbage in the properties: commits keep working, in the default codec.
    set_properties({"write.parquet.compression-codec": "lzo", "write.parquet.compression-level": "max"})
    new = newest(300, 400)
    assert new and set(new.values()) == {"ZSTD"}, new
    want = expect(*[(r["id"], r["name"]) for r in map(row, range(400))])
    loc = server.table("c.logs")["metadata_location"]
    assert duckdb_rows(loc, "id, name") == want
    assert pyiceberg_rows(server.data_dir, "c", "logs")  # every codec reads back
