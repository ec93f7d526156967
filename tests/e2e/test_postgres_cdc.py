"""postgres_cdc.wasm against a real Postgres 15: initial copy, streaming, exactly once.

Every check compares what `psql` returns with what DuckDB and PyIceberg read from Iceberg.
"""
import os
import random
import time

import pytest
import requests

from conftest import PLUGIN_DIR
from readers import duckdb_rows, load_json, pyiceberg_table

PLUGIN = os.path.join(PLUGIN_DIR, "postgres_cdc.wasm")


def write_config(tmp_path, pg, tables=None, name="pg", **settings):
    """A plugin config like plugins/postgres_cdc/example.toml, for this cluster."""
    values = {
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "password_env": "MOONLINK_TEST_PGPASSWORD",
        "database": "app",
        "slot": "moonlink",
        **settings,
    }
    if tables is not None:
        values["tables"] = tables
    lines = [f'name = "{name}"', "[settings]"]
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, list):
            lines.append(f"{k} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        else:
            lines.append(f"{k} = {v}")
    lines += ["[poll]", "max_rows = 5000", "timeout_ms = 100"]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def cdc_host(make_server, tmp_path, monkeypatch):
    """Starts moonlink-host with postgres_cdc for a cluster; returns the Server."""

    def start(pg, tables=None, data_dir=None, extra_args=(), env=None, s3=None, **settings):
        monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
        config = write_config(tmp_path, pg, tables, **settings)
        return make_server(["--plugin", PLUGIN, "--config", config, *extra_args], data_dir=data_dir, env=env, s3=s3)

    return start


def pg_rows(pg, sql):
    """Rows from psql as tuples of strings/None, sorted."""
    return sorted(pg.psql(sql, db="app"), key=lambda r: tuple("" if v is None else v for v in r))


def canon(v):
    """A reader's value in psql's text form."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()
    return str(v)


def _sort(rows):
    return sorted(rows, key=lambda r: tuple("" if v is None else v for v in r))


def iceberg_rows(server, table, columns):
    """The table's rows via DuckDB and via PyIceberg, both as sorted tuples of psql text."""
    meta = server.table(table)["metadata_location"]
    duck = duckdb_rows(meta, ", ".join(f'"{c}"' for c in columns), s3=server.s3)
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(server.data_dir, namespace, name, s3=server.s3).scan(selected_fields=tuple(columns)).to_arrow()
    py = [tuple(row[c] for c in columns) for row in arrow.to_pylist()]
    return (_sort([tuple(canon(v) for v in r) for r in duck]),
            _sort([tuple(canon(v) for v in r) for r in py]))


def wait_for(predicate, timeout=60, what="condition", interval=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - readers raise their own errors mid-change
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def assert_mirrors(server, pg, table, pg_table, columns, timeout=60, expect_rows=None):
    """Waits until DuckDB and PyIceberg both return exactly psql's rows."""
    cols = ", ".join(f'"{c}"' for c in columns)
    expected = pg_rows(pg, f"SELECT {cols} FROM {pg_table}")
    if expect_rows is not None:
        assert len(expected) == expect_rows, f"postgres has {len(expected)} rows"

    def same():
        duck, py = iceberg_rows(server, table, columns)
        assert duck == expected, f"duckdb {len(duck)} rows vs postgres {len(expected)}"
        assert py == expected, f"pyiceberg {len(py)} rows vs postgres {len(expected)}"
        return True

    wait_for(same, timeout, f"{table} to equal postgres {pg_table}")


def plugin_status(server, name="pg"):
    plugins = requests.get(server.url + "/plugins", timeout=10).json()["plugins"]
    return next(p for p in plugins if p["name"] == name)


def test_initial_copy_then_streaming_changes(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), note text);"
        "INSERT INTO orders SELECT g, 'c' || (g % 7), g * 1.25, NULL FROM generate_series(1, 3000) g;",
        db="app",
    )
    host = cdc_host(pg, ["public.orders"])
    cols = ["id", "customer", "amount", "note"]
    assert_mirrors(host, pg, "public.orders", "orders", cols, expect_rows=3000)
    info = host.table("public.orders")
    assert info["primary_key"] == ["id"]
    assert info["initial_copy"]["done"] is True
    assert info["initial_copy"]["rows_copied"] == 3000

    # Streaming: insert, update (incl. a key change), delete in several transactions.
    pg.execute("INSERT INTO orders VALUES (5000, 'new', 1.00, 'x')", db="app")
    pg.execute("UPDATE orders SET amount = amount + 1, note = 'upd' WHERE id % 10 = 0", db="app")
    pg.execute("UPDATE orders SET id = 9999 WHERE id = 7", db="app")
    pg.execute("DELETE FROM orders WHERE id BETWEEN 100 AND 199", db="app")
    assert_mirrors(host, pg, "public.orders", "orders", cols, expect_rows=2901)
    assert pg.scalar("SELECT count(*) FROM orders WHERE id IN (7, 9999)", db="app") == "1"


def test_every_type_round_trips_and_unsupported_types_are_named(postgres, cdc_host):
    pg = postgres
    pg.execute(
        """CREATE TABLE everything (
             id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
             n numeric(12,3), nu numeric, t text, vc varchar(20), c char(4), by bytea, d date,
             tm time, ts timestamp, tz timestamptz, u uuid, j json, jb jsonb);
           INSERT INTO everything VALUES
             (1, true, -32768, 2147483647, -9223372036854775808, 1.5, -2.25, 123456789.125,
              '3.14159265358979323846264338327950288419716939937510', 'tab\there "q" \\ back',
              'vé', 'ab', '\\x00ff10', '2024-02-29', '23:59:59.999999', '2000-01-01 00:00:00.5',
              '2024-06-01 12:00:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}',
              '{"b": {"c": null}}'),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL);""",
        db="app",
    )
    host = cdc_host(pg, ["public.everything"])
    simple = ["id", "b", "i2", "i4", "i8", "f4", "f8", "n", "nu", "t", "vc", "c", "by", "d", "j", "jb"]
    assert_mirrors(host, pg, "public.everything", "everything", simple, expect_rows=2)
    # Streamed rows take the same path through pgoutput's text form.
    pg.execute(
        "INSERT INTO everything SELECT id + 10, b, i2, i4, i8, f4, f8, n, nu, t, vc, c, by, d, tm, ts, tz, u, j, jb "
        "FROM everything", db="app")
    assert_mirrors(host, pg, "public.everything", "everything", simple, expect_rows=4)
    types = {c["name"]: c["data_type"] for c in host.table("public.everything")["schema"]}
    assert types["n"] == "decimal(12,3)" and types["nu"] == "string" and types["tm"] == "time"
    assert types["tz"] == "timestamptz" and types["u"] == "uuid" and types["by"] == "binary"

    # Time, timestamps and UUIDs: compare as Postgres renders them in UTC.
    meta = host.table("public.everything")["metadata_location"]
    got = duckdb_rows(meta, "id, CAST(tm AS VARCHAR), CAST(ts AS VARCHAR), epoch_us(tz), CAST(u AS VARCHAR)")
    want = pg_rows(pg, "SELECT id, tm::text, ts::text, (extract(epoch from tz) * 1000000)::bigint::text, u::text "
                       "FROM everything")
    assert [tuple(canon(v) for v in r) for r in got] == want

    # A type moonlink cannot represent is refused by name; the host keeps running.
    pg.execute("CREATE TABLE shapes (id int PRIMARY KEY, p point)", db="app")
    other = cdc_host(pg, ["public.shapes"], slot="shapes", name="shapes")
    status = wait_for(lambda: (s := plugin_status(other, "shapes"))["last_error"] and s, what="an error")
    assert "point" in status["last_error"] and "'p'" in status["last_error"], status
    assert requests.get(other.url + "/health", timeout=5).status_code == 200


def test_unchanged_toast_values_are_kept(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, version int, body text);"
        # Incompressible 20 kB bodies are stored out of line (TOAST).
        "INSERT INTO docs SELECT g, 1, (SELECT string_agg(md5(g::text || x::text), '') "
        "FROM generate_series(1, 600) x) FROM generate_series(1, 20) g;",
        db="app",
    )
    host = cdc_host(pg, ["public.docs"])
    cols = ["id", "version", "body"]
    assert_mirrors(host, pg, "public.docs", "docs", cols, expect_rows=20)
    # Committed rows (in data files) and a row inserted and updated in one transaction (in
    # the same batch) both keep their bodies when only `version` changes.
    pg.execute("UPDATE docs SET version = 2 WHERE id <= 10", db="app")
    pg.execute(
        "BEGIN; INSERT INTO docs SELECT 100, 1, (SELECT string_agg(md5(x::text), '') FROM generate_series(1, 600) x);"
        "UPDATE docs SET version = 5 WHERE id = 100; COMMIT;", db="app")
    pg.execute("UPDATE docs SET version = 3 WHERE id = 1", db="app")
    assert_mirrors(host, pg, "public.docs", "docs", cols, expect_rows=21)
    assert pg.scalar("SELECT min(length(body)) FROM docs", db="app") == "19200"


def test_truncate_and_transactions_spanning_tables(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);"
        "INSERT INTO a SELECT g, 'a' FROM generate_series(1, 100) g;"
        "INSERT INTO b SELECT g, 'b' FROM generate_series(1, 100) g;",
        db="app",
    )
    host = cdc_host(pg, ["public.a", "public.b"])
    assert_mirrors(host, pg, "public.a", "a", ["id", "v"], expect_rows=100)
    pg.execute("TRUNCATE a", db="app")
    assert_mirrors(host, pg, "public.a", "a", ["id", "v"], expect_rows=0)
    pg.execute(
        "BEGIN; INSERT INTO a VALUES (1, 'before'); INSERT INTO b VALUES (1000, 'x');"
        "TRUNCATE a; INSERT INTO a VALUES (2, 'after'); DELETE FROM b WHERE id <= 50;"
        "UPDATE b SET v = 'moved' WHERE id = 60; COMMIT;",
        db="app",
    )
    assert_mirrors(host, pg, "public.a", "a", ["id", "v"], expect_rows=1)
    assert_mirrors(host, pg, "public.b", "b", ["id", "v"], expect_rows=51)
    # TRUNCATE of two tables at once.
    pg.execute("TRUNCATE a, b", db="app")
    assert_mirrors(host, pg, "public.b", "b", ["id", "v"], expect_rows=0)
    assert_mirrors(host, pg, "public.a", "a", ["id", "v"], expect_rows=0)


def test_add_and_drop_column_evolve_the_iceberg_schema(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, note text);"
        "INSERT INTO items SELECT g, 'n' || g, 'x' FROM generate_series(1, 50) g;",
        db="app",
    )
    host = cdc_host(pg, ["public.items"])
    assert_mirrors(host, pg, "public.items", "items", ["id", "name", "note"], expect_rows=50)
    pg.execute("ALTER TABLE items ADD COLUMN price numeric(8,2)", db="app")
    pg.execute("INSERT INTO items VALUES (51, 'new', 'y', 9.99); UPDATE items SET price = 1 WHERE id = 1", db="app")
    assert_mirrors(host, pg, "public.items", "items", ["id", "name", "note", "price"], expect_rows=51)
    pg.execute("ALTER TABLE items DROP COLUMN note", db="app")
    pg.execute("INSERT INTO items VALUES (52, 'after drop', 2.5); DELETE FROM items WHERE id = 2", db="app")
    assert_mirrors(host, pg, "public.items", "items", ["id", "name", "price"], expect_rows=51)
    names = [c["name"] for c in host.table("public.items")["schema"]]
    assert names == ["id", "name", "price"]
    # The Iceberg metadata keeps the history: several schemas, field ids never reused.
    metadata = load_json(host.table("public.items")["metadata_location"])
    assert len(metadata["schemas"]) >= 3
    current = next(s for s in metadata["schemas"] if s["schema-id"] == metadata["current-schema-id"])
    assert [f["id"] for f in current["fields"]] == [1, 2, 4]
    # A restart keeps the evolved schema and keeps streaming.
    host.restart()
    pg.execute("INSERT INTO items VALUES (53, 'restarted', 3)", db="app")
    assert_mirrors(host, pg, "public.items", "items", ["id", "name", "price"], expect_rows=52)


def test_large_table_copies_in_parallel_chunks_with_progress(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text);"
        "INSERT INTO big SELECT g, repeat('p', 50) FROM generate_series(1, 60000) g;"
        "ANALYZE big;",
        db="app",
    )
    pages = int(pg.scalar("SELECT relpages FROM pg_class WHERE relname = 'big'", db="app"))
    host = cdc_host(pg, ["public.big"], snapshot_connections=3, snapshot_chunk_pages=max(1, pages // 10))
    assert_mirrors(host, pg, "public.big", "big", ["id", "payload"], expect_rows=60000)
    copy = host.table("public.big")["initial_copy"]
    assert copy["done"] and copy["rows_copied"] == 60000 and copy["percent"] == 100.0
    log = host.read_log()
    assert "initial copy" in log and "copied 60000 rows of public.big" in log


def test_refusals_say_how_to_fix_them(make_postgres, cdc_host):
    replica = make_postgres(wal_level="replica")
    replica.create_database("app")
    host = cdc_host(replica, ["public.t"])
    status = wait_for(lambda: (s := plugin_status(host))["last_error"] and s, what="an error")
    assert "wal_level" in status["last_error"] and "logical" in status["last_error"]

    pg = make_postgres()
    pg.create_database("app")
    pg.execute("CREATE TABLE logs (at timestamptz, line text); INSERT INTO logs VALUES (now(), 'x');", db="app")
    host = cdc_host(pg, ["public.logs"], name="keyless", slot="keyless")
    status = wait_for(lambda: (s := plugin_status(host, "keyless"))["last_error"] and s, what="an error")
    assert "no primary key" in status["last_error"] and "append-only" in status["last_error"]
    # Never altered behind the user's back.
    assert pg.scalar("SELECT relreplident FROM pg_class WHERE relname = 'logs'", db="app") == "d"

    pg.create_role("noreplication", password="pw", replication=False)
    pg.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO noreplication", db="app")
    host = cdc_host(pg, ["public.logs"], name="norepl", slot="norepl", user="noreplication",
                    password="pw", keyless="append-only")
    status = wait_for(lambda: (s := plugin_status(host, "norepl"))["last_error"] and s, what="an error")
    assert "REPLICATION" in status["last_error"]


def test_keyless_tables_can_be_mirrored_append_only(postgres, cdc_host):
    pg = postgres
    pg.execute("CREATE TABLE events (at int, line text); INSERT INTO events VALUES (1, 'a'), (2, 'b');", db="app")
    host = cdc_host(pg, ["public.events"], keyless="append-only")
    assert_mirrors(host, pg, "public.events", "events", ["at", "line"], expect_rows=2)
    pg.execute("INSERT INTO events VALUES (3, 'c')", db="app")
    assert_mirrors(host, pg, "public.events", "events", ["at", "line"], expect_rows=3)
    assert host.table("public.events")["primary_key"] == []


@pytest.mark.parametrize("auth", ["md5", "trust"])
def test_md5_and_trust_authentication(postgres, cdc_host, auth):
    pg = postgres
    pg.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);", db="app")
    if auth == "md5":
        pg.create_md5_role("mirror", "secret", replication=True, superuser=True)
        host = cdc_host(pg, ["public.t"], user="mirror", password="secret")
    else:
        pg.create_trust_role("mirror", replication=True, superuser=True)
        host = cdc_host(pg, ["public.t"], user="mirror", password_env=None)
    assert_mirrors(host, pg, "public.t", "t", ["id"], expect_rows=2)


class Workload:
    """Random transactions over three tables, from a thread, until stopped. Each transaction
    spans tables; failures (Postgres restarting) are ignored: the check compares with what
    Postgres finally holds."""

    def __init__(self, pg, seed):
        import threading

        self.pg = pg
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.committed = 0
        self.columns_added = 0
        self.extra = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def step(self):
        r = self.rng
        a, b = r.randrange(1, 400), r.randrange(1, 400)
        amount = r.randrange(1, 100)
        kind = r.random()
        if self.committed in (10, 30, 80):
            kind = 0.98  # schema changes mid-stream, at fixed points so every run has them
        elif self.committed == 60:
            kind = 0.995
        if kind < 0.55:
            sql = (f"UPDATE accounts SET balance = balance - {amount} WHERE id = {a};"
                   f"UPDATE accounts SET balance = balance + {amount}, note = 'n{amount}' WHERE id = {b};"
                   f"INSERT INTO ledger (account, delta) VALUES ({a}, -{amount}), ({b}, {amount});"
                   f"INSERT INTO audit VALUES ({a}, 'transfer {amount}');")
        elif kind < 0.75:
            sql = (f"INSERT INTO accounts VALUES ({a}, {amount}, 'new') ON CONFLICT (id) DO UPDATE SET balance = 0;"
                   f"INSERT INTO audit VALUES ({a}, 'open');")
        elif kind < 0.9:
            sql = (f"DELETE FROM accounts WHERE id = {a}; DELETE FROM ledger WHERE account = {a};"
                   f"INSERT INTO audit VALUES ({a}, 'close');")
        elif kind < 0.97:
            sql = (f"UPDATE accounts SET id = {1000 + r.randrange(100000)} WHERE id = {a};"
                   f"INSERT INTO audit VALUES ({a}, 'renumber');")
        elif kind < 0.99 or not self.extra:
            # Schema changes mid-stream: a new column, filled by the next statement.
            self.columns_added += 1
            name = f"x{self.columns_added}"
            sql = f"ALTER TABLE accounts ADD COLUMN {name} int; UPDATE accounts SET {name} = id WHERE id % 3 = 0;"
            self.extra.append(name)
        else:
            name = self.extra.pop(r.randrange(len(self.extra)))
            sql = f"ALTER TABLE accounts DROP COLUMN {name};"
        self.pg.execute("BEGIN;" + sql + "COMMIT;", db="app")

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.step()
                self.committed += 1
            except Exception:  # noqa: BLE001 - Postgres restarting; outcome read at the end
                time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=60)


@pytest.mark.parametrize("seed", [int(x) for x in os.environ.get("MOONLINK_FAULT_SEEDS", "1,2").split(",")])
def test_exactly_once_through_host_crashes_postgres_restarts_and_cut_connections(postgres, cdc_host, tmp_path, seed):
    pg = postgres
    pg.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text);"
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, delta int);"
        "CREATE TABLE audit (account int, what text);"
        "INSERT INTO accounts SELECT g, 1000, NULL FROM generate_series(1, 300) g;",
        db="app",
    )
    tables = ["public.accounts", "public.ledger", "public.audit"]
    data_dir = str(tmp_path / "data")
    rng = random.Random(seed)
    host = cdc_host(pg, tables, data_dir=data_dir, keyless="append-only")
    with Workload(pg, seed) as work:
        for fault in ["kill", "kill", "postgres", "kill", "cut", "kill"]:
            time.sleep(rng.uniform(0.5, 3.0))
            if fault == "kill":
                host.kill()  # kill -9 at a random instant: mid-copy, mid-poll, mid-commit
                host = cdc_host(pg, tables, data_dir=data_dir, keyless="append-only")
            elif fault == "postgres":
                pg.restart()
            else:
                wait_for(lambda: pg.terminate_walsenders() > 0, what="a walsender to cut")
        time.sleep(1.0)
        lsn_before_last = pg.current_wal_lsn()
        # pgoutput shows a table's new shape only with its next change: touch accounts last.
        pg.execute("BEGIN; INSERT INTO audit VALUES (0, 'last'); INSERT INTO accounts (id, balance) "
                   "VALUES (999999, 0); COMMIT;", db="app")
    assert work.committed > 80 and work.columns_added >= 2, "the workload barely ran"
    columns = [r[0] for r in pg.psql("SELECT attname FROM pg_attribute WHERE attrelid = 'accounts'::regclass "
                                     "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", db="app")]
    assert_mirrors(host, pg, "public.accounts", "accounts", columns, timeout=120)
    assert [c["name"] for c in host.table("public.accounts")["schema"]] == columns
    assert_mirrors(host, pg, "public.ledger", "ledger", ["id", "account", "delta"], timeout=60)
    assert_mirrors(host, pg, "public.audit", "audit", ["account", "what"], timeout=60)
    # The slot follows what is committed in Iceberg, so Postgres can recycle its WAL.
    wait_for(lambda: (pg.slot_confirmed_lsn("moonlink") or 0) >= lsn_before_last, timeout=30,
             what="the slot to advance past the last transaction")
    status = plugin_status(host)
    assert status["state"] == "running", status


def test_arrays_become_iceberg_lists(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE tags (id int PRIMARY KEY, ints int[], names text[], prices numeric(6,2)[], days date[]);"
        "INSERT INTO tags VALUES (1, '{1,2,3}', '{\"a b\",NULL,\"q\\\"x\"}', '{1.50,NULL}', '{2024-01-01}'),"
        "                        (2, '{}', NULL, '{}', NULL);",
        db="app",
    )
    host = cdc_host(pg, ["public.tags"])
    types = wait_for(lambda: {c["name"]: c["data_type"] for c in host.table("public.tags")["schema"]},
                     what="the table")
    assert types["ints"] == "list<int32>" and types["prices"] == "list<decimal(6,2)>"
    pg.execute("INSERT INTO tags VALUES (3, '{NULL,-7}', '{z}', '{0.01}', '{2000-02-29,NULL}');"
               "UPDATE tags SET ints = '{9}' WHERE id = 1", db="app")

    # Both readers return each list element by element; compare with Postgres's own view.
    want = pg_rows(pg, "SELECT id, array_to_json(ints)::text, array_to_json(names)::text, "
                       "array_to_json(prices)::text, array_to_json(days)::text FROM tags")

    def as_json(v):
        import json
        if v is None:
            return None
        return json.dumps([None if x is None else (float(x) if hasattr(x, "as_tuple") else
                                                      x.isoformat() if hasattr(x, "isoformat") else x)
                           for x in v], separators=(",", ":"), ensure_ascii=False)

    def same():
        duck, py = (rows for rows in iceberg_rows_raw(host, "public.tags", ["id", "ints", "names", "prices", "days"]))
        for rows in (duck, py):
            got = sorted((str(r[0]), *[as_json(v) for v in r[1:]]) for r in rows)
            normal = sorted((w[0], *[None if x is None else x.replace(".50", ".5") for x in w[1:]]) for w in want)
            assert got == normal, (got, normal)
        return True

    wait_for(same, 60, "lists to match")


def iceberg_rows_raw(server, table, columns):
    meta = server.table(table)["metadata_location"]
    duck = duckdb_rows(meta, ", ".join(f'"{c}"' for c in columns))
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(server.data_dir, namespace, name).scan(selected_fields=tuple(columns)).to_arrow()
    return duck, [tuple(row[c] for c in columns) for row in arrow.to_pylist()]


def test_an_existing_publication_and_a_target_namespace(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, total int);"
        "CREATE TABLE shop.hidden (id int PRIMARY KEY);"
        "INSERT INTO shop.orders VALUES (1, 10), (2, 20); INSERT INTO shop.hidden VALUES (1);"
        "CREATE PUBLICATION mine FOR TABLE shop.orders;",
        db="app",
    )
    host = cdc_host(pg, None, publication="mine", namespace="mirror")
    assert_mirrors(host, pg, "mirror.orders", "shop.orders", ["id", "total"], expect_rows=2)
    pg.execute("UPDATE shop.orders SET total = 11 WHERE id = 1; INSERT INTO shop.hidden VALUES (2);", db="app")
    assert_mirrors(host, pg, "mirror.orders", "shop.orders", ["id", "total"], expect_rows=2)
    assert [t["name"] for t in host.tables()] == ["mirror.orders"]
    # The user's publication is used as it is.
    assert pg.psql("SELECT tablename FROM pg_publication_tables WHERE pubname = 'mine'", db="app") == [("orders",)]


def test_a_crash_during_the_initial_copy_starts_it_over_exactly(postgres, cdc_host, tmp_path):
    pg = postgres
    pg.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g; ANALYZE big;",
        db="app",
    )
    data_dir = str(tmp_path / "data")
    host = cdc_host(pg, ["public.big"], data_dir=data_dir, snapshot_chunk_pages=20)

    def copying():
        copy = host.table("public.big")["initial_copy"]
        return copy and 0 < copy["rows_copied"] and not copy["done"]

    # A 200k-row copy can take well under a second: look often, or it is over unseen.
    wait_for(copying, what="the copy to be under way", interval=0.005)
    host.kill()
    # Rows changed between the two copies must come out as Postgres has them.
    # ... and a column added meanwhile: the new copy has the new shape.
    pg.execute("UPDATE big SET payload = 'changed' WHERE id % 1000 = 0; DELETE FROM big WHERE id <= 10;"
               "ALTER TABLE big ADD COLUMN extra int DEFAULT 7;", db="app")
    host = cdc_host(pg, ["public.big"], data_dir=data_dir, snapshot_chunk_pages=20)
    pg.execute("INSERT INTO big VALUES (300000, 'after', 8)", db="app")
    assert_mirrors(host, pg, "public.big", "big", ["id", "payload", "extra"], timeout=120, expect_rows=199991)
    assert host.table("public.big")["initial_copy"]["done"]
    assert len(pg.replication_slots()) == 1, "the unfinished slot was replaced, not leaked"


def test_partitioned_tables_are_mirrored_under_their_own_name(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE measurements (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
        "CREATE TABLE m2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');"
        "CREATE TABLE m2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
        "INSERT INTO measurements VALUES (1, '2023-05-01', 1), (2, '2024-05-01', 2);",
        db="app",
    )
    host = cdc_host(pg, ["public.measurements"])
    cols = ["id", "at", "v"]
    assert_mirrors(host, pg, "public.measurements", "measurements", cols, expect_rows=2)
    pg.execute("INSERT INTO measurements VALUES (3, '2024-06-01', 3); UPDATE measurements SET v = 10 WHERE id = 1;"
               "DELETE FROM measurements WHERE id = 2", db="app")
    assert_mirrors(host, pg, "public.measurements", "measurements", cols, expect_rows=2)


def test_the_slot_advances_while_mirrored_tables_are_idle(make_postgres, cdc_host):
    # Keepalives come every wal_sender_timeout / 2: a short timeout keeps the test short.
    pg = make_postgres(extra_conf={"wal_sender_timeout": "4s"})
    pg.create_database("app")
    pg.execute("CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id int, pad text);", db="app")
    host = cdc_host(pg, ["public.quiet"])
    wait_for(lambda: host.table("public.quiet")["initial_copy"]["done"], what="the copy")
    for _ in range(5):
        pg.execute("INSERT INTO busy SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g", db="app")
    written = pg.current_wal_lsn()
    # Only unmirrored traffic: the slot must still move past it, or Postgres keeps that WAL.
    wait_for(lambda: (pg.slot_confirmed_lsn("moonlink") or 0) >= written, timeout=40,
             what="the slot to pass unmirrored WAL")
    assert pg.scalar("SELECT count(*) FROM quiet", db="app") == "0"
