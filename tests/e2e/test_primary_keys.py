"""Keyed tables: inserts, upserts and deletes become deletion vectors that independent readers
apply. A seeded model-based test runs long random sequences against an in-memory model."""
import random
import time

import pytest

import requests

from readers import duckdb_rows, pyiceberg_rows, live_manifest_entries, retained_files, expect

SCHEMA = [
    {"name": "region", "data_type": "string", "nullable": False},
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "qty", "data_type": "int32", "nullable": True},
    {"name": "note", "data_type": "string", "nullable": True},
]
KEY = ["region", "id"]


def readers(server):
    loc = server.table("shop.items")["metadata_location"]
    return duckdb_rows(loc), pyiceberg_rows(server.data_dir, "shop", "items")


def one_dv_per_data_file(server):
    """Reads the current snapshot's manifests with DuckDB's avro reader: every live delete
    entry is a Puffin deletion vector for a live data file, and no data file has two."""
    entries = live_manifest_entries(server.table("shop.items")["metadata_location"])
    live_data = {e["file_path"] for e in entries if e["content"] == 0}
    deletes = [e for e in entries if e["content"] != 0]
    for e in deletes:
        assert e["content"] == 1 and e["file_format"].upper() == "PUFFIN", e
        assert e["content_offset"] is not None and e["content_size_in_bytes"] is not None
    targets = [e["referenced_data_file"] for e in deletes]
    assert len(targets) == len(set(targets)), "a data file has more than one live deletion vector"
    assert set(targets) <= live_data


def test_key_semantics_and_errors(server):
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    r = server.ingest("shop.items", [{"region": "eu", "id": 1, "qty": 1}, {"region": "us", "id": 1, "qty": 2}])
    assert r["matched"] == 0
    # An existing key in an insert rejects the whole request, naming the key.
    r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "request_mode": "sync", "data": [
        {"region": "eu", "id": 2}, {"region": "eu", "id": 1}]})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "key_conflict" and "region=eu, id=1" in r.json()["message"]
    # Duplicate keys inside one insert are a conflict too.
    r = requests.post(server.url + "/ingest/shop.items", json={"data": [{"region": "ap", "id": 9}, {"region": "ap", "id": 9}]})
    assert r.status_code == 409, r.text
    r = server.ingest("shop.items", [{"region": "eu", "id": 1, "qty": 10}, {"region": "ap", "id": 3}], operation="upsert")
    assert r["matched"] == 1
    # Deletes need only the key and report how many rows matched.
    r = server.ingest("shop.items", [{"region": "us", "id": 1}, {"region": "us", "id": 404}], operation="delete")
    assert r["matched"] == 1
    r = requests.post(server.url + "/ingest/shop.items", json={"operation": "delete", "data": [{"region": "eu"}]})
    assert r.status_code == 422 and r.json()["column"] == "id", r.text
    want = expect(("eu", 1, 10, None), ("ap", 3, None, None))
    assert readers(server) == (want, want)
    one_dv_per_data_file(server)
    # A key column must be declared non-nullable and exist.
    bad = requests.post(server.url + "/tables/shop.bad", json={"schema": [{"name": "id", "data_type": "int64", "nullable": True}], "primary_key": ["id"]})
    assert bad.status_code == 400


def test_repeated_deletes_on_one_file_keep_one_merged_deletion_vector(server):
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    server.ingest("shop.items", [{"region": "eu", "id": i, "qty": i} for i in range(100)])
    for i in range(0, 100, 10):
        server.ingest("shop.items", [{"region": "eu", "id": i}], operation="delete")
        one_dv_per_data_file(server)
    info = server.table("shop.items")
    assert info["deleted_rows"] == 10 and info["live_rows"] == 90
    want = expect(*[("eu", i, i, None) for i in range(100) if i % 10])
    assert readers(server) == (want, want)


def test_a_row_deleted_while_buffered_never_reaches_iceberg(server):
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    server.ingest("shop.items", [{"region": "eu", "id": i} for i in range(5)], mode="async")
    server.ingest("shop.items", [{"region": "eu", "id": 2, "qty": 7}], operation="upsert", mode="async")
    server.ingest("shop.items", [{"region": "eu", "id": 3}], operation="delete", mode="async")
    server.commit("shop.items")
    entries = live_manifest_entries(server.table("shop.items")["metadata_location"])
    assert [e for e in entries if e["content"] != 0] == [], "a buffered delete reached Iceberg"
    assert sum(e["record_count"] for e in entries) == 4
    want = expect(("eu", 0, None, None), ("eu", 1, None, None), ("eu", 2, 7, None), ("eu", 4, None, None))
    assert readers(server) == (want, want)


def apply_model(model, op, rows):
    for row in rows:
        key = (row["region"], row["id"])
        if op == "delete":
            model.pop(key, None)
        else:
            model[key] = (row["region"], row["id"], row.get("qty"), row.get("note"))


@pytest.mark.parametrize("seed", [20261125, 7])
def test_model_based_random_sequences(server, seed):
    rng = random.Random(seed)
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    model = {}
    regions = ["eu", "us", "ap"]
    next_id = 0
    for step in range(60):
        action = rng.choices(["insert", "upsert", "delete", "conflict", "restart", "crash"], [4, 4, 3, 1, 1, 1])[0]
        if action in ("restart", "crash"):
            if action == "restart":
                server.restart()
            else:
                server.kill()
                server.start()
                server.commit("shop.items")
        elif action == "conflict" and model:
            key = rng.choice(sorted(model))
            r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "request_mode": "sync",
                                                                    "data": [{"region": key[0], "id": key[1], "qty": 1}]})
            assert r.status_code == 409, r.text
        else:
            op = "insert" if action == "conflict" else action
            rows = []
            used = set()
            for _ in range(rng.randint(1, 15)):
                if op == "insert" or not model or rng.random() < 0.3:
                    next_id += 1
                    key = (rng.choice(regions), next_id)
                else:
                    key = rng.choice(sorted(model))
                if key in used:
                    continue
                used.add(key)
                row = {"region": key[0], "id": key[1]}
                if op != "delete":
                    row["qty"] = rng.randint(-5, 1000) if rng.random() < 0.8 else None
                    row["note"] = rng.choice([None, "x", "ünï", ""])
                rows.append(row)
            mode = rng.choice(["sync", "sync", "async"])
            server.ingest("shop.items", rows, operation=op, mode=mode)
            apply_model(model, op, rows)
            if mode == "async":
                server.commit("shop.items")
        want = expect(*model.values())
        duck, py = readers(server)
        assert duck == want, f"step {step} ({action}): DuckDB differs from the model"
        assert py == want, f"step {step} ({action}): PyIceberg differs from the model"
    one_dv_per_data_file(server)
    info = server.table("shop.items")
    assert info["index_entries"] == len(model)
    # ~50 commits happened; small and deletion-heavy files were rewritten along the way.
    assert info["data_files"] <= 8, info
    assert info["deleted_fraction"] < 0.3 or info["data_files"] <= 1, info


def test_index_segments_are_used_on_restart_and_rebuilt_when_the_cache_is_lost(server):
    import glob
    import os
    import shutil

    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    model = {}
    rows = [{"region": "eu", "id": i, "qty": i} for i in range(200)]
    server.ingest("shop.items", rows)
    apply_model(model, "insert", rows)
    server.ingest("shop.items", [{"region": "eu", "id": i} for i in range(0, 200, 3)], operation="delete")
    apply_model(model, "delete", [{"region": "eu", "id": i} for i in range(0, 200, 3)])
    segments = glob.glob(os.path.join(server.data_dir, "cache", "index", "*", "*.idx"))
    assert len(segments) >= 1

    # Restart with the cache intact: the index comes from the segments, not from Parquet.
    server.kill()
    server.start()
    assert "rebuilt key-index files" not in server.read_log()
    upserts = [{"region": "eu", "id": i, "qty": -i} for i in range(1, 200, 3)]
    server.ingest("shop.items", upserts, operation="upsert")
    apply_model(model, "upsert", upserts)

    # Lose the index cache: it is rebuilt from the Iceberg table and keys still resolve.
    server.kill()
    shutil.rmtree(os.path.join(server.data_dir, "cache", "index"))
    server.start()
    assert "rebuilt key-index files" in server.read_log()
    assert glob.glob(os.path.join(server.data_dir, "cache", "index", "*", "*.idx"))
    deletes = [{"region": "eu", "id": i} for i in range(1, 200, 6)]
    r = server.ingest("shop.items", deletes, operation="delete")
    assert r["matched"] == len(deletes)
    apply_model(model, "delete", deletes)
    r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "data": [{"region": "eu", "id": 2}]})
    assert r.status_code == 409, r.text
    want = expect(*model.values())
    assert readers(server) == (want, want)
    assert server.table("shop.items")["index_entries"] == len(model)
    one_dv_per_data_file(server)


def test_optimize_rewrites_deleted_rows_away(server):
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    model = {}
    for batch in range(5):
        rows = [{"region": "eu", "id": batch * 100 + i, "qty": i} for i in range(100)]
        server.ingest("shop.items", rows)
        apply_model(model, "insert", rows)
    deletes = [{"region": "eu", "id": i} for i in range(0, 500, 7)]
    server.ingest("shop.items", deletes, operation="delete")
    apply_model(model, "delete", deletes)
    upserts = [{"region": "eu", "id": i, "qty": -1} for i in range(1, 500, 11)]
    server.ingest("shop.items", upserts, operation="upsert")
    apply_model(model, "upsert", upserts)
    before = server.table("shop.items")
    assert before["deleted_rows"] > 0 and before["data_files"] >= 5
    r = requests.post(server.url + "/tables/shop.items/optimize")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["data_files_before"] == before["data_files"]
    assert report["data_files_after"] < before["data_files"]
    assert report["deleted_rows_after"] == 0
    after = server.table("shop.items")
    assert after["deleted_fraction"] == 0 and after["snapshots"] > before["snapshots"]
    want = expect(*model.values())
    assert readers(server) == (want, want)
    one_dv_per_data_file(server)
    # Keys still resolve after the rewrite, including after a restart (segments moved too).
    server.kill()
    server.start()
    r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "data": [{"region": "eu", "id": 1}]})
    assert r.status_code == 409, r.text
    server.ingest("shop.items", [{"region": "eu", "id": 1}], operation="delete")
    apply_model(model, "delete", [{"region": "eu", "id": 1}])
    want = expect(*model.values())
    assert readers(server) == (want, want)


def test_snapshot_expiry_and_orphan_cleanup_keep_the_table_whole(make_server):
    import glob
    import os

    server = make_server(["--snapshot-max-age-secs", "0", "--snapshot-min-keep", "3"])
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    model = {}
    for step in range(12):
        rows = [{"region": "us", "id": step * 10 + i, "qty": step} for i in range(10)]
        server.ingest("shop.items", rows, operation="upsert")
        apply_model(model, "upsert", rows)
        if step % 3 == 2:
            victims = [{"region": "us", "id": step * 10 - 5}]
            server.ingest("shop.items", victims, operation="delete")
            apply_model(model, "delete", victims)
    assert server.table("shop.items")["snapshots"] == 3
    # A crashed writer's leftovers in the table directory.
    data_dir = os.path.join(server.data_dir, "warehouse", "shop", "items", "data")
    junk = os.path.join(data_dir, "00000000-crashed-writer.parquet")
    with open(junk, "wb") as f:
        f.write(b"PAR1 half written")
    r = requests.post(server.url + "/tables/shop.items/optimize")
    assert r.status_code == 200, r.text
    assert not os.path.exists(junk)
    want = expect(*model.values())
    assert readers(server) == (want, want)
    # The data directory holds exactly the files the retained snapshots reference: nothing
    # live was deleted, nothing unreferenced was left.
    referenced = retained_files(server.table("shop.items")["metadata_location"])
    on_disk = set(glob.glob(os.path.join(data_dir, "*")))
    assert on_disk == referenced, (sorted(on_disk - referenced), sorted(referenced - on_disk))
    server.kill()
    server.start()
    assert readers(server) == (want, want)


def test_kill_minus_9_during_optimize_loses_nothing(make_server):
    import glob
    import os
    import threading

    server = make_server(["--snapshot-max-age-secs", "0", "--snapshot-min-keep", "2"])
    server.create_table("shop.items", SCHEMA, primary_key=KEY)
    model = {}
    rng = random.Random(5)
    for round_ in range(3):
        for step in range(6):
            rows = [{"region": "ap", "id": rng.randrange(400), "qty": step} for _ in range(40)]
            rows = list({r["id"]: r for r in rows}.values())
            server.ingest("shop.items", rows, operation="upsert")
            apply_model(model, "upsert", rows)
        # Optimize in the background and kill the host at a random moment during it.
        def optimize():
            try:
                requests.post(server.url + "/tables/shop.items/optimize", timeout=30)
            except requests.ConnectionError:
                pass  # the host was killed mid-request: that is the point

        worker = threading.Thread(target=optimize)
        worker.start()
        time.sleep(rng.uniform(0.0, 0.15))
        server.kill()
        worker.join()
        server.start()
        want = expect(*model.values())
        assert readers(server) == (want, want), f"round {round_}"
        data_dir = os.path.join(server.data_dir, "warehouse", "shop", "items", "data")
        referenced = retained_files(server.table("shop.items")["metadata_location"])
        assert referenced <= set(glob.glob(os.path.join(data_dir, "*"))), "dangling reference"
        r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "data": [{"region": "ap", "id": next(iter(model))[1]}]})
        assert r.status_code == 409, r.text


def files_hold_one_partition(server):
    """Every live data file holds rows of one partition of `truncate(250, qty), region`."""
    from readers import _duckdb, local_path

    entries = live_manifest_entries(server.table("shop.items")["metadata_location"])
    con = _duckdb()
    try:
        for e in entries:
            if e["content"] != 0:
                continue
            found = con.execute("SELECT DISTINCT qty - (((qty % 250) + 250) % 250), region "
                                f"FROM read_parquet('{local_path(e['file_path'])}')").fetchall()
            assert len(found) == 1, (e["file_path"], found)
    finally:
        con.close()


@pytest.mark.parametrize("seed", [20261130, 3])
def test_model_based_partitioned_keyed_table_with_kills_and_compactions(server, seed):
    """Upserts that move rows across partitions (qty changes), deletes, compactions and two
    kill -9s (with writes only in the log) against an in-memory model."""
    rng = random.Random(seed)
    server.create_table("shop.items", SCHEMA, primary_key=KEY, partition_by=["truncate(250, qty)", "region"])
    model = {}
    next_id = 0
    moved = 0
    for step in range(50):
        if step in (17, 34):
            server.kill()
            server.start()
            server.commit("shop.items")
        elif step in (12, 25, 42):
            r = requests.post(server.url + "/tables/shop.items/optimize", timeout=60)
            assert r.status_code == 200, r.text
        else:
            op = rng.choices(["insert", "upsert", "delete"], [3, 5, 2])[0]
            rows, used = [], set()
            for _ in range(rng.randint(1, 25)):
                if op == "insert" or not model or rng.random() < 0.2:
                    next_id += 1
                    key = (rng.choice(["eu", "us", "ap"]), next_id)
                else:
                    key = rng.choice(sorted(model))
                if key in used or (op == "insert" and key in model):
                    continue
                used.add(key)
                row = {"region": key[0], "id": key[1]}
                if op != "delete":
                    row["qty"] = rng.randint(-300, 1000) if rng.random() < 0.9 else None
                    row["note"] = rng.choice([None, "x", "ünï"])
                    old = model.get(key)
                    if old and old[2] is not None and row["qty"] is not None and old[2] // 250 != row["qty"] // 250:
                        moved += 1
                rows.append(row)
            # Async writes before a kill are only in the log: the restart must replay them.
            mode = "async" if step + 1 in (17, 34) else rng.choice(["sync", "async"])
            server.ingest("shop.items", rows, operation=op, mode=mode)
            apply_model(model, op, rows)
            if step + 1 in (17, 34):
                continue  # not committed yet: checked after the kill
            if mode == "async":
                server.commit("shop.items")
        want = expect(*model.values())
        duck, py = readers(server)
        assert duck == want, f"step {step}: DuckDB differs from the model"
        assert py == want, f"step {step}: PyIceberg differs from the model"
    assert moved > 20, "the sequence moved rows across partitions"
    one_dv_per_data_file(server)
    files_hold_one_partition(server)
    assert server.table("shop.items")["index_entries"] == len(model)
    # A key still conflicts wherever its row lives.
    key = rng.choice(sorted(model))
    r = requests.post(server.url + "/ingest/shop.items", json={"operation": "insert", "data": [{"region": key[0], "id": key[1]}]})
    assert r.status_code == 409, r.text
