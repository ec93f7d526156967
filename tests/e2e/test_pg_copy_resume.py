"""A kill -9 in the middle of a long initial copy: the restart resumes from the chunks already
committed instead of copying everything again, and the table ends exactly as in Postgres.
"""
import duckdb
import requests

from readers import _duckdb, pyiceberg_table
from test_postgres_cdc import cdc_host, plugin_status, wait_for  # noqa: F401 - fixture

ROWS = 2_000_000
# A digest of the whole table, the same in psql and DuckDB.
DIGEST = ("count(*)::text, sum(id)::text, sum(n)::text, "
          "md5(string_agg(id::text || ':' || payload || ':' || n::text, ',' ORDER BY id))")


def iceberg_digests(host, table):
    """The digest of the table via DuckDB's iceberg_scan and via PyIceberg (read by DuckDB)."""
    meta = host.table(table)["metadata_location"]
    con = _duckdb()
    try:
        duck = con.execute(f"SELECT {DIGEST} FROM iceberg_scan('{meta}')").fetchone()
    finally:
        con.close()
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(host.data_dir, namespace, name).scan().to_arrow()
    py = duckdb.connect().execute(f"SELECT {DIGEST} FROM arrow").fetchone()
    return tuple(duck), tuple(py)


def copy_state(host):
    r = requests.get(f"{host.url}/tables", timeout=10).json()["tables"]
    return next((t.get("initial_copy") for t in r if t["name"] == "public.big"), None)


def test_a_crash_mid_copy_resumes_from_the_committed_chunks(postgres, cdc_host, tmp_path):
    pg = postgres
    pg.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL, n int NOT NULL);"
        f"INSERT INTO big SELECT g, md5(g::text), g % 1000 FROM generate_series(1, {ROWS}) g; ANALYZE big;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    args = dict(data_dir=data_dir, snapshot_chunk_pages=256, extra_args=["--commit-interval-ms", "200"])
    host = cdc_host(pg, ["public.big"], **args)

    def past_half():
        # Killed once more than half the rows are committed (and acknowledged soon after):
        # the copy runs ahead of its commits, so it is further along by then.
        table = host.table("public.big")
        copy = table.get("initial_copy")
        return copy and not copy["done"] and table["total_records"] >= 0.55 * ROWS and table

    before = wait_for(past_half, timeout=300, what="half the copy to be committed", interval=0.005)
    host.kill()
    committed = before["total_records"]

    # Changes while moonlink is down, to rows copied before the crash and to rows not yet
    # copied: the stream replays them over whichever copy holds the row.
    pg.execute("UPDATE big SET payload = 'changed', n = -1 WHERE id % 100000 = 0;"
               "DELETE FROM big WHERE id % 250000 = 1;"
               f"INSERT INTO big VALUES ({ROWS + 1}, 'new', 7);", db="app")

    host = cdc_host(pg, ["public.big"], **args)
    wait_for(lambda: (copy_state(host) or {}).get("done"), timeout=300, what="the resumed copy")
    recopied = copy_state(host)["rows_copied"]
    applied = plugin_status(host)["rows"]
    print(f"copy resume: killed at {before['initial_copy']['rows_copied']} copied / {committed} committed; "
          f"the restart copied {recopied} rows, applied {applied}")
    crash = f"crash at {before['initial_copy']['rows_copied']} copied, {committed} committed"
    assert recopied < ROWS / 2, f"the restart copied {recopied} rows again ({crash})"
    # What was committed is not copied again, but for the chunks in flight (and the rows
    # committed after the last acknowledgement).
    assert recopied <= ROWS - committed + 100_000, f"the restart copied {recopied} rows again ({crash})"
    assert applied < ROWS / 2, f"the restart applied {applied} rows"

    pg.execute("UPDATE big SET n = n + 1 WHERE id <= 10; INSERT INTO big VALUES (0, 'after', 0);", db="app")
    expected = tuple(pg.psql(f"SELECT {DIGEST} FROM big", db="app")[0])
    assert expected[0] == str(ROWS - 8 + 2)

    def same():
        duck, py = iceberg_digests(host, "public.big")
        assert duck == expected, f"duckdb {duck} vs postgres {expected}"
        assert py == expected, f"pyiceberg {py} vs postgres {expected}"
        return True

    wait_for(same, timeout=180, what="Iceberg to equal Postgres")
    # The copy resumed on the original slot: no second slot, none leaked.
    assert [s["slot_name"] for s in pg.replication_slots()] == ["moonlink"]
