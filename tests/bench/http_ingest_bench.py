#!/usr/bin/env python3
"""HTTP ingest against its limit, measured in one run (issue 12, the HTTP rows).

  ~/.cache/moonlink-venv/bin/python tests/bench/http_ingest_bench.py [ROWS] [BATCH_ROWS] [--debug]
      [--before-plugins=DIR] [--bin-dir=DIR] [--ndjson-only] [--clients=1,4] [--perf=DIR]

`--bin-dir=DIR` takes `moonlink-host`, `parquet_limit` and the plugins from DIR instead of the
shared target dir (a copy that another build cannot overwrite mid-run); `--ndjson-only` skips
the "no decoder pool" and Arrow IPC lines; `--clients=N,...` sets the client counts (default 1,4);
`--perf=DIR` records each host run's send + commit
phase with `perf record` (call graphs: `PERF_CALLGRAPH`, default `fp`, e.g. `dwarf`; wasm symbols through `MOONLINK_WASM_PERFMAP=1`) into
`DIR/run<N>.data`, for `perf report -i`.

Needs the release build (`source scripts/env.sh && cargo build --release -p moonlink-host &&
cargo build --release -p moonlink-engine --example parquet_limit && build_plugins`); `--debug`
uses the debug binary instead (say so next to any figure).

Workload: ROWS (default 1,000,000) rows of a 10-column table (int64, int32, three strings,
two float64, bool, timestamp, date32), generated once and sent as the same values every way:
1. limit: arrow-rs writes the rows to one Parquet file, zstd(1), in memory → disk (the
   `parquet_limit` example, best of 3);
2. HTTP NDJSON, BATCH_ROWS rows per request (`?request_mode=async`), 1 client then 4
   concurrent clients (keep-alive connections), each on a fresh `moonlink-host` with default
   flags, timed from the first request until `POST /tables/{name}/commit` returns;
3. the same with Arrow IPC stream bodies (`application/vnd.apache.arrow.stream`), 1 and 4 clients.
For every host run: rows/s, ratio to the limit, the host's peak RSS (VmHWM) and its CPU time
(user + system, all threads) per row — steadier than rows/s on a loaded machine. Prints a
Markdown table for BENCHMARKS.md.
"""
import datetime
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/moonlink-target"))
TABLE = "bench.http"
SCHEMA = [
    ("id", "int64"), ("user_id", "int32"), ("name", "string"), ("email", "string"), ("country", "string"),
    ("amount", "float64"), ("score", "float64"), ("active", "bool"), ("created", "timestamp"), ("day", "date32"),
]


def rows_table(n):
    """The benchmark's rows as one Arrow table (the types the engine stores)."""
    base = datetime.datetime(2024, 1, 1)
    countries = ["fr", "de", "us", "jp", "br", "in", "ng", "au"]
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "user_id": pa.array([i * 7919 % 100_000 for i in range(n)], pa.int32()),
        "name": pa.array([f"user-{i}" for i in range(n)]),
        "email": pa.array([f"user{i}@example.com" for i in range(n)]),
        "country": pa.array([countries[i % 8] for i in range(n)]),
        "amount": pa.array([(i % 10_000) * 0.25 for i in range(n)], pa.float64()),
        "score": pa.array([i / 3 for i in range(n)], pa.float64()),
        "active": pa.array([i % 3 == 0 for i in range(n)]),
        "created": pa.array([base + datetime.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
        "day": pa.array([datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 365) for i in range(n)], pa.date32()),
    })


def ndjson_bodies(table, batch_rows):
    bodies = []
    for batch in table.to_batches(max_chunksize=batch_rows):
        lines = []
        for row in batch.to_pylist():
            row["created"] = row["created"].isoformat(sep=" ")
            row["day"] = row["day"].isoformat()
            lines.append(json.dumps(row, separators=(",", ":")))
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


def ipc_bytes(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def ipc_bodies(table, batch_rows):
    return [ipc_bytes(pa.Table.from_batches([b])) for b in table.to_batches(max_chunksize=batch_rows)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn, method, path, body=None, content_type="application/json"):
    conn.request(method, path, body=body, headers={"Content-Type": content_type} if body is not None else {})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 and resp.status != 201:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PERF_DIR = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--perf=")), None)
PERF_RUNS = [0]


def start_perf(pid):
    """`perf record` attached to the host (only with --perf=DIR), or None."""
    if not PERF_DIR:
        return None
    os.makedirs(PERF_DIR, exist_ok=True)
    PERF_RUNS[0] += 1
    out = os.path.join(PERF_DIR, f"run{PERF_RUNS[0]}.data")
    perf = subprocess.Popen(["perf", "record", "-F", "999", "--call-graph", os.environ.get("PERF_CALLGRAPH", "fp"), "-o", out, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first request
    return perf


def stop_perf(perf):
    if perf is not None:
        perf.send_signal(2)
        perf.wait(timeout=120)


def host_run(binary, bodies, content_type, clients, total_rows, plugin_dir=None, env=None):
    """One fresh host: create the table, post `bodies` from `clients` threads, commit."""
    if PERF_DIR:
        env = {**(env or {}), "MOONLINK_WASM_PERFMAP": "1"}
    data_dir = tempfile.mkdtemp(prefix="moonlink-httpbench-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}",
         "--plugin-dir", plugin_dir or os.path.join(TARGET, "wasm32-wasip2", "release")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        for _ in range(400):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        request(conn, "POST", f"/tables/{TABLE}", json.dumps(
            {"schema": [{"name": n, "data_type": t, "nullable": False} for n, t in SCHEMA]}).encode())
        errors, accepted = [], []

        def client(part):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                for body in part:
                    reply = request(c, "POST", f"/ingest/{TABLE}?request_mode=async", body, content_type)
                    accepted.append(reply["rows"])
            except Exception as e:  # reported after the run
                errors.append(e)

        threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
        perf = start_perf(proc.pid)
        cpu_start = cpu_seconds(proc.pid)
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        request(conn, "POST", f"/tables/{TABLE}/commit")
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu_start
        stop_perf(perf)
        if errors:
            raise errors[0]
        info = request(conn, "GET", f"/tables/{TABLE}")
        if sum(accepted) != total_rows or info["buffered_rows"] != 0 or info["committed_lsn"] != info["last_lsn"]:
            raise RuntimeError(f"expected {total_rows} rows committed: accepted {sum(accepted)}, table {info}")
        return total_rows / elapsed, peak_rss_mib(proc.pid), cpu / total_rows * 1e6
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    # --before-plugins=DIR: also run NDJSON with the plugins in DIR (e.g. an older rest_ingest),
    # same host binary and flags.
    before = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--before-plugins=")), None)
    profile = "debug" if "--debug" in sys.argv else "release"
    rows = int(args[0]) if args else 1_000_000
    batch_rows = int(args[1]) if len(args) > 1 else 10_000
    bin_dir = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--bin-dir=")), None)
    ndjson_only = "--ndjson-only" in sys.argv
    clients_flag = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--clients=")), "1,4")
    client_counts = [int(c) for c in clients_flag.split(",")]
    binary = os.path.join(bin_dir or os.path.join(TARGET, profile), "moonlink-host")
    limit_bin = os.path.join(bin_dir or os.path.join(TARGET, profile, "examples"), "parquet_limit")
    for path in (binary, limit_bin):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: see this script's docstring for the build commands")
    table = rows_table(rows)
    ndjson = ndjson_bodies(table, batch_rows)
    ipc = ipc_bodies(table, batch_rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.arrows")
        with open(path, "wb") as f:
            f.write(ipc_bytes(table))
        del table
        out = subprocess.run([limit_bin, path, "3"], check=True, capture_output=True, text=True).stdout
        limit = json.loads(out)["parquet_zstd1_rows_per_s"]
    results = [("arrow-rs Parquet zstd(1) write (limit)", limit, None, None)]
    if before:
        for clients in client_counts:
            rate, rss, cpu = host_run(binary, ndjson, "application/x-ndjson", clients, rows, before)
            results.append((f"before: HTTP NDJSON, {clients} client{'s' if clients > 1 else ''} ({before})",
                            rate, rss, cpu))
    for clients in () if ndjson_only else client_counts:
        rate, rss, cpu = host_run(binary, ndjson, "application/x-ndjson", clients, rows, bin_dir,
                             {"MOONLINK_DECODER_POOL": "0"})
        results.append((f"HTTP NDJSON, {clients} client{'s' if clients > 1 else ''}, no decoder pool", rate, rss,
                        cpu))
    kinds = [("NDJSON", ndjson, "application/x-ndjson"), ("Arrow IPC", ipc, "application/vnd.apache.arrow.stream")]
    for label, bodies, ctype in kinds[:1] if ndjson_only else kinds:
        for clients in client_counts:
            rate, rss, cpu = host_run(binary, bodies, ctype, clients, rows, bin_dir)
            results.append((f"HTTP {label}, {batch_rows} rows/request, {clients} client{'s' if clients > 1 else ''}",
                            rate, rss, cpu))
    print(f"{rows} rows, {batch_rows} rows/request, {profile} build, "
          f"NDJSON body {len(ndjson[0]) / 1024:.0f} KiB, IPC body {len(ipc[0]) / 1024:.0f} KiB")
    print("| path | rows/s | ratio to limit | host peak RSS (MiB) | host CPU µs/row |")
    print("|---|---:|---:|---:|---:|")
    for label, rate, rss, cpu in results:
        print(f"| {label} | {rate:,.0f} | {rate / limit:.2f} | {'—' if rss is None else f'{rss:,.0f}'} | "
              f"{'—' if cpu is None else f'{cpu:.2f}'} |")


if __name__ == "__main__":
    main()
