"""The operators' view: /metrics after a known workload (read by prometheus_client's parser),
/ready and /health through a source's life, /status against GET /tables, `moonlink-host
status`, and the status page in a real headless browser (Debian's chromium)."""
import os
import shutil
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, PLUGIN_DIR
from s3proxy import FaultProxy
from test_postgres_cdc import write_config as pg_config
from test_sandbox_stall import SilentServer
from test_sources import write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "operators-view-secret-token"


def metrics(server, headers=None):
    """{(sample name, frozenset(labels)): value} from /metrics, through the reference parser."""
    r = requests.get(server.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name, **labels):
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(what, predicate, timeout=30, interval=0.05):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


def post(server, path, body, headers=None):
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


def test_metrics_count_a_known_workload_and_status_matches_tables(make_server):
    # Commits only when asked for (sync requests and explicit commits): countable.
    server = make_server(["--commit-interval-ms", "600000"])
    server.create_table("ops.events", [{"name": "id", "data_type": "int64", "nullable": False},
                                       {"name": "name", "data_type": "string"}])
    server.create_table("ops.users", [{"name": "id", "data_type": "int64", "nullable": False},
                                      {"name": "name", "data_type": "string"}], primary_key=["id"])
    sent_rows, sent_requests = 0, 0
    for k in range(5):  # K = 5 insert requests, N = 5 + 6 + ... rows
        rows = [{"id": k * 100 + i, "name": f"n{i}"} for i in range(5 + k)]
        mode = "sync" if k % 2 == 0 else "async"
        assert post(server, "/ingest/ops.events", {"operation": "insert", "request_mode": mode,
                                                  "data": rows}).status_code == 200
        sent_rows += len(rows)
        sent_requests += 1
    for rows, op in [([{"id": i, "name": "u"} for i in range(7)], "upsert"),
                     ([{"id": i, "name": "v"} for i in range(3)], "upsert"),
                     ([{"id": 1}, {"id": 2}], "delete")]:
        assert post(server, "/ingest/ops.users", {"operation": op, "request_mode": "sync",
                                                 "data": rows}).status_code == 200
    # Refused: a value of the wrong type (nothing written), an unknown table, an unknown route.
    bad = post(server, "/ingest/ops.events", {"operation": "insert", "data": [{"id": "x"}]})
    assert 400 <= bad.status_code < 500, bad.text
    assert post(server, "/ingest/ops.nope", {"operation": "insert", "data": [{"id": 1}]}).status_code == 404
    assert requests.get(server.url + "/no/such/route", timeout=5).status_code == 404
    server.commit("ops.events")
    server.commit("ops.users")

    # Background compaction may commit a `replace` snapshot at any moment: read the metrics
    # between two listings that agree, so the counters and the tables describe one state.
    for _ in range(100):
        before = {t["name"]: t for t in server.tables()}
        m = metrics(server)
        tables = {t["name"]: t for t in server.tables()}
        if tables == before:
            break
        time.sleep(0.1)
    assert value(m, "moonlink_ingested_rows_total", table="ops.events", operation="insert") == sent_rows
    assert value(m, "moonlink_ingested_rows_total", table="ops.users", operation="upsert") == 10
    assert value(m, "moonlink_ingested_rows_total", table="ops.users", operation="delete") == 2
    assert value(m, "moonlink_ingested_bytes_total", table="ops.events", operation="insert") > 0
    # Requests by matched route (never the raw path) and status.
    assert value(m, "moonlink_http_requests_total", route="/ingest/{name}", method="POST",
                 status="200") == sent_requests + 3
    assert value(m, "moonlink_http_requests_total", route="/ingest/{name}", method="POST",
                 status=str(bad.status_code)) == 1
    assert value(m, "moonlink_http_requests_total", route="/ingest/{name}", method="POST", status="404") == 1
    assert value(m, "moonlink_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(m, "moonlink_http_requests_total", route="/tables/{name}/commit", method="POST",
                 status="200") == 2
    assert not any("ops.nope" in str(ls) or "/no/such" in str(ls) for (_, ls) in m), "raw paths leaked"
    # Commits: one per snapshot (nothing expired yet), all succeeded.
    for name in ("ops.events", "ops.users"):
        assert value(m, "moonlink_commits_total", table=name, outcome="ok") == tables[name]["snapshots"] > 0
        assert value(m, "moonlink_commits_total", table=name, outcome="error") == 0
        assert value(m, "moonlink_commit_seconds_count", table=name) >= tables[name]["snapshots"]
        assert value(m, "moonlink_table_live_rows", table=name) == tables[name]["live_rows"]
        assert value(m, "moonlink_table_data_files", table=name) == tables[name]["data_files"]
        assert value(m, "moonlink_table_snapshots", table=name) == tables[name]["snapshots"]
        assert value(m, "moonlink_table_freshness_seconds", table=name) < 120
    assert tables["ops.events"]["live_rows"] == sent_rows and tables["ops.users"]["live_rows"] == 5
    assert value(m, "moonlink_wal_fsync_seconds_count") > 0

    # /status reports what GET /tables reports.
    status = requests.get(server.url + "/status", timeout=10).json()
    assert status["ready"] is True and status["reasons"] == [] and status["faults"] == []
    by_name = {t["name"]: t for t in status["tables"]}
    assert sorted(by_name) == sorted(tables)
    for name, t in tables.items():
        for field in ("live_rows", "total_records", "deleted_rows", "data_files", "snapshots",
                      "committed_lsn", "buffered_rows", "failed", "last_error"):
            assert by_name[name][field] == t[field], (name, field)
        assert by_name[name]["last_commit_ms"] and by_name[name]["freshness_seconds"] is not None

    # The CLI prints the same summary.
    out = subprocess.run([BIN, "status", "--url", server.url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ops.events" in out.stdout and "ops.users" in out.stdout and "ready, healthy" in out.stdout
    line = next(l for l in out.stdout.splitlines() if l.startswith("ops.events"))
    assert str(sent_rows) in line.split(), line


def test_the_token_guards_status_and_metrics_but_not_the_page(make_server):
    server = make_server(["--auth-token", TOKEN])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(server.url + "/status", timeout=5).status_code == 401
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 401
    assert requests.get(server.url + "/status", headers=auth, timeout=5).status_code == 200
    assert metrics(server, auth) is not None
    assert requests.get(server.url + "/ready", timeout=5).status_code == 200
    page = requests.get(server.url + "/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert TOKEN not in page.text and "<form" in page.text
    out = subprocess.run([BIN, "status", "--url", server.url], capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if k != "MOONLINK_AUTH_TOKEN"})
    assert out.returncode != 0 and "token" in out.stderr, out
    out = subprocess.run([BIN, "status", "--url", server.url, "--token", TOKEN], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and "ready" in out.stdout, out


def test_ready_and_health_follow_a_source_that_never_starts(make_server, tmp_path):
    """A source stuck in `open` (a server that accepts and never answers) keeps /ready at 503
    naming it; once its call times out it is restarting: ready (it left `starting`), and
    /health is degraded naming it, with the fault among the recent ones."""
    silent = SilentServer()
    try:
        config = write_config(tmp_path, "stuck.toml", f"""
name = "stuck"
[settings]
table = "ops.stuck"
rows = 10
fault = "block"
block_in = "open"
block_addr = "127.0.0.1:{silent.port}"
[capabilities]
network = ["127.0.0.1:{silent.port}"]
timeout_ms = 4000
""")
        server = make_server(["--plugin", "faulty_source.wasm", "--config", config])
        ready = requests.get(server.url + "/ready", timeout=5)
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not_ready"
        assert any("stuck" in w for w in ready.json()["waiting_for"]), ready.json()
        assert requests.get(server.url + "/health", timeout=5).json()["status"] == "healthy"
        assert requests.get(server.url + "/status", timeout=5).json()["ready"] is False

        wait_for("/ready to answer 200", lambda: requests.get(server.url + "/ready", timeout=5).status_code == 200, 30)
        health = wait_for("/health degraded",
                          lambda: (h := requests.get(server.url + "/health", timeout=5).json())["status"] == "degraded" and h, 30)
        assert any("source 'stuck' is restarting" in r for r in health["reasons"]), health
        status = requests.get(server.url + "/status", timeout=5).json()
        source = next(s for s in status["sources"] if s["name"] == "stuck")
        assert source["state"] in ("restarting", "starting") and source["last_error"], source
        assert any(f["kind"] == "source" and f["origin"] == "stuck" for f in status["faults"]), status["faults"]
        m = metrics(server)
        assert value(m, "moonlink_source_faults_total", source="stuck") >= 1
        assert total(m, "moonlink_source_state", source="stuck") == 1
    finally:
        silent.close()


def test_health_recovers_after_a_source_restarts(make_server, tmp_path):
    """A source that faults once restarts with back-off and recovers: /health is degraded
    while it restarts, healthy again after; the fault stays among the recent faults."""
    config = write_config(tmp_path, "flaky.toml", """
name = "flaky"
[settings]
table = "ops.flaky"
rows = 3000
fault = "error"
fault_at = 1500
[poll]
max_rows = 1000
""")
    server = make_server(["--plugin", "faulty_source.wasm", "--config", config])
    seen = set()

    def finished():
        seen.add(requests.get(server.url + "/health", timeout=5).json()["status"])
        plugins = requests.get(server.url + "/plugins", timeout=5).json()["plugins"]
        return plugins[0]["state"] == "finished" and plugins[0]
    flaky = wait_for("the source to finish", finished, 60, interval=0.01)
    assert flaky["restarts"] == 1 and "upstream unavailable" in flaky["last_error"], flaky
    # The restart window is ~200 ms of back-off: polled every 10 ms, the degraded state shows.
    assert "degraded" in seen, seen
    assert requests.get(server.url + "/health", timeout=5).json()["status"] == "healthy"
    assert requests.get(server.url + "/ready", timeout=5).status_code == 200
    status = requests.get(server.url + "/status", timeout=5).json()
    assert [f["origin"] for f in status["faults"] if f["kind"] == "source"] == ["flaky"]
    assert next(t for t in status["tables"] if t["name"] == "ops.flaky")["live_rows"] == 3000
    m = metrics(server)
    assert value(m, "moonlink_source_restarts_total", source="flaky") == 1
    assert value(m, "moonlink_source_faults_total", source="flaky") == 1
    assert value(m, "moonlink_source_state", source="flaky", state="finished") == 1
    assert value(m, "moonlink_plugin_calls_total", source="flaky", call="poll") >= 3


def chromium(*args, timeout=60):
    if not CHROMIUM:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_status_page_in_a_browser_during_a_postgres_initial_copy(postgres, make_server, tmp_path, monkeypatch):
    pg = postgres
    pg.execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text);"
               "INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 100000) g;"
               "ANALYZE big;", db="app")
    pages = int(pg.scalar("SELECT relpages FROM pg_class WHERE relname = 'big'", db="app"))
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    config = pg_config(tmp_path, pg, ["public.big"], snapshot_connections=1,
                       snapshot_chunk_pages=max(1, pages // 40))
    flaky = write_config(tmp_path, "flaky.toml", """
name = "flaky"
[settings]
table = "ops.flaky"
rows = 3000
fault = "error"
fault_at = 1500
[poll]
max_rows = 1000
""")
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", config,
                          "--plugin", "faulty_source.wasm", "--config", flaky])
    server.create_table("ops.rest", [{"name": "id", "data_type": "int64", "nullable": False}])
    server.ingest("ops.rest", [{"id": i} for i in range(42)])

    def copying():
        copy = requests.get(server.url + "/tables/public.big", timeout=5)
        return copy.status_code == 200 and copy.json()["initial_copy"]
    first = wait_for("the initial copy to report progress", copying, 60)
    dom = chromium("--dump-dom", server.url + "/").stdout
    assert "public.big" in dom and "ops.rest" in dom, dom[-3000:]
    assert '<progress class="copy" data-table="public.big"' in dom, dom[-3000:]
    shot = tmp_path / "status_page.png"
    chromium("--window-size=1400,900", f"--screenshot={shot}", server.url + "/")
    assert shot.exists() and shot.stat().st_size > 10_000
    # The bar advances to done, and the rows the page shows are GET /tables' rows.
    wait_for("the copy to finish", lambda: (c := copying()) and c["done"] and c, 120)
    assert first["rows_copied"] <= 100000
    wait_for("the copy committed", lambda: server.table("public.big")["live_rows"] == 100000, 60)
    wait_for("flaky's rows committed", lambda: server.table("ops.flaky")["live_rows"] == 3000, 60)
    dom = chromium("--dump-dom", server.url + "/").stdout
    # The plugin fault is on the page.
    fault = dom.split('<tr class="fault-row">', 1)[1].split("</tr>", 1)[0]
    assert "<td>source</td><td>flaky</td>" in fault and "upstream unavailable" in fault, fault
    for t in server.tables():
        row = dom.split(f'data-table="{t["name"]}"><td class="name">', 1)[1]
        assert f'<td class="num rows">{t["live_rows"]}</td>' in row.split("</tr>", 1)[0], t["name"]
    assert 'value="100000" max="100000"' in dom


class RefuseWrites(FaultProxy):
    """An S3 proxy that answers every write with 503 while `refusing` is set: commits fail and
    retry, so what the host has read stays unacknowledged for as long as the test needs."""
    refusing = False

    def choose(self, method, path):
        return "error" if self.refusing and method in ("PUT", "POST", "DELETE") else None


def test_postgres_lag_in_bytes_and_seconds_while_a_backlog_drains(postgres, make_server, moto, tmp_path, monkeypatch):
    """Postgres lag is what operators compute from the server: WAL end minus the acknowledged
    LSN (bytes) and the age of the oldest change not yet acknowledged (seconds). A backlog
    written while the host is down is lag until its rows are committed; then both fall."""
    pg = postgres
    pg.execute("CREATE TABLE feed (id bigint PRIMARY KEY, payload text);"
               "INSERT INTO feed SELECT g, 'x' FROM generate_series(1, 100) g;", db="app")
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    moto.bucket("lake")
    proxy = RefuseWrites(moto.port).up()
    config = pg_config(tmp_path, pg, ["public.feed"])
    server = make_server(["--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", config,
                          "--warehouse", "s3://lake/wh", *moto.host_args(proxy.endpoint),
                          "--s3-timeout-secs", "2"], env=moto.env(), s3=moto)

    def live_rows():
        r = requests.get(server.url + "/tables/public.feed", timeout=5)
        return r.status_code == 200 and r.json()["live_rows"]
    wait_for("the copy committed", lambda: live_rows() == 100, 60)
    server.stop()

    for i in range(10):
        pg.execute(f"INSERT INTO feed SELECT g, repeat('y', 200) FROM generate_series({1000 + i * 2000}, "
                   f"{2999 + i * 2000}) g", db="app")
    slot_lag_sql = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                    "FROM pg_replication_slots WHERE slot_name = 'moonlink'")
    backlog = int(pg.scalar(slot_lag_sql, db="app"))
    assert backlog > 1_000_000, backlog
    time.sleep(2)
    proxy.refusing = True
    server.start()

    def source():
        return requests.get(server.url + "/status", timeout=5).json()["sources"][0]

    # Read, but the commits fail: lag is the whole backlog and keeps its age.
    behind = wait_for("lag reported", lambda: (s := source())["lag_bytes"] and s["lag_seconds"] and s, 30)
    assert behind["lag_bytes"] >= backlog, (behind, backlog)
    assert behind["lag_seconds"] >= 2, behind
    later = wait_for("lag growing", lambda: (s := source())["lag_seconds"] >= behind["lag_seconds"] + 1 and s, 30)
    assert later["lag_bytes"] >= backlog, later
    samples = metrics(server)
    assert value(samples, "moonlink_source_lag_bytes", source="pg") >= backlog
    assert value(samples, "moonlink_source_lag_seconds", source="pg") >= 3
    plugin = requests.get(server.url + "/plugins", timeout=5).json()["plugins"][0]
    assert plugin["lag_bytes"] >= backlog, plugin
    text = subprocess.run([BIN, "status", "--url", server.url], capture_output=True, text=True, timeout=30).stdout
    assert "BEHIND" in text and "MiB" in text, text

    # Committed and acknowledged: the lag falls to (nearly) nothing, as Postgres sees it too.
    proxy.refusing = False
    wait_for("the backlog committed", lambda: live_rows() == 20100, 90)
    caught_up = wait_for("lag gone", lambda: (s := source())["lag_bytes"] is not None
                         and s["lag_bytes"] < 200_000 and s["lag_seconds"] == 0 and s, 30)
    assert caught_up["checkpoint_age_seconds"] is not None
    samples = metrics(server)
    assert value(samples, "moonlink_source_lag_bytes", source="pg") < 200_000
    assert ("moonlink_source_lag_seconds", frozenset({("source", "pg")})) in samples
    assert int(pg.scalar(slot_lag_sql, db="app")) < 200_000


def test_status_page_with_a_token_shows_only_the_login_form(make_server):
    server = make_server(["--auth-token", TOKEN])
    server_headers = {"Authorization": f"Bearer {TOKEN}"}
    requests.post(f"{server.url}/tables/ops.secret", json={"schema": [{"name": "id", "data_type": "int64"}]},
                  headers=server_headers, timeout=10).raise_for_status()
    run = chromium("--dump-dom", server.url + "/")
    dom = run.stdout
    assert '<form id="login">' in dom, dom[-3000:]  # shown: no `hidden` attribute left
    assert "ops.secret" not in dom and TOKEN not in dom
    assert '<main id="dashboard" hidden="">' in dom


def test_terminal_shows_a_progress_bar_per_copied_table_under_tmux(postgres, tmp_path, monkeypatch):
    """With stderr on a terminal (a tmux pane), the initial copy draws a bar per table that
    advances, and log lines are printed above it."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (apt-get install -y tmux)")
    pg = postgres
    pg.execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text);"
               "INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 600000) g;"
               "ANALYZE big;", db="app")
    pages = int(pg.scalar("SELECT relpages FROM pg_class WHERE relname = 'big'", db="app"))
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    # Many small chunks: a copy of a few seconds, reported often.
    config = pg_config(tmp_path, pg, ["public.big"], snapshot_connections=1,
                       snapshot_chunk_pages=max(1, pages // 150))
    from conftest import free_port
    port = free_port()
    session = f"moonlink-bars-{port}"
    command = " ".join([BIN, "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}",
                        "--plugin-dir", PLUGIN_DIR, "--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"),
                        "--config", config])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                    "-e", f"MOONLINK_TEST_PGPASSWORD={pg.password}", command], check=True)
    try:
        percents, screens = [], []
        deadline = time.time() + 120
        while time.time() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            lines = [l for l in screen.splitlines() if l.strip()]
            # The live bar is the last line; a capture taken while a log line is being printed
            # above it (the bar cleared for a moment) has none and is skipped.
            bar = lines[-1:] if lines and "copy public.big" in lines[-1] and "rows" in lines[-1] else []
            if bar:
                screens.append(screen)
                percent = int(bar[-1].split("]")[1].split("%")[0])
                if not percents or percents[-1] != percent:
                    percents.append(percent)
                if percent == 100:
                    break
            time.sleep(0.1)
        assert len(percents) >= 2 and percents == sorted(percents), (percents, screens[-1:])
        last = screens[-1].splitlines()
        bar_line = max(i for i, l in enumerate(last) if "copy public.big" in l)
        assert any("initial copy" in l and "INFO" in l for l in last[:bar_line]), ("logs print above the bar", last)
        assert "/s" in last[bar_line] and "ETA" in last[bar_line], last[bar_line]
        (tmp_path / "terminal.txt").write_text(screens[-1])
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session])


def test_json_logs_for_log_shippers(make_server):
    server = make_server(["--log-format", "json"])
    server.create_table("ops.logged", [{"name": "id", "data_type": "int64"}])
    with open(server.log_path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    assert lines
    import json
    records = [json.loads(l) for l in lines]  # every line is one JSON object
    assert any(r["fields"].get("message") == "moonlink-host ready" and r["level"] == "INFO" for r in records)
