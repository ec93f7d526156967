"""Restarts and kill -9: every acknowledged row survives exactly once."""
import random
import threading
import time

import requests

from readers import duckdb_rows, pyiceberg_rows, pyiceberg_data_files, expect

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "payload", "data_type": "string", "nullable": True},
]


def read_ids(server):
    loc = server.table("demo.events")["metadata_location"]
    duck = [r[0] for r in duckdb_rows(loc, "id")]
    py = [r[0] for r in pyiceberg_rows(server.data_dir, "demo", "events")]
    return sorted(duck), sorted(py)


def test_tables_survive_restart(server):
    server.create_table("demo.events", SCHEMA)
    server.ingest("demo.events", [{"id": i, "payload": f"p{i}"} for i in range(10)])
    server.ingest("demo.events", [{"id": 10}], mode="async")
    server.restart()  # SIGTERM: graceful, commits what is buffered
    assert [t["name"] for t in server.tables()] == ["demo.events"]
    assert read_ids(server) == (list(range(11)), list(range(11)))
    server.ingest("demo.events", [{"id": 11}])
    assert read_ids(server) == (list(range(12)), list(range(12)))


def test_async_rows_survive_kill_minus_9(server):
    server.create_table("demo.events", SCHEMA)
    server.ingest("demo.events", [{"id": 0}])
    for i in range(1, 6):
        server.ingest("demo.events", [{"id": i}], mode="async")
    server.kill()
    server.start()
    server.commit("demo.events")
    assert read_ids(server) == (list(range(6)), list(range(6)))


def crash_round(server, seed, first_id):
    """Streams async batches from two threads, kills the host at a random moment, restarts."""
    rng = random.Random(seed)
    acked, sent = set(), set()
    lock = threading.Lock()
    stop = threading.Event()
    next_id = [first_id]

    def writer():
        session = requests.Session()
        while not stop.is_set():
            with lock:
                start = next_id[0]
                next_id[0] += 7
                ids = list(range(start, start + 7))
                sent.update(ids)
            try:
                r = session.post(f"{server.url}/ingest/demo.events",
                                 json={"operation": "insert", "request_mode": "async",
                                       "data": [{"id": i, "payload": "x" * (i % 50)} for i in ids]}, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 200:
                with lock:
                    acked.update(ids)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.3, 1.5))
    server.kill()
    stop.set()
    for t in threads:
        t.join()
    server.start()
    server.commit("demo.events")
    return acked, sent, next_id[0]


def test_kill_minus_9_mid_ingest_loses_nothing_acknowledged(server):
    server.create_table("demo.events", SCHEMA)
    all_acked, all_sent = set(), set()
    next_id = 0
    for seed in (1, 2, 3):
        acked, sent, next_id = crash_round(server, seed, next_id)
        all_acked |= acked
        all_sent |= sent
        duck, py = read_ids(server)
        assert duck == py
        assert len(duck) == len(set(duck)), "duplicate rows after recovery"
        assert all_acked <= set(duck), f"lost {len(all_acked - set(duck))} acknowledged rows (seed {seed})"
        assert set(duck) <= all_sent
    assert len(all_acked) > 0


def test_trickle_traffic_does_not_make_a_file_per_commit(server):
    server.create_table("demo.events", SCHEMA)
    for batch in range(60):
        server.ingest("demo.events", [{"id": batch * 5 + j} for j in range(5)], mode="sync")
    for batch in range(60, 200):
        server.ingest("demo.events", [{"id": batch * 5 + j} for j in range(5)], mode="async")
    server.commit("demo.events")
    duck, py = read_ids(server)
    assert duck == py == list(range(1000))
    files = pyiceberg_data_files(server.data_dir, "demo", "events")
    # 60+ commits happened; small files are merged as they accumulate.
    assert len(files) <= 8, files
    assert server.table("demo.events")["data_files"] == len(files)


def test_compaction_is_tunable_per_table(server):
    import requests as rq

    for name, config in [("demo.off", {"compaction": False}), ("demo.tight", {"merge_fanout": 3}), ("demo.moon", {"mooncake": {"x": 1}})]:
        r = rq.post(f"{server.url}/tables/{name}", json={"schema": SCHEMA, "table_config": config})
        assert r.status_code == 201, r.text
    for batch in range(12):
        for name in ("demo.off", "demo.tight"):
            server.ingest(name, [{"id": batch * 10 + j} for j in range(10)])
    off, tight = server.table("demo.off"), server.table("demo.tight")
    assert off["table_config"] == {"compaction": False}
    assert off["data_files"] == 12, off
    assert tight["data_files"] <= 3, tight
    for name in ("demo.off", "demo.tight"):
        loc = server.table(name)["metadata_location"]
        assert sorted(r[0] for r in duckdb_rows(loc, "id")) == list(range(120))
    assert server.table("demo.moon")["table_config"] == {}
    bad = rq.post(f"{server.url}/tables/demo.bad", json={"schema": SCHEMA, "table_config": {"merge_fanout": "lots"}})
    assert bad.status_code == 400, bad.text
    # Options survive a restart.
    server.restart()
    assert server.table("demo.off")["table_config"] == {"compaction": False}
