"""Real-time reads (issue 14): `POST /query` and the Postgres wire protocol see every
acknowledged row — committed or still buffered — and agree with DuckDB's `iceberg_scan` of the
committed snapshot; bad input is a clear 400 and the host keeps serving."""
import base64
import csv
import datetime
import io
import json
import os
import random
import socket
import subprocess
import threading
import time
import uuid
from decimal import Decimal

import psycopg2
import pyarrow.ipc
import pytest
import requests

from conftest import free_port
from readers import duckdb_rows

PSQL = os.path.join(os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin", "psql")

KV = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "v", "data_type": "int64", "nullable": True},
    {"name": "s", "data_type": "string", "nullable": True},
]


def query(server, sql, expect_status=200, snapshot_id=None, accept=None, headers=None):
    params = {"snapshot_id": snapshot_id} if snapshot_id is not None else None
    h = dict(headers or {})
    if accept:
        h["Accept"] = accept
    r = requests.post(server.url + "/query", json={"sql": sql}, params=params, headers=h, timeout=60)
    assert expect_status is None or r.status_code == expect_status, r.text
    return r


def rows(server, sql, **kw):
    return [tuple(row.values()) for row in query(server, sql, **kw).json()]


def test_read_your_writes_matches_the_model_and_duckdb(make_server):
    """200 random steps of keyed batches (insert, upsert, delete; async and sync), commits,
    compactions and two kill -9s in between: `/query` equals the model right after every acknowledgement, and after
    every commit the committed snapshot equals DuckDB's `iceberg_scan` of it."""
    server = make_server(["--commit-interval-ms", "150"])
    server.create_table("rt.kv", KV, primary_key=["id"])
    rng = random.Random(14)
    model = {}
    next_id = 0
    sql = "SELECT id, v, s FROM rt.kv ORDER BY id"
    for step in range(200):
        mode = rng.choice(["async", "sync"])
        kind = rng.random()
        if kind < 0.35 or not model:
            batch = []
            for _ in range(rng.randint(1, 40)):
                batch.append({"id": next_id, "v": rng.randint(-99, 99), "s": f"s{next_id}"})
                next_id += 1
            server.ingest("rt.kv", batch, operation="insert", mode=mode)
            model.update({r["id"]: (r["v"], r["s"]) for r in batch})
        elif kind < 0.7:
            keys = rng.sample(range(next_id + 5), rng.randint(1, 30))
            batch = [{"id": k, "v": rng.randint(-99, 99), "s": None if k % 3 == 0 else f"u{step}"} for k in keys]
            server.ingest("rt.kv", batch, operation="upsert", mode=mode)
            model.update({r["id"]: (r["v"], r["s"]) for r in batch})
            next_id = max(next_id, max(keys) + 1)
        elif kind < 0.9:
            keys = rng.sample(sorted(model), min(len(model), rng.randint(1, 25)))
            server.ingest("rt.kv", [{"id": k} for k in keys], operation="delete", mode=mode)
            for k in keys:
                model.pop(k, None)
        elif kind < 0.95:
            r = requests.post(server.url + "/tables/rt.kv/optimize", timeout=60)
            assert r.status_code == 200, r.text
        else:
            committed = server.commit("rt.kv")
            want = sorted((k, v, s) for k, (v, s) in model.items())
            assert sorted(duckdb_rows(committed["metadata_location"], "id, v, s")) == want
            snap = rows(server, sql, snapshot_id=committed["snapshot_id"])
            assert snap == want, f"step {step}: snapshot {committed['snapshot_id']}"
        want = [(k, v, s) for k, (v, s) in sorted(model.items())]
        assert rows(server, sql) == want, f"step {step}"
        if step in (70, 140):
            server.kill()
            server.start()
            assert rows(server, sql) == want, f"after restart at step {step}"
    agg = rows(server, "SELECT count(*) AS n, sum(v) AS s FROM rt.kv")
    assert agg == [(len(model), sum(v for v, _ in model.values()))]


def test_formats_json_arrow_csv(server):
    server.create_table("rt.f", KV)
    server.ingest("rt.f", [{"id": 1, "v": 10, "s": "a,b"}, {"id": 2, "v": None, "s": 'q"uote'}], mode="async")
    sql = "SELECT id, v, s FROM rt.f ORDER BY id"
    r = query(server, sql)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == [{"id": 1, "v": 10, "s": "a,b"}, {"id": 2, "v": None, "s": 'q"uote'}]
    r = query(server, sql, accept="application/vnd.apache.arrow.stream")
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pyarrow.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["id", "v", "s"]
    assert table.to_pylist() == [{"id": 1, "v": 10, "s": "a,b"}, {"id": 2, "v": None, "s": 'q"uote'}]
    r = query(server, sql, accept="text/csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(r.text))) == [["id", "v", "s"], ["1", "10", "a,b"], ["2", "", 'q"uote']]
    # An empty result still has its columns.
    assert query(server, "SELECT id FROM rt.f WHERE id > 5", accept="text/csv").text.strip() == "id"
    assert query(server, "SELECT id FROM rt.f WHERE id > 5").json() == []


def test_csv_writes_maps_and_lists_as_json_text(server):
    """CSV has no nested values: a map (string or other keys) or list column is a field holding
    the JSON `json_rows` gives for it; a null stays an empty field."""
    import pyarrow as pa
    server.create_table("rt.nested", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "attrs", "data_type": "map<string, string>", "nullable": True},
        {"name": "codes", "data_type": "map<int64, int64>", "nullable": True},
        {"name": "tags", "data_type": "list<string>", "nullable": True},
    ])
    batch = pa.record_batch([
        pa.array([1, 2], pa.int64()),
        pa.array([[("a", "x,y"), ("b", None)], None], type=pa.map_(pa.string(), pa.string())),
        pa.array([[(7, 70)], []], type=pa.map_(pa.int64(), pa.int64())),
        pa.array([["p", 'q"'], None], type=pa.list_(pa.string())),
    ], names=["id", "attrs", "codes", "tags"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    r = requests.post(f"{server.url}/ingest/rt.nested", data=sink.getvalue().to_pybytes(),
                      headers={"Content-Type": "application/vnd.apache.arrow.stream"}, timeout=60)
    assert r.status_code == 200, r.text
    sql = "SELECT id, attrs, codes, tags FROM rt.nested ORDER BY id"
    want = query(server, sql).json()
    r = query(server, sql, accept="text/csv")
    got = list(csv.reader(io.StringIO(r.text)))
    assert got[0] == ["id", "attrs", "codes", "tags"]
    assert got[1][1:] == ['{"a":"x,y","b":null}', '{"7":70}', '["p","q\\""]'], got
    assert got[2][1:] == ["", "{}", ""], got
    # The same values as the JSON rows.
    for row, line in zip(want, got[1:]):
        for name, text in zip(["attrs", "codes", "tags"], line[1:]):
            assert (json.loads(text) if text else None) == row[name]
    # After a commit the rows come from Parquet: the same text.
    server.commit("rt.nested")
    assert list(csv.reader(io.StringIO(query(server, sql, accept="text/csv").text))) == got


def test_bad_input_is_a_clear_400_and_the_host_keeps_serving(make_server):
    server = make_server(["--query-memory-bytes", str(2 << 20), "--auth-token", "s3cret"])
    auth = {"Authorization": "Bearer s3cret"}
    r = requests.post(server.url + "/tables/rt.b", json={"schema": KV, "table_config": {}}, headers=auth)
    assert r.status_code == 201, r.text
    rows_ = [{"id": i, "v": i, "s": "x" * 50 + str(i)} for i in range(40_000)]
    r = requests.post(server.url + "/ingest/rt.b", json={"operation": "insert", "request_mode": "async", "data": rows_}, headers=auth)
    assert r.status_code == 200, r.text
    assert query(server, "SELECT 1", expect_status=401).json()["error"] == "unauthorized"
    cases = [
        ("SELEC id FROM rt.b", "invalid_query", "SELEC"),
        ("SELECT * FROM rt.nope", "invalid_query", "nope"),
        ("SELECT nope FROM rt.b", "invalid_query", "nope"),
        ("CREATE TABLE rt.x (a INT)", "invalid_query", "DDL"),
        ("INSERT INTO rt.b VALUES (1, 1, 'a')", "invalid_query", "DML"),
        ("DELETE FROM rt.b", "invalid_query", ""),
        ("COPY (SELECT 1) TO '/tmp/moonlink-query-copy.csv'", "invalid_query", ""),
        ("SELECT a.s, b.s FROM rt.b a JOIN rt.b b ON a.v = b.v ORDER BY a.s", "query_memory_exceeded", "memory"),
    ]
    for sql, code, needle in cases:
        body = query(server, sql, expect_status=400, headers=auth).json()
        assert body["error"] == code, (sql, body)
        assert needle.lower() in body["message"].lower(), (sql, body)
    assert not os.path.exists("/tmp/moonlink-query-copy.csv")
    r = requests.post(server.url + "/query", data="not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "malformed_body", r.text
    body = query(server, "SELECT count(*) AS n FROM rt.b", expect_status=404, snapshot_id=42, headers=auth).json()
    assert body["error"] == "snapshot_not_found"
    # The host still serves reads and writes.
    assert rows(server, "SELECT count(*) AS n FROM rt.b", headers=auth) == [(40_000,)]
    r = requests.post(server.url + "/ingest/rt.b", json={"operation": "insert", "request_mode": "sync", "data": [{"id": -1}]}, headers=auth)
    assert r.status_code == 200, r.text
    assert rows(server, "SELECT count(*) AS n FROM rt.b", headers=auth) == [(40_001,)]


ALL_TYPES = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "i16", "data_type": "int16", "nullable": True},
    {"name": "i32", "data_type": "int32", "nullable": True},
    {"name": "f32", "data_type": "float32", "nullable": True},
    {"name": "f64", "data_type": "float64", "nullable": True},
    {"name": "b", "data_type": "bool", "nullable": True},
    {"name": "t", "data_type": "string", "nullable": True},
    {"name": "d", "data_type": "date32", "nullable": True},
    {"name": "dec", "data_type": "decimal(12,2)", "nullable": True},
    {"name": "ts", "data_type": "timestamp", "nullable": True},
    {"name": "tstz", "data_type": "timestamptz", "nullable": True},
    {"name": "bin", "data_type": "binary", "nullable": True},
    {"name": "u", "data_type": "uuid", "nullable": True},
    {"name": "tm", "data_type": "time", "nullable": True},
    {"name": "li", "data_type": "list<int64>", "nullable": True},
    {"name": "ls", "data_type": "list<string>", "nullable": True},
]
UUID = "3f2c8a7e-9b1d-4c5e-8f6a-0123456789ab"
FULL_ROW = {
    "id": 1, "i16": -7, "i32": 70000, "f32": 1.5, "f64": -2.25, "b": True, "t": "héllo",
    "d": "2026-01-02", "dec": "1234.50", "ts": "2026-01-02T03:04:05.123456",
    "tstz": "2026-01-02T03:04:05+02:00", "bin": base64.b64encode(b"\x00\xffab").decode(),
    "u": UUID, "tm": "13:14:15.5", "li": [1, None, 3], "ls": ["a", "b c"],
}


def pg_server(make_server, token="pg-s3cret"):
    pg_port = free_port()
    args = ["--pg-listen", f"127.0.0.1:{pg_port}"] + (["--auth-token", token] if token else [])
    server = make_server(args)
    server.pg_port = pg_port
    server.auth = {"Authorization": f"Bearer {token}"} if token else {}
    return server


def psql(server, sql, password="pg-s3cret"):
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    out = subprocess.run(
        [PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "reader", "-d", "moonlink",
         "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=60, env=env)
    return out


def test_every_type_over_http_psql_and_psycopg2(make_server):
    server = pg_server(make_server)
    r = requests.post(server.url + "/tables/rt.types", json={"schema": ALL_TYPES, "table_config": {}}, headers=server.auth)
    assert r.status_code == 201, r.text
    nulls = {"id": 2}
    for i, (row, mode) in enumerate([(FULL_ROW, "sync"), (nulls, "async")]):
        r = requests.post(server.url + "/ingest/rt.types", json={"operation": "insert", "request_mode": mode, "data": row}, headers=server.auth)
        assert r.status_code == 200, r.text
    # One row committed, one buffered.
    got = query(server, "SELECT * FROM rt.types ORDER BY id", headers=server.auth).json()
    assert got[1] == {c["name"]: (2 if c["name"] == "id" else None) for c in ALL_TYPES}
    full = got[0]
    assert (full["i16"], full["i32"], full["f32"], full["f64"], full["b"], full["t"]) == (-7, 70000, 1.5, -2.25, True, "héllo")
    assert full["d"] == "2026-01-02" and full["u"] == UUID and full["li"] == [1, None, 3] and full["ls"] == ["a", "b c"]
    assert Decimal(str(full["dec"])) == Decimal("1234.50")
    assert full["ts"].startswith("2026-01-02T03:04:05.123456")
    assert full["tstz"].startswith("2026-01-02T01:04:05")
    assert full["tm"].startswith("13:14:15.5")

    # psql (text format, simple protocol).
    out = psql(server, "SELECT i16, i32, f32, f64, b, t, d, dec, ts, tstz, bin, u, tm, li, ls FROM rt.types WHERE id = 1")
    assert out.returncode == 0, out.stderr
    fields = out.stdout.strip().split("|")
    assert fields[:8] == ["-7", "70000", "1.5", "-2.25", "t", "héllo", "2026-01-02", "1234.50"], fields
    assert fields[8].startswith("2026-01-02 03:04:05.123456"), fields
    assert fields[9].startswith("2026-01-02 01:04:05"), fields
    assert fields[10] == "\\x00ff6162" and fields[11] == UUID and fields[12].startswith("13:14:15.5"), fields
    assert fields[13] == "{1,NULL,3}" and fields[14] == '{a,"b c"}', fields

    # psycopg2: typed values.
    con = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="reader", password="pg-s3cret", dbname="moonlink")
    try:
        cur = con.cursor()
        cur.execute("SELECT i16, i32, f32, f64, b, t, d, dec, ts, tstz, bin, u, tm, li, ls FROM rt.types WHERE id = %s", (1,))
        (i16, i32, f32, f64, b, t, d, dec, ts, tstz, binv, u, tm, li, ls), = cur.fetchall()
        assert (i16, i32, f32, f64, b, t) == (-7, 70000, 1.5, -2.25, True, "héllo")
        assert d == datetime.date(2026, 1, 2) and dec == Decimal("1234.50")
        assert ts == datetime.datetime(2026, 1, 2, 3, 4, 5, 123456)
        assert tstz == datetime.datetime(2026, 1, 2, 1, 4, 5, tzinfo=datetime.timezone.utc)
        assert bytes(binv) == b"\x00\xffab" and str(u) == UUID
        assert tm == datetime.time(13, 14, 15, 500000)
        assert li == [1, None, 3] and ls == ["a", "b c"]
        cur.execute("SELECT * FROM rt.types WHERE id = 2")
        assert cur.fetchall() == [(2,) + (None,) * (len(ALL_TYPES) - 1)]
    finally:
        con.close()


def test_postgres_clients_filters_aggregates_joins_and_auth(make_server):
    server = pg_server(make_server)
    for name, schema in (("rt.users", [{"name": "id", "data_type": "int64", "nullable": False},
                                        {"name": "name", "data_type": "string", "nullable": True}]),
                         ("rt.orders", [{"name": "oid", "data_type": "int64", "nullable": False},
                                         {"name": "user_id", "data_type": "int64", "nullable": True},
                                         {"name": "amount", "data_type": "decimal(10,2)", "nullable": True}])):
        r = requests.post(server.url + f"/tables/{name}", json={"schema": schema, "table_config": {}, "primary_key": [schema[0]["name"]]}, headers=server.auth)
        assert r.status_code == 201, r.text

    def ingest(name, data, op="insert", mode="async"):
        r = requests.post(server.url + f"/ingest/{name}", json={"operation": op, "request_mode": mode, "data": data}, headers=server.auth)
        assert r.status_code == 200, r.text

    ingest("rt.users", [{"id": i, "name": f"user{i}"} for i in range(10)], mode="sync")
    ingest("rt.orders", [{"oid": i, "user_id": i % 10, "amount": f"{i}.50"} for i in range(100)])
    ingest("rt.users", [{"id": 3}], op="delete")
    out = psql(server, "SELECT u.name, count(*), sum(o.amount) FROM rt.users u JOIN rt.orders o ON o.user_id = u.id "
                       "WHERE u.id < 5 GROUP BY u.name ORDER BY u.name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["user0|10|455.00", "user1|10|465.00", "user2|10|475.00", "user4|10|495.00"]
    # psql reports a bad query with the engine's message, and the server keeps serving.
    out = psql(server, "SELECT * FROM rt.nope")
    assert out.returncode != 0 and "nope" in out.stderr
    out = psql(server, "DROP TABLE rt.users")
    assert out.returncode != 0
    # Wrong password: refused.
    out = psql(server, "SELECT 1", password="wrong")
    assert out.returncode != 0 and "password" in out.stderr.lower(), out.stderr
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="x", password="wrong", dbname="moonlink")

    con = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="reader", password="pg-s3cret", dbname="moonlink")
    try:
        cur = con.cursor()
        cur.execute("SELECT count(*), max(amount) FROM rt.orders WHERE user_id = %s AND amount > %s", (7, Decimal("20")))
        assert cur.fetchall() == [(8, Decimal("97.50"))]
        # Read-your-writes through the wire protocol too: an async ack, then the row is there.
        ingest("rt.orders", [{"oid": 1000, "user_id": 7, "amount": "1000.00"}])
        cur.execute("SELECT count(*), max(amount) FROM rt.orders WHERE user_id = 7")
        assert cur.fetchall() == [(11, Decimal("1000.00"))]
        with pytest.raises(psycopg2.Error):
            cur.execute("SELEC 1")
        con.rollback()
        cur.execute("SELECT name FROM rt.users WHERE id IN (2, 3) ORDER BY id")
        assert cur.fetchall() == [("user2",)]
    finally:
        con.close()
    assert rows(server, "SELECT count(*) AS n FROM rt.users", headers=server.auth) == [(9,)]


def test_a_query_over_the_timeout_is_cancelled(make_server):
    server = make_server(["--query-timeout-ms", "1000"])
    server.create_table("rt.slow", KV)
    server.ingest("rt.slow", [{"id": i, "v": i} for i in range(3000)], mode="async")
    slow = "SELECT sum(a.id + b.id + c.id) AS s FROM rt.slow a, rt.slow b, rt.slow c"
    started = time.time()
    body = query(server, slow, expect_status=400).json()
    assert body["error"] == "query_timeout" and "cancelled" in body["message"], body
    assert time.time() - started < 10
    # The timed-out query is gone: the next one runs at once, and ingest goes on.
    assert rows(server, "SELECT count(*) AS n FROM rt.slow") == [(3000,)]
    server.ingest("rt.slow", [{"id": -1}], mode="sync")
    assert rows(server, "SELECT count(*) AS n FROM rt.slow") == [(3001,)]
    assert "panicked" not in server.read_log()


def metric(server, name, labels=""):
    """The value of one sample in /metrics (0 when absent)."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def eventually(check, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


SLOW = "SELECT sum(a.id + b.id + c.id) AS s FROM rt.slow a, rt.slow b, rt.slow c"


def test_a_client_that_hangs_up_cancels_its_query(make_server):
    """An HTTP client that closes its socket, and a Postgres client that sends a cancel request,
    stop their query: it counts as cancelled, nothing is left running, and the host answers."""
    server = pg_server(make_server, token=None)
    server.create_table("rt.slow", KV)
    server.ingest("rt.slow", [{"id": i, "v": i} for i in range(3000)], mode="async")
    cancelled = '{outcome="cancelled"}'
    assert metric(server, "moonlink_queries_total", cancelled) == 0

    # HTTP: send the request, then hang up before any answer (the query takes minutes).
    body = json.dumps({"sql": SLOW}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /query HTTP/1.1\r\nHost: moonlink\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    eventually(lambda: metric(server, "moonlink_queries_running") == 1, "the query to start")
    sock.close()
    eventually(lambda: metric(server, "moonlink_queries_total", cancelled) == 1, "the query to be cancelled")
    assert metric(server, "moonlink_queries_running") == 0
    assert rows(server, "SELECT count(*) AS n FROM rt.slow") == [(3000,)]

    # Postgres wire: a cancel request (psycopg2's cancel(), psql's Ctrl-C) from another thread.
    con = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="reader", dbname="moonlink")
    try:
        errors = []

        def run():
            try:
                con.cursor().execute(SLOW)
            except psycopg2.Error as e:
                errors.append(e)

        worker = threading.Thread(target=run)
        worker.start()
        eventually(lambda: metric(server, "moonlink_queries_running") == 1, "the query to start")
        con.cancel()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert len(errors) == 1 and errors[0].pgcode == "57014", errors
        eventually(lambda: metric(server, "moonlink_queries_total", cancelled) == 2, "the query to be cancelled")
        assert metric(server, "moonlink_queries_running") == 0
        # The same connection goes on.
        con.rollback()
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM rt.slow")
        assert cur.fetchall() == [(3000,)]
    finally:
        con.close()
    assert "panicked" not in server.read_log()


def test_psql_lists_tables_and_tools_read_information_schema(make_server):
    """psql's `\\dt` and `\\dn` (which read pg_catalog) list the tables and namespaces; psycopg2
    reads tables and columns from information_schema."""
    server = pg_server(make_server, token=None)
    server.create_table("sales.orders", KV)
    server.create_table("app.users", KV[:1])

    def meta(command):
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        out = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "reader", "-d", "moonlink",
                              "-X", "-A", "-t", "-F", "|", "-c", command], capture_output=True, text=True, timeout=60,
                             env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert meta("\\dt") == ["app|users|table|moonlink", "sales|orders|table|moonlink"]
    assert meta("\\dt sales.*") == ["sales|orders|table|moonlink"]
    assert meta("\\dt *.us*") == ["app|users|table|moonlink"]
    assert meta("\\dn") == ["app|moonlink", "sales|moonlink"]
    con = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="reader", dbname="moonlink")
    try:
        cur = con.cursor()
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2")
        assert cur.fetchall() == [("app", "users"), ("sales", "orders")]
        cur.execute("SELECT column_name, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", ("sales", "orders"))
        assert cur.fetchall() == [("id", "NO"), ("v", "YES"), ("s", "YES")]
        cur.execute("SELECT c.relname, n.nspname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1")
        assert cur.fetchall() == [("orders", "sales"), ("users", "app")]
    finally:
        con.close()
    # What is not there is still a clear error, and the connection goes on.
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    out = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "reader", "-d", "moonlink",
                          "-X", "-c", "SELECT * FROM pg_catalog.pg_proc"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode != 0 and "pg_proc" in out.stderr
