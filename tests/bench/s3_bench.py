#!/usr/bin/env python3
"""S3 warehouse against the local disk, in the same run, with the release binary.

1. Commit latency: sync HTTP requests of ROWS rows (a 10-column table), one commit each — the
   request latency is the commit latency a `sync` client sees. p50/p99 and rows/s, warehouse on
   the local disk vs in moto_server (S3 API on loopback).
2. Trickle with compaction: many small commits that the engine merges into larger files; bytes
   downloaded back from S3 (counted by a proxy in front of moto), with the local file cache and
   without it (`--cache-bytes 0`).

  cargo build --release -p moonlink-host && \\
  ~/.cache/moonlink-venv/bin/python tests/bench/s3_bench.py [REQUESTS] [ROWS] [TRICKLE_COMMITS]
"""
import os
import statistics
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
os.environ.setdefault("MOONLINK_BIN", os.path.expanduser("~/.cache/moonlink-target/release/moonlink-host"))
from conftest import Server  # noqa: E402
from s3proxy import FaultProxy  # noqa: E402
from s3server import MotoServer  # noqa: E402

SCHEMA = [{"name": "id", "data_type": "int64", "nullable": False}] + [
    {"name": f"c{i}", "data_type": "string" if i % 2 else "int64", "nullable": True} for i in range(9)
]


def rows(start, n):
    return [{"id": i, **{f"c{c}": (f"v{i}-{c}" if c % 2 else i * c) for c in range(9)}} for i in range(start, start + n)]


def commit_latency(server, requests_n, rows_n):
    server.create_table("bench.p1", SCHEMA)
    session = requests.Session()
    latencies = []
    started = time.perf_counter()
    for r in range(requests_n):
        t = time.perf_counter()
        reply = session.post(f"{server.url}/ingest/bench.p1", timeout=120, json={
            "operation": "insert", "request_mode": "sync", "data": rows(r * rows_n, rows_n)})
        reply.raise_for_status()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "rows_s": requests_n * rows_n / elapsed,
    }


def trickle(server, commits):
    server.create_table("bench.trickle", SCHEMA, primary_key=["id"])
    for i in range(commits):
        server.ingest("bench.trickle", rows(i * 50, 50))
        if i % 4 == 3:
            server.ingest("bench.trickle", [{"id": i * 50}], operation="delete")
    requests.post(f"{server.url}/tables/bench.trickle/optimize", timeout=120).raise_for_status()


def main():
    requests_n, rows_n, commits = (int(a) for a in (sys.argv[1:] + ["200", "1000", "300"][len(sys.argv[1:]):]))
    tmp = tempfile.mkdtemp(prefix="moonlink-s3-bench-")
    moto = MotoServer().start()
    moto.bucket("bench")
    results = {}
    try:
        local = Server(os.path.join(tmp, "local"), ["--commit-interval-ms", "2000"]).start()
        results["local disk"] = commit_latency(local, requests_n, rows_n)
        local.kill()
        s3 = Server(os.path.join(tmp, "s3"), ["--commit-interval-ms", "2000", "--warehouse", "s3://bench/p1",
                                              *moto.host_args()], env=moto.env()).start()
        results["moto S3"] = commit_latency(s3, requests_n, rows_n)
        s3.kill()
        downloaded = {}
        for cache in (True, False):
            proxy = FaultProxy(moto.port).up()
            args = ["--warehouse", f"s3://bench/trickle-{cache}", *moto.host_args(proxy.endpoint)]
            if not cache:
                args += ["--cache-bytes", "0"]
            server = Server(os.path.join(tmp, f"trickle-{cache}"), args, env=moto.env()).start()
            trickle(server, commits)
            downloaded[cache] = proxy.downloaded()
            server.kill()
            proxy.down()
    finally:
        moto.stop()
    base = results["local disk"]
    print(f"commit latency: {requests_n} sync requests of {rows_n} rows (10 columns), one commit each\n")
    print("| warehouse | p50 ms | p99 ms | rows/s | rows/s ratio to local |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rows_s']:,.0f} | {r['rows_s'] / base['rows_s']:.2f} |")
    print(f"\ntrickle: {commits} commits of 50 rows with deletes, then optimize\n")
    print("| local cache | data bytes downloaded from S3 |")
    print("|---|---:|")
    print(f"| on (default) | {downloaded[True]:,} |")
    print(f"| off (--cache-bytes 0) | {downloaded[False]:,} |")


if __name__ == "__main__":
    main()
