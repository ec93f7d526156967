#!/usr/bin/env python3
"""Ingest throughput while clients query in a loop, against the same ingest alone, one run.

  ~/.cache/moonlink-venv/bin/python tests/bench/query_under_ingest.py [SECONDS] [QUERY_CLIENTS]

Each phase runs on a fresh moonlink-host (commits every 500 ms, the test harness's default) with a keyed table: one client posts 10,000-row Arrow IPC batches (`request_mode=async`,
pre-encoded, so the client costs little) for SECONDS (default 15). Phases:
1. no queries;
2. QUERY_CLIENTS (default 4) clients looping a "recent rows" query
   (`count(*), max(amount) WHERE id >= <last acknowledged id - 10000>`: prunes old row groups);
3. the same clients looping a full-table aggregate (`count(*), sum(amount) GROUP BY country`).
Prints rows/s per phase, the ratio to phase 1, and the queries answered.
"""
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import pyarrow as pa
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Server  # noqa: E402

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
BATCH = 10_000
TABLE = "bench.live"
SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "country", "data_type": "string", "nullable": True},
    {"name": "amount", "data_type": "float64", "nullable": True},
    {"name": "note", "data_type": "string", "nullable": True},
]
COUNTRIES = ["fr", "de", "us", "jp", "br", "in", "ng", "au"]


def body(first):
    ids = range(first, first + BATCH)
    table = pa.table({
        "id": pa.array(ids, pa.int64()),
        "country": pa.array([COUNTRIES[i % 8] for i in ids]),
        "amount": pa.array([(i % 10_000) * 0.25 for i in ids], pa.float64()),
        "note": pa.array([f"note {i}" for i in ids]),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


# Pre-encoded bodies: every phase sends the same sequence.
BODIES = []


def query_loop(url, queries, acked, stop, answered):
    sess = requests.Session()
    while not stop.is_set():
        sql = queries.format(t=TABLE, since=max(0, acked.value - 10_000))
        r = sess.post(url + "/query", json={"sql": sql}, timeout=120)
        r.raise_for_status()
        with answered.get_lock():
            answered.value += 1


def phase(queries):
    d = tempfile.mkdtemp()
    s = Server(os.path.join(d, "data")).start()
    try:
        s.create_table(TABLE, SCHEMA, primary_key=["id"])
        acked = multiprocessing.Value("q", 0)
        stop = multiprocessing.Event()
        answered = multiprocessing.Value("q", 0)
        # Query clients are processes: in threads they would take the ingest client's GIL.
        threads = [multiprocessing.Process(target=query_loop, args=(s.url, queries, acked, stop, answered))
                   for _ in range(CLIENTS if queries else 0)]
        sess = requests.Session()
        headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < SECONDS:
            while n >= len(BODIES):
                BODIES.append(body(len(BODIES) * BATCH))
            r = sess.post(f"{s.url}/ingest/{TABLE}?request_mode=async&operation=insert", data=BODIES[n],
                          headers=headers, timeout=120)
            r.raise_for_status()
            n += 1
            acked.value = n * BATCH
        elapsed = time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        return n * BATCH / elapsed, answered.value, elapsed
    finally:
        s.kill()
        shutil.rmtree(d, ignore_errors=True)


RECENT = "SELECT count(*) AS n, max(amount) AS m FROM {t} WHERE id >= {since}"
FULL = "SELECT country, count(*) AS n, sum(amount) AS s FROM {t} GROUP BY country"
if __name__ == "__main__":
    # Warm the body cache so encoding is not timed in phase 1.
    for i in range(200):
        BODIES.append(body(i * BATCH))
    base, _, _ = phase(None)
    print(f"| no queries | {base:,.0f} rows/s | 1.00 | - |")
    for name, sql in (("recent-rows query", RECENT), ("full-table aggregate", FULL)):
        rate, answered, elapsed = phase(sql)
        print(f"| {CLIENTS} clients, {name} | {rate:,.0f} rows/s | {rate / base:.2f} | "
              f"{answered / elapsed:.1f} queries/s |")
