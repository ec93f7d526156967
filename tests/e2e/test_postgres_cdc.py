"""postgres_cdc.wasm against a real Postgres 15: initial copy, streaming, exactly once.

Every check compares what `psql` returns with what DuckDB and PyIceberg read from Iceberg.
"""
import os
import random
import time

import pytest
import requests

from conftest import PLUGIN_DIR
from readers import duckdb_rows, pyiceberg_table

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

    def start(pg, tables=None, data_dir=None, **settings):
        monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
        config = write_config(tmp_path, pg, tables, **settings)
        return make_server(["--plugin", PLUGIN, "--config", config], data_dir=data_dir)

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
    duck = duckdb_rows(meta, ", ".join(f'"{c}"' for c in columns))
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(server.data_dir, namespace, name).scan(selected_fields=tuple(columns)).to_arrow()
    py = [tuple(row[c] for c in columns) for row in arrow.to_pylist()]
    return (_sort([tuple(canon(v) for v in r) for r in duck]),
            _sort([tuple(canon(v) for v in r) for r in py]))


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (AssertionError, requests.RequestException, KeyError) as e:
            last = e
        time.sleep(0.2)
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
