"""Backpressure for HTTP writers (issue 12: a bounded buffer whatever the writers send).

Pull sources have waited for commits since session 7; HTTP ingest and receivers did not, so
`async` requests could grow a table's buffer without bound while commits could not keep up or
kept failing. Now a write to a table whose buffer holds twice `--max-buffer-bytes` waits (its
body unread) up to `--backlog-wait-ms` for commits to make room, and is then refused with 503
`backlogged` and `Retry-After`, having written nothing. The store is made unreachable through
the fault proxy so commits fail while the local write-ahead log keeps working."""
import os
import time

import requests
from conftest import PLUGIN_DIR, free_port
from google.rpc import status_pb2
from s3proxy import FaultProxy
from test_otel import PROTOBUF, span_request, write_config
from test_query import query
from test_s3_warehouse import both, s3_host

BUFFER = 128 * 1024
SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "pad", "data_type": "string", "nullable": True},
]
FLAGS = ["--s3-timeout-secs", "2", "--max-buffer-bytes", str(BUFFER), "--backlog-wait-ms", "300",
         "--commit-interval-ms", "200"]


def rows(start, n=100):
    return [{"id": i, "pad": f"{i}-" + "x" * 300} for i in range(start, start + n)]


def post(server, table, batch):
    return requests.post(f"{server.url}/ingest/{table}?request_mode=async", timeout=60,
                         json={"operation": "insert", "data": batch})


def status_table(server, name):
    tables = requests.get(server.url + "/status", timeout=10).json()["tables"]
    return next(t for t in tables if t["name"] == name)


def ids(server, table):
    """The table's ids as DuckDB and PyIceberg read them (they must agree)."""
    server.commit(table)
    got = [row[0] for row in both(server, table)]
    assert len(got) == len(set(got)), "a row was written twice"
    return set(got)


def test_async_ingest_is_held_back_then_refused_while_commits_cannot_drain(make_server, moto):
    moto.bucket("lake")
    proxy = FaultProxy(moto.port).up()
    server = s3_host(make_server, moto, endpoint=proxy.endpoint, extra=FLAGS)
    server.create_table("demo.events", SCHEMA)
    proxy.down()
    acked, refused, next_id = set(), set(), 0
    for _ in range(300):
        batch = rows(next_id)
        next_id += len(batch)
        r = post(server, "demo.events", batch)
        if r.status_code == 200:
            acked.update(row["id"] for row in batch)
            continue
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["error"] == "backlogged", body
        assert "demo.events" in body["message"] and "retry" in body["message"], body
        assert r.headers["retry-after"] == "1"
        refused.update(row["id"] for row in batch)
        if len(refused) >= 500:
            break
    assert refused, "the buffer was never full: nothing was held back"
    assert acked, "nothing was accepted before the buffer filled"
    # The buffer stayed within twice the limit (plus the one batch that crossed it).
    buffered = status_table(server, "demo.events")["buffered_bytes"]
    assert buffered <= 2 * BUFFER + 64 * 1024, buffered

    # The store is back: commits drain the buffer and writes are accepted again. A client
    # retries a `backlogged` answer (the failing commit may still be waiting on its timeout);
    # the retried rows were never written, so sending them again cannot duplicate them.
    proxy.up()
    deadline = time.time() + 60
    for _ in range(5):
        batch = rows(next_id)
        next_id += len(batch)
        while True:
            r = post(server, "demo.events", batch)
            if r.status_code != 503 or time.time() > deadline:
                break
            assert r.json()["error"] == "backlogged", r.text
            time.sleep(float(r.headers["retry-after"]) / 10)
        assert r.status_code == 200, r.text
        acked.update(row["id"] for row in batch)
    assert ids(server, "demo.events") == acked, "every accepted row once, no refused row"

    # And after kill -9 the same holds (accepted rows were logged, refused ones never were).
    server.kill()
    server.start()
    assert ids(server, "demo.events") == acked
    proxy.down()


def test_a_writer_waits_for_room_instead_of_failing_when_commits_keep_up(make_server, moto):
    """With a reachable store the same small buffer only slows writers down: no refusal."""
    server = s3_host(make_server, moto, extra=[*FLAGS[:4], "--backlog-wait-ms", "30000"])
    server.create_table("demo.fast", SCHEMA)
    acked = set()
    for start in range(0, 20_000, 500):
        batch = rows(start, 500)
        r = post(server, "demo.fast", batch)
        assert r.status_code == 200, r.text
        acked.update(row["id"] for row in batch)
        assert status_table(server, "demo.fast")["buffered_bytes"] <= 2 * BUFFER + 256 * 1024
    assert ids(server, "demo.fast") == acked


def test_a_backlogged_table_refuses_otlp_exports_with_retry_after(make_server, moto, tmp_path):
    moto.bucket("lake")
    proxy = FaultProxy(moto.port).up()
    port = free_port()
    config = write_config(str(tmp_path), f"127.0.0.1:{port}")
    server = s3_host(make_server, moto, endpoint=proxy.endpoint,
                     extra=[*FLAGS, "--plugin", os.path.join(PLUGIN_DIR, "otel.wasm"), "--config", config])
    otlp = f"http://127.0.0.1:{port}/v1/traces"
    proxy.down()
    answered, refused = set(), 0
    for i in range(200):
        r = requests.post(otlp, data=span_request(200, f"r{i}"), headers=PROTOBUF, timeout=60)
        if r.status_code == 200:
            answered.add(f"r{i}")
            continue
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "backlogged" in status_pb2.Status.FromString(r.content).message, r.content
        refused += 1
        if refused == 3:
            break
    assert refused == 3, "the receiver never reported the backlog"
    assert answered, "nothing was accepted before the buffer filled"
    proxy.up()
    deadline = time.time() + 60
    while True:  # an exporter retries 503 after Retry-After until the commits drain
        r = requests.post(otlp, data=span_request(10, "after"), headers=PROTOBUF, timeout=60)
        if r.status_code != 503 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    server.commit("otel.spans")
    got = query(server, "SELECT attributes['req'] AS req, count(*) AS n FROM otel.spans GROUP BY 1").json()
    counts = {row["req"]: row["n"] for row in got}
    # Every answered export is there whole and once; no refused one is.
    assert counts == {**{name: 200 for name in answered}, "after": 10}, counts
    proxy.down()
