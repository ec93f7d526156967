"""A source plugin may only write, truncate or evolve the tables it declared in `open`."""
import requests

from readers import duckdb_rows, pyiceberg_rows
from test_sources import plugin_status, write_config

VICTIM = "http.victim"
SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "note", "data_type": "string", "nullable": True},
]


def victim(server):
    """(rows as DuckDB and PyIceberg read them, column names as the API lists them)."""
    table = server.table(VICTIM)
    duck = duckdb_rows(table["metadata_location"], "*")
    py = pyiceberg_rows(server.data_dir, "http", "victim")
    assert duck == py
    return duck, [c["name"] for c in table["schema"]]


def test_a_source_cannot_touch_a_table_it_did_not_declare(make_server, tmp_path):
    ops = ["truncate", "changes", "schema", "progress"]
    configs = []
    for op in ops:
        # The first poll is honest (rows 0..50 of its own table, checkpoint 50); the second
        # also emits `op` for the HTTP table. After the refusal the source restarts from 50
        # and, no longer armed, finishes its own table.
        configs += ["--plugin", "faulty_source.wasm", "--config", write_config(tmp_path, f"{op}.toml", f"""
name = "hijack-{op}"
[settings]
table = "own.{op}"
rows = 100
fault = "foreign"
fault_at = 50
foreign_table = "{VICTIM}"
foreign_op = "{op}"
[poll]
max_rows = 50
""")]
    server = make_server()
    server.create_table(VICTIM, SCHEMA)
    server.ingest(VICTIM, [{"id": i, "note": f"n{i}"} for i in range(100)])
    before = victim(server)
    assert len(before[0]) == 100 and before[1] == ["id", "note"]
    server.stop()

    server.extra_args = configs
    server.start()
    for op in ops:
        status = plugin_status(server, f"hijack-{op}", timeout=60)
        assert status["restarts"] >= 1, status
        error = status["last_error"] or ""
        assert f"'{VICTIM}'" in error and "did not declare" in error, status
        assert status["tables"] == [f"own.{op}"], status
        own = sorted(r[0] for r in duckdb_rows(server.table(f"own.{op}")["metadata_location"], "id"))
        assert own == list(range(100)), op
        # The foreign progress report never reached the status either.
        assert VICTIM not in status["copy_progress"], status

    server.commit(VICTIM)
    assert victim(server) == before
    assert requests.get(server.url + "/health").json()["status"] == "healthy"
    log = server.read_log()
    assert "did not declare" in log
