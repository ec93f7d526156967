"""A shared Postgres catalog (`--catalog postgres://...`): the Iceberg JDBC layout that PyIceberg's
SqlCatalog reads, several hosts each owning their tables, and a clear refusal for anything else."""
import os
import subprocess

import pytest
import requests

from conftest import BIN, PLUGIN_DIR, free_port
from readers import expect

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
]


def catalog_url(pg, db="lake"):
    return pg.dsn_for(db)


def sql_catalog(pg, db="lake"):
    from pyiceberg.catalog.sql import SqlCatalog

    uri = pg.dsn_for(db).replace("postgresql://", "postgresql+psycopg2://", 1)
    return SqlCatalog("moonlink", uri=uri)


def rows(catalog, namespace, table):
    arrow = catalog.load_table((namespace, table)).scan().to_arrow()
    return expect(*(tuple(r[n] for n in arrow.column_names) for r in arrow.to_pylist()))


@pytest.fixture
def lake(make_postgres):
    pg = make_postgres(wal_level="replica")
    pg.create_database("lake")
    return pg


def host(make_server, pg, data_dir=None):
    return make_server(["--catalog", catalog_url(pg)], data_dir=data_dir)


def test_pyiceberg_sql_catalog_reads_plain_and_keyed_tables(make_server, lake):
    server = host(make_server, lake)
    server.create_table("shop.events", SCHEMA)
    server.ingest("shop.events", [{"id": i, "name": f"e{i}"} for i in range(5)])
    server.create_table("shop.items", SCHEMA, primary_key=["id"])
    server.ingest("shop.items", [{"id": i, "name": f"i{i}"} for i in range(6)])
    server.ingest("shop.items", [{"id": 2, "name": "two"}], operation="upsert")
    server.ingest("shop.items", [{"id": 4}], operation="delete")
    server.commit("shop.items")

    # Nothing was registered in a local SQLite catalog.
    catalog = sql_catalog(lake)
    assert sorted(catalog.list_tables("shop")) == [("shop", "events"), ("shop", "items")]
    assert rows(catalog, "shop", "events") == expect(*[(i, f"e{i}") for i in range(5)])
    assert rows(catalog, "shop", "items") == expect((0, "i0"), (1, "i1"), (2, "two"), (3, "i3"), (5, "i5"))
    # The pointer PyIceberg follows is the one the host reports.
    loaded = catalog.load_table(("shop", "items"))
    assert loaded.metadata_location == server.table("shop.items")["metadata_location"]
    # Java's JdbcCatalog column is filled; our bookkeeping records the owner.
    assert lake.psql("SELECT DISTINCT iceberg_type FROM iceberg_tables", db="lake") == [("TABLE",)]
    owners = lake.psql("SELECT DISTINCT owner FROM moonlink_tables", db="lake")
    with open(os.path.join(server.data_dir, "host-id")) as f:
        assert owners == [(f.read().strip(),)]

    # Restart: the tables come back from the shared catalog, and keep taking rows.
    server.restart()
    assert sorted(t["name"] for t in server.tables()) == ["shop.events", "shop.items"]
    server.ingest("shop.items", [{"id": 9, "name": "nine"}])
    assert (9, "nine") in rows(sql_catalog(lake), "shop", "items")

    # The catalog's Postgres restarts under a running host: the next commit reconnects.
    lake.restart()
    server.ingest("shop.items", [{"id": 10, "name": "ten"}])
    assert (10, "ten") in rows(sql_catalog(lake), "shop", "items")

    # Drop removes the table from the shared catalog.
    assert requests.delete(f"{server.url}/tables/shop.events", timeout=30).status_code in (200, 204)
    assert sql_catalog(lake).list_tables("shop") == [("shop", "items")]


def test_two_hosts_share_one_catalog_each_owning_its_tables(make_server, lake):
    a = host(make_server, lake)
    b = host(make_server, lake)
    a.create_table("shop.a_events", SCHEMA)
    b.create_table("shop.b_events", SCHEMA)
    a.ingest("shop.a_events", [{"id": 1, "name": "from a"}])
    b.ingest("shop.b_events", [{"id": 2, "name": "from b"}])

    # Each host lists only its own tables.
    assert [t["name"] for t in a.tables()] == ["shop.a_events"]
    assert [t["name"] for t in b.tables()] == ["shop.b_events"]

    # The second host may not create a table the first one owns: 409, naming the table.
    r = requests.post(f"{b.url}/tables/shop.a_events", json={"schema": SCHEMA}, timeout=30)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "table_registered_elsewhere"
    assert "shop.a_events" in r.json()["message"] and "moonlink-host" in r.json()["message"]
    # Nor under another API name for the same Iceberg identifier.
    r = requests.post(f"{b.url}/tables/alias", json={"schema": SCHEMA, "database": "shop", "table": "a_events"},
                      timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "table_registered_elsewhere", r.text

    # A table some other writer registered is refused too.
    sql_catalog(lake).create_namespace_if_not_exists("other")
    import pyarrow as pa

    sql_catalog(lake).create_table(("other", "foreign"), schema=pa.schema([("x", pa.int64())]),
                                   location=f"file://{a.data_dir}/foreign")
    r = requests.post(f"{a.url}/tables/other.foreign", json={"schema": SCHEMA}, timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "table_registered_elsewhere", r.text
    assert "another writer" in r.json()["message"]

    # Both restart with their own tables; PyIceberg sees all of them.
    a.restart()
    b.restart()
    assert [t["name"] for t in a.tables()] == ["shop.a_events"]
    assert [t["name"] for t in b.tables()] == ["shop.b_events"]
    catalog = sql_catalog(lake)
    assert rows(catalog, "shop", "a_events") == expect((1, "from a"))
    assert rows(catalog, "shop", "b_events") == expect((2, "from b"))


def test_a_second_writer_of_one_table_fails_loudly_and_never_forks_it(make_server, lake):
    a = host(make_server, lake)
    a.create_table("shop.t", SCHEMA)
    a.ingest("shop.t", [{"id": 1, "name": "one"}])
    # Someone else moves the pointer (here: back to the older version) behind the host's back.
    pointer = "SELECT metadata_location FROM iceberg_tables WHERE table_name = 't'"
    previous = lake.scalar("SELECT previous_metadata_location FROM iceberg_tables WHERE table_name = 't'", db="lake")
    lake.execute(f"UPDATE iceberg_tables SET metadata_location = '{previous}' WHERE table_name = 't'", db="lake")
    r = requests.post(f"{a.url}/ingest/shop.t", json={"operation": "insert", "request_mode": "async",
                                                        "data": [{"id": 2, "name": "two"}]}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(f"{a.url}/tables/shop.t/commit", timeout=60)
    # The compare-and-swap refused the commit built on the old pointer, loudly.
    assert "catalog compare-and-swap lost" in a.read_log()
    if r.status_code >= 400:
        # Without rebasing: the commit fails and the other writer's pointer stays.
        assert "commit conflict" in r.json()["message"], r.text
        assert lake.scalar(pointer, db="lake") == previous
    else:
        # With rebasing (issue 13, other writers): the commit lands on top of the other writer's
        # state; the catalog and the host agree, and the pending row is there once.
        assert lake.scalar(pointer, db="lake") == r.json()["metadata_location"]
        assert rows(sql_catalog(lake), "shop", "t") == expect((2, "two"))


def start_failing(args, tmp_path, env=None):
    """Runs the binary expecting it to refuse to start; returns its output."""
    cmd = [BIN, "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
           "--plugin-dir", PLUGIN_DIR, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert p.returncode != 0, p.stdout + p.stderr
    return p.stderr


@pytest.mark.parametrize("url", [
    "mysql://u@127.0.0.1/db",
    "postgres://u@127.0.0.1:notaport/db",
    "catalog.db",
    "glue://",
])
def test_bad_catalog_urls_refuse_to_start_naming_the_flag(tmp_path, url):
    err = start_failing(["--catalog", url], tmp_path)
    lines = [line for line in err.splitlines() if "--catalog" in line]
    assert lines, err


def test_a_refused_connection_refuses_to_start_naming_the_flag(tmp_path):
    port = free_port()  # nothing listens there
    err = start_failing(["--catalog", f"postgres://moon:hunter2@127.0.0.1:{port}/lake"], tmp_path)
    lines = [line for line in err.splitlines() if "--catalog" in line]
    assert lines and "refused" in lines[0].lower(), err
    assert "hunter2" not in err
