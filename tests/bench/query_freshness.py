"""Freshness: async ingest ack -> row visible to POST /query (p50/p99 over N rows)."""
import os, shutil, subprocess, sys, tempfile, time, statistics, requests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from conftest import Server
d = tempfile.mkdtemp()
s = Server(os.path.join(d, "data"), ["--commit-interval-ms", "1000"]).start()
try:
    s.create_table("b.t", [{"name": "id", "data_type": "int64", "nullable": False}, {"name": "v", "data_type": "string", "nullable": True}], primary_key=["id"])
    # Some committed history plus buffered rows, as in a live table.
    for k in range(20):
        s.ingest("b.t", [{"id": k * 5000 + i, "v": "x"} for i in range(5000)], mode="async")
    lat = []
    sess = requests.Session()
    for i in range(300):
        key = 10_000_000 + i
        sess.post(s.url + "/ingest/b.t", json={"operation": "upsert", "request_mode": "async", "data": [{"id": key, "v": "y"}]}).raise_for_status()
        t0 = time.perf_counter()
        while True:
            r = sess.post(s.url + "/query", json={"sql": f"SELECT count(*) AS n FROM b.t WHERE id = {key}"})
            r.raise_for_status()
            if r.json()[0]["n"] == 1:
                break
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    print(f"freshness ms: p50={lat[len(lat)//2]:.1f} p99={lat[int(len(lat)*0.99)]:.1f} max={lat[-1]:.1f} (n={len(lat)}, 100k rows, commits every 1 s)")
finally:
    s.kill()
    shutil.rmtree(d, ignore_errors=True)
