"""Plugins built against earlier WIT releases keep working on a `moonlink:plugin@0.4` host:
a source and a transform built against 0.2.0, a decoder and a source against 0.2.1, and a
decoder, a source and a receiver against 0.3.0 (kept as built in tests/fixtures/plugins-*)
run and land their rows. A 0.2.0 source's lag is the generic one (0.2.0 has no
`report-lag`)."""
import os
import time

import requests

from conftest import PLUGIN_DIR, free_port
from readers import duckdb_rows

OLD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "plugins-0.2.0")


def test_a_0_2_0_source_and_transform_still_run(make_server, tmp_path):
    config = tmp_path / "old.toml"
    config.write_text(f'''name = "old"
path = "{OLD}/datagen.wasm"
[settings]
table = "demo.users"
rows = 500
preset = "users"
[[transforms]]
path = "{OLD}/mask.wasm"
settings = {{ columns = ["email"], mode = "hash", salt = "compat-test-salt-0123456789" }}
''')
    server = make_server(["--config", str(config)])
    deadline = time.time() + 60
    status = None
    while time.time() < deadline:
        status = requests.get(server.url + "/plugins", timeout=5).json()["plugins"][0]
        if status["state"] in ("finished", "failed"):
            break
        time.sleep(0.1)
    assert status["state"] == "finished" and status["last_error"] is None, status
    assert status["acked_checkpoint"] == "500" and status["rows"] == 500
    assert status["lag_bytes"] is None
    info = server.table("demo.users")
    assert info["live_rows"] == 500
    emails = [r[0] for r in duckdb_rows(info["metadata_location"], "email") if r[0] is not None]
    assert len(emails) > 100 and not any("@" in e for e in emails), emails[:3]


OLD_021 = os.path.join(os.path.dirname(OLD), "plugins-0.2.1")


def test_a_0_2_1_rest_decoder_serves_ingest_and_refuses_a_map_table_clearly(make_server, tmp_path):
    # The host's decoder is whatever rest_ingest.wasm the plugin dir holds: here the 0.2.1 one.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "rest_ingest.wasm").write_bytes(open(os.path.join(OLD_021, "rest_ingest.wasm"), "rb").read())
    server = make_server(["--plugin-dir", str(plugins)])
    server.create_table("demo.plain", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "tags", "data_type": "list<string>", "nullable": True},
    ], primary_key=["id"])
    server.ingest("demo.plain", [{"id": 1, "tags": ["a", None]}, {"id": 2, "tags": None}])
    server.ingest("demo.plain", [{"id": 2, "tags": ["b"]}], operation="upsert")

    server.create_table("demo.attrs", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "attributes", "data_type": "map<string, string>", "nullable": True},
    ])
    r = requests.post(f"{server.url}/ingest/demo.attrs",
                      json={"operation": "insert", "request_mode": "sync", "data": [{"id": 1, "attributes": {}}]},
                      timeout=30)
    assert r.status_code == 422, r.text
    assert "moonlink:plugin@0.2" in r.text and "'attributes'" in r.text, r.text
    assert server.table("demo.attrs")["live_rows"] == 0

    # The host keeps serving, with the same decoder.
    server.ingest("demo.plain", [{"id": 3, "tags": []}])
    info = server.table("demo.plain")
    assert duckdb_rows(info["metadata_location"], "id, tags") == [(1, ["a", None]), (2, ["b"]), (3, [])]


OLD_030 = os.path.join(os.path.dirname(OLD), "plugins-0.3.0")


def test_a_0_3_0_rest_decoder_lands_lists_and_maps(make_server, tmp_path):
    # 0.3 decoders send list elements and map entries one string each; the 0.4 host takes them.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "rest_ingest.wasm").write_bytes(open(os.path.join(OLD_030, "rest_ingest.wasm"), "rb").read())
    server = make_server(["--plugin-dir", str(plugins)])
    server.create_table("demo.attrs", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "tags", "data_type": "list<string>", "nullable": True},
        {"name": "attributes", "data_type": "map<string, string>", "nullable": True},
    ], primary_key=["id"])
    server.ingest("demo.attrs", [{"id": 1, "tags": ["a", None, "ü"], "attributes": {"k": "v", "n": 3}},
                                 {"id": 2, "tags": None, "attributes": {}}])
    info = server.table("demo.attrs")
    rows = duckdb_rows(info["metadata_location"], "id, tags, attributes['k'], attributes['n'], cardinality(attributes)")
    assert rows == [(1, ["a", None, "ü"], "v", "3", 2), (2, None, None, None, 0)]


def test_a_0_3_0_source_runs_under_a_0_4_transform(make_server, tmp_path):
    config = tmp_path / "old.toml"
    config.write_text(f'''name = "old03"
path = "{OLD_030}/datagen.wasm"
[settings]
table = "demo.users"
rows = 300
preset = "users"
[[transforms]]
path = "{PLUGIN_DIR}/mask.wasm"
settings = {{ columns = ["email"], mode = "hash", salt = "compat-test-salt-0123456789" }}
''')
    server = make_server(["--config", str(config)])
    deadline = time.time() + 60
    status = None
    while time.time() < deadline:
        status = requests.get(server.url + "/plugins", timeout=5).json()["plugins"][0]
        if status["state"] in ("finished", "failed"):
            break
        time.sleep(0.1)
    assert status["state"] == "finished" and status["last_error"] is None, status
    assert status["rows"] == 300
    info = server.table("demo.users")
    assert info["live_rows"] == 300
    emails = [r[0] for r in duckdb_rows(info["metadata_location"], "email") if r[0] is not None]
    assert len(emails) > 50 and not any("@" in e for e in emails), emails[:3]


def test_a_0_3_0_receiver_lands_map_attributes(make_server, tmp_path):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    port = free_port()
    config = tmp_path / "otel.toml"
    config.write_text(f'name = "otel03"\n[settings]\nlisten = "127.0.0.1:{port}"\n')
    server = make_server(["--plugin", os.path.join(OLD_030, "otel.wasm"), "--config", str(config)])
    kv = lambda k, v: common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
    spans = [trace_pb2.Span(trace_id=bytes(15) + bytes([i]), span_id=(i + 1).to_bytes(8, "big"), name=f"op{i}",
                            start_time_unix_nano=1_767_225_600_000_000_000 + i,
                            end_time_unix_nano=1_767_225_600_000_001_000 + i,
                            attributes=[kv("http.route", f"/r{i}"), kv("k", "v")],
                            events=[trace_pb2.Span.Event(time_unix_nano=1_767_225_600_000_000_500, name=f"e{i}")])
             for i in range(3)]
    body = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]).SerializeToString()
    r = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=body,
                      headers={"Content-Type": "application/x-protobuf"}, timeout=30)
    assert r.status_code == 200, r.text
    server.commit("otel.spans")
    info = server.table("otel.spans")
    rows = duckdb_rows(info["metadata_location"], "name, attributes['http.route'], attributes['k'], event_names")
    assert sorted(rows) == [(f"op{i}", f"/r{i}", "v", [f"e{i}"]) for i in range(3)]
