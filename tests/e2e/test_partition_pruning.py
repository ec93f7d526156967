"""Pruning at scale: a 2M-row table partitioned by day(ts) over 60 days. A one-day filter plans
and reads only that day's files, in PyIceberg (`plan_files()`) and in DuckDB (the Iceberg
scan's profile: files read), and still returns every row of the day.
"""
import datetime
import json

import pyarrow as pa
import requests

from readers import _duckdb, pyiceberg_table

ARROW = "application/vnd.apache.arrow.stream"
ROWS = 2_000_000
DAYS = 60
REQUESTS = 4
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "ts", "data_type": "timestamptz", "nullable": False},
    {"name": "v", "data_type": "float64", "nullable": True},
]


def batch(first, n):
    """Rows first..first+n; row i falls on day i % DAYS, so every request touches every day."""
    base = int(START.timestamp()) * 1_000_000
    ids = range(first, first + n)
    micros = [base + (i % DAYS) * 86_400_000_000 + (i * 7919 % 86_400) * 1_000_000 for i in ids]
    table = pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array(micros, pa.timestamp("us", tz="UTC")),
                      "v": pa.array([i / 3 for i in ids], pa.float64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def scan_profile(metadata_location, where):
    """(count, files read, rows the scan emitted) of a query that reads every row passing `where`, by
    DuckDB, from its profile (the sum makes it read `id`, not answer from metadata)."""
    con = _duckdb()
    try:
        sql = f"SELECT count(*), sum(id) FROM iceberg_scan('{metadata_location}') {where}"
        count = con.execute(sql).fetchone()[0]
        con.execute("PRAGMA enable_profiling='json'")
        profile = json.loads(con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1])
    finally:
        con.close()

    def scans(node):
        if node.get("operator_name") == "ICEBERG_SCAN":
            yield node
        for child in node.get("children", []):
            yield from scans(child)

    found = list(scans(profile))
    assert len(found) == 1, profile
    files = int(found[0]["extra_info"]["Total Files Read"])
    # (`operator_rows_scanned` is no help: the Iceberg scan reports the same figure, taken
    # from the table's metadata, whatever it reads.)
    return count, files, found[0]["operator_cardinality"]


def test_a_one_day_filter_reads_only_that_days_files(server):
    server.create_table("p.clicks", SCHEMA, database="p", table="clicks", partition_by=["day(ts)"])
    per = ROWS // REQUESTS
    for i in range(REQUESTS):
        r = requests.post(f"{server.url}/ingest/p.clicks?request_mode=sync", data=batch(i * per, per),
                          headers={"Content-Type": ARROW}, timeout=300)
        assert r.status_code == 200, r.text
    info = server.table("p.clicks")
    assert info["live_rows"] == ROWS
    meta = info["metadata_location"]

    day = START + datetime.timedelta(days=17)
    day_rows = len(range(17, ROWS, DAYS))
    lo, hi = day.isoformat(), (day + datetime.timedelta(days=1)).isoformat()
    # PyIceberg plans the day's files only, and reads exactly the day's rows from them.
    tbl = pyiceberg_table(server.data_dir, "p", "clicks")
    every_file = list(tbl.scan().plan_files())
    day_scan = tbl.scan(row_filter=f"ts >= '{lo}' and ts < '{hi}'")
    day_files = list(day_scan.plan_files())
    assert len(every_file) >= DAYS
    assert 0 < len(day_files) <= len(every_file) // DAYS + 1, (len(day_files), len(every_file))
    epoch_day = (day.date() - datetime.date(1970, 1, 1)).days
    assert {f.file.partition[0] for f in day_files} == {epoch_day}
    assert sum(f.file.record_count for f in day_files) == day_rows
    assert day_scan.to_arrow().num_rows == day_rows

    # DuckDB: the same filter reads only the files PyIceberg planned, far fewer than no filter.
    all_count, all_files, all_emitted = scan_profile(meta, "")
    day_count, files, emitted = scan_profile(
        meta, f"WHERE ts >= TIMESTAMPTZ '{lo}' AND ts < TIMESTAMPTZ '{hi}'")
    assert (all_count, day_count) == (ROWS, day_rows)
    assert all_files == len(every_file)
    assert files == len(day_files), (files, len(day_files))
    assert files < all_files
    assert (emitted, all_emitted) == (day_rows, ROWS)
    print(f"pruning: {len(every_file)} files in all; a one-day filter plans {len(day_files)} (PyIceberg) "
          f"and reads {files} (DuckDB)")
