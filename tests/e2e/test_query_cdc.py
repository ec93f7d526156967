"""Real-time reads of a Postgres mirror (issue 14): while postgres_cdc streams, a row committed
in Postgres — and later its update and its delete — shows through `POST /query` and through a
real `psql` on `--pg-listen`, without waiting for the periodic Iceberg commit (set to an hour)."""
import os
import subprocess
import time

import pytest
import requests

from conftest import free_port
from test_postgres_cdc import PLUGIN, write_config

PSQL = os.path.join(os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin", "psql")
# A bound on "eventually", not a latency assertion (the benchmark measures latency).
VISIBLE_WITHIN = 30.0


def http_rows(server, sql):
    r = requests.post(server.url + "/query", json={"sql": sql}, timeout=30)
    assert r.status_code == 200, r.text
    return [tuple(row.values()) for row in r.json()]


def psql_rows(server, sql):
    out = subprocess.run(
        [PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "reader", "-d", "moonlink",
         "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
    assert out.returncode == 0, out.stderr
    return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]


def eventually(check, what):
    deadline = time.time() + VISIBLE_WITHIN
    last = None
    while time.time() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not visible within {VISIBLE_WITHIN} s; last seen: {last}")


@pytest.fixture
def mirror(postgres, make_server, tmp_path, monkeypatch):
    """A Postgres table `items` mirrored by a host with --pg-listen and no periodic commit."""
    pg = postgres
    pg.execute("CREATE TABLE items (id bigint PRIMARY KEY, v text, n int);"
               "INSERT INTO items SELECT g, 'v' || g, g FROM generate_series(1, 500) g;", db="app")
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    config = write_config(tmp_path, pg, ["public.items"])
    pg_port = free_port()
    server = make_server(["--plugin", PLUGIN, "--config", config, "--pg-listen", f"127.0.0.1:{pg_port}",
                          "--commit-interval-ms", "3600000"])
    server.pg_port = pg_port

    def copied():
        # The plugin creates the table once it has connected: until then the name is unknown.
        r = requests.post(server.url + "/query", json={"sql": "SELECT count(*) AS n FROM public.items"}, timeout=30)
        return r.status_code == 200 and r.json() == [{"n": 500}] or r.text

    eventually(copied, "the initial copy")
    return pg, server


def test_postgres_commits_are_visible_to_query_and_psql(mirror):
    pg, server = mirror
    one = "SELECT id, v, n FROM public.items WHERE id = {id}"

    # Insert: the new row shows through both protocols.
    pg.execute("INSERT INTO items VALUES (1000, 'fresh', 7)", db="app")
    eventually(lambda: http_rows(server, one.format(id=1000)) == [(1000, "fresh", 7)] or
               http_rows(server, one.format(id=1000)), "an inserted row over HTTP")
    assert psql_rows(server, one.format(id=1000)) == [("1000", "fresh", "7")]

    # Update (a value and a key change) and delete, in one transaction and in two.
    pg.execute("UPDATE items SET v = 'changed', n = n + 1 WHERE id = 1000", db="app")
    eventually(lambda: psql_rows(server, one.format(id=1000)) == [("1000", "changed", "8")] or
               psql_rows(server, one.format(id=1000)), "an updated row over psql")
    assert http_rows(server, one.format(id=1000)) == [(1000, "changed", 8)]
    pg.execute("UPDATE items SET id = 2000 WHERE id = 5; DELETE FROM items WHERE id BETWEEN 10 AND 19;",
               db="app")
    pg.execute("DELETE FROM items WHERE id = 1000", db="app")
    agg = "SELECT count(*) AS c, sum(n) AS s, max(id) AS m FROM public.items"
    want = pg.psql("SELECT count(*), sum(n), max(id) FROM items", db="app")[0]
    eventually(lambda: http_rows(server, agg) == [tuple(int(x) for x in want)] or http_rows(server, agg),
               "updates and deletes over HTTP")
    assert psql_rows(server, agg) == [tuple(want)]
    assert http_rows(server, one.format(id=1000)) == [] and psql_rows(server, one.format(id=1000)) == []
    assert http_rows(server, "SELECT v FROM public.items WHERE id IN (5, 2000)") == [("v5",)]

    # And the mirror equals Postgres row for row.
    pg_all = sorted(pg.psql("SELECT id, v, n FROM items", db="app"), key=lambda r: int(r[0]))
    assert psql_rows(server, "SELECT id, v, n FROM public.items ORDER BY id") == [tuple(r) for r in pg_all]
