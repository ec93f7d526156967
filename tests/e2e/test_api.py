"""The HTTP API as a user drives it: tables, ingest, errors."""
import requests

from readers import duckdb_rows, pyiceberg_rows, expect

USERS = [
    {"name": "id", "data_type": "int32", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
    {"name": "age", "data_type": "int32", "nullable": True},
]


def both_readers(server, name, namespace, table):
    loc = server.table(name)["metadata_location"]
    return duckdb_rows(loc), pyiceberg_rows(server.data_dir, namespace, table)


def test_health(server):
    r = requests.get(server.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["service"] == "moonlink-rest-api" and body["timestamp"] > 0


def test_create_list_get_drop(server):
    created = server.create_table("demo.users", USERS, database="demo", table="users")
    assert created["name"] == "demo.users"
    assert created["database"] == "demo" and created["table"] == "users"
    assert created["metadata_location"].endswith(".metadata.json")
    # A URI, as Java Iceberg writes local locations.
    assert created["metadata_location"].startswith("file:///"), created["metadata_location"]
    listed = server.tables()
    assert [t["name"] for t in listed] == ["demo.users"]
    assert listed[0]["schema"][0] == {"name": "id", "data_type": "int32", "nullable": False}

    # Without database/table in the body they come from the name.
    other = server.create_table("sales.orders", [{"name": "id", "data_type": "int64", "nullable": False}])
    assert (other["database"], other["table"]) == ("sales", "orders")
    plain = server.create_table("events", [{"name": "id", "data_type": "int64", "nullable": False}])
    assert (plain["database"], plain["table"]) == ("default", "events")

    r = requests.delete(server.url + "/tables/sales.orders")
    assert r.status_code == 200, r.text
    assert sorted(t["name"] for t in server.tables()) == ["demo.users", "events"]
    assert requests.post(server.url + "/ingest/sales.orders", json={"data": {"id": 1}}).status_code == 404
    assert requests.delete(server.url + "/tables/sales.orders").status_code == 404
    assert requests.get(server.url + "/tables/sales.orders").status_code == 404
    # The name is free again, and the new table starts empty.
    server.create_table("sales.orders", [{"name": "id", "data_type": "int64", "nullable": False}])
    server.ingest("sales.orders", [{"id": 5}])
    assert both_readers(server, "sales.orders", "sales", "orders") == (expect((5,)), expect((5,)))


def test_sync_insert_is_visible_to_both_readers(server):
    server.create_table("demo.users", USERS)
    reply = server.ingest("demo.users", {"id": 1, "name": "Ada", "age": 36})
    assert reply["status"] == "ok" and reply["rows"] == 1 and reply["lsn"] >= 1
    reply = server.ingest("demo.users", [{"id": 2, "name": "Grace"}, {"id": 3, "age": 71}])
    assert reply["rows"] == 2
    want = expect((1, "Ada", 36), (2, "Grace", None), (3, None, 71))
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == want
    assert py == want


def test_async_then_explicit_commit(server):
    server.create_table("demo.users", USERS)
    for i in range(5):
        reply = server.ingest("demo.users", [{"id": i}], mode="async")
        assert reply["request_mode"] == "async"
    committed = server.commit("demo.users")
    assert committed["metadata_location"] == server.table("demo.users")["metadata_location"]
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == expect(*[(i, None, None) for i in range(5)])


def test_ndjson_body(server):
    server.create_table("demo.users", USERS)
    r = requests.post(server.url + "/ingest/demo.users?operation=insert&request_mode=sync",
                      data=b'{"id":1,"name":"a"}\n{"id":2}\n', headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == 2
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == expect((1, "a", None), (2, None, None))


def error(r, status, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "message", "row", "column"}
    if code:
        assert body["error"] == code, body
    return body


def test_errors_are_4xx_with_row_and_column_and_write_nothing(server):
    server.create_table("demo.users", USERS)
    url = server.url + "/ingest/demo.users"
    error(requests.post(url, data=b'{"operation":"insert","data":[{"id":1}', headers={"content-type": "application/json"}), 400, "malformed_body")
    error(requests.post(server.url + "/ingest/nope", json={"data": {"id": 1}}), 404, "table_not_found")
    error(requests.post(url, json={"operation": "merge", "data": {"id": 1}}), 400)
    error(requests.post(url, json={"operation": "insert", "request_mode": "later", "data": {"id": 1}}), 400)
    body = error(requests.post(url, json={"data": [{"id": 1}, {"id": 2}, {"id": "three"}]}), 422, "invalid_value")
    assert (body["row"], body["column"]) == (2, "id")
    body = error(requests.post(url, json={"data": [{"id": 1}, {"id": None}]}), 422)
    assert (body["row"], body["column"]) == (1, "id")
    body = error(requests.post(url, json={"data": [{"id": 1, "name": "x"}, {"name": "no id"}]}), 422)
    assert (body["row"], body["column"]) == (1, "id")
    body = error(requests.post(url, json={"data": [{"id": 1, "email": "x@y"}]}), 422)
    assert (body["row"], body["column"]) == (0, "email")
    body = error(requests.post(url, json={"data": [{"id": 1, "age": 1.5}]}), 422)
    assert body["column"] == "age"
    error(requests.post(url, json={"operation": "upsert", "data": {"id": 1}}), 422)
    # Nothing above was written: a commit shows an empty table.
    server.commit("demo.users")
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == []
    assert server.table("demo.users")["last_lsn"] == 0


def test_moonlink_quick_start_requests_work_unchanged(server):
    """The request shapes Moonlink's own tests send: hyphenated names, `mooncake` table_config,
    a JSON body on DELETE."""
    payload = {
        "database": "test-database", "table": "test-table",
        "schema": [{"name": "id", "data_type": "int32", "nullable": False},
                   {"name": "name", "data_type": "string", "nullable": False},
                   {"name": "email", "data_type": "string", "nullable": True},
                   {"name": "age", "data_type": "int32", "nullable": True}],
        "table_config": {"mooncake": {"append_only": True, "row_identity": "None"}},
    }
    r = requests.post(server.url + "/tables/test-database.test-table", json=payload)
    assert r.status_code == 201, r.text
    assert r.json()["database"] == "test-database" and r.json()["lsn"] >= 1
    r = requests.post(server.url + "/ingest/test-database.test-table", json={
        "operation": "insert", "request_mode": "sync",
        "data": {"id": 1, "name": "Alice Johnson", "email": "alice@example.com", "age": 30}})
    assert r.status_code == 200, r.text
    loc = server.table("test-database.test-table")["metadata_location"]
    assert duckdb_rows(loc) == [(1, "Alice Johnson", "alice@example.com", 30)]
    r = requests.delete(server.url + "/tables/test-database.test-table", json={"database": "test-database", "table": "test-table"})
    assert r.status_code == 200, r.text


def test_create_table_errors(server):
    server.create_table("demo.users", USERS)
    error(requests.post(server.url + "/tables/demo.users", json={"schema": USERS}), 409, "table_exists")
    error(requests.post(server.url + "/tables/demo.other", json={"database": "demo", "table": "users", "schema": USERS}), 409)
    body = error(requests.post(server.url + "/tables/demo.bad", json={"schema": [{"name": "x", "data_type": "varchar"}]}), 400)
    assert body["column"] == "x"
    error(requests.post(server.url + "/tables/demo.bad", data=b"{", headers={"content-type": "application/json"}), 400)
    error(requests.post(server.url + "/tables/demo.bad", json={"schema": [{"name": "x", "data_type": "int32"}, {"name": "x", "data_type": "int32"}]}), 400)
    error(requests.post(server.url + "/tables/demo.bad", json={"schema": USERS, "primary_key": ["nope"]}), 400)
    assert [t["name"] for t in server.tables()] == ["demo.users"]


def test_oversized_body_is_413_and_server_keeps_running(make_server):
    server = make_server(["--max-body-bytes", "1024"])
    server.create_table("demo.users", USERS)
    big = [{"id": i, "name": "x" * 50} for i in range(100)]
    error(requests.post(server.url + "/ingest/demo.users", json={"data": big}), 413, "body_too_large")
    # Chunked upload without Content-Length is cut off too.
    def chunks():
        for _ in range(10):
            yield b" " * 500
    error(requests.post(server.url + "/ingest/demo.users", data=chunks(), headers={"content-type": "application/json"}), 413)
    server.ingest("demo.users", [{"id": 1}])
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == expect((1, None, None))


def test_bearer_token(make_server):
    server = make_server(["--auth-token", "s3cret"])
    assert requests.get(server.url + "/health").status_code == 200
    assert requests.get(server.url + "/tables").status_code == 401
    ok = requests.get(server.url + "/tables", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_a_broken_plugin_is_a_500_and_the_server_keeps_running(make_server, tmp_path):
    """The faulty fixture stands in for rest_ingest: its faults are the host's problem (5xx),
    never the caller's, and the next request is served normally."""
    import os
    import shutil
    from conftest import PLUGIN_DIR

    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    shutil.copy(os.path.join(PLUGIN_DIR, "faulty.wasm"), plugin_dir / "rest_ingest.wasm")
    server = make_server(["--plugin-dir", str(plugin_dir), "--plugin-timeout-ms", "300", "--plugin-memory-mib", "64"])
    server.create_table("demo.t", [{"name": "id", "data_type": "int64", "nullable": False}])
    for fault in (b"trap", b"loop", b"oom", b"wrong-table", b"ragged"):
        body = error(requests.post(server.url + "/ingest/demo.t", data=fault), 500, "plugin_error")
        assert "plugin" in body["message"]
    assert requests.post(server.url + "/ingest/demo.t", data=b"fine").status_code == 200
    loc = server.table("demo.t")["metadata_location"]
    assert duckdb_rows(loc) == [(1,)]


def test_the_decoder_is_swappable_by_config(make_server, tmp_path):
    import os
    from conftest import PLUGIN_DIR

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    server = make_server(["--config", os.path.join(root, "plugins/rest_ingest/example.toml")])
    server.create_table("demo.t", [{"name": "id", "data_type": "int64", "nullable": False}])
    server.ingest("demo.t", [{"id": 1}])
    assert duckdb_rows(server.table("demo.t")["metadata_location"]) == [(1,)]

    config = tmp_path / "decoder.toml"
    config.write_text(f'kind = "rest-ingest"\npath = "{PLUGIN_DIR}/faulty.wasm"\n')
    swapped = make_server(["--config", str(config)])
    swapped.create_table("demo.t", [{"name": "id", "data_type": "int64", "nullable": False}])
    error(requests.post(swapped.url + "/ingest/demo.t", data=b"trap"), 500, "plugin_error")


def test_truncate_empties_the_table_and_it_stays_usable(server):
    server.create_table("demo.users", USERS, primary_key=["id"])
    server.ingest("demo.users", [{"id": i, "name": f"u{i}"} for i in range(10)])
    server.ingest("demo.users", [{"id": 3}], operation="delete")
    server.ingest("demo.users", [{"id": 99}], mode="async")  # buffered, not yet committed
    r = requests.post(f"{server.url}/tables/demo.users/truncate", timeout=30)
    assert r.status_code == 200, r.text
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == []
    assert server.table("demo.users")["data_files"] == 0
    # Keys are free again, and a restart neither resurrects nor loses anything.
    server.ingest("demo.users", [{"id": 1, "name": "again"}])
    server.restart()
    duck, py = both_readers(server, "demo.users", "demo", "users")
    assert duck == py == expect((1, "again", None))
    assert requests.post(f"{server.url}/tables/nope/truncate", timeout=10).status_code == 404
