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
        # the copy runs ahead of its commits, so it is further along by then — the binary
        # copy may even have read the whole table; what counts is that not every row is
        # committed, so the restart resumes from a copy point.
        table = host.table("public.big")
        copy = table.get("initial_copy")
        return copy and 0.55 * ROWS <= table["total_records"] < ROWS and table

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
    progress = copy_state(host)
    # The rows the restarted source handed to the host: the copy's rest and a few changes.
    recopied = plugin_status(host)["rows"]
    print(f"copy resume: killed at {before['initial_copy']['rows_copied']} copied / {committed} committed; "
          f"the restart copied {recopied} rows; progress says {progress['rows_copied']} of {progress['rows_total']}")
    crash = f"crash at {before['initial_copy']['rows_copied']} copied, {committed} committed"
    assert recopied < ROWS / 2, f"the restart copied {recopied} rows again ({crash})"
    # What was committed is not copied again, but for the chunks in flight (and the rows
    # committed after the last acknowledgement).
    assert recopied <= ROWS - committed + 100_000, f"the restart copied {recopied} rows again ({crash})"
    # The progress counts the rows committed before the crash too (about: from the pages).
    assert abs(progress["rows_copied"] - ROWS) <= ROWS * 0.05, progress

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


def test_a_crash_before_a_keyless_table_is_copied_starts_the_copy_over(postgres, cdc_host, tmp_path):
    """A keyless table cannot absorb changes replayed over a newer copy: when the cut leaves
    one not completely copied, the restart copies everything afresh, exactly."""
    pg = postgres
    pg.execute(
        "CREATE TABLE a_keyed (id bigint PRIMARY KEY, payload text);"
        "INSERT INTO a_keyed SELECT g, md5(g::text) FROM generate_series(1, 2000000) g;"
        "CREATE TABLE b_log (n bigint, what text);"
        "INSERT INTO b_log SELECT g, 'seed' FROM generate_series(1, 50000) g; ANALYZE;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    args = dict(data_dir=data_dir, snapshot_chunk_pages=64, keyless="append-only", snapshot_connections=1,
                extra_args=["--commit-interval-ms", "200"])
    host = cdc_host(pg, ["public.a_keyed", "public.b_log"], **args)

    # 2M rows: the binary copy reads a 1M-row table before its first commit lands, which left
    # no moment with the keyed table committed in part.
    def copying():
        table = host.table("public.a_keyed")
        copy = table.get("initial_copy")
        return copy and not copy["done"] and 0 < table["total_records"] < 2000000

    wait_for(copying, timeout=120, what="the keyed table's copy to be committed in part", interval=0.005)
    host.kill()
    pg.execute("INSERT INTO b_log VALUES (-1, 'while down'); UPDATE a_keyed SET payload = 'x' WHERE id = 5", db="app")
    host = cdc_host(pg, ["public.a_keyed", "public.b_log"], **args)
    wait_for(lambda: (host.table("public.b_log").get("initial_copy") or {}).get("done"), timeout=120,
             what="the copy")
    # Started over because of the keyless table (a copy point was acknowledged).
    with open(host.log_path, "rb") as f:
        assert b"before keyless table public.b_log was copied" in f.read()
    # Started over: the whole keyed table was copied again.
    assert host.table("public.a_keyed")["initial_copy"]["rows_copied"] == 2000000
    pg.execute("INSERT INTO b_log VALUES (-2, 'after')", db="app")
    from test_postgres_cdc import assert_mirrors
    assert_mirrors(host, pg, "public.b_log", "b_log", ["n", "what"], timeout=120, expect_rows=50002)
    assert_mirrors(host, pg, "public.a_keyed", "a_keyed", ["id", "payload"], timeout=120, expect_rows=2000000)
