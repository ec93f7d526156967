#!/usr/bin/env python3
"""kafka.wasm against librdkafka's own consumer, measured side by side in one run.

  ~/.cache/moonlink-venv/bin/python tests/bench/kafka_bench.py [RECORDS] [FRESHNESS_SECONDS]

The broker is librdkafka's mock cluster (tests/e2e/kafka_broker.py, 3 brokers on loopback).
1. Throughput: RECORDS JSON records of 10 fields in a 4-partition topic. Baseline: a
   confluent-kafka (librdkafka) consumer assigned the 4 partitions from offset 0, draining them
   to nothing (values touched, not parsed). moonlink: moonlink-host (release) with kafka.wasm
   on the same topic, timed from start until every row is committed in Iceberg (GET
   /tables/{name}), host start-up included.
2. Freshness: records at ~1,000/s into a 1-partition topic; for each, the time from the
   producer's send to the snapshot that makes it visible (GET /tables/{name} polled every
   5 ms), p50 and p99.

Uses MOONLINK_BIN (default: the release build) and MOONLINK_PLUGIN_DIR. Prints a Markdown table
for BENCHMARKS.md.
"""
import json
import os
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
os.environ.setdefault("MOONLINK_BIN", os.path.expanduser("~/.cache/moonlink-target/release/moonlink-host"))
from conftest import PLUGIN_DIR, Server  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from kafka_broker import MockKafka  # noqa: E402

COLUMNS = [("id", "int64"), ("customer", "string"), ("amount", "decimal(12,2)"), ("qty", "int32"),
           ("price", "float64"), ("paid", "boolean"), ("created", "timestamptz"), ("country", "string"),
           ("note", "string"), ("sku", "string")]


def record(i):
    return {"id": i, "customer": f"customer-{i % 1000}", "amount": f"{i % 100000}.25", "qty": i % 50,
            "price": i * 0.5, "paid": i % 2 == 0, "created": "2026-11-30T12:00:00.123456Z",
            "country": "NL", "note": f"note {i}", "sku": f"SKU-{i % 9973:05d}"}


def produce(kafka, topic, n, partitions=1):
    # zstd batches: the mock broker keeps only a few MB per partition (it deletes the oldest
    # batches beyond that), so compressed batches let most of the 2M records stay.
    p = kafka.producer(**{"linger.ms": 200, "batch.num.messages": 10000, "batch.size": 4000000,
                          "queue.buffering.max.messages": 500000, "compression.type": "zstd"})
    for i in range(n):
        v = json.dumps(record(i)).encode()
        while True:
            try:
                p.produce(topic, value=v, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def librdkafka_drain(kafka, topic, partitions, n):
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "log_level": 3, "fetch.max.bytes": 33554432})
    start = time.time()
    c.assign([TopicPartition(topic, p, -2) for p in range(partitions)])  # OFFSET_BEGINNING
    seen = 0
    size = 0
    while seen < n:
        for m in c.consume(num_messages=10000, timeout=1.0):
            if m.error() is None:
                seen += 1
                size += len(m.value())
    elapsed = time.time() - start
    c.close()
    return elapsed, size


def write_config(path, kafka, topic, extra=""):
    schema = ", ".join(f'{{name = "{n}", data_type = "{t}"}}' for n, t in COLUMNS)
    brokers = ", ".join(f'"{b}"' for b in kafka.brokers)
    with open(path, "w") as f:
        f.write(f'''name = "kafka"
[settings]
bootstrap_servers = [{brokers}]
topics = ["{topic}"]
schema = [{schema}]
{extra}
[poll]
max_rows = 50000
timeout_ms = 100
''')


def committed(server, table):
    try:
        info = server.table(table)
    except AssertionError:
        return -1
    return info["total_records"] - info["deleted_rows"]


def moonlink_drain(kafka, topic, n, tmp):
    config = os.path.join(tmp, "drain.toml")
    write_config(config, kafka, topic)
    server = Server(os.path.join(tmp, "drain"), ["--plugin", os.path.join(PLUGIN_DIR, "kafka.wasm"),
                                                 "--config", config, "--commit-interval-ms", "500"])
    start = time.time()
    server.start()
    try:
        deadline = time.time() + 900
        while committed(server, f"kafka.{topic}") < n:
            if time.time() > deadline:
                raise RuntimeError(server.read_log())
            time.sleep(0.02)
        return time.time() - start
    finally:
        server.stop()


def freshness(kafka, tmp, seconds):
    topic = "fresh"
    kafka.create_topic(topic, 1)
    produce(kafka, topic, 1)
    config = os.path.join(tmp, "fresh.toml")
    write_config(config, kafka, topic)
    server = Server(os.path.join(tmp, "fresh"), ["--plugin", os.path.join(PLUGIN_DIR, "kafka.wasm"),
                                                 "--config", config, "--commit-interval-ms", "500"])
    server.start()
    table = f"kafka.{topic}"
    try:
        while committed(server, table) < 1:
            time.sleep(0.02)
        seen = {}
        stop = threading.Event()

        def poller():
            while not stop.is_set():
                n = committed(server, table) - 1
                now = time.time()
                for k in range(len(seen), n):
                    seen.setdefault(k, now)
                time.sleep(0.005)

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        p = kafka.producer(**{"linger.ms": 0})
        sent = {}
        total = seconds * 1000
        t0 = time.time()
        for k in range(total):
            target = t0 + k / 1000
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            sent[k] = time.time()
            p.produce(topic, value=json.dumps(record(k + 1)).encode())
            p.poll(0)
        p.flush(30)
        deadline = time.time() + 60
        while len(seen) < total and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        lat = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
        return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], len(lat), total
    finally:
        server.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    fresh_seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    kafka = MockKafka(brokers=3)
    topic = "bench"
    kafka.create_topic(topic, 4)
    t = time.time()
    produce(kafka, topic, n, partitions=4)
    produced = n
    ends = kafka.end_offsets(topic)
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "w", "log_level": 3})
    starts = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in ends}
    c.close()
    n = sum(ends[p] - starts[p] for p in ends)
    print(f"produced {produced} records in {time.time() - t:.1f} s; the broker kept {n}", flush=True)
    tmp = tempfile.mkdtemp(prefix="kafka-bench-")
    base_s, size = librdkafka_drain(kafka, topic, 4, n)
    print(f"librdkafka consumer: {base_s:.2f} s ({size / n:.0f} bytes/record)", flush=True)
    ml_s = moonlink_drain(kafka, topic, n, tmp)
    print(f"moonlink: {ml_s:.2f} s", flush=True)
    base2_s, _ = librdkafka_drain(kafka, topic, 4, n)
    base_s = min(base_s, base2_s)
    p50, p99, got, total = freshness(kafka, tmp, fresh_seconds)
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| records produced / kept by the mock broker (4 partitions) | {produced:,} / {n:,} |")
    print(f"| librdkafka consumer drain, records/s | {n / base_s:,.0f} |")
    print(f"| moonlink drain to committed Iceberg, records/s | {n / ml_s:,.0f} |")
    print(f"| ratio (moonlink / librdkafka) | {base_s / ml_s:.2f} |")
    print(f"| freshness at 1,000 records/s, p50 / p99, ms | {p50:,.0f} / {p99:,.0f} ({got}/{total} seen) |")
    kafka.close()


if __name__ == "__main__":
    main()
