"""postgres_cdc follows its publication while streaming (publication mode).

A table added to the publication gets its own consistent initial copy and then its changes,
with writes going on throughout, also when it was added while moonlink was stopped; a table
removed from it stops and says so in GET /tables.
Every check compares psql with what DuckDB and PyIceberg read from Iceberg.
"""
import os
import threading

import psycopg2
import pytest
import requests

from test_postgres_cdc import assert_mirrors, cdc_host, iceberg_rows, plugin_status, wait_for  # noqa: F401 - fixture

KEYED = ["id", "v", "note"]
KEYLESS = ["n", "what"]


class Writer:
    """Keeps committing small transactions to several tables on its own thread."""

    def __init__(self, pg, statements):
        self.conn = psycopg2.connect(pg.dsn_for("app"))
        self.statements = statements
        self.stop_flag = threading.Event()
        self.transactions = 0
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            with self.conn.cursor() as cur:
                while not self.stop_flag.is_set():
                    i = self.transactions
                    for sql in self.statements:
                        cur.execute(sql, {"i": i})
                    self.conn.commit()
                    self.transactions += 1
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def wait_for_transactions(self, n):
        start = self.transactions
        wait_for(lambda: self.error or self.transactions >= start + n, what=f"{n} more writer transactions")
        assert self.error is None, self.error

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=60)
        self.conn.close()
        assert self.error is None, self.error

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


# Each writer transaction touches the table mirrored from the start and both tables that
# join later: inserts, an update of an old row, a delete, and a keyless insert.
WRITES = [
    "INSERT INTO first VALUES (1000000 + %(i)s, %(i)s, 'w')",
    "UPDATE first SET v = v + 1 WHERE id = (%(i)s * 7) %% 500 + 1",
    "INSERT INTO added VALUES (1000000 + %(i)s, %(i)s, 'w')",
    "UPDATE added SET v = -v, note = 'upd' WHERE id = (%(i)s * 7919) %% 100000 + 1",
    "DELETE FROM added WHERE id = (%(i)s * 104729) %% 100000 + 1",
    "INSERT INTO added_log VALUES (%(i)s, 'w')",
]


def make_tables(pg):
    pg.execute(
        "CREATE TABLE first (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO first SELECT g, g, 'seed' FROM generate_series(1, 500) g;"
        "CREATE TABLE added (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO added SELECT g, g, md5(g::text) FROM generate_series(1, 100000) g;"
        "CREATE TABLE added_log (n bigint, what text);"
        "INSERT INTO added_log SELECT g, 'seed' FROM generate_series(1, 20000) g;"
        "ANALYZE; CREATE PUBLICATION pub FOR TABLE first;",
        db="app",
    )


def start(cdc_host, pg, **kw):
    return cdc_host(pg, None, publication="pub", keyless="append-only", publication_check_ms=300, **kw)


def copy_slots(pg):
    return [s["slot_name"] for s in pg.replication_slots() if s["slot_name"] != "moonlink"]


def test_a_table_added_while_streaming_is_copied_then_streamed_exactly(postgres, cdc_host):
    pg = postgres
    make_tables(pg)
    host = start(cdc_host, pg)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    assert [t["name"] for t in host.tables()] == ["public.first"]

    with Writer(pg, WRITES) as writer:
        writer.wait_for_transactions(20)
        # Both join while every table is being written; the copies happen while they are.
        pg.execute("ALTER PUBLICATION pub ADD TABLE added, added_log", db="app")
        wait_for(lambda: (host.table("public.added").get("initial_copy") or {}).get("done"),
                 timeout=120, what="the added table's copy")
        wait_for(lambda: (host.table("public.added_log").get("initial_copy") or {}).get("done"),
                 timeout=120, what="the added keyless table's copy")
        writer.wait_for_transactions(20)
        writer.stop()

    # Nothing missing, nothing twice: keyless rows would show a duplicate as an extra row.
    assert_mirrors(host, pg, "public.first", "first", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.added", "added", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.added_log", "added_log", KEYLESS, timeout=120)

    tables = {t["name"]: t for t in host.tables()}
    assert sorted(tables) == ["public.added", "public.added_log", "public.first"]
    for name in ("public.added", "public.added_log"):
        assert tables[name]["source"] == {"name": "pg", "state": "active"}
        assert tables[name]["initial_copy"]["done"] is True
    assert tables["public.added"]["initial_copy"]["rows_copied"] >= 100000 - writer.transactions
    assert tables["public.added"]["primary_key"] == ["id"]
    assert sorted(plugin_status(host)["tables"]) == sorted(tables)
    # The copies' marker slots go once the host has committed past them.
    wait_for(lambda: copy_slots(pg) == [], what="the copy slots to be dropped")

    # And the added tables keep streaming.
    pg.execute("UPDATE added SET note = 'later' WHERE id <= 10; INSERT INTO added_log VALUES (-1, 'later')", db="app")
    assert_mirrors(host, pg, "public.added", "added", KEYED)
    assert_mirrors(host, pg, "public.added_log", "added_log", KEYLESS)


def test_a_crash_during_an_added_tables_copy_copies_it_again(postgres, cdc_host, tmp_path):
    pg = postgres
    make_tables(pg)
    data_dir = str(tmp_path / "data")
    host = start(cdc_host, pg, data_dir=data_dir, snapshot_chunk_pages=10, snapshot_connections=1)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)

    with Writer(pg, WRITES) as writer:
        writer.wait_for_transactions(5)
        pg.execute("ALTER PUBLICATION pub ADD TABLE added, added_log", db="app")

        def copying():
            copy = host.table("public.added").get("initial_copy") if "public.added" in {
                t["name"] for t in host.tables()} else None
            return copy and 0 < copy["rows_copied"] and not copy["done"]

        wait_for(copying, what="the added table's copy to be under way", interval=0.005)
        host.kill()
        # The copy's marker survives the crash: the restart copies the table again.
        assert copy_slots(pg), "the copy slot marks the unfinished copy"
        writer.wait_for_transactions(10)
        host = start(cdc_host, pg, data_dir=data_dir, snapshot_chunk_pages=10, snapshot_connections=1)
        wait_for(lambda: (host.table("public.added_log").get("initial_copy") or {}).get("done"),
                 timeout=120, what="both copies")
        writer.wait_for_transactions(10)
        writer.stop()

    assert_mirrors(host, pg, "public.first", "first", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.added", "added", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.added_log", "added_log", KEYLESS, timeout=120)
    wait_for(lambda: copy_slots(pg) == [], what="the copy slots to be dropped")


def test_a_table_removed_from_the_publication_stops_and_says_so(postgres, cdc_host, tmp_path):
    pg = postgres
    pg.execute(
        "CREATE TABLE stays (id int PRIMARY KEY, v int); CREATE TABLE leaves (id int PRIMARY KEY, v int);"
        "INSERT INTO stays SELECT g, g FROM generate_series(1, 100) g;"
        "INSERT INTO leaves SELECT g, g FROM generate_series(1, 100) g;"
        "CREATE PUBLICATION pub FOR TABLE stays, leaves;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    host = start(cdc_host, pg, data_dir=data_dir)
    for t in ("stays", "leaves"):
        assert_mirrors(host, pg, f"public.{t}", t, ["id", "v"], expect_rows=100)
    assert host.table("public.leaves")["source"] == {"name": "pg", "state": "active"}

    # Changes made before the removal are mirrored; none after it.
    pg.execute("UPDATE leaves SET v = -1 WHERE id <= 10", db="app")
    pg.execute("ALTER PUBLICATION pub DROP TABLE leaves", db="app")
    at_removal = pg.psql("SELECT id, v::text FROM leaves ORDER BY id", db="app")
    pg.execute("UPDATE leaves SET v = -2; INSERT INTO leaves VALUES (1000, 1000); UPDATE stays SET v = 0 WHERE id = 1",
               db="app")

    wait_for(lambda: host.table("public.leaves")["source"] == {"name": "pg", "state": "removed"},
             what="GET /tables/public.leaves to say it left the source")
    assert plugin_status(host)["removed_tables"] == ["public.leaves"]
    listed = {t["name"]: t["source"] for t in host.tables()}
    assert listed == {"public.stays": {"name": "pg", "state": "active"},
                      "public.leaves": {"name": "pg", "state": "removed"}}
    assert_mirrors(host, pg, "public.stays", "stays", ["id", "v"], expect_rows=100)

    # Its Iceberg table stays readable, with the rows it had when it left.
    duck, py = iceberg_rows(host, "public.leaves", ["id", "v"])
    assert duck == py == sorted(at_removal)

    # A restart still says so, and still mirrors the rest.
    host.kill()
    host = start(cdc_host, pg, data_dir=data_dir)
    wait_for(lambda: host.table("public.leaves")["source"] == {"name": "pg", "state": "removed"},
             what="the removal to be reported after a restart")
    pg.execute("UPDATE stays SET v = 5 WHERE id = 2; UPDATE leaves SET v = -3", db="app")
    assert_mirrors(host, pg, "public.stays", "stays", ["id", "v"], expect_rows=100)
    duck, py = iceberg_rows(host, "public.leaves", ["id", "v"])
    assert duck == py == sorted(at_removal)


# Writes across a restart: the table mirrored from the start and the two added while stopped.
LATE_WRITES = [
    "INSERT INTO first VALUES (2000000 + %(i)s, %(i)s, 'w')",
    "UPDATE first SET v = v + 1 WHERE id = (%(i)s * 7) %% 500 + 1",
    "INSERT INTO late VALUES (1000000 + %(i)s, %(i)s, 'w')",
    "UPDATE late SET v = -v, note = 'upd' WHERE id = (%(i)s * 7919) %% 50000 + 1",
    "DELETE FROM late WHERE id = (%(i)s * 104729) %% 50000 + 1",
    "INSERT INTO late_log VALUES (%(i)s, 'w')",
]


@pytest.mark.parametrize("down", ["stopped", "killed"])
def test_tables_added_while_moonlink_is_down_are_copied_at_the_restart(postgres, cdc_host, tmp_path, down):
    pg = postgres
    pg.execute(
        "CREATE TABLE first (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO first SELECT g, g, 'seed' FROM generate_series(1, 500) g;"
        "CREATE PUBLICATION pub FOR TABLE first;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    host = start(cdc_host, pg, data_dir=data_dir)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    # Streaming, with the end of the copy acknowledged (an LSN checkpoint): the restart
    # resumes the stream rather than copying everything afresh.
    wait_for(lambda: len(plugin_status(host)["acked_checkpoint"] or "") == 16, what="the copy's end acknowledged")
    host.stop() if down == "stopped" else host.kill()

    # While moonlink is down: two tables are created, filled and published, and written to,
    # and so is the table mirrored already.
    pg.execute(
        "CREATE TABLE late (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO late SELECT g, g, md5(g::text) FROM generate_series(1, 50000) g;"
        "CREATE TABLE late_log (n bigint, what text);"
        "INSERT INTO late_log SELECT g, 'seed' FROM generate_series(1, 20000) g;"
        "ANALYZE; ALTER PUBLICATION pub ADD TABLE late, late_log;"
        "UPDATE late SET note = 'down' WHERE id % 100 = 0; DELETE FROM late WHERE id % 1000 = 1;"
        "INSERT INTO late_log VALUES (-1, 'down'); UPDATE first SET note = 'down' WHERE id <= 5;",
        db="app",
    )
    log_from = os.path.getsize(host.log_path)
    with Writer(pg, LATE_WRITES) as writer:
        writer.wait_for_transactions(5)
        host = start(cdc_host, pg, data_dir=data_dir)
        for name in ("public.late", "public.late_log"):
            wait_for(lambda: (host.table(name).get("initial_copy") or {}).get("done"),
                     timeout=120, what=f"the copy of {name}")
        writer.wait_for_transactions(10)
        writer.stop()

    # Old rows, the changes made while down and those made during the copy: nothing missing,
    # nothing twice (a keyless duplicate would show as an extra row).
    assert_mirrors(host, pg, "public.first", "first", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.late", "late", KEYED, timeout=120)
    assert_mirrors(host, pg, "public.late_log", "late_log", KEYLESS, timeout=120)
    tables = {t["name"]: t for t in host.tables()}
    assert sorted(tables) == ["public.first", "public.late", "public.late_log"]
    for name in tables:
        assert tables[name]["source"] == {"name": "pg", "state": "active"}
    assert tables["public.late"]["primary_key"] == ["id"]
    # Only the tables new to moonlink were copied: the mirrored one resumed its stream.
    with open(host.log_path, "rb") as f:
        f.seek(log_from)
        log = f.read().decode(errors="replace")
    assert "table public.late is to be mirrored" in log and "table public.late_log is to be mirrored" in log
    assert "table public.first is to be mirrored" not in log
    wait_for(lambda: copy_slots(pg) == [], what="the copy slots to be dropped")

    # Another restart copies nothing again, and every table keeps streaming.
    log_from = os.path.getsize(host.log_path)
    host.stop()
    host = start(cdc_host, pg, data_dir=data_dir)
    pg.execute("UPDATE late SET note = 'later' WHERE id <= 10; INSERT INTO late_log VALUES (-2, 'later');"
               "DELETE FROM first WHERE id = 3", db="app")
    assert_mirrors(host, pg, "public.late", "late", KEYED)
    assert_mirrors(host, pg, "public.late_log", "late_log", KEYLESS)
    assert_mirrors(host, pg, "public.first", "first", KEYED)
    with open(host.log_path, "rb") as f:
        f.seek(log_from)
        assert b"is to be mirrored but holds nothing" not in f.read()
    assert copy_slots(pg) == []


def test_configured_tables_new_to_moonlink_are_copied_at_a_restart(postgres, cdc_host, tmp_path):
    """With `tables` too: a table added to the setting while moonlink is stopped, and a table
    whose Iceberg table the user dropped, are copied at the restart; an empty table mirrored
    from the start is not copied again."""
    pg = postgres
    pg.execute(
        "CREATE TABLE first (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO first SELECT g, g, 'seed' FROM generate_series(1, 500) g;"
        "CREATE TABLE empty (id bigint PRIMARY KEY, v bigint, note text);"
        "CREATE TABLE extra (id bigint PRIMARY KEY, v bigint, note text);"
        "INSERT INTO extra SELECT g, g, md5(g::text) FROM generate_series(1, 20000) g;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    host = cdc_host(pg, ["public.first", "public.empty"], data_dir=data_dir)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    assert_mirrors(host, pg, "public.empty", "empty", KEYED, expect_rows=0)
    wait_for(lambda: len(plugin_status(host)["acked_checkpoint"] or "") == 16, what="the copy's end acknowledged")
    host.stop()

    pg.execute("UPDATE extra SET note = 'down' WHERE id % 10 = 0; INSERT INTO empty VALUES (1, 1, 'down')", db="app")
    log_from = os.path.getsize(host.log_path)
    tables = ["public.first", "public.empty", "public.extra"]
    host = cdc_host(pg, tables, data_dir=data_dir)
    wait_for(lambda: (host.table("public.extra").get("initial_copy") or {}).get("done"), what="the copy of extra")
    pg.execute("UPDATE extra SET v = -v WHERE id <= 100; DELETE FROM extra WHERE id = 7", db="app")
    assert_mirrors(host, pg, "public.extra", "extra", KEYED, expect_rows=19999)
    assert_mirrors(host, pg, "public.empty", "empty", KEYED, expect_rows=1)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    with open(host.log_path, "rb") as f:
        f.seek(log_from)
        log = f.read().decode(errors="replace")
    assert "table public.extra is to be mirrored" in log
    assert "table public.first is to be mirrored" not in log and "table public.empty is to be mirrored" not in log

    # The user drops a mirrored table from Iceberg: the next restart copies it afresh.
    r = requests.delete(f"{host.url}/tables/public.first", timeout=30)
    assert r.status_code == 200, r.text
    host.stop()
    pg.execute("UPDATE first SET note = 'after the drop' WHERE id <= 3", db="app")
    host = cdc_host(pg, tables, data_dir=data_dir)
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    assert host.table("public.first")["initial_copy"]["done"] is True
    # Its copy slot goes once the host commits a change made after the copy.
    pg.execute("UPDATE first SET v = 0 WHERE id = 4", db="app")
    assert_mirrors(host, pg, "public.first", "first", KEYED, expect_rows=500)
    wait_for(lambda: copy_slots(pg) == [], what="the copy slots to be dropped")
