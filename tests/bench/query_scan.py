"""Scan speed of POST /query (committed files with DVs + buffered rows) vs DuckDB's
iceberg_scan of the committed snapshot alone. Usage: query_scan.py [ROWS]"""
import os, shutil, sys, tempfile, time
import requests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from conftest import Server
from readers import _duckdb

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = 50_000
SQL = "SELECT count(*) AS n, sum(x) AS s FROM {t} WHERE x % 7 <> 3"
d = tempfile.mkdtemp()
s = Server(os.path.join(d, "data"), ["--commit-interval-ms", "3600000"]).start()
try:
    s.create_table("b.scan", [{"name": "id", "data_type": "int64", "nullable": False},
                              {"name": "x", "data_type": "int64", "nullable": True}], primary_key=["id"])
    for start in range(0, ROWS, BATCH):
        s.ingest("b.scan", [{"id": i, "x": i * 3} for i in range(start, min(ROWS, start + BATCH))], mode="async")
    s.commit("b.scan")
    # 10% of the rows deleted by deletion vectors.
    for start in range(0, ROWS, BATCH * 10):
        s.ingest("b.scan", [{"id": i} for i in range(start, min(ROWS, start + BATCH * 10), 10)], operation="delete", mode="async")
    committed = s.commit("b.scan")
    # 1% more rows buffered (not committed).
    s.ingest("b.scan", [{"id": ROWS + i, "x": i} for i in range(ROWS // 100)], mode="async")

    def best(f, n=5):
        times = []
        for _ in range(n):
            t0 = time.perf_counter(); out = f(); times.append(time.perf_counter() - t0)
        return min(times), out
    sess = requests.Session()
    ours, got = best(lambda: sess.post(s.url + "/query", json={"sql": SQL.format(t="b.scan")}).json())
    con = _duckdb()
    loc = committed["metadata_location"]
    duck, want = best(lambda: con.execute(SQL.format(t=f"iceberg_scan('{loc}')")).fetchall())
    live_committed = ROWS - ROWS // 10
    print(f"/query: {got} in {ours*1000:.0f} ms ({(live_committed + ROWS // 100) / ours:,.0f} rows/s); "
          f"DuckDB iceberg_scan (committed only): {want} in {duck*1000:.0f} ms ({live_committed / duck:,.0f} rows/s); "
          f"ratio {(live_committed + ROWS // 100) / ours / (live_committed / duck):.2f}")
finally:
    s.kill()
    shutil.rmtree(d, ignore_errors=True)
