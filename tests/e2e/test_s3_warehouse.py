"""The warehouse in S3 (moto_server): every scenario that matters, read back with DuckDB
(httpfs + iceberg) and PyIceberg (s3.endpoint), plus faults between the host and the store."""
import random
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN, PLUGIN_DIR
from readers import duckdb_rows, expect, live_manifest_entries, load_json, pyiceberg_rows, pyiceberg_table, retained_files
from s3proxy import FaultProxy
from test_postgres_cdc import assert_mirrors, cdc_host  # noqa: F401 - cdc_host is a fixture
from test_types import ROWS as TYPE_ROWS, SCHEMA as TYPE_SCHEMA, WANT as TYPE_WANT

KEYED = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "v", "data_type": "string", "nullable": True},
]


def s3_host(make_server, moto, bucket="lake", endpoint=None, extra=(), cache=True):
    moto.bucket(bucket)
    args = ["--warehouse", f"s3://{bucket}/warehouse", *moto.host_args(endpoint), *extra]
    if not cache:
        args += ["--cache-bytes", "0"]
    return make_server(args, env=moto.env(), s3=moto)


def both(server, table):
    """Rows from DuckDB and PyIceberg (they must agree)."""
    ns, name = table.split(".", 1)
    loc = server.table(table)["metadata_location"]
    assert loc.startswith("s3://"), loc
    duck = duckdb_rows(loc, s3=server.s3)
    py = pyiceberg_rows(server.data_dir, ns, name, s3=server.s3)
    assert duck == py
    return duck


def assert_every_reference_exists(server, table, bucket="lake"):
    """No retained snapshot points at a missing object."""
    loc = server.table(table)["metadata_location"]
    keys = set(server.s3.keys(bucket))
    for f in retained_files(loc, s3=server.s3):
        assert f.startswith(f"s3://{bucket}/")
        assert f[len(f"s3://{bucket}/"):] in keys, f"{f} is referenced but missing"


def test_every_type_lands_in_the_bucket_and_reads_back(make_server, moto):
    server = s3_host(make_server, moto)
    server.create_table("demo.types", TYPE_SCHEMA)
    server.ingest("demo.types", TYPE_ROWS)
    assert both(server, "demo.types") == TYPE_WANT
    keys = moto.keys("lake", "warehouse/demo/types/")
    assert any(k.endswith(".parquet") for k in keys)
    assert any(k.endswith(".metadata.json") for k in keys)
    assert any(k.endswith(".avro") for k in keys)
    # WAL, key index and the SQLite catalog stay on the local disk.
    assert not [k for k in moto.keys("lake") if "/wal/" in k or k.endswith(".db")]


def test_keyed_upserts_and_deletes_become_deletion_vectors_in_s3(make_server, moto):
    server = s3_host(make_server, moto)
    server.create_table("shop.items", KEYED, primary_key=["id"])
    model = {}
    server.ingest("shop.items", [{"id": i, "v": f"v{i}"} for i in range(200)])
    model.update({i: f"v{i}" for i in range(200)})
    server.ingest("shop.items", [{"id": i, "v": f"u{i}"} for i in range(0, 200, 3)], operation="upsert")
    model.update({i: f"u{i}" for i in range(0, 200, 3)})
    server.ingest("shop.items", [{"id": i} for i in range(1, 200, 5)], operation="delete")
    for i in range(1, 200, 5):
        model.pop(i)
    assert both(server, "shop.items") == expect(*model.items())
    entries = live_manifest_entries(server.table("shop.items")["metadata_location"], s3=moto)
    dvs = [e for e in entries if e["content"] == 1]
    assert dvs and all(e["file_path"].endswith(".puffin") and e["file_path"].startswith("s3://lake/") for e in dvs)
    # Restart: the key index comes back and keeps working against the bucket.
    server.restart()
    server.ingest("shop.items", [{"id": 0, "v": "after"}], operation="upsert")
    model[0] = "after"
    assert both(server, "shop.items") == expect(*model.items())
    assert_every_reference_exists(server, "shop.items")


def test_kill_minus_9_mid_ingest_loses_nothing_acknowledged(make_server, moto):
    server = s3_host(make_server, moto)
    server.create_table("demo.events", KEYED)
    acked, next_id = set(), [0]
    lock = threading.Lock()
    for seed in (1, 2):
        stop = threading.Event()

        def writer():
            session = requests.Session()
            while not stop.is_set():
                with lock:
                    ids = list(range(next_id[0], next_id[0] + 5))
                    next_id[0] += 5
                try:
                    r = session.post(f"{server.url}/ingest/demo.events", timeout=10, json={
                        "operation": "insert", "request_mode": "async", "data": [{"id": i} for i in ids]})
                except requests.RequestException:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.update(ids)

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(random.Random(seed).uniform(0.5, 1.5))
        server.kill()
        stop.set()
        for t in threads:
            t.join()
        server.start()
        server.commit("demo.events")
        ids = [r[0] for r in both(server, "demo.events")]
        assert len(ids) == len(set(ids)), "duplicates after recovery"
        assert acked <= set(ids), f"lost {len(acked - set(ids))} acknowledged rows"
    assert acked


def test_compaction_expiry_and_orphan_sweep_in_the_bucket(make_server, moto):
    server = s3_host(make_server, moto, extra=["--snapshot-max-age-secs", "0", "--snapshot-min-keep", "2"])
    server.create_table("shop.items", KEYED, primary_key=["id"])
    for i in range(30):
        server.ingest("shop.items", [{"id": i, "v": "x"}])
    server.ingest("shop.items", [{"id": i} for i in range(0, 30, 2)], operation="delete")
    orphan = "warehouse/shop/items/data/orphan-left-by-a-crash.parquet"
    moto.client().put_object(Bucket="lake", Key=orphan, Body=b"PAR1junk")
    r = requests.post(server.url + "/tables/shop.items/optimize", timeout=60)
    assert r.status_code == 200, r.text
    assert both(server, "shop.items") == expect(*[(i, "x") for i in range(1, 30, 2)])
    info = server.table("shop.items")
    assert info["data_files"] == 1 and info["deleted_rows"] == 0, info
    keys = moto.keys("lake", "warehouse/shop/items/")
    assert orphan not in keys, "the orphan sweep removes unreferenced objects"
    # Expiry deleted what only expired snapshots referenced: every data object left is retained.
    retained = {f[len("s3://lake/"):] for f in retained_files(info["metadata_location"], s3=moto)}
    assert {k for k in keys if k.endswith((".parquet", ".puffin"))} == retained
    assert len(load_json(info["metadata_location"], moto)["snapshots"]) <= 2
    assert_every_reference_exists(server, "shop.items")


def test_faults_between_host_and_store_lose_nothing(make_server, moto):
    """5xx, resets, stalls and slow bodies on ~15% of S3 requests while ingesting: the host keeps
    serving, retries, loses no acknowledged row, and no snapshot references a missing object."""
    moto.bucket("lake")
    proxy = FaultProxy(moto.port, seed=1301, rate=0.15, stall_seconds=3).up()
    server = s3_host(make_server, moto, endpoint=proxy.endpoint, extra=["--s3-timeout-secs", "2"])
    server.create_table("shop.items", KEYED, primary_key=["id"])
    model, acked_async = {}, {}
    rng = random.Random(7)
    for step in range(40):
        ids = rng.sample(range(300), 10)
        rows = [{"id": i, "v": f"s{step}"} for i in ids]
        mode = rng.choice(["async", "sync"])
        r = requests.post(f"{server.url}/ingest/shop.items", timeout=120, json={
            "operation": "upsert", "request_mode": mode, "data": rows})
        # sync may time out while the store misbehaves (503); async only needs the local WAL.
        assert r.status_code in ((200,) if mode == "async" else (200, 503)), r.text
        if r.status_code == 200:
            model.update({i: f"s{step}" for i in ids})
        else:
            # Unknown outcome: the rows are in the WAL and will commit; record that too.
            model.update({i: f"s{step}" for i in ids})
    assert sum(proxy.injected.values()) > 5, proxy.injected
    proxy.rate = 0
    server.commit("shop.items")
    assert both(server, "shop.items") == expect(*model.items())
    assert_every_reference_exists(server, "shop.items")
    # Every retained snapshot is readable, not only the current one.
    table = pyiceberg_table(server.data_dir, "shop", "items", s3=moto)
    for snapshot in table.metadata.snapshots:
        table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
    server.kill()
    server.start()
    assert both(server, "shop.items") == expect(*model.items())
    proxy.down()


def test_an_unreachable_store_degrades_then_recovers(make_server, moto):
    moto.bucket("lake")
    proxy = FaultProxy(moto.port).up()
    server = s3_host(make_server, moto, endpoint=proxy.endpoint, extra=["--s3-timeout-secs", "2"])
    server.create_table("demo.events", KEYED)
    server.ingest("demo.events", [{"id": 0}])
    proxy.down()
    # async writes are durable locally and still accepted.
    for i in range(1, 6):
        assert server.ingest("demo.events", [{"id": i}], mode="async")["rows"] == 1
    deadline = time.time() + 90
    health = None
    while time.time() < deadline:
        health = requests.get(server.url + "/health", timeout=5).json()
        if health["status"] == "degraded":
            break
        time.sleep(0.5)
    assert health["status"] == "degraded", health
    assert any("demo.events" in reason and "commit" in reason for reason in health["reasons"]), health
    r = requests.post(f"{server.url}/ingest/demo.events", timeout=120,
                      json={"operation": "insert", "request_mode": "sync", "data": [{"id": 6}]})
    assert r.status_code == 503, r.text
    proxy.up()
    server.commit("demo.events")
    assert [r[0] for r in both(server, "demo.events")] == list(range(7))
    assert requests.get(server.url + "/health", timeout=5).json()["status"] == "healthy"
    proxy.down()


def test_the_local_cache_saves_re_downloading_what_was_just_written(make_server, moto):
    """A trickle with compaction: merges read the small files back. With the cache they come
    from the local disk; without it, from S3."""
    downloaded = {}
    for cache in (True, False):
        bucket = "cached" if cache else "uncached"
        moto.bucket(bucket)
        proxy = FaultProxy(moto.port).up()
        server = s3_host(make_server, moto, bucket=bucket, endpoint=proxy.endpoint, cache=cache)
        server.create_table("shop.items", KEYED, primary_key=["id"])
        for i in range(24):
            server.ingest("shop.items", [{"id": i, "v": "x" * 100}])
            if i % 3 == 0:
                server.ingest("shop.items", [{"id": i}], operation="delete")
        requests.post(server.url + "/tables/shop.items/optimize", timeout=60).raise_for_status()
        downloaded[cache] = proxy.downloaded()
        server.kill()
        proxy.down()
    assert downloaded[False] > 0, downloaded
    assert downloaded[True] == 0, downloaded


@pytest.mark.parametrize("case", ["no_bucket", "no_region", "bad_scheme", "unreachable", "bad_credentials",
                                  "no_credentials"])
def test_bad_settings_refuse_to_start_with_one_clear_line(tmp_path, moto, case):
    env = dict(moto.env())
    args = ["--warehouse", "s3://lake/w", *moto.host_args()]
    want = "--warehouse"
    if case == "no_bucket":
        pass  # the bucket "lake" was never created
        want = "bucket does not exist"
    elif case == "no_region":
        moto.bucket("lake")
        env.pop("AWS_REGION")
        args = ["--warehouse", "s3://lake/w", "--s3-endpoint", moto.endpoint, "--s3-path-style", "--s3-allow-http"]
        want = "--s3-region"
    elif case == "bad_scheme":
        args = ["--warehouse", "gs://lake/w"]
        want = "unsupported scheme"
    elif case == "no_credentials":
        moto.bucket("lake")
        env = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
        want = "no AWS credentials found"
    elif case == "unreachable":
        args = ["--warehouse", "s3://lake/w", *moto.host_args("http://127.0.0.1:9")]
        want = "cannot reach the S3 endpoint"
    elif case == "bad_credentials":
        # A second moto that checks signatures against its IAM users: our keys are unknown.
        from s3server import MotoServer

        strict = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}).start()
        try:
            args = ["--warehouse", "s3://lake/w", *moto.host_args(strict.endpoint)]
            out = _run(tmp_path, args, env)
        finally:
            strict.stop()
        assert out.returncode != 0
        assert "credentials" in out.stderr, out.stderr
        return
    out = _run(tmp_path, args, env)
    assert out.returncode != 0, out.stderr
    assert want in out.stderr, out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, out.stderr


def _run(tmp_path, args, env):
    import os

    return subprocess.run(
        [BIN, "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--plugin-dir", PLUGIN_DIR, *args],
        env={**{k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE" and not k.startswith("AWS_")}, **env},
        capture_output=True, text=True, timeout=90)


def test_postgres_cdc_copy_and_stream_into_an_s3_warehouse(postgres, cdc_host, moto):

    pg = postgres
    pg.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2));"
        "INSERT INTO orders SELECT g, 'c' || (g % 7), g * 1.25 FROM generate_series(1, 2000) g;",
        db="app",
    )
    moto.bucket("lake")
    host = cdc_host(pg, ["public.orders"], extra_args=["--warehouse", "s3://lake/cdc", *moto.host_args()],
                    env=moto.env(), s3=moto)
    cols = ["id", "customer", "amount"]
    assert_mirrors(host, pg, "public.orders", "orders", cols, expect_rows=2000)
    pg.execute("UPDATE orders SET amount = 0 WHERE id % 10 = 0; DELETE FROM orders WHERE id <= 100;"
               "INSERT INTO orders VALUES (9001, 'n', 1)", db="app")
    assert_mirrors(host, pg, "public.orders", "orders", cols, expect_rows=1901)
    assert host.table("public.orders")["metadata_location"].startswith("s3://lake/cdc/")
