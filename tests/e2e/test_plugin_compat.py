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
