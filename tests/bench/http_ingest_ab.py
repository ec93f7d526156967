#!/usr/bin/env python3
"""Interleaved A/B of host builds on the HTTP ingest workload (issue 12), one data generation.

  ~/.cache/moonlink-venv/bin/python tests/bench/http_ingest_ab.py ROUNDS CLIENTS ndjson|ipc DIR...

Each DIR holds a `moonlink-host` (a wrapper script that `exec`s one works, e.g. to set an
environment variable or `LD_PRELOAD`) and the plugins. Every round runs each DIR once, in order,
with the same 1,000,000 rows of `http_ingest_bench.py` in 10,000-row requests from CLIENTS
keep-alive clients; prints each run, then per DIR the median (min, max) rows/s and host CPU
µs/row. Alternating builds within one window is fairer than two separate passes on a shared
machine.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    if len(sys.argv) < 5 or sys.argv[3] not in ("ndjson", "ipc"):
        sys.exit(__doc__)
    spec = importlib.util.spec_from_file_location("bench", os.path.join(HERE, "http_ingest_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rounds, clients, kind, dirs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    table = bench.rows_table(1_000_000)
    if kind == "ndjson":
        bodies, ctype = bench.ndjson_bodies(table, 10_000), "application/x-ndjson"
    else:
        bodies, ctype = bench.ipc_bodies(table, 10_000), "application/vnd.apache.arrow.stream"
    results = {d: [] for d in dirs}
    for _ in range(rounds):
        for d in dirs:
            rate, rss, cpu = bench.host_run(os.path.join(d, "moonlink-host"), bodies, ctype, clients, 1_000_000, d)
            results[d].append((rate, cpu))
            print(f"{d}: {rate:,.0f} rows/s, {cpu:.2f} µs/row, peak RSS {rss:.0f} MiB", flush=True)
    for d in dirs:
        rates = sorted(r for r, _ in results[d])
        cpus = sorted(c for _, c in results[d])
        print(f"{d}: rows/s median {rates[len(rates) // 2]:,.0f} (min {rates[0]:,.0f}, max {rates[-1]:,.0f}); "
              f"host CPU µs/row median {cpus[len(cpus) // 2]:.2f} (min {cpus[0]:.2f}, max {cpus[-1]:.2f})")


if __name__ == "__main__":
    main()
