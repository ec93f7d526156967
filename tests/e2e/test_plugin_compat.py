"""Plugins built against the previous WIT release keep working: the host speaks
`moonlink:plugin@0.2.1`, and a source and a transform built against 0.2.0 (kept as built in
tests/fixtures/plugins-0.2.0) run and land their rows. Their lag is the generic one (0.2.0 has
no `report-lag`)."""
import os
import time

import requests

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
