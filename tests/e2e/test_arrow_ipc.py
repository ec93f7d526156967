"""Arrow IPC stream bodies on POST /ingest/{name}: every type with nulls read back by DuckDB and
PyIceberg, keyed upserts and deletes, lossless casts, and refusals (400 malformed, 422 named)."""
import datetime
import uuid
from decimal import Decimal

import pyarrow as pa
import requests

from readers import duckdb_rows, pyiceberg_rows, expect, utc

ARROW = "application/vnd.apache.arrow.stream"

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "i16", "data_type": "int16", "nullable": True},
    {"name": "i32", "data_type": "int32", "nullable": True},
    {"name": "i64", "data_type": "int64", "nullable": True},
    {"name": "f32", "data_type": "float32", "nullable": True},
    {"name": "f64", "data_type": "float64", "nullable": True},
    {"name": "b", "data_type": "bool", "nullable": True},
    {"name": "s", "data_type": "string", "nullable": True},
    {"name": "d", "data_type": "date32", "nullable": True},
    {"name": "dec", "data_type": "decimal(18,4)", "nullable": True},
    {"name": "ts", "data_type": "timestamp", "nullable": True},
    {"name": "tz", "data_type": "timestamptz", "nullable": True},
    {"name": "bin", "data_type": "binary", "nullable": True},
    {"name": "u", "data_type": "uuid", "nullable": True},
    {"name": "t", "data_type": "time", "nullable": True},
    {"name": "tags", "data_type": "list<string>", "nullable": True},
]

U = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")


def ipc(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def post(server, name, body, query="", timeout=60):
    return requests.post(f"{server.url}/ingest/{name}{query}", data=body, headers={"Content-Type": ARROW},
                         timeout=timeout)


def every_type():
    return pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "i16": pa.array([-32768, 32767, None], pa.int16()),
        "i32": pa.array([2147483647, None, -2147483648], pa.int32()),
        "i64": pa.array([-9223372036854775808, 9223372036854775807, None], pa.int64()),
        "f32": pa.array([1.5, -0.0, None], pa.float32()),
        "f64": pa.array([-2.25, 1e300, None], pa.float64()),
        "b": pa.array([True, False, None]),
        "s": pa.array(["héllo ✓ 日本", "", None]),
        "d": pa.array([datetime.date(1969, 7, 20), datetime.date(2262, 4, 11), None], pa.date32()),
        "dec": pa.array([Decimal("-12345678901234.5678"), Decimal("0.0000"), None], pa.decimal128(18, 4)),
        "ts": pa.array([datetime.datetime(2024, 2, 29, 23, 59, 59, 123456), datetime.datetime(1900, 1, 1), None],
                       pa.timestamp("us")),
        "tz": pa.array([utc(2024, 1, 1, 0, 0, 0, 1), utc(1970, 1, 1), None], pa.timestamp("us", tz="UTC")),
        "bin": pa.array([b"\x00\x01\xff", b"", None], pa.binary()),
        "u": pa.array([U.bytes, b"\xff" * 16, None], pa.binary(16)),
        "t": pa.array([datetime.time(0, 0), datetime.time(23, 59, 59, 999999), None], pa.time64("us")),
        "tags": pa.array([["a", None, "c"], [], None], pa.list_(pa.string())),
    })


WANT = expect(
    (1, -32768, 2147483647, -9223372036854775808, 1.5, -2.25, True, "héllo ✓ 日本", datetime.date(1969, 7, 20),
     Decimal("-12345678901234.5678"), datetime.datetime(2024, 2, 29, 23, 59, 59, 123456), utc(2024, 1, 1, 0, 0, 0, 1),
     b"\x00\x01\xff", U, datetime.time(0, 0), ["a", None, "c"]),
    (2, 32767, None, 9223372036854775807, -0.0, 1e300, False, "", datetime.date(2262, 4, 11), Decimal("0.0000"),
     datetime.datetime(1900, 1, 1), utc(1970, 1, 1), b"", uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
     datetime.time(23, 59, 59, 999999), []),
    (3, None, -2147483648, None, None, None, None, None, None, None, None, None, None, None, None, None),
)


def test_every_type_with_nulls_round_trips(server):
    server.create_table("demo.ipc", SCHEMA)
    r = post(server, "demo.ipc", ipc(every_type()), "?request_mode=sync")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == 3 and body["operation"] == "insert" and body["request_mode"] == "sync"
    assert body["snapshot_id"] is not None
    loc = server.table("demo.ipc")["metadata_location"]
    assert duckdb_rows(loc) == WANT
    assert pyiceberg_rows(server.data_dir, "demo", "ipc") == WANT


def test_lossless_casts_and_column_order(server):
    server.create_table("demo.cast", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "small", "data_type": "int16", "nullable": True},
        {"name": "f", "data_type": "float64", "nullable": True},
        {"name": "s", "data_type": "string", "nullable": True},
        {"name": "ts", "data_type": "timestamp", "nullable": True},
        {"name": "tz", "data_type": "timestamptz", "nullable": True},
        {"name": "dec", "data_type": "decimal(10,2)", "nullable": True},
    ])
    # Columns out of order, narrower/wider types, dictionary strings, ns timestamps (whole µs),
    # another time zone, a decimal of smaller scale and larger declared precision, two batches.
    table = pa.table({
        "s": pa.array(["x", "y", "x"]).dictionary_encode(),
        "id": pa.array([1, 2, 3], pa.int32()),
        "small": pa.array([1, None, -7], pa.int64()),
        "f": pa.array([1, 2, None], pa.int32()),
        "ts": pa.array([1_000, None, 2_000_000], pa.timestamp("ns")),
        "tz": pa.array([0, 3_600_000, None], pa.timestamp("ms", tz="Europe/Paris")),
        "dec": pa.array([Decimal("1.5"), None, Decimal("-3.1")], pa.decimal128(38, 1)),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    r = post(server, "demo.cast", sink.getvalue().to_pybytes(), "?request_mode=sync")
    assert r.status_code == 200, r.text
    loc = server.table("demo.cast")["metadata_location"]
    assert duckdb_rows(loc, "id, small, f, s, ts, tz, dec") == expect(
        (1, 1, 1.0, "x", datetime.datetime(1970, 1, 1, 0, 0, 0, 1), utc(1970, 1, 1), Decimal("1.50")),
        (2, None, 2.0, "y", None, utc(1970, 1, 1, 1), None),
        (3, -7, None, "x", datetime.datetime(1970, 1, 1, 0, 0, 0, 2000), None, Decimal("-3.10")),
    )


def test_keyed_upsert_and_delete(server):
    server.create_table("demo.kv", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "v", "data_type": "string", "nullable": False},
    ], primary_key=["id"])
    first = pa.table({"id": pa.array(range(10), pa.int64()), "v": [f"a{i}" for i in range(10)]})
    assert post(server, "demo.kv", ipc(first)).status_code == 200
    # Inserting an existing key conflicts; an upsert replaces.
    dup = pa.table({"id": pa.array([3], pa.int64()), "v": ["dup"]})
    r = post(server, "demo.kv", ipc(dup))
    assert r.status_code == 409 and r.json()["error"] == "key_conflict", r.text
    up = pa.table({"id": pa.array([3, 42], pa.int64()), "v": ["b3", "b42"]})
    r = post(server, "demo.kv", ipc(up), "?operation=upsert&request_mode=sync")
    assert r.status_code == 200 and r.json()["operation"] == "upsert" and r.json()["matched"] == 1, r.text
    # A delete needs only the key column.
    gone = pa.table({"id": pa.array([0, 1, 2, 99], pa.int64())})
    r = post(server, "demo.kv", ipc(gone), "?operation=delete&request_mode=sync")
    assert r.status_code == 200 and r.json()["matched"] == 3, r.text
    want = expect(*[(i, f"a{i}") for i in range(4, 10)], (3, "b3"), (42, "b42"))
    loc = server.table("demo.kv")["metadata_location"]
    assert duckdb_rows(loc) == want
    assert pyiceberg_rows(server.data_dir, "demo", "kv") == want


def test_refusals(server):
    server.create_table("demo.bad", [
        {"name": "id", "data_type": "int64", "nullable": False},
        {"name": "small", "data_type": "int16", "nullable": True},
        {"name": "t", "data_type": "time", "nullable": True},
    ])

    def check(body, status, column=None, row=None, query=""):
        r = post(server, "demo.bad", body, query)
        assert r.status_code == status, r.text
        err = r.json()
        if column is not None:
            assert err["column"] == column, r.text
        if row is not None:
            assert err["row"] == row, r.text
        return err

    good = ipc(pa.table({"id": pa.array([1, 2], pa.int64())}))
    check(ipc(pa.table({"id": pa.array([1], pa.int64()), "extra": [1]})), 422, column="extra")
    check(ipc(pa.table({"small": pa.array([1], pa.int16())})), 422, column="id")
    check(ipc(pa.table({"id": pa.array([1.5], pa.float64())})), 422, column="id")
    check(ipc(pa.table({"id": pa.array([1, 2], pa.int64()), "small": pa.array([1, 40000], pa.int32())})), 422,
          column="small", row=1)
    check(ipc(pa.table({"id": pa.array([1, None], pa.int64())})), 422, column="id", row=1)
    check(ipc(pa.table({"id": pa.array([1], pa.int64()), "t": pa.array([86_400_000_000], pa.time64("us"))})), 422,
          column="t", row=0)
    check(ipc(pa.table({"id": pa.array(["1"])})), 422, column="id")
    # Malformed streams: 400 with a message, never a 500.
    for body in [b"", b"not arrow at all", good[: len(good) // 2], good[:-9], b"\xff\xff\xff\xff\xf0\xff\xff\x7f" + b"\0" * 32]:
        err = check(body, 400)
        assert err["error"] == "malformed_body" and "Arrow IPC" in err["message"], err
    check(good, 400, query="?operation=merge")
    # Nothing refused was written; the server still serves.
    assert check(good, 200, query="?request_mode=sync")["rows"] == 2
    assert server.table("demo.bad")["metadata_location"]
    assert duckdb_rows(server.table("demo.bad")["metadata_location"], "id") == [(1,), (2,)]
