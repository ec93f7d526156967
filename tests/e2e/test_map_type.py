"""Map columns (`map<K, V>`, WIT 0.3.0) end to end: HTTP schema syntax, JSON objects decoded
by rest_ingest, the write-ahead log, Iceberg `map` with key and value field ids in Parquet, and
every reader (DuckDB, PyIceberg, `/query`) giving back what was sent."""
import json

import requests

from readers import duckdb_rows, load_json, pyiceberg_rows

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "attributes", "data_type": "map<string, string>", "nullable": True},
    {"name": "counts", "data_type": "map<string,int64>", "nullable": True},
]

ROWS = [
    {"id": 1, "attributes": {"http.route": "/users", "http.method": "GET"}, "counts": {"a": 1, "b": -2}},
    # Non-string JSON values in a string map keep their JSON text.
    {"id": 2, "attributes": {"a": 1, "b": True, "c": {"x": 1}, "d": [1, "y"]}, "counts": {}},
    {"id": 3, "attributes": {}, "counts": None},
    {"id": 4, "attributes": None, "counts": {"n": None}},
    {"id": 5, "attributes": {"http.route": "/orders", "none": None}},
]

# What every reader must return: (id, attributes, counts) with entries in the order sent.
EXPECTED = {
    1: ([("http.route", "/users"), ("http.method", "GET")], [("a", 1), ("b", -2)]),
    2: ([("a", "1"), ("b", "true"), ("c", '{"x":1}'), ("d", '[1,"y"]')], []),
    3: ([], None),
    4: (None, [("n", None)]),
    5: ([("http.route", "/orders"), ("none", None)], None),
}


def ndjson(rows):
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def post_ndjson(server, table, rows, operation="insert", mode="sync"):
    return requests.post(f"{server.url}/ingest/{table}?operation={operation}&request_mode={mode}",
                         data=ndjson(rows), headers={"content-type": "application/x-ndjson"}, timeout=60)


def as_pairs(value):
    """A reader's map value as a list of (key, value) pairs; `None` stays `None`."""
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) == {"key", "value"} and isinstance(value["key"], list):  # DuckDB's MAP
            return list(zip(value["key"], value["value"]))
        return list(value.items())
    return [tuple(e.values()) if isinstance(e, dict) else tuple(e) for e in value]


def by_id(rows):
    return {r[0]: (as_pairs(r[1]), as_pairs(r[2])) for r in rows}


def check_readers(server, expected):
    info = server.table("demo.spans")
    duck = duckdb_rows(info["metadata_location"], "id, attributes, counts")
    assert by_id(duck) == expected
    py = pyiceberg_rows(server.data_dir, "demo", "spans")
    assert by_id(py) == expected
    r = requests.post(server.url + "/query", json={"sql": "SELECT id, attributes, counts FROM demo.spans"}, timeout=60)
    assert r.status_code == 200, r.text
    got = {row["id"]: (as_pairs(row["attributes"]), as_pairs(row["counts"])) for row in r.json()}
    assert got == expected


def test_maps_round_trip_through_every_reader_and_a_crash(make_server):
    server = make_server()
    created = server.create_table("demo.spans", SCHEMA)
    # The type is shown back in canonical form.
    shown = {c["name"]: c["data_type"] for c in server.table("demo.spans")["schema"]}
    assert shown["attributes"] == "map<string, string>" and shown["counts"] == "map<string, int64>", created
    r = post_ndjson(server, "demo.spans", ROWS)
    assert r.status_code == 200, r.text
    server.commit("demo.spans")
    check_readers(server, EXPECTED)

    # Iceberg metadata: a map with key and value field ids, key required, value optional.
    metadata = load_json(server.table("demo.spans")["metadata_location"])
    schema = next(s for s in metadata["schemas"] if s["schema-id"] == metadata["current-schema-id"])
    attributes = next(f for f in schema["fields"] if f["name"] == "attributes")["type"]
    assert attributes["type"] == "map" and attributes["key"] == "string" and attributes["value"] == "string"
    assert attributes["value-required"] is False and attributes["key-id"] != attributes["value-id"]

    # DuckDB looks keys up.
    info = server.table("demo.spans")
    routes = duckdb_rows(info["metadata_location"], "id, attributes['http.route']")
    assert dict(routes)[1] in ("/users", ["/users"]) and dict(routes)[3] in (None, [])

    # Rows only in the write-ahead log survive kill -9.
    r = post_ndjson(server, "demo.spans", [{"id": 6, "attributes": {"k": "v"}, "counts": {"z": 26}}], mode="async")
    assert r.status_code == 200, r.text
    server.kill()
    server.start()
    server.commit("demo.spans")
    check_readers(server, {**EXPECTED, 6: ([("k", "v")], [("z", 26)])})


def test_a_keyed_table_with_a_map_upserts_and_deletes(make_server):
    server = make_server()
    server.create_table("demo.spans", SCHEMA, primary_key=["id"])
    assert post_ndjson(server, "demo.spans", ROWS[:3], operation="upsert").status_code == 200
    r = post_ndjson(server, "demo.spans", [{"id": 1, "attributes": {"x": "y"}, "counts": {"c": 3}}], operation="upsert")
    assert r.status_code == 200, r.text
    assert post_ndjson(server, "demo.spans", [{"id": 2}], operation="delete").status_code == 200
    server.commit("demo.spans")
    check_readers(server, {1: ([("x", "y")], [("c", 3)]), 3: EXPECTED[3]})
    # A map column cannot be a key.
    r = requests.post(f"{server.url}/tables/demo.bad", json={"schema": SCHEMA, "primary_key": ["attributes"]}, timeout=30)
    assert r.status_code in (400, 422) and "attributes" in r.text, r.text


def test_bad_map_input_is_refused_by_row_and_column_and_writes_nothing(make_server):
    server = make_server()
    server.create_table("demo.spans", SCHEMA)
    for bad, column in [
        ({"id": 2, "attributes": ["a", "b"]}, "attributes"),  # an array is not a map
        ({"id": 2, "attributes": "a=b"}, "attributes"),
        ({"id": 2, "counts": {"a": "seven"}}, "counts"),  # wrong value type
        ({"id": 2, "counts": {"a": 1.5}}, "counts"),
    ]:
        r = post_ndjson(server, "demo.spans", [{"id": 1, "attributes": {"ok": "1"}}, bad])
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["row"] == 1 and body["column"] == column, body
    # Unknown map types are refused at creation.
    for bad in ["map<string>", "map<list<int32>, string>", "map<string, map<string, string>>", "map<foo, string>"]:
        r = requests.post(f"{server.url}/tables/demo.bad",
                          json={"schema": [{"name": "m", "data_type": bad, "nullable": True}]}, timeout=30)
        assert r.status_code in (400, 422), (bad, r.text)
    server.commit("demo.spans")
    assert server.table("demo.spans")["live_rows"] == 0


def test_an_arrow_ipc_body_with_map_arrays(make_server):
    import pyarrow as pa

    server = make_server()
    server.create_table("demo.spans", SCHEMA)
    # pyarrow's own names (entries/key/value) and a narrower value type (int32 → int64).
    table = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "attributes": pa.array([[("http.route", "/users")], [], None], pa.map_(pa.string(), pa.string())),
        "counts": pa.array([[("a", 1), ("b", None)], None, []], pa.map_(pa.string(), pa.int32())),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = requests.post(f"{server.url}/ingest/demo.spans?request_mode=sync", data=sink.getvalue().to_pybytes(),
                      headers={"Content-Type": "application/vnd.apache.arrow.stream"}, timeout=60)
    assert r.status_code == 200, r.text
    server.commit("demo.spans")
    check_readers(server, {1: ([("http.route", "/users")], [("a", 1), ("b", None)]), 2: ([], None), 3: (None, [])})
    # A map whose values do not fit is refused by row and column.
    bad = pa.table({"id": pa.array([9, 10], pa.int64()),
                    "counts": pa.array([[], [("x", "seven")]], pa.map_(pa.string(), pa.string()))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, bad.schema) as writer:
        writer.write_table(bad)
    r = requests.post(f"{server.url}/ingest/demo.spans", data=sink.getvalue().to_pybytes(),
                      headers={"Content-Type": "application/vnd.apache.arrow.stream"}, timeout=60)
    assert r.status_code == 422 and r.json()["column"] == "counts", r.text


def test_query_json_shows_maps_with_non_string_keys_as_objects(make_server):
    """JSON object keys are strings: `/query` renders a `map<int64, string>` with its keys as
    text instead of refusing the result."""
    import pyarrow as pa
    server = make_server()
    server.create_table("demo.codes", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "names", "data_type": "map<int64, string>", "nullable": True},
    ])
    names = pa.array([[(1, "one"), (20, None)], None], type=pa.map_(pa.int64(), pa.string()))
    batch = pa.record_batch([pa.array([1, 2], pa.int64()), names], names=["id", "names"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    r = requests.post(f"{server.url}/ingest/demo.codes", data=sink.getvalue().to_pybytes(),
                      headers={"Content-Type": "application/vnd.apache.arrow.stream"}, timeout=60)
    assert r.status_code == 200, r.text
    r = requests.post(server.url + "/query", json={"sql": "SELECT id, names FROM demo.codes ORDER BY id"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == [{"id": 1, "names": {"1": "one", "20": None}}, {"id": 2, "names": None}]


def test_query_reads_map_values_by_key_like_duckdb(make_server):
    """`attributes['http.route']` (what the otel tables are queried with) works in `/query` as in
    DuckDB: a missing key, an empty map and a null map give null; `map_keys`/`cardinality` too."""
    server = make_server()
    server.create_table("demo.m", SCHEMA)
    assert post_ndjson(server, "demo.m", ROWS).status_code == 200
    # Buffered rows first, then the same after a commit (read from Parquet).
    for _ in range(2):
        r = requests.post(server.url + "/query", timeout=60, json={"sql":
            "SELECT id, attributes['http.route'] AS route, counts['b'] AS b, "
            "cardinality(map_keys(attributes)) AS n FROM demo.m ORDER BY id"})
        assert r.status_code == 200, r.text
        assert r.json() == [
            {"id": 1, "route": "/users", "b": -2, "n": 2},
            {"id": 2, "route": None, "b": None, "n": 4},
            {"id": 3, "route": None, "b": None, "n": 0},
            {"id": 4, "route": None, "b": None, "n": None},
            {"id": 5, "route": "/orders", "b": None, "n": 2},
        ]
        server.commit("demo.m")
    r = requests.post(server.url + "/query", timeout=60, json={"sql":
        "SELECT count(*) AS n FROM demo.m WHERE attributes['http.method'] = 'GET'"})
    assert r.status_code == 200 and r.json() == [{"n": 1}], r.text
