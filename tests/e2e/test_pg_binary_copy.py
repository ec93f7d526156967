"""postgres_cdc's binary initial copy (`COPY ... (FORMAT binary)` into typed columns) against
its text copy (`copy_format = "text"`): two hosts copy the same Postgres 15 tables, and DuckDB
and PyIceberg must read exactly the same values from both — every supported type, nulls,
extremes, NaN and infinities, numeric scales, BC and out-of-range values (null in both),
arrays, and a table split into many chunks over two connections.
"""
import math
import os
import uuid

from conftest import PLUGIN_DIR
from readers import duckdb_rows, pyiceberg_table
from test_postgres_cdc import wait_for, write_config

PLUGIN = os.path.join(PLUGIN_DIR, "postgres_cdc.wasm")

SCALARS = [
    ("b", "bool"), ("i2", "int2"), ("i4", "int4"), ("i8", "int8"), ("o", "oid"),
    ("f4", "float4"), ("f8", "float8"), ("n", "numeric(12,3)"), ("n38", "numeric(38,10)"),
    ("nz", "numeric(10,0)"), ("nu", "numeric"), ("nw", "numeric(40,2)"), ("t", "text"),
    ("vc", "varchar(20)"), ("c", "char(4)"), ("ch", '"char"'), ("nm", "name"), ("by", "bytea"),
    ("d", "date"), ("tm", "time"), ("ts", "timestamp"), ("tz", "timestamptz"), ("u", "uuid"),
    ("j", "json"), ("jb", "jsonb"), ("x", "xml"),
]
ARRAYS = [
    ("ab", "bool[]"), ("ai2", "int2[]"), ("ai4", "int4[]"), ("ai8", "int8[]"), ("af4", "float4[]"),
    ("af8", "float8[]"), ("an", "numeric(6,2)[]"), ("anu", "numeric[]"), ("at", "text[]"),
    ("avc", "varchar(5)[]"), ("ac", "char(2)[]"), ("ad", "date[]"),
    ("atm", "time[]"), ("ats", "timestamp[]"), ("atz", "timestamptz[]"), ("au", "uuid[]"),
    ("aj", "json[]"), ("ajb", "jsonb[]"), ("aby", "bytea[]"),
]
COLUMNS = ["id"] + [c for c, _ in SCALARS + ARRAYS]

# One row per line: id, then the scalars, then the arrays (NULL where not given).
ROWS = [
    # Ordinary values.
    """1, true, 12, 345, 6789, 42, 1.5, 0.1, 123456789.125, 12.5, 7, 1.25, 3.5, 'tab\there "q" \\ back\nline',
       'vé', 'ab', 'z', 'a name', '\\x00ff10', '2024-02-29', '12:34:56.789', '2000-01-01 00:00:00.5',
       '2024-06-01 12:00:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}',
       '{"b": {"c": null}, "n": 1.50}', '<a b="1">t &amp; u</a>',
       '{t,f,NULL}', '{1,-2}', '{1,NULL,3}', '{9223372036854775807}', '{1.5,NULL}', '{2.25}',
       '{1.50,-0.01,NULL}', '{1.500,NaN,-7}', '{"a b",NULL,"q\\"x",""}', '{abc}', '{a,bc}',
       '{2024-01-01,NULL}', '{00:00:01,23:59:59.999999}',
       '{"2020-02-02 02:02:02"}', '{"2020-02-02 02:02:02+05"}',
       '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{"{\\"a\\": 1}"}', '{"{\\"b\\": [true]}",NULL}',
       '{"\\\\x00ff",NULL,"\\\\x"}'""",
    # Nothing but nulls.
    "2" + ", NULL" * (len(SCALARS) + len(ARRAYS)),
    # Extremes.
    """3, false, -32768, -2147483648, -9223372036854775808, 4294967295, 3.4028235e38, 1.7976931348623157e308,
       -999999999.999, 9999999999999999999999999999.9999999999, -9999999999, 1.500,
       -12345678901234567890123456789012345678.25, '', '', '', ' ', '', '\\x', '0001-01-01', '00:00:00',
       '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '[]',
       '{}', '<e/>', '{}', '{32767,-32768}', '[0:1]={1,2}', '{-9223372036854775808}',
       '{1e-45,-3.4028235e38}', '{5e-324,-1.7976931348623157e308}', '{-9999.99,9999.99}', '{}', '{""}',
       '{""}', '{"  "}', '{0001-01-01,9999-12-31}', '{00:00:00}',
       '{"0001-01-01 00:00:00"}', '{"0001-01-01 00:00:00+00"}', '{}', '{null}', '{"[]"}', '{}'""",
    # Values with no Iceberg form (null in both paths), and floats' own specials.
    """4, NULL, 0, 0, 0, 0, 'NaN', '-Infinity', 'NaN', 'NaN', 0, 'NaN', 'NaN', NULL, NULL, NULL, NULL, NULL,
       NULL, 'infinity', '24:00:00', '-infinity', 'infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       '{Infinity,-Infinity,NaN}', '{NaN,Infinity}', '{NaN}', '{Infinity,-Infinity}', NULL, NULL, NULL,
       '{-infinity,2000-01-01}', '{24:00:00,NULL}', '{infinity}', '{-infinity}', NULL, NULL, NULL, NULL""",
    # BC dates and timestamps, negative zero, a high "char" byte (escaped in its text form).
    """5, true, -1, -1, -1, 1, '-0', '-0', -0.001, -0.0000000001, 0, -0.000, 0.01, 'ünïcödé ✓', NULL, NULL,
       'é', NULL, NULL, '0044-03-15 BC', '23:59:59.999999', '0001-12-31 23:59:59 BC',
       '2000-01-01 00:00:00+00 BC', '00000000-0000-0000-0000-000000000000', '"s"', '"s"', NULL, NULL, NULL,
       NULL, NULL, '{-0}', '{-0}', '{-0.00}', '{-0.0}', NULL, NULL, NULL, '{"4713-01-01 BC"}', NULL,
       '{"0010-01-01 00:00:00 BC"}', NULL, NULL, NULL, NULL, '{NULL}'""",
]


def canon(v):
    """A reader's value, comparable across both copies (NaN equal to NaN, -0.0 kept)."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return tuple(canon(x) for x in v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "bytes:" + bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return "uuid:" + str(v)
    return v if v is None else f"{type(v).__name__}:{v}"


def read_both(host, table, columns):
    """DuckDB's and PyIceberg's rows of `table`, canonical, sorted by id."""
    meta = host.table(table)["metadata_location"]
    duck = duckdb_rows(meta, ", ".join(f'"{c}"' for c in columns))
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(host.data_dir, namespace, name).scan(selected_fields=tuple(columns)).to_arrow()
    py = [tuple(row[c] for c in columns) for row in arrow.to_pylist()]
    key = lambda r: r[0]  # noqa: E731
    return ([canon(r) for r in sorted(duck, key=key)], [canon(r) for r in sorted(py, key=key)])


def test_binary_copy_reads_exactly_what_the_text_copy_reads(postgres, make_server, tmp_path, monkeypatch):
    pg = postgres
    columns = ", ".join(f"{c} {t}" for c, t in SCALARS + ARRAYS)
    pg.execute(
        f"CREATE TABLE every (id int PRIMARY KEY, {columns});"
        + "".join(f"INSERT INTO every VALUES ({row});" for row in ROWS)
        # Many chunks (1 page each) over both connections: each COPY has its own header.
        + "CREATE TABLE bulk (id bigint PRIMARY KEY, v text, amount numeric(12,2), at timestamptz);"
        "INSERT INTO bulk SELECT g, repeat('x', g % 50), g * 0.01, '2024-01-01'::timestamptz + g * interval '1 s' "
        "FROM generate_series(1, 5000) g;",
        db="app",
    )
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    hosts = {}
    for fmt in ("text", "binary"):
        config = write_config(tmp_path, pg, ["public.every", "public.bulk"], name=fmt, slot=f"copy_{fmt}",
                              copy_format=fmt, snapshot_chunk_pages=1)
        hosts[fmt] = make_server(["--plugin", PLUGIN, "--config", config])
    for fmt, host in hosts.items():
        for table, n in (("public.every", len(ROWS)), ("public.bulk", 5000)):
            wait_for(lambda: host.table(table)["total_records"] == n, 90, f"{fmt}: {table} copied")

    # The binary host took the binary path (text forms only for the three types without a
    # binary decoder); the text host never did.
    binary_log, text_log = (open(hosts[f].log_path, encoding="utf-8").read() for f in ("binary", "text"))
    assert ('copying nu (numeric), nw (numeric(40,2)), ch ("char"), x (xml), anu (numeric[]) in their text '
            'form') in binary_log, binary_log[-3000:]
    assert "in their text form" not in text_log
    # Values with no Iceberg form are logged by both.
    for log in (binary_log, text_log):
        assert "column 'd':" in log and "has no Iceberg equivalent" in log

    for table, cols in (("public.every", COLUMNS), ("public.bulk", ["id", "v", "amount", "at"])):
        text_duck, text_py = read_both(hosts["text"], table, cols)
        bin_duck, bin_py = read_both(hosts["binary"], table, cols)
        assert len(text_duck) == len(bin_duck) == (len(ROWS) if table == "public.every" else 5000)
        for want, got in zip(text_duck, bin_duck):
            assert got == want, (table, "duckdb", [(c, w, g) for c, w, g in zip(cols, want, got) if w != g])
        for want, got in zip(text_py, bin_py):
            assert got == want, (table, "pyiceberg", [(c, w, g) for c, w, g in zip(cols, want, got) if w != g])

    # And what both read is Postgres's own value where the form is plain (spot checks).
    every = {r[0]: dict(zip(COLUMNS, r)) for r in duckdb_rows(hosts["binary"].table("public.every")["metadata_location"],
                                                             ", ".join(f'"{c}"' for c in COLUMNS))}
    assert every[3]["i8"] == -9223372036854775808 and every[3]["o"] == 4294967295
    assert str(every[3]["n38"]) == "9999999999999999999999999999.9999999999"
    assert every[3]["nu"] == "1.500" and every[4]["nu"] == "NaN" and every[5]["ch"] == "\\303"
    assert every[3]["c"] == "    " and every[3]["ai4"] == [1, 2]
    assert every[4]["n"] is None and every[4]["d"] is None and every[4]["tm"] is None
    assert every[4]["atz"] == [None] and every[4]["atm"] == [None, None]
    # (duckdb_rows normalises NaN to "NaN".)
    assert every[4]["f4"] == "NaN" and every[4]["f8"] == -math.inf and every[5]["f8"] == 0.0
    assert every[5]["d"] is None and every[5]["ts"] is None and every[5]["tz"] is None
