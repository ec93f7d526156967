#!/usr/bin/env python3
"""otel.wasm against its limit, measured in one run (issue 16).

  ~/.cache/moonlink-venv/bin/python tests/bench/otel_bench.py [REQUESTS] [SPANS_PER_REQUEST]
      [--bin=PATH] [--plugins=DIR] [--before-bin=PATH --before-plugins=DIR]
      [--client=raw|requests] [--exporters=1,16] [--runs=N] [--no-native] [--data-root=DIR]

Workload: REQUESTS (default 2,000) OTLP/protobuf ExportTraceServiceRequest bodies of
SPANS_PER_REQUEST (default 100) spans each (8 attributes, one event), made once and sent as
the same bytes every way:
1. baseline: the same bodies decoded natively with the same prost types into nothing, and
   through the plugin's logic natively (`cargo test -p otel --release -- --ignored
   native_decode`, best of 3);
2. HTTP: one exporter, then 16 concurrent exporters (keep-alive connections), each on a fresh
   `moonlink-host` with otel.wasm on its own listener, timed from the first request until
   `POST /tables/otel.spans/commit` returns (every span committed in Iceberg). With
   `--before-bin` (and `--before-plugins`) a second build runs right after each run of the
   first, so both are measured under the same load; `--runs` repeats the whole pass.
   `--data-root` puts the hosts' data directories there (e.g. /dev/shm: the write-ahead
   log's fdatasync then costs nothing, which shows how much of the time is the disk's).
Prints a Markdown table for BENCHMARKS.md, with the host's CPU (user + system) per span next to the
native rows' time per span on one core, and the exporters' own CPU per span. Say which build
`--bin` is (debug or release).

Exporters (`--client`): `raw` (default since run 6) sends prebuilt HTTP/1.1 requests (headers
and body in one buffer) on a blocking keep-alive socket per exporter thread and reads only the
status line and Content-Length of each answer, as light as a fast native exporter: the client
must not eat the cores it shares with the host. `requests` is the client of runs 1-5 (a
`requests.Session` per exporter), about ten times the CPU per request, kept for comparison.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/moonlink-target"))


def kv(key, **value):
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def body(request_index, spans):
    start = 1_767_225_600_000_000_000 + request_index * 1_000_000
    out = []
    for i in range(spans):
        n = request_index * spans + i
        out.append(trace_pb2.Span(
            trace_id=n.to_bytes(16, "big"), span_id=(n + 1).to_bytes(8, "big"), parent_span_id=n.to_bytes(8, "big"),
            name=f"GET /api/items/{i % 50}", kind=2, start_time_unix_nano=start + i, end_time_unix_nano=start + i + 25_000,
            attributes=[kv("http.method", string_value="GET"), kv("http.route", string_value=f"/api/items/{i % 50}"),
                        kv("http.status_code", int_value=200), kv("net.peer.ip", string_value="10.0.0.7"),
                        kv("user.id", int_value=n % 1000), kv("cache.hit", bool_value=i % 2 == 0),
                        kv("db.rows", int_value=i), kv("ratio", double_value=i / 7)],
            events=[trace_pb2.Span.Event(time_unix_nano=start + i + 100, name="cache lookup",
                                         attributes=[kv("key", string_value=f"item:{i}")])],
            status=trace_pb2.Status(code=1)))
    resource = resource_pb2.Resource(attributes=[kv("service.name", string_value="api"),
                                                 kv("host.name", string_value="bench-1")])
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="bench"), spans=out)])])
    return request.SerializeToString()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def native(bodies):
    path = os.path.join(tempfile.mkdtemp(prefix="otel-bench-"), "bodies.bin")
    with open(path, "wb") as f:
        for b in bodies:
            f.write(struct.pack("<I", len(b)) + b)
    try:
        # On a shared machine, CARGO_LOCK=/path makes only the cargo step wait on that lock file.
        lock = ["flock", os.environ["CARGO_LOCK"]] if os.environ.get("CARGO_LOCK") else []
        out = subprocess.run(lock + ["cargo", "test", "-p", "otel", "--release", "--", "--ignored", "--nocapture",
                              "native_decode"], cwd=ROOT, env={**os.environ, "OTEL_BENCH_BODIES": path},
                             capture_output=True, text=True)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"native bench failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {k: float(v) for k, v in (p.split("=") for p in line.split()[1:])}


def host_cpu_seconds(pid):
    """User + system CPU the host used so far (less sensitive to a shared machine's load than
    wall time)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_exporter(otlp, failures):
    """The exporter of runs 1-5: `requests`, one keep-alive session per thread."""
    def export(part):
        session = requests.Session()
        for b in part:
            r = session.post(f"http://127.0.0.1:{otlp}/v1/traces", data=b,
                             headers={"Content-Type": "application/x-protobuf"}, timeout=60)
            if r.status_code != 200:
                failures.append(r.status_code)
    return (lambda part: part), export


def raw_exporter(otlp, failures):
    """Prebuilt HTTP/1.1 requests on one blocking keep-alive socket per thread; the answer's
    status line and Content-Length are all that is parsed."""
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{otlp}\r\n"
            "Content-Type: application/x-protobuf\r\nContent-Length: ").encode()

    def prepare(part):
        return [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in part]

    def export(requests_bytes):
        sock = socket.create_connection(("127.0.0.1", otlp), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        try:
            for request in requests_bytes:
                sock.sendall(request)
                while b"\r\n\r\n" not in pending:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("the host closed the connection")
                    pending += chunk
                header, pending = pending.split(b"\r\n\r\n", 1)
                status = int(header[9:12])
                length = 0
                for line in header.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(pending) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("the host closed the connection")
                    pending += chunk
                pending = pending[length:]
                if status != 200:
                    failures.append(status)
        except OSError as e:
            failures.append(repr(e))
        finally:
            sock.close()
    return prepare, export


def host_run(binary, plugins, bodies, clients, client, data_root=None):
    data = tempfile.mkdtemp(prefix="otel-bench-host-", dir=data_root)
    port, otlp = free_port(), free_port()
    config = os.path.join(data, "otel.toml")
    with open(config, "w") as f:
        f.write(f'name = "otel"\n[settings]\nlisten = "127.0.0.1:{otlp}"\n')
    log = open(os.path.join(data, "host.log"), "wb")
    proc = subprocess.Popen([binary, "--data-dir", os.path.join(data, "d"), "--listen", f"127.0.0.1:{port}",
                             "--plugin-dir", plugins, "--plugin", os.path.join(plugins, "otel.wasm"), "--config", config],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        failures = []
        prepare, export = (raw_exporter if client == "raw" else requests_exporter)(otlp, failures)
        parts = [prepare(bodies[i::clients]) for i in range(clients)]
        threads = [threading.Thread(target=export, args=(p,)) for p in parts]
        cpu_before = host_cpu_seconds(proc.pid)
        client_before = time.process_time()
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client_cpu = time.process_time() - client_before
        requests.post(url + "/tables/otel.spans/commit", timeout=600).raise_for_status()
        elapsed = time.perf_counter() - started
        rows = requests.get(url + "/tables/otel.spans", timeout=30).json()["live_rows"]
        if failures:
            sys.exit(f"{len(failures)} requests failed: {failures[:5]}")
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) // 1024
        cpu = host_cpu_seconds(proc.pid) - cpu_before
        return elapsed, rows, rss, cpu, client_cpu
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:] if a.startswith("--"))
    n_requests = int(args[0]) if args else 2000
    spans = int(args[1]) if len(args) > 1 else 100
    binary = flags.get("bin", os.path.join(TARGET, "release", "moonlink-host"))
    plugins = flags.get("plugins", os.path.join(TARGET, "wasm32-wasip2", "release"))
    client = flags.get("client", "raw")
    if client not in ("raw", "requests"):
        sys.exit(f"--client={client}: use raw or requests")
    exporters = [int(c) for c in flags.get("exporters", "1,16").split(",")]
    runs = int(flags.get("runs", "1"))
    builds = [("", binary, plugins)]
    if "before-bin" in flags:
        builds.append(("before, ", flags["before-bin"], flags.get("before-plugins", plugins)))
    bodies = [body(i, spans) for i in range(n_requests)]
    total = n_requests * spans
    mb = sum(map(len, bodies)) / 1e6
    rows = []
    if "no-native" not in flags:
        base = native(bodies)
        rows += [("native prost decode into nothing (baseline)", base["native_decode_spans_per_s"], None, None,
                  1e6 / base["native_decode_spans_per_s"], None),
                 ("native plugin logic (decode + rows), no wasm", base["native_plugin_spans_per_s"], None, None,
                  1e6 / base["native_plugin_spans_per_s"], None)]
    print(f"{n_requests} requests x {spans} spans = {total} spans, {mb:.1f} MB protobuf; host {binary}; "
          f"client {client}" + (f"; before {builds[1][1]}" if len(builds) > 1 else ""))
    for run in range(runs):
        for clients in exporters:
            for label, build_bin, build_plugins in builds:
                elapsed, committed, rss, cpu, client_cpu = host_run(build_bin, build_plugins, bodies, clients, client,
                                                                  flags.get("data-root"))
                assert committed == total, (committed, total)
                name = f"{label}OTLP/HTTP → committed Iceberg, {clients} exporter{'s' if clients > 1 else ''}"
                if runs > 1:
                    name += f" (run {run + 1})"
                rows.append((name, total / elapsed, n_requests / elapsed, rss, cpu * 1e6 / total,
                             client_cpu * 1e6 / total))
                print(f"  {name}: {total / elapsed:,.0f} spans/s, host {cpu * 1e6 / total:.2f} µs/span, "
                      f"client {client_cpu * 1e6 / total:.2f} µs/span", flush=True)
    baseline = rows[0][1] if "no-native" not in flags else None
    print("\n| path | spans/s | × baseline | requests/s | host peak RSS | host CPU µs/span | client CPU µs/span |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rate, rps, rss, us, client_us in rows:
        rps_text = f"{rps:,.0f}" if rps else "–"
        rss_text = f"{rss} MiB" if rss else "–"
        ratio = f"{rate / baseline:.3f}" if baseline else "–"
        client_text = f"{client_us:.2f}" if client_us is not None else "–"
        print(f"| {name} | {rate:,.0f} | {ratio} | {rps_text} | {rss_text} | {us:.2f} | {client_text} |")


if __name__ == "__main__":
    main()
