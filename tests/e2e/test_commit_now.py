"""Commits never wait for nothing: a source that goes idle, or finishes an initial copy, has its
rows committed at once; `--commit-interval-ms` is only the upper bound on staleness while a
source keeps producing. With a one-minute interval, everything here must land long before a
commit tick could have committed it."""
import os
import time

import requests

from conftest import PLUGIN_DIR
from test_postgres_cdc import write_config

INTERVAL = ["--commit-interval-ms", "60000"]


def live_rows(server, table):
    r = requests.get(f"{server.url}/tables/{table}", timeout=5)
    return r.json()["live_rows"] if r.status_code == 200 else None


def wait_rows(server, table, rows, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if live_rows(server, table) == rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{table} did not reach {rows} committed rows within {timeout}s "
                         f"(has {live_rows(server, table)}; the commit interval is 60s)")


def test_initial_copy_and_idle_stream_commit_at_once(postgres, make_server, tmp_path, monkeypatch):
    pg = postgres
    pg.execute("CREATE TABLE orders (id bigint PRIMARY KEY, note text);"
               "INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 5000) g;", db="app")
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    config = write_config(tmp_path, pg, ["public.orders"])
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", config,
                          *INTERVAL])
    # The copy's end commits the table.
    wait_rows(server, "public.orders", 5000, 20)
    # A change followed by silence commits the moment the source finds nothing more.
    pg.execute("INSERT INTO orders VALUES (9001, 'late'); DELETE FROM orders WHERE id <= 10", db="app")
    wait_rows(server, "public.orders", 4991, 20)


def test_a_large_copy_commits_its_prefix_while_it_runs(postgres, make_server, tmp_path, monkeypatch):
    """The copied prefix commits while the copy runs, so the commit at its end writes only a
    tail: with a one-minute interval, a 1M-row copy lands in more than one appended snapshot
    (without prefix commits it would be exactly one, at the copy's end)."""
    pg = postgres
    pg.execute("CREATE TABLE big (id bigint PRIMARY KEY, note text);"
               "INSERT INTO big SELECT g, 'n' || g FROM generate_series(1, 1000000) g; ANALYZE big;", db="app")
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    config = write_config(tmp_path, pg, ["public.big"])
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", config,
                          *INTERVAL])
    wait_rows(server, "public.big", 1_000_000, 120)
    history = server.table("public.big")["snapshot_history"]
    added = [int(h["summary"].get("added-records", 0)) for h in history if h["operation"] == "append"]
    added = [n for n in added if n > 0]
    assert len(added) >= 2 and sum(added) == 1_000_000, history
