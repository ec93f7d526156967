#!/usr/bin/env python3
"""File health after an hour of trickle ingest (1,000 rows/s, one commit per 2 s, compressed in
time): the engine's file layout against a writer that makes one file per commit, plus a
DuckDB full scan of each, measured in the same run.

  ~/.cache/moonlink-venv/bin/python tests/bench/file_health.py [COMMITS] [ROWS_PER_COMMIT] [TARGET_MIB]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from readers import _duckdb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scan_seconds(metadata_location, repeats=3):
    con = _duckdb()
    try:
        best = None
        for _ in range(repeats):
            start = time.perf_counter()
            con.execute(f"SELECT count(*), sum(value), count(DISTINCT user) FROM iceberg_scan('{metadata_location}')").fetchall()
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
        return best
    finally:
        con.close()


def main():
    args = sys.argv[1:] or ["1800", "2000", "8"]
    out = tempfile.mkdtemp(prefix="moonlink-health-")
    lines = subprocess.run(["cargo", "run", "-q", "-p", "moonlink-engine", "--example", "file_health", "--", out, *args],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    results = [json.loads(line) for line in lines]
    for r in results:
        r["scan_s"] = scan_seconds(r["metadata_location"])
    ours, base = results
    print("| writer | data files | MiB | share of bytes in files >= target/2 | DuckDB full scan (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['table']} | {r['data_files']} | {r['bytes'] / 2**20:.1f} | {r['well_sized_share']:.0%} | {r['scan_s']:.3f} |")
    print(f"\nfiles: {base['data_files'] / max(ours['data_files'], 1):.0f}x fewer; scan: {base['scan_s'] / ours['scan_s']:.1f}x faster")


if __name__ == "__main__":
    main()
