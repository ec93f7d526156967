#!/usr/bin/env python3
"""`sync` ingest latency while a large compaction runs (issue 12, background compaction).

  ~/.cache/moonlink-venv/bin/python tests/bench/sync_during_compaction.py BIN_BEFORE BIN_AFTER PLUGIN_DIR [ROWS]

Each binary gets a fresh data directory and the same workload: a keyed table (id, v) loaded
with ROWS rows (default 1,000,000) in 20,000-row sync requests and compacted into one file
(`optimize`), then 10 1-row `sync` upserts on the quiet table (the baseline, same run), then 30% of the rows deleted (async) — past the rewrite
threshold — and 1-row `sync` upserts until 40 have returned. BIN_BEFORE rewrites inside the
commit the deletes land in; BIN_AFTER commits the deletes and rewrites beside the commit path.
Prints median and max latency of the sync requests during the rewrite and their ratio to the
quiet median.
"""
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, plugin_dir, rows):
    data = tempfile.mkdtemp(prefix="moonlink-syncbench-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                             "--plugin-dir", plugin_dir, "--commit-interval-ms", "500"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        schema = [{"name": "id", "data_type": "int64", "nullable": False},
                  {"name": "v", "data_type": "string", "nullable": True}]
        r = requests.post(f"{url}/tables/b.t", json={"schema": schema, "primary_key": ["id"],
                                                     "table_config": {"rewrite_deleted_fraction": 0.25}})
        assert r.status_code == 201, r.text

        def ingest(data, op="upsert", mode="sync"):
            r = requests.post(f"{url}/ingest/b.t", json={"operation": op, "request_mode": mode, "data": data},
                              timeout=600)
            assert r.status_code == 200, r.text

        for start in range(0, rows, 20_000):
            ingest([{"id": i, "v": f"value-{i:09d}-padding"} for i in range(start, min(rows, start + 20_000))])

        # Settle: one compacted file, so the quiet baseline has no compaction under it.
        r = requests.post(f"{url}/tables/b.t/optimize", timeout=600)
        assert r.status_code == 200, r.text

        def one_sync(n):
            t = time.perf_counter()
            ingest([{"id": rows + n, "v": "x"}])
            return time.perf_counter() - t

        quiet = [one_sync(n) for n in range(10)]
        gone = random.Random(1).sample(range(rows), int(rows * 0.3))
        for start in range(0, len(gone), 20_000):
            ingest([{"id": i} for i in gone[start:start + 20_000]], op="delete", mode="async")
        during = [one_sync(100 + n) for n in range(40)]
        info = requests.get(f"{url}/tables/b.t", timeout=30).json()
        return quiet, during, info.get("data_files")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    before, after, plugins = sys.argv[1:4]
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
    print(f"{rows} rows, 30% deleted; load: {os.getloadavg()}")
    print("| binary | quiet sync p50 (ms) | sync during rewrite p50 (ms) | max (ms) | max / quiet p50 |")
    print("|---|---:|---:|---:|---:|")
    for label, binary in (("before (rewrite in the commit)", before), ("after (background)", after)):
        quiet, during, _ = run(binary, plugins, rows)
        q = statistics.median(quiet)
        print(f"| {label} | {q * 1000:.0f} | {statistics.median(during) * 1000:.0f} | "
              f"{max(during) * 1000:.0f} | {max(during) / q:.1f} |")


if __name__ == "__main__":
    main()
