"""Every data type, with nulls and edge values, read back identically by DuckDB and PyIceberg."""
import base64
import datetime
import uuid

import requests
from decimal import Decimal

from readers import duckdb_rows, pyiceberg_rows, expect, utc

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "i16", "data_type": "int16", "nullable": True},
    {"name": "i32", "data_type": "int32", "nullable": True},
    {"name": "i64", "data_type": "int64", "nullable": True},
    {"name": "f32", "data_type": "float32", "nullable": True},
    {"name": "f64", "data_type": "float64", "nullable": True},
    {"name": "b", "data_type": "bool", "nullable": True},
    {"name": "b2", "data_type": "boolean", "nullable": False},
    {"name": "s", "data_type": "string", "nullable": True},
    {"name": "t", "data_type": "text", "nullable": True},
    {"name": "d", "data_type": "date32", "nullable": True},
    {"name": "dec", "data_type": "decimal(18,4)", "nullable": True},
    {"name": "big", "data_type": "decimal(38,0)", "nullable": True},
    {"name": "ts", "data_type": "timestamp", "nullable": True},
    {"name": "tz", "data_type": "timestamptz", "nullable": True},
    {"name": "bin", "data_type": "binary", "nullable": True},
    {"name": "u", "data_type": "uuid", "nullable": True},
]

U = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")


ROWS = [
    {"id": 1, "i16": -32768, "i32": 2147483647, "i64": -9223372036854775808, "f32": 1.5, "f64": -2.25,
     "b": True, "b2": False, "s": "héllo ✓ 日本", "t": "", "d": "1969-07-20", "dec": "-12345678901234.5678",
     "big": "99999999999999999999999999999999999999", "ts": "2024-02-29 23:59:59.123456",
     "tz": "2024-01-01T02:00:00.000001+02:00", "bin": base64.b64encode(b"\x00\x01\xff").decode(), "u": str(U)},
    {"id": 2, "i16": 32767, "i32": -2147483648, "i64": 9223372036854775807, "f32": -0.0, "f64": 1e300,
     "b": False, "b2": True, "s": None, "t": "plain", "d": "2262-04-11", "dec": 0, "big": "-1",
     "ts": "1900-01-01T00:00:00", "tz": "1970-01-01T00:00:00Z", "bin": "", "u": "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"},
    {"id": 3, "b2": True},
]

WANT = expect(
    (1, -32768, 2147483647, -9223372036854775808, 1.5, -2.25, True, False, "héllo ✓ 日本", "", datetime.date(1969, 7, 20),
     Decimal("-12345678901234.5678"), Decimal("99999999999999999999999999999999999999"),
     datetime.datetime(2024, 2, 29, 23, 59, 59, 123456), utc(2024, 1, 1, 0, 0, 0, 1), b"\x00\x01\xff", U),
    (2, 32767, -2147483648, 9223372036854775807, -0.0, 1e300, False, True, None, "plain", datetime.date(2262, 4, 11),
     Decimal("0.0000"), Decimal("-1"), datetime.datetime(1900, 1, 1), utc(1970, 1, 1), b"",
     uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff")),
    (3, None, None, None, None, None, None, True, None, None, None, None, None, None, None, None, None),
)


def test_every_type_round_trips(server):
    server.create_table("demo.types", SCHEMA)
    reply = server.ingest("demo.types", ROWS)
    assert reply["rows"] == 3
    want = WANT
    loc = server.table("demo.types")["metadata_location"]
    duck = duckdb_rows(loc)
    py = pyiceberg_rows(server.data_dir, "demo", "types")
    assert duck == want
    assert py == want


def test_list_columns_over_http(server):
    server.create_table("demo.lists", [
        {"name": "id", "data_type": "int32", "nullable": False},
        {"name": "tags", "data_type": "list<string>", "nullable": True},
        {"name": "scores", "data_type": "list<decimal(5,2)>", "nullable": True},
    ], primary_key=["id"])
    server.ingest("demo.lists", [
        {"id": 1, "tags": ["a", None, "c"], "scores": ["1.25", 2]},
        {"id": 2, "tags": [], "scores": None},
        {"id": 3},
    ])
    r = requests.post(f"{server.url}/ingest/demo.lists", json={"operation": "insert", "request_mode": "sync",
                                                               "data": [{"id": 4, "tags": [1]}]}, timeout=30)
    assert r.status_code == 422 and r.json()["column"] == "tags" and "element 0" in r.json()["message"], r.text
    meta = server.table("demo.lists")["metadata_location"]
    want = [(1, ["a", None, "c"], [Decimal("1.25"), Decimal("2.00")]), (2, [], None), (3, None, None)]
    assert duckdb_rows(meta) == want
    py = pyiceberg_rows(server.data_dir, "demo", "lists")
    assert [(r[0], r[1], r[2]) for r in py] == want


def test_binary_inside_lists_and_maps_commits(server):
    # The Parquet writer takes `LargeBinary` where the engine holds `Binary`; inside a list or a
    # map that once failed every commit of the table (and so every `sync` request), forever.
    server.create_table("demo.blobs", [
        {"name": "id", "data_type": "int32", "nullable": False},
        {"name": "parts", "data_type": "list<binary>", "nullable": True},
        {"name": "files", "data_type": "map<string, binary>", "nullable": True},
        {"name": "by_hash", "data_type": "map<binary, int32>", "nullable": True},
    ], primary_key=["id"])
    b64 = lambda raw: base64.b64encode(raw).decode()
    server.ingest("demo.blobs", [
        {"id": 1, "parts": [b64(b"\x00\x01"), None, b64(b"")], "files": {"a": b64(b"\xff"), "b": None},
         "by_hash": {b64(b"\x10"): 7}},
        {"id": 2, "parts": [], "files": {}},
        {"id": 3},
    ])
    server.ingest("demo.blobs", [{"id": 2, "parts": [b64(b"z")]}], operation="upsert")
    r = requests.post(f"{server.url}/query", json={"sql": "SELECT id, parts FROM demo.blobs ORDER BY id"},
                      timeout=30)
    assert r.status_code == 200, r.text
    meta = server.table("demo.blobs")["metadata_location"]
    assert server.table("demo.blobs")["last_error"] is None
    duck = duckdb_rows(meta)
    assert [(row[0], row[1]) for row in duck] == [(1, [b"\x00\x01", None, b""]), (2, [b"z"]), (3, None)]
    assert dict(duck[0][2]) == {"a": b"\xff", "b": None} and duck[1][2] is None
    assert dict(duck[0][3]) == {b"\x10": 7}
    py = pyiceberg_rows(server.data_dir, "demo", "blobs")
    assert [(row[0], row[1]) for row in py] == [(1, [b"\x00\x01", None, b""]), (2, [b"z"]), (3, None)]
