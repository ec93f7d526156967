"""Freshness of a Postgres mirror: Postgres COMMIT returned -> row visible to POST /query.

  ~/.cache/moonlink-venv/bin/python tests/bench/query_freshness_pg.py [N]

A real Postgres 15 cluster (tests/e2e/pg.py) with a 100k-row table mirrored by postgres_cdc
(commits every 1 s, as in production); then N one-row transactions, each followed by polling
`/query` for that key. Prints p50/p99/max in ms.
"""
import os
import shutil
import sys
import tempfile
import time

import psycopg2
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import PLUGIN_DIR, Server  # noqa: E402
from pg import PostgresCluster  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200

pg = PostgresCluster(wal_level="logical").start()
server = None
d = tempfile.mkdtemp()
try:
    pg.create_database("app")
    pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text);"
               "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100000) g;", db="app")
    config = os.path.join(d, "pg.toml")
    with open(config, "w") as f:
        f.write(f'name = "pg"\n[settings]\nhost = "127.0.0.1"\nport = {pg.port}\nuser = "postgres"\n'
                f'password = "{pg.password}"\ndatabase = "app"\ntables = ["public.t"]\nslot = "moonlink"\n'
                '[poll]\nmax_rows = 5000\ntimeout_ms = 100\n')
    server = Server(os.path.join(d, "data"), ["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"),
                                              "--config", config, "--commit-interval-ms", "1000"]).start()
    sess = requests.Session()

    def count(where):
        r = sess.post(server.url + "/query", json={"sql": f"SELECT count(*) AS n FROM public.t WHERE {where}"})
        return r.json()[0]["n"] if r.status_code == 200 else -1

    deadline = time.time() + 120
    while count("true") != 100000:
        assert time.time() < deadline, "initial copy did not finish"
        time.sleep(0.1)
    con = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", password=pg.password, dbname="app")
    con.autocommit = True
    cur = con.cursor()
    lat = []
    for i in range(N):
        key = 10_000_000 + i
        cur.execute("INSERT INTO t VALUES (%s, 'fresh')", (key,))
        t0 = time.perf_counter()
        while count(f"id = {key}") != 1:
            assert time.perf_counter() - t0 < 30, f"row {key} not visible after 30 s"
        lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)  # ~one transaction per poll interval, not a burst
    con.close()
    lat.sort()
    print(f"Postgres commit -> /query freshness ms: p50={lat[len(lat) // 2]:.1f} "
          f"p99={lat[int(len(lat) * 0.99)]:.1f} max={lat[-1]:.1f} (n={N}, 100k-row table, commits every 1 s)")
finally:
    if server:
        server.kill()
    pg.cleanup()
    shutil.rmtree(d, ignore_errors=True)
