"""otel.wasm: the real OpenTelemetry Python SDK (OTLP/HTTP protobuf exporters) and hand-made
OTLP/JSON bodies sent to the receiver; DuckDB and PyIceberg read back what was emitted."""
import gzip
import json
import os
import re
import threading
import time
import zlib

import pytest
import requests
from conftest import PLUGIN_DIR, free_port
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from readers import _duckdb, load_json, pyiceberg_table, utc

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


class Otel:
    """A moonlink-host running otel.wasm on its own OTLP listener."""

    def __init__(self, server, otlp_url):
        self.server = server
        self.url = otlp_url

    def post(self, path, body, headers=PROTOBUF, **kw):
        return requests.post(self.url + path, data=body, headers=headers, timeout=30, **kw)

    def commit_all(self):
        for table in ("otel.logs", "otel.spans", "otel.metrics"):
            self.server.commit(table)

    def duck(self, table, sql):
        """`sql` with `T` standing for the table, through DuckDB's iceberg_scan."""
        location = self.server.table(table)["metadata_location"]
        con = _duckdb()
        try:
            return con.execute(re.sub(r"\bT\b", f"iceberg_scan('{location}')", sql, count=1)).fetchall()
        finally:
            con.close()

    def pyiceberg(self, table):
        namespace, name = table.split(".")
        return pyiceberg_table(self.server.data_dir, namespace, name).scan().to_arrow().to_pylist()


def write_config(directory, listen=None, extra=""):
    path = os.path.join(directory, "otel.toml")
    settings = f'listen = "{listen}"\n' if listen else ""
    with open(path, "w") as f:
        f.write(f'name = "otel"\n[settings]\n{settings}{extra}\n')
    return path


@pytest.fixture
def make_otel(make_server, tmp_path):
    def make(extra_args=(), data_dir=None, port=None):
        port = port or free_port()
        config = write_config(str(tmp_path), f"127.0.0.1:{port}")
        args = ["--plugin", os.path.join(PLUGIN_DIR, "otel.wasm"), "--config", config, *extra_args]
        server = make_server(args, data_dir=data_dir)
        return Otel(server, f"http://127.0.0.1:{port}")

    return make


@pytest.fixture
def otel(make_otel):
    return make_otel()


def nanos(dt_utc):
    """A timestamptz read back, as nanoseconds (microsecond precision)."""
    return round(dt_utc.timestamp() * 1_000_000) * 1000


def test_tables_are_created_partitioned_by_day(otel):
    for table, column in [("otel.logs", "timestamp"), ("otel.spans", "start_time"), ("otel.metrics", "timestamp")]:
        view = otel.server.table(table)
        assert view["partition_by"] == [f"day({column})"], view
        assert view["primary_key"] == []
        attributes = next(c for c in view["schema"] if c["name"] == "attributes")
        assert attributes["data_type"] == "map<string, string>", attributes


def test_sdk_spans_logs_and_metrics_read_back_exactly(otel):
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    resource = Resource.create({"service.name": "checkout", "deployment.environment": "test", "host.cpus": 8})
    # Spans: exported over OTLP and kept in memory, to compare with what the tables hold.
    kept = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otel.url + "/v1/traces")))
    tracer_provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = tracer_provider.get_tracer("shop.orders", "1.4.2")
    with tracer.start_as_current_span("warm-up") as other:
        pass
    link_context = other.get_span_context()
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER,
                                      attributes={"http.route": "/orders", "http.status_code": 201, "retry": True,
                                                  "ratio": 0.25, "tags": ["a", "b"]}) as root:
        root.add_event("validated", {"items": 3})
        with tracer.start_as_current_span("INSERT orders", kind=trace.SpanKind.CLIENT,
                                          links=[trace.Link(link_context, {"why": "batch"})]) as child:
            child.set_status(trace.Status(trace.StatusCode.ERROR, "deadlock"))
            # A log inside the child span carries its trace and span ids.
            logger_provider = LoggerProvider(resource=resource)
            logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=otel.url + "/v1/logs")))
            logger = logger_provider.get_logger("shop.db", "0.9")
            logger.emit(timestamp=1_767_225_600_123_456_789, severity_number=SeverityNumber.WARN, severity_text="WARN",
                        body="retrying insert", attributes={"attempt": 2, "table": "orders"})
            logger.emit(timestamp=1_767_225_601_000_000_000, severity_number=SeverityNumber.INFO,
                        body={"event": "cart", "items": [1, 2]})
    assert tracer_provider.force_flush()
    assert logger_provider.force_flush()

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otel.url + "/v1/metrics"), export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("shop.metrics", "2.0")
    orders = meter.create_counter("orders", unit="1", description="orders placed")
    orders.add(5, {"region": "eu"})
    orders.add(2, {"region": "us"})
    queue = meter.create_up_down_counter("queue.depth")
    queue.add(10)
    queue.add(-3)
    latency = meter.create_histogram("latency", unit="ms")
    for value in (5, 20, 300):
        latency.record(value, {"route": "/orders"})
    meter.create_observable_gauge("temperature", callbacks=[lambda _options: [Observation(21.5, {"room": "a"})]])
    # One collection, exported once (a force_flush before it would export the same
    # cumulative points twice).
    meter_provider.shutdown()
    otel.commit_all()

    # --- spans ---
    emitted = {format(s.context.span_id, "016x"): s for s in kept.get_finished_spans()}
    rows = otel.duck("otel.spans", """SELECT trace_id, span_id, parent_span_id, name, kind, start_time, end_time,
        start_time_unix_nano, duration_ns, status_code, status_message, attributes['http.route'],
        attributes['http.status_code'], attributes['retry'], attributes['ratio'], attributes['tags'], event_names,
        event_attributes, link_trace_ids, link_span_ids, link_attributes, service_name,
        resource_attributes['host.cpus'], scope_name, scope_version FROM T""")
    assert len(rows) == 3
    by_id = {r[1]: r for r in rows}
    assert set(by_id) == set(emitted)
    for span_id, span in emitted.items():
        row = by_id[span_id]
        assert row[0] == format(span.context.trace_id, "032x")
        assert row[2] == (format(span.parent.span_id, "016x") if span.parent else None)
        assert row[3] == span.name
        assert nanos(row[5]) == span.start_time // 1000 * 1000
        assert nanos(row[6]) == span.end_time // 1000 * 1000
        assert row[7] == span.start_time
        assert row[8] == span.end_time - span.start_time
        assert row[21:] == ("checkout", "8", "shop.orders", "1.4.2")
    root_row = by_id[format(root.context.span_id, "016x")]
    assert root_row[4] == "server" and root_row[9] == "unset"
    assert root_row[11:16] == ("/orders", "201", "true", "0.25", '["a","b"]')
    assert root_row[16] == ["validated"] and json.loads(root_row[17][0]) == {"items": 3}
    child_row = by_id[format(child.context.span_id, "016x")]
    assert child_row[4] == "client" and child_row[9:11] == ("error", "deadlock")
    assert child_row[18] == [format(link_context.trace_id, "032x")]
    assert child_row[19] == [format(link_context.span_id, "016x")]
    assert json.loads(child_row[20][0]) == {"why": "batch"}
    # PyIceberg reads the same map and lists.
    py = {r["span_id"]: r for r in otel.pyiceberg("otel.spans")}
    assert dict(py[root_row[1]]["attributes"])["http.status_code"] == "201"
    assert py[child_row[1]]["link_span_ids"] == [format(link_context.span_id, "016x")]

    # --- logs ---
    logs = otel.duck("otel.logs", """SELECT time_unix_nano, timestamp, severity_number, severity_text, body, trace_id,
        span_id, attributes['attempt'], attributes['table'], service_name, scope_name, scope_version FROM T
        ORDER BY time_unix_nano""")
    trace_id, span_id = format(child.context.trace_id, "032x"), format(child.context.span_id, "016x")
    assert logs == [
        (1_767_225_600_123_456_789, utc(2026, 1, 1, 0, 0, 0, 123456), 13, "WARN", "retrying insert", trace_id, span_id,
         "2", "orders", "checkout", "shop.db", "0.9"),
        (1_767_225_601_000_000_000, utc(2026, 1, 1, 0, 0, 1), 9, None, '{"event":"cart","items":[1,2]}', trace_id,
         span_id, None, None, "checkout", "shop.db", "0.9"),
    ]
    assert sorted(r["time_unix_nano"] for r in otel.pyiceberg("otel.logs")) == [1_767_225_600_123_456_789,
                                                                                 1_767_225_601_000_000_000]

    # --- metrics ---
    points = otel.duck("otel.metrics", """SELECT metric_name, metric_type, aggregation_temporality, is_monotonic,
        value, int_value, count, sum, min, max, bucket_counts, explicit_bounds, metric_unit, metric_description,
        coalesce(attributes['region'], attributes['route'], attributes['room']), service_name, scope_name,
        timestamp IS NOT NULL FROM T ORDER BY 1, 15""")
    assert [p[:10] for p in points] == [
        ("latency", "histogram", "cumulative", None, None, None, 3, 325.0, 5.0, 300.0),
        ("orders", "sum", "cumulative", True, 5.0, 5, None, None, None, None),
        ("orders", "sum", "cumulative", True, 2.0, 2, None, None, None, None),
        ("queue.depth", "sum", "cumulative", False, 7.0, 7, None, None, None, None),
        ("temperature", "gauge", None, None, 21.5, None, None, None, None, None),
    ]
    latency_row = points[0]
    bounds = latency_row[11]
    assert len(latency_row[10]) == len(bounds) + 1 and sum(latency_row[10]) == 3
    assert latency_row[10][[i for i, b in enumerate(bounds) if 5 <= b][0]] >= 1
    assert latency_row[12:15] == ("ms", None, "/orders")
    assert points[1][12:15] == ("1", "orders placed", "eu") and points[2][14] == "us"
    assert all(p[15:] == ("checkout", "shop.metrics", True) for p in points)
    assert len(otel.pyiceberg("otel.metrics")) == 5


def span_request(n, attribute_value, start=1_767_225_600_000_000_000):
    """An export of `n` spans, each with `req` = attribute_value and its index."""
    spans = [
        trace_pb2.Span(trace_id=bytes(15) + bytes([i % 256]), span_id=(i + 1).to_bytes(8, "big"), name=f"op{i}",
                       start_time_unix_nano=start + i, end_time_unix_nano=start + i + 1000,
                       attributes=[common_pb2.KeyValue(key="req", value=common_pb2.AnyValue(string_value=attribute_value)),
                                   common_pb2.KeyValue(key="i", value=common_pb2.AnyValue(int_value=i))])
        for i in range(n)
    ]
    resource = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="load"))])
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])
    return request.SerializeToString()


def test_otlp_json_gzip_and_deflate_bodies(otel):
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{"scope": {"name": "curl"}, "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174", "name": "json span",
                "kind": 3, "startTimeUnixNano": "1767225600000000123", "endTimeUnixNano": 1767225600500000123,
                "attributes": [{"key": "big", "value": {"intValue": "9007199254740993"}},
                               {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"boolValue": True}}]}}}],
                "status": {"code": 1}}]}]}]}
    r = otel.post("/v1/traces", json.dumps(body), headers=JSON)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}

    gz = otel.post("/v1/traces", gzip.compress(span_request(3, "gzip")), headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert gz.status_code == 200, gz.text
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(gz.content)
    assert not response.HasField("partial_success")
    deflated = otel.post("/v1/traces", zlib.compress(span_request(2, "deflate")), headers={**PROTOBUF, "Content-Encoding": "deflate"})
    assert deflated.status_code == 200, deflated.text
    json_gz = otel.post("/v1/traces", gzip.compress(json.dumps(body).encode()), headers={**JSON, "Content-Encoding": "gzip"})
    assert json_gz.status_code == 200, json_gz.text
    otel.commit_all()

    rows = otel.duck("otel.spans", """SELECT trace_id, span_id, kind, status_code, start_time_unix_nano, duration_ns,
        attributes['big'], attributes['kv'], service_name FROM T WHERE name = 'json span'""")
    assert rows == [("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "client", "ok", 1767225600000000123,
                     500000000, "9007199254740993", '{"x":true}', "json-svc")] * 2
    counts = otel.duck("otel.spans", "SELECT attributes['req'], count(*) FROM T GROUP BY 1 ORDER BY 1")
    assert counts == [("deflate", 2), ("gzip", 3), (None, 2)]


def rows_of(otel, table):
    view = otel.server.table(table)
    return view["live_rows"] + view["buffered_rows"], view["last_lsn"]


def test_refused_requests_write_nothing(make_otel):
    otel = make_otel(["--max-body-bytes", "65536"])
    before = {t: rows_of(otel, t) for t in ("otel.logs", "otel.spans", "otel.metrics")}
    # An empty export is a success that writes nothing.
    empty = otel.post("/v1/traces", b"")
    assert empty.status_code == 200 and empty.content == b""
    assert otel.post("/v1/metrics", "{}", headers=JSON).json() == {}
    # Malformed protobuf: 400 with a google.rpc.Status.
    bad = otel.post("/v1/traces", b"\x0a\xff\xff\xff\x0f garbage")
    assert bad.status_code == 400
    status = status_pb2.Status.FromString(bad.content)
    assert status.code == 3 and "protobuf" in status.message
    bad_json = otel.post("/v1/logs", '{"resourceLogs": [{"scopeLogs": 7}]}', headers=JSON)
    assert bad_json.status_code == 400 and bad_json.json()["code"] == 3
    assert otel.post("/v1/logs", b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert otel.post("/v1/logs", b"x", headers={**PROTOBUF, "Content-Encoding": "br"}).status_code == 415
    assert otel.post("/v1/logs", b"\x1f\x8b not gzip", headers={**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 400
    assert otel.post("/v2/logs", b"").status_code == 404
    get = requests.get(otel.url + "/v1/logs", timeout=10)
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    # Oversized: as sent, and once inflated (a small gzip body of 1 MB of zeros).
    big = otel.post("/v1/traces", span_request(2000, "x" * 20))
    assert big.status_code == 413
    assert "65536" in status_pb2.Status.FromString(big.content).message
    bomb = otel.post("/v1/traces", gzip.compress(bytes(1_000_000)), headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert bomb.status_code == 413 and status_pb2.Status.FromString(bomb.content).code == 8
    after = {t: rows_of(otel, t) for t in before}
    assert after == before, "nothing was written"


def test_a_backlogged_host_answers_503_with_retry_after(make_otel):
    import socket

    otel = make_otel(["--max-body-bytes", "65536", "--max-inflight-bytes", "65536"])
    port = int(otel.url.rsplit(":", 1)[1])
    # A slow client holds the whole in-flight budget: its declared body is reserved before
    # it is read. The host answers at once only if it could not reserve it (another request
    # held part of the budget at that moment): then try again.
    for _ in range(50):
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 60000\r\n\r\n" + bytes(10))
        slow.settimeout(0.5)
        try:
            slow.recv(1)
        except socket.timeout:
            break  # no answer: the reservation holds
        slow.close()
    with slow:
        deadline = time.time() + 10
        while True:
            r = otel.post("/v1/traces", span_request(150, "late"), headers=JSON)
            if r.status_code == 503 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/json"
        assert r.json()["code"] == 14 and "--max-inflight-bytes" in r.json()["message"]
    ok = otel.post("/v1/traces", span_request(20, "after"))
    assert ok.status_code == 200, ok.text


def test_partial_success_refuses_only_the_record_that_does_not_fit(otel):
    def record(t, body):
        return logs_pb2.LogRecord(time_unix_nano=t, body=common_pb2.AnyValue(string_value=body))

    request = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[
        logs_pb2.ScopeLogs(log_records=[record(1_767_225_600_000_000_000, "ok"), record(2**64 - 1, "far future")])])])
    r = otel.post("/v1/logs", request.SerializeToString())
    assert r.status_code == 200, r.text
    partial = logs_service_pb2.ExportLogsServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_log_records == 1 and "2262" in partial.error_message
    otel.commit_all()
    assert otel.duck("otel.logs", "SELECT body FROM T") == [("ok",)]


def test_main_listener_mount_requires_the_token(make_server, tmp_path):
    config = write_config(str(tmp_path))  # no `listen`: /receive/otel on the main listener
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "otel.wasm"), "--config", config,
                          "--auth-token", "s3cret"])
    url = server.url + "/receive/otel/v1/traces"
    assert requests.post(url, data=span_request(1, "main"), headers=PROTOBUF, timeout=10).status_code == 401
    auth = {**PROTOBUF, "Authorization": "Bearer s3cret"}
    r = requests.post(url, data=span_request(1, "main"), headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    assert requests.post(server.url + "/receive/nope/v1/traces", headers=auth, timeout=10).status_code == 404
    metrics = requests.get(server.url + "/metrics", headers=auth, timeout=10).text
    assert 'moonlink_receiver_requests_total{plugin="otel",path="/v1/traces",method="POST",status="200"} 1' in metrics


def test_kill9_while_exporting_keeps_every_answered_request_once(make_otel, tmp_path):
    data_dir = str(tmp_path / "data")
    port = free_port()
    otel = make_otel(data_dir=data_dir, port=port)
    answered, stop = [], threading.Event()

    def export():
        i = 0
        session = requests.Session()
        while not stop.is_set() and i < 20_000:
            try:
                r = session.post(otel.url + "/v1/traces", data=span_request(3, f"r{i}"), headers=PROTOBUF, timeout=5)
                if r.status_code == 200:
                    answered.append(f"r{i}")
            except requests.RequestException:
                pass
            i += 1

    thread = threading.Thread(target=export)
    thread.start()
    deadline = time.time() + 30
    while len(answered) < 150 and time.time() < deadline:
        time.sleep(0.01)
    otel.server.kill()
    stop.set()
    thread.join()
    assert len(answered) >= 150
    otel = make_otel(data_dir=data_dir, port=port)
    otel.server.commit("otel.spans")
    counts = dict(otel.duck("otel.spans", "SELECT attributes['req'], count(*) FROM T GROUP BY 1"))
    missing = [a for a in answered if counts.get(a) != 3]
    assert not missing, f"{len(missing)} answered requests not exactly once, e.g. {missing[:5]}"
    assert all(c == 3 for c in counts.values()), "no request is half there or doubled"


def test_many_small_exports_end_in_few_files(make_otel):
    otel = make_otel(["--commit-interval-ms", "100"])
    requests_sent = 1500
    session = requests.Session()
    for i in range(requests_sent):
        r = session.post(otel.url + "/v1/traces", data=span_request(2, f"f{i}"), headers=PROTOBUF, timeout=10)
        assert r.status_code == 200, r.text
    otel.server.commit("otel.spans")
    view = otel.server.table("otel.spans")
    assert view["live_rows"] == 2 * requests_sent
    metadata = load_json(view["metadata_location"])
    commits = len(metadata.get("snapshots", []))
    files = view["data_files"]
    print(f"file health: {requests_sent} requests, {commits} snapshots retained, {files} data files")
    # One file per request (or per commit) would be hundreds; the engine merges small files.
    assert files <= 12, f"{files} data files for {requests_sent} small exports"
    assert len(otel.pyiceberg("otel.spans")) == 2 * requests_sent


def test_receivers_are_listed_with_their_counts(make_otel, make_server, tmp_path):
    import subprocess

    from conftest import BIN

    otel = make_otel(["--max-body-bytes", "65536"])
    assert otel.post("/v1/traces", span_request(3, "a")).status_code == 200
    assert otel.post("/v1/traces", span_request(2, "b")).status_code == 200
    assert otel.post("/v1/traces", b"\x0a\xff\xff\xff\x0f garbage").status_code == 400
    assert otel.post("/v1/traces", span_request(2000, "x" * 20)).status_code == 413
    listed = requests.get(otel.server.url + "/plugins", timeout=10).json()
    assert listed["plugins"] == []
    [receiver] = listed["receivers"]
    assert receiver["name"] == "otel" and receiver["path"].endswith("otel.wasm")
    assert receiver["listen"] == otel.url.removeprefix("http://") and receiver["route"] is None
    assert sorted(receiver["tables"]) == ["otel.logs", "otel.metrics", "otel.spans"]
    assert (receiver["requests"], receiver["errors"], receiver["rows"]) == (4, 2, 5), receiver
    assert receiver["last_error"].startswith("413: ") and "65536" in receiver["last_error"], receiver
    status = requests.get(otel.server.url + "/status", timeout=10).json()
    assert status["receivers"] == [receiver]
    out = subprocess.run([BIN, "status", "--url", otel.server.url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("otel "))
    assert receiver["listen"] in line and line.split()[2:5] == ["4", "2", "5"], out.stdout
    # The status page shows it too (headless Chromium runs the page's script).
    from test_operators_view import chromium
    dom = chromium("--dump-dom", otel.server.url + "/").stdout
    row = dom.split('<tr class="receiver-row" data-receiver="otel">', 1)[1].split("</tr>", 1)[0]
    assert f"<td>{receiver['listen']}</td>" in row and '<td class="num">4</td>' in row, row

    # Without a listener of its own, the receiver is mounted on the main one.
    (tmp_path / "mounted").mkdir()
    config = write_config(str(tmp_path / "mounted"))
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "otel.wasm"), "--config", config])
    r = requests.post(server.url + "/receive/otel/v1/traces", data=span_request(1, "m"), headers=PROTOBUF, timeout=30)
    assert r.status_code == 200, r.text
    [mounted] = requests.get(server.url + "/plugins", timeout=10).json()["receivers"]
    assert mounted["route"] == "/receive/otel" and mounted["listen"] is None
    assert (mounted["requests"], mounted["errors"], mounted["rows"]) == (1, 0, 1), mounted
