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
    cluster.close()


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


def test_keyed_upserts_and_tombstones(kafka, kafka_host):
    """A record is an upsert by its key, a tombstone (null value) deletes the key's row."""
    records = []
    model = {}
    rng = random.Random(7)
    for step in range(3000):
        k = rng.randrange(300)
        if rng.random() < 0.2:
            records.append(({"id": k}, None))
            model.pop(k, None)
        else:
            v = {"id": k, "customer": f"v{step}", "amount": f"{step}.50"}
            records.append(({"id": k}, v))
            model[k] = (k, f"v{step}", f"{step}.50")
    # Scalar keys work too: the key text is the one key column's value.
    records.append(("100000", {"id": 100000, "customer": "scalar", "amount": "1.00"}))
    model[100000] = (100000, "scalar", "1.00")
    records.append((b"100001", {"id": 100001, "customer": "gone", "amount": "1.00"}))
    records.append((b"100001", None))
    # Keys decide the partition: every change of a key is in one partition, in order.
    kafka.produce("accounts", records)
    host = kafka_host(kafka, topics=["accounts"], namespace="bank", schema=ORDERS, primary_key=["id"])
    assert_table(host, "bank.accounts", ["id", "customer", "amount"], model.values())
    assert host.table("bank.accounts")["primary_key"] == ["id"]
    # And while running.
    kafka.produce("accounts", [({"id": 1}, None), ({"id": 2}, {"id": 2, "customer": "late", "amount": "2.00"})])
    model.pop(1, None)
    model[2] = (2, "late", "2.00")
    assert_table(host, "bank.accounts", ["id", "customer", "amount"], model.values())


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec(kafka, kafka_host, codec):
    kafka.produce("events", orders(range(3000)), compression=codec)
    host = kafka_host(kafka, topics=["events"], schema=ORDERS)
    assert_table(host, "kafka.events", ["id", "customer", "amount"],
                 [(i, f"c{i}", f"{i}.25") for i in range(3000)])


def test_partitions_and_topics_into_several_tables(kafka, kafka_host):
    """Two topics of 4 partitions each into two tables of another namespace, by a table map."""
    kafka.produce("a.orders", orders(range(2000), "a"))
    kafka.produce("b.orders", orders(range(1500), "b"))
    assert len(kafka.partitions("a.orders")) == 4
    host = kafka_host(kafka, tables={"a.orders": "east.orders", "b.orders": "west.orders"}, schema=ORDERS)
    assert_table(host, "east.orders", ["id", "customer"], [(i, f"a{i}") for i in range(2000)])
    assert_table(host, "west.orders", ["id", "customer"], [(i, f"b{i}") for i in range(1500)])


def test_raw_format_lands_every_record(kafka, kafka_host):
    p = kafka.producer()
    p.produce("raw", key=b"k1", value=b"\x00\xffnot json", headers=[("h", b"v")])
    p.produce("raw", key=None, value=None)
    p.flush(10)
    host = kafka_host(kafka, topics=["raw"], format="raw")
    ends = kafka.end_offsets("raw")
    assert sum(ends.values()) == 2

    def landed():
        duck, py = read_both(host, "kafka.raw", ["key", "value", "topic"])
        assert duck == py == [(b"k1", b"\x00\xffnot json", "raw"), (None, None, "raw")], duck
        return True

    wait_for(landed, what="both raw records")
    rows = duckdb_rows(host.table("kafka.raw")["metadata_location"], "headers, \"offset\", \"partition\"")
    assert sorted(str(r[0]) for r in rows) == sorted(["['h=v']", "[]"])


def test_kill_9_three_times_while_producing_is_exactly_once(kafka, kafka_host, tmp_path):
    """The table holds every produced record exactly once after three kill -9s mid-stream."""
    data_dir = str(tmp_path / "data")
    settings = dict(topics=["stream"], schema=ORDERS, max_poll_records=500)
    kafka.produce("stream", orders(range(500)))
    host = kafka_host(kafka, data_dir=data_dir, **settings)
    produced = [500]
    stop = threading.Event()

    def producer():
        p = kafka.producer()
        while not stop.is_set() and produced[0] < 60000:
            kafka.produce("stream", orders(range(produced[0], produced[0] + 500)), producer=p)
            produced[0] += 500
            time.sleep(0.02)

    t = threading.Thread(target=producer)
    t.start()
    try:
        rng = random.Random(15)
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 3.0))
            host.kill()
            host = kafka_host(kafka, data_dir=data_dir, **settings)
    finally:
        stop.set()
        t.join()
    assert produced[0] >= 2000, "the producer barely ran"
    assert_table(host, "kafka.stream", ["id"], [(i,) for i in range(produced[0])], timeout=120)


def test_malformed_record_is_refused_with_its_position(kafka, kafka_host):
    kafka.produce("bad", orders(range(10)), partition=0)
    kafka.produce("bad", [(None, b"{not json")], partition=0)
    kafka.produce("bad", orders(range(10, 20)), partition=0)
    host = kafka_host(kafka, topics=["bad"], schema=ORDERS)
    status = wait_for(lambda: (s := plugin_status(host))["last_error"] and s, what="an error")
    err = status["last_error"]
    assert "'bad' partition 0 offset 10" in err and "JSON" in err, err
    # The records before it landed; nothing after it did.
    assert_table(host, "kafka.bad", ["id"], [(i,) for i in range(10)])


def test_malformed_records_go_to_the_dead_letter_table(kafka, kafka_host):
    kafka.produce("dlq", orders(range(10)), partition=0)
    kafka.produce("dlq", [(b"k", b"{not json"), (None, {"id": "x"}), (None, {"customer": "no id"})], partition=0)
    kafka.produce("dlq", orders(range(10, 20)), partition=0)
    host = kafka_host(kafka, topics=["dlq"], schema=ORDERS, on_error="dead_letter")
    assert_table(host, "kafka.dlq", ["id"], [(i,) for i in range(20)])

    def rejected():
        duck, py = read_both(host, "kafka.dlq_rejected", ["partition", "offset", "key", "value"])
        assert duck == py == [(0, 10, b"k", b"{not json"), (0, 11, None, b'{"id": "x"}'),
                              (0, 12, None, b'{"customer": "no id"}')]
        return True

    wait_for(rejected, what="the dead-letter rows")
    errors = [r[0] for r in duckdb_rows(host.table("kafka.dlq_rejected")["metadata_location"], "error")]
    assert any("JSON" in e for e in errors) and any("'id'" in e for e in errors), errors
    assert plugin_status(host)["last_error"] is None


def test_schema_inference_adds_columns_for_new_fields(kafka, kafka_host, tmp_path):
    kafka.produce("inferred", [(None, {"id": i, "name": f"n{i}"}) for i in range(100)], partition=0)
    data_dir = str(tmp_path / "data")
    host = kafka_host(kafka, data_dir=data_dir, topics=["inferred"], schema="infer")
    assert_table(host, "kafka.inferred", ["id", "name"], [(i, f"n{i}") for i in range(100)])
    kafka.produce("inferred", [(None, {"id": 100, "name": "x", "score": 1.5, "tags": ["a", "b"]})], partition=0)

    def evolved():
        cols = {c["name"]: c["data_type"] for c in host.table("kafka.inferred")["schema"]}
        assert cols == {"id": "int64", "name": "string", "score": "float64", "tags": "list<string>"}, cols
        return True

    wait_for(evolved, what="the new columns")
    assert_table(host, "kafka.inferred", ["id", "name", "score"],
                 [(i, f"n{i}", None) for i in range(100)] + [(100, "x", "1.5")])
    # After a restart the table keeps its columns and goes on.
    host.kill()
    host = kafka_host(kafka, data_dir=data_dir, topics=["inferred"], schema="infer")
    kafka.produce("inferred", [(None, {"id": 101, "score": 2})], partition=0)
    assert_table(host, "kafka.inferred", ["id", "name", "score"],
                 [(i, f"n{i}", None) for i in range(100)] + [(100, "x", "1.5"), (101, None, "2.0")])


def test_a_topic_that_does_not_exist_is_named(kafka, kafka_host):
    host = kafka_host(kafka, topics=["no_such_topic"], schema=ORDERS)
    status = wait_for(lambda: (s := plugin_status(host))["last_error"] and s, what="an error")
    assert "no_such_topic" in status["last_error"] and "does not exist" in status["last_error"], status


def test_brokers_not_granted_are_refused_by_the_sandbox(kafka, kafka_host):
    """Only the first broker is granted: the partitions the others lead cannot be read, and the
    plugin says why."""
    host = kafka_host(kafka, bootstrap_servers=kafka.brokers[:1], topics=["fenced"], schema=ORDERS)
    kafka.produce("fenced", orders(range(100)))
    log = wait_for(lambda: "not grant" in host.read_log() and host.read_log(), what="a sandbox refusal")
    assert "bootstrap_servers" in log


def test_leader_changes_and_a_broker_restart_lose_nothing(kafka, kafka_host):
    """Leaders move to other brokers and a broker goes down and comes back while records are
    produced: the plugin follows the metadata and the table has every record once."""
    kafka.create_topic("moving", 6)
    kafka.produce("moving", orders(range(600)))
    host = kafka_host(kafka, topics=["moving"], schema=ORDERS, metadata_refresh_ms=500)
    assert_table(host, "kafka.moving", ["id"], [(i,) for i in range(600)])
    # Every partition moves to the next broker.
    ids = kafka.broker_ids
    for p, leader in kafka.leaders("moving").items():
        kafka.set_leader("moving", p, ids[(ids.index(leader) + 1) % len(ids)])
    kafka.produce("moving", orders(range(600, 1200)))
    assert_table(host, "kafka.moving", ["id"], [(i,) for i in range(1200)])
    # A broker goes away (its partitions cannot take or give records meanwhile) and returns.
    down = ids[0]
    kafka.broker_down(down)
    producer = kafka.producer()
    for key, value in orders(range(1200, 1800)):
        producer.produce("moving", value=json.dumps(value).encode())
    producer.poll(1.0)
    gone = f"broker {kafka.brokers[0]}: cannot"
    wait_for(lambda: gone in host.read_log(), what="the broker failure in the log")
    kafka.broker_up(down)
    assert producer.flush(30) == 0
    assert_table(host, "kafka.moving", ["id"], [(i,) for i in range(1800)])
    assert plugin_status(host)["state"] == "running"


def test_a_recreated_topic_with_more_partitions_is_read_from_its_start(kafka, kafka_host):
    """The topic is deleted and created again with more partitions (the mock broker cannot add
    partitions to a topic): the old offsets are out of range, so each partition continues at
    its earliest offset, and the new partitions are picked up from their first record."""
    kafka.create_topic("grow", 2)
    kafka.produce("grow", orders(range(300)))
    host = kafka_host(kafka, topics=["grow"], schema=ORDERS, metadata_refresh_ms=500)
    assert_table(host, "kafka.grow", ["id"], [(i,) for i in range(300)])
    kafka.recreate_topic("grow", 5)
    kafka.produce("grow", orders(range(300, 1000)))
    assert len(kafka.partitions("grow")) == 5
    assert_table(host, "kafka.grow", ["id"], [(i,) for i in range(1000)])


def test_start_latest_skips_what_was_there_before_the_first_start(kafka, kafka_host, tmp_path):
    kafka.produce("late", orders(range(100)))
    data_dir = str(tmp_path / "data")
    host = kafka_host(kafka, data_dir=data_dir, topics=["late"], schema=ORDERS, start="latest")
    wait_for(lambda: plugin_status(host)["state"] == "running", what="the source to run")
    kafka.produce("late", orders(range(100, 150)))
    assert_table(host, "kafka.late", ["id"], [(i,) for i in range(100, 150)])
    # A restart resumes from the checkpoint, not from the latest offset.
    host.kill()
    kafka.produce("late", orders(range(150, 200)))
    host = kafka_host(kafka, data_dir=data_dir, topics=["late"], schema=ORDERS, start="latest")
    assert_table(host, "kafka.late", ["id"], [(i,) for i in range(100, 200)])
