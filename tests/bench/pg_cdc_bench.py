#!/usr/bin/env python3
"""postgres_cdc.wasm against its baselines, measured side by side in one run.

  ~/.cache/moonlink-venv/bin/python tests/bench/pg_cdc_bench.py [STREAM_ROWS] [COPY_ROWS]

1. Streaming: STREAM_ROWS rows inserted (1,000-row transactions) while two slots were idle;
   then `pg_recvlogical` (pgoutput, over TCP, into /dev/null) drains its slot to the end LSN,
   and moonlink-host drains its own slot until every row is committed in Iceberg.
2. Initial copy: `COPY t TO STDOUT (FORMAT binary)` into /dev/null vs moonlink-host's copy of
   the same table until every row is committed in Iceberg.
3. Freshness: one-row transactions at ~50/s; for each, the time from Postgres's commit to the
   snapshot that makes it visible (GET /tables/{name} polled every 5 ms), p50 and p99.

Prints a Markdown table for BENCHMARKS.md, with the host's peak RSS (VmHWM) in each phase, the
host's CPU time over the streaming drain (less sensitive to other load on the machine than the
ratio), and where the initial copy's time went (host start-up, the copy, the last commit).

Options (after the row counts): `--copy-only` runs only the initial copy; `--copy-format text`
makes the plugin copy in COPY's text format (default: binary); `--keep-log FILE` keeps the
copying host's log; `--perf FILE` records
`perf record -g` of the host during the copy into FILE (`--perf-stream FILE`: during the
streaming drain) (run the host with
MOONLINK_WASM_PERFMAP=1 for wasm symbols; PERF_EXTRA adds `perf record` options, e.g.
`-e sched:sched_switch --call-graph dwarf` for where threads wait). PG_BENCH_SETTINGS adds
lines to the plugin's `[settings]` (e.g. `snapshot_chunk_pages = 1024`).
"""
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import PLUGIN_DIR, Server  # noqa: E402
from pg import PostgresCluster, format_lsn  # noqa: E402

TABLE_SQL = ("CREATE TABLE t (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), "
             "created timestamptz, note text)")
ROW_SQL = "SELECT g, 'customer-' || (g % 1000), g * 0.01, now(), 'note ' || g FROM generate_series({a}, {b}) g"


COPY_FORMAT = None  # the plugin's default unless --copy-format is given


def peak_rss_mb(server):
    """The host's peak resident set (VmHWM), in MB."""
    try:
        with open(f"/proc/{server.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, AttributeError):
        pass
    return float("nan")


def start_host(pg, data_dir, slot="moonlink", max_rows=20000, commit_ms=500):
    config = os.path.join(data_dir + ".toml")
    with open(config, "w") as f:
        f.write(f'''name = "pg"
[settings]
host = "127.0.0.1"
port = {pg.port}
user = "postgres"
password = "{pg.password}"
database = "app"
tables = ["public.t"]
slot = "{slot}"
{f'copy_format = "{COPY_FORMAT}"' if COPY_FORMAT else ""}
{os.environ.get("PG_BENCH_SETTINGS", "")}
[poll]
max_rows = {max_rows}
timeout_ms = 100
''')
    server = Server(data_dir, ["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", config,
                               "--commit-interval-ms", str(commit_ms)])
    server.start()
    return server


def record_perf(path, server):
    """`perf record -g` (plus PERF_EXTRA's options) of the host into `path`, until SIGINT."""
    extra = os.environ.get("PERF_EXTRA", "").split()
    return subprocess.Popen(["perf", "record", "-g", *extra, "-o", path, "-p", str(server.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(server):
    """User + system CPU the host has used since it started, in seconds."""
    try:
        with open(f"/proc/{server.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, IndexError, ValueError):
        return float("nan")


def source_acked(server, name="pg"):
    """Whether the source has a checkpoint acknowledged (committed in Iceberg)."""
    plugins = requests.get(server.url + "/plugins", timeout=10).json()["plugins"]
    return any(p["name"] == name and p.get("acked_checkpoint") for p in plugins)


def rows_committed(server):
    try:
        info = server.table("public.t")
    except AssertionError:
        return -1
    return info["total_records"] - info["deleted_rows"]


def wait_rows(server, n, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if rows_committed(server) >= n:
            return time.time()
        time.sleep(0.02)
    raise RuntimeError(f"only {rows_committed(server)} of {n} rows committed: {server.read_log()}")


def insert(pg, first, count, txn_rows=1000):
    stmts = []
    for a in range(first, first + count, txn_rows):
        b = min(a + txn_rows - 1, first + count - 1)
        stmts.append(f"INSERT INTO t {ROW_SQL.format(a=a, b=b)};")
    # One psql session, one transaction per statement (autocommit).
    subprocess.run([pg._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host, "-p", str(pg.port),
                    "-U", pg.user, "-d", "app"], input="\n".join(stmts), text=True, env=pg.env("app"), check=True)


def streaming(pg, rows, tmp, perf=None):
    pg.execute(TABLE_SQL, db="app")
    host = start_host(pg, os.path.join(tmp, "stream"))
    wait_rows(host, 0)
    # The (empty) copy acknowledged: the restart below streams the slot. Stopped before this,
    # the restart would copy the table again (a copy, not the catch-up, would be timed).
    deadline = time.time() + 60
    while not source_acked(host):
        if time.time() > deadline:
            raise RuntimeError(f"the empty copy was never acknowledged: {host.read_log()}")
        time.sleep(0.05)
    # Both slots exist and are idle while the workload is written.
    host.stop()
    for slot in ("recv1", "recv2"):
        pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", db="app")
    insert(pg, 1, rows)
    end = format_lsn(pg.current_wal_lsn())

    def recvlogical(slot):
        start = time.time()
        subprocess.run([pg._bin("pg_recvlogical"), "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", "app",
                        "--slot", slot, "--start", "--endpos", end, "-o", "proto_version=1",
                        "-o", "publication_names=moonlink_moonlink", "-f", "/dev/null", "--no-loop"],
                       env=pg.env("app"), check=True)
        return time.time() - start

    # pg_recvlogical before and after moonlink (the first reader warms the page cache); the
    # faster of the two is the baseline.
    recv_first = recvlogical("recv1")
    start = time.time()
    host.start()
    recorder = None
    if perf:
        recorder = record_perf(perf, host)
    wait_rows(host, rows)
    moon_s = time.time() - start
    if recorder:
        recorder.send_signal(2)
        recorder.wait()
    rss = peak_rss_mb(host)
    cpu = cpu_seconds(host)
    host.kill()
    recv_s = min(recv_first, recvlogical("recv2"))
    return recv_s, moon_s, rss, cpu


def initial_copy(pg, rows, tmp, perf=None):
    pg.execute("DROP TABLE IF EXISTS t; SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;",
               db="app")
    pg.execute(TABLE_SQL, db="app")
    insert(pg, 1, rows, txn_rows=100000)
    pg.execute("VACUUM ANALYZE t", db="app")
    start = time.time()
    with open(os.devnull, "wb") as devnull:
        subprocess.run([pg._bin("psql"), "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", "app",
                        "-c", "COPY t TO STDOUT (FORMAT binary)"], stdout=devnull, env=pg.env("app"), check=True)
    copy_s = time.time() - start

    start = time.time()
    host = start_host(pg, os.path.join(tmp, "copy"), slot="copy", max_rows=50000)
    ready_s = time.time() - start
    recorder = None
    if perf:
        recorder = record_perf(perf, host)
    wait_rows(host, rows)
    moon_s = time.time() - start
    cpu = cpu_seconds(host)
    if recorder:
        recorder.send_signal(2)
        recorder.wait()
    phases = (ready_s, log_time(host, "initial copy done") - start, moon_s, cpu)
    return copy_s, moon_s, host, phases


def log_time(server, text):
    """Wall-clock time of the host's first log line containing `text` (NaN if none)."""
    with open(server.log_path, errors="replace") as f:
        for line in f:
            if text in line:
                stamp = line.split()[0].rstrip("Z")
                when = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc)
                return when.timestamp()
    return float("nan")


def freshness(pg, host, samples=300):
    """Commit → visible latencies, in ms."""
    base = rows_committed(host)
    seen = {}
    stop = threading.Event()

    def poller():
        while not stop.is_set():
            n = rows_committed(host)
            now = time.time()
            for k in range(len(seen) + 1, n - base + 1):
                seen.setdefault(k, now)
            time.sleep(0.005)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    proc = subprocess.Popen([pg._bin("psql"), "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", pg.user,
                             "-d", "app"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=pg.env("app"))
    committed = {}
    first = 10_000_000
    for k in range(1, samples + 1):
        # The row's commit time is when psql reports it done (\echo after the INSERT).
        proc.stdin.write(f"INSERT INTO t {ROW_SQL.format(a=first + k, b=first + k)};\n\\echo done\n")
        proc.stdin.flush()
        proc.stdout.readline()
        committed[k] = time.time()
        time.sleep(0.02)
    proc.stdin.close()
    proc.wait()
    deadline = time.time() + 60
    while len(seen) < samples and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    lat = sorted((seen[k] - committed[k]) * 1000 for k in committed if k in seen)
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]


def main():
    global COPY_FORMAT
    args = sys.argv[1:]
    flags = {}
    for name in ("--copy-format", "--perf", "--perf-stream", "--keep-log"):
        if name in args:
            i = args.index(name)
            flags[name] = args[i + 1]
            del args[i:i + 2]
    copy_only = "--copy-only" in args
    args = [a for a in args if a != "--copy-only"]
    COPY_FORMAT = flags.get("--copy-format")
    stream_rows = int(args[0]) if len(args) > 0 else 500_000
    copy_rows = int(args[1]) if len(args) > 1 else 2_000_000
    tmp = tempfile.mkdtemp(prefix="moonlink-pgbench-")
    pg = PostgresCluster(extra_conf={"max_wal_size": "4GB", "checkpoint_timeout": "30min"})
    pg.start()
    try:
        pg.create_database("app")
        if not copy_only:
            recv_s, stream_s, stream_rss, stream_cpu = streaming(pg, stream_rows, tmp, flags.get("--perf-stream"))
        copy_s, snap_s, host, phases = initial_copy(pg, copy_rows, tmp, flags.get("--perf"))
        copy_rss = peak_rss_mb(host)
        if flags.get("--keep-log"):
            subprocess.run(["cp", host.log_path, flags["--keep-log"]])
        if not copy_only:
            p50, p99 = freshness(pg, host)
        host.kill()
    finally:
        pg.cleanup()
        subprocess.run(["rm", "-rf", tmp])
    print(f"| measurement | baseline | moonlink | ratio | host peak RSS |")
    print(f"|---|---|---|---|---|")
    if not copy_only:
        print(f"| streaming {stream_rows:,} inserted rows | pg_recvlogical {stream_rows / recv_s:,.0f} rows/s "
              f"| {stream_rows / stream_s:,.0f} rows/s | {recv_s / stream_s:.2f}x | {stream_rss:,.0f} MB |")
    print(f"| initial copy of {copy_rows:,} rows ({COPY_FORMAT or 'default'} format) | COPY binary {copy_rows / copy_s:,.0f} rows/s "
          f"| {copy_rows / snap_s:,.0f} rows/s | {copy_s / snap_s:.2f}x | {copy_rss:,.0f} MB |")
    if not copy_only:
        print(f"| host CPU during the streaming drain (start-up included) | | {stream_cpu:.2f} s, "
              f"{stream_cpu / stream_rows * 1e6:.1f} µs per row | | |")
        print(f"| freshness, commit → visible in Iceberg (commit interval 500 ms) | | p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms | | |")
    ready_s, copied_s, done_s, copy_cpu = phases
    print(f"\nInitial copy phases, seconds from host start: healthy {ready_s:.2f}, plugin reports the copy "
          f"done {copied_s:.2f}, every row committed {done_s:.2f} (COPY binary alone: {copy_s:.2f}). "
          f"Host CPU until every row was committed: {copy_cpu:.2f} s"
          + (f", {copy_cpu / copy_rows * 1e9:.0f} ns per row." if copy_rows else "."))


if __name__ == "__main__":
    main()
