"""kafka.wasm against librdkafka's mock Kafka cluster, written to by real confluent-kafka producers.

Every check reads the tables back with DuckDB and PyIceberg and compares them with what was
produced.
"""
import json
import os
import random
import threading
import time

import pytest
import requests

from conftest import PLUGIN_DIR
from kafka_broker import MockKafka
from readers import duckdb_rows, pyiceberg_table

PLUGIN = os.path.join(PLUGIN_DIR, "kafka.wasm")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_config(tmp_path, kafka, name="kafka", **settings):
    """A plugin config like plugins/kafka/example.toml, for this cluster."""
    values = {"bootstrap_servers": kafka.settings(), **settings}
    lines = [f'name = "{name}"', "[settings]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    lines += ["[poll]", "max_rows = 20000", "timeout_ms = 200"]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def kafka():
    cluster = MockKafka(brokers=3)
    yield cluster
    del cluster


@pytest.fixture
def kafka_host(make_server, tmp_path):
    def start(kafka, data_dir=None, name="kafka", **settings):
        config = write_config(tmp_path, kafka, name=name, **settings)
        return make_server(["--plugin", PLUGIN, "--config", config], data_dir=data_dir)

    return start


ORDERS = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "customer", "data_type": "string"},
    {"name": "amount", "data_type": "decimal(10,2)"},
]


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - readers raise while a table is being created
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def canon(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if v is None or isinstance(v, (int, str, bool)):
        return v
    return str(v)


def read_both(server, table, columns):
    """The table's rows via DuckDB and via PyIceberg, as sorted tuples."""
    meta = server.table(table)["metadata_location"]
    duck = duckdb_rows(meta, ", ".join(f'"{c}"' for c in columns))
    namespace, name = table.split(".", 1)
    arrow = pyiceberg_table(server.data_dir, namespace, name).scan(selected_fields=tuple(columns)).to_arrow()
    py = [tuple(row[c] for c in columns) for row in arrow.to_pylist()]
    key = lambda r: tuple((x is None, "" if x is None else str(x)) for x in r)  # noqa: E731
    return (sorted([tuple(canon(v) for v in r) for r in duck], key=key),
            sorted([tuple(canon(v) for v in r) for r in py], key=key))


def assert_table(server, table, columns, expected, timeout=60):
    key = lambda r: tuple((x is None, "" if x is None else str(x)) for x in r)  # noqa: E731
    expected = sorted([tuple(r) for r in expected], key=key)

    def same():
        duck, py = read_both(server, table, columns)
        assert duck == expected, f"duckdb {len(duck)} rows vs {len(expected)} expected"
        assert py == expected, f"pyiceberg {len(py)} rows vs {len(expected)} expected"
        return True

    wait_for(same, timeout, f"{table} to hold the produced rows")


def plugin_status(server, name="kafka"):
    plugins = requests.get(server.url + "/plugins", timeout=10).json()["plugins"]
    return next(p for p in plugins if p["name"] == name)


def orders(ids, customer="c"):
    return [(None, {"id": i, "customer": f"{customer}{i}", "amount": f"{i}.25"}) for i in ids]


def test_json_records_are_appended(kafka, kafka_host):
    kafka.produce("orders", orders(range(1000)))
    host = kafka_host(kafka, topics=["orders"], namespace="shop", schema=ORDERS)
    expected = [(i, f"c{i}", f"{i}.25") for i in range(1000)]
    assert_table(host, "shop.orders", ["id", "customer", "amount"], expected)
    # Records produced while running arrive too.
    kafka.produce("orders", orders(range(1000, 1500)))
    expected += [(i, f"c{i}", f"{i}.25") for i in range(1000, 1500)]
    assert_table(host, "shop.orders", ["id", "customer", "amount"], expected)
    info = host.table("shop.orders")
    assert info["primary_key"] == []
