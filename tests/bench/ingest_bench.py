#!/usr/bin/env python3
"""Throughput of the three write paths, measured in one run, as ratios to a raw Parquet write.

  python3 tests/bench/ingest_bench.py [ROWS] [BATCH_ROWS]

1. raw arrow-rs Parquet write of the rows (baseline) and the engine API path, both from the
   `ingest_bench` example (same process, same rows);
2. the HTTP batch path: the real `moonlink-host` binary, JSON batches of BATCH_ROWS rows posted
   with request_mode=async over loopback, timed until an explicit commit makes them visible.

Prints a Markdown table for BENCHMARKS.md. Uses only the standard library.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/moonlink-target"))


def post(url, body, content_type="application/json"):
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": content_type})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_path(rows, batch_rows):
    data_dir = tempfile.mkdtemp(prefix="moonlink-bench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [os.path.join(TARGET, "debug", "moonlink-host"), "--data-dir", data_dir,
         "--listen", f"127.0.0.1:{port}", "--plugin-dir", os.path.join(TARGET, "wasm32-wasip2", "release"),
         "--commit-interval-ms", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        post(base + "/tables/bench.rows", json.dumps({
            "schema": [{"name": "id", "data_type": "int64", "nullable": False},
                       {"name": "name", "data_type": "string", "nullable": False},
                       {"name": "value", "data_type": "float64", "nullable": False},
                       {"name": "ts", "data_type": "timestamp", "nullable": False}]}).encode())
        bodies = []
        for start in range(0, rows, batch_rows):
            n = min(batch_rows, rows - start)
            bodies.append(json.dumps({"operation": "insert", "request_mode": "async", "data": [
                {"id": i, "name": f"user-{i}", "value": i * 0.5,
                 "ts": f"2023-11-14 22:13:{20 + (i % 30):02d}.{i % 1000000:06d}"}
                for i in range(start, start + n)]}).encode())
        began = time.perf_counter()
        for body in bodies:
            post(base + "/ingest/bench.rows", body)
        post(base + "/tables/bench.rows/commit", b"")
        elapsed = time.perf_counter() - began
        return rows / elapsed
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    batch_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "moonlink-engine", "--example", "ingest_bench", "--", str(rows), str(batch_rows)],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    engine = json.loads(out.strip().splitlines()[-1])
    http = http_path(rows, batch_rows)
    raw = engine["raw_parquet_rows_per_s"]
    print(f"| path | rows/s | ratio to raw Parquet write |")
    print(f"|---|---:|---:|")
    print(f"| raw arrow-rs Parquet write (baseline) | {raw:,.0f} | 1.00 |")
    print(f"| engine API (WAL fsync + Parquet + Iceberg commit) | {engine['engine_rows_per_s']:,.0f} | {engine['engine_rows_per_s'] / raw:.2f} |")
    print(f"| HTTP JSON batches of {batch_rows} (rest_ingest.wasm decode + engine) | {http:,.0f} | {http / raw:.2f} |")


if __name__ == "__main__":
    main()
