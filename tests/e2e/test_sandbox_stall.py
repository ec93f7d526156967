"""A plugin blocked in a host call (a server that accepts and never answers) still hits its time
limit: the source restarts with back-off instead of staying "starting" forever, and SIGTERM
stops the host within a bounded time."""
import os
import signal
import socket
import threading
import time

import requests

from conftest import PLUGIN_DIR
from readers import pyiceberg_rows
from test_sources import write_config

TIMEOUT_MS = 1500


class SilentServer:
    """Accepts TCP connections and never sends a byte (a stalled Postgres)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        for c in self.accepted:
            c.close()
        self.sock.close()


def statuses(server):
    return {p["name"]: p for p in requests.get(server.url + "/plugins", timeout=5).json()["plugins"]}


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


def test_stalled_upstreams_time_out_and_shutdown_is_bounded(make_server, tmp_path):
    pg = SilentServer()
    raw = SilentServer()
    try:
        # The plugin's own waits are set far beyond the host's limit: only the host's deadline
        # on blocked host calls can end them.
        pg_config = write_config(tmp_path, "pg.toml", f"""
name = "stalled-pg"
[settings]
host = "127.0.0.1"
port = {pg.port}
user = "postgres"
password = "secret"
database = "app"
tables = ["public.t"]
slot = "moonlink"
connect_timeout_ms = 600000
reply_timeout_ms = 600000
[poll]
max_rows = 100
timeout_ms = 100
""")
        block_config = write_config(tmp_path, "block.toml", f"""
name = "stalled-read"
[settings]
table = "stall.t"
rows = 10
fault = "block"
fault_at = 0
block_addr = "127.0.0.1:{raw.port}"
[capabilities]
network = ["127.0.0.1:{raw.port}"]
""")
        server = make_server([
            # Only the shutdown commit can make the HTTP rows below visible.
            "--commit-interval-ms", "600000",
            "--plugin-timeout-ms", str(TIMEOUT_MS),
            "--plugin", os.path.join(PLUGIN_DIR, "postgres_cdc.wasm"), "--config", pg_config,
            "--plugin", "faulty_source.wasm", "--config", block_config,
        ])

        def failed(name):
            status = statuses(server).get(name)
            if status and status["state"] in ("restarting", "failed") and status["last_error"]:
                return status
            return None

        started = time.time()
        pg_status = wait_for("postgres_cdc reporting a fault", lambda: failed("stalled-pg"), 15)
        assert time.time() - started < 15
        assert f"timed out after {TIMEOUT_MS} ms" in pg_status["last_error"], pg_status
        assert pg_status["last_error"].startswith("open failed"), pg_status
        read_status = wait_for("faulty_source reporting a fault", lambda: failed("stalled-read"), 15)
        assert f"timed out after {TIMEOUT_MS} ms" in read_status["last_error"], read_status
        assert read_status["last_error"].startswith("poll failed"), read_status

        # Restarts with back-off: the stalled server sees new connections, the count grows.
        wait_for("a restart", lambda: statuses(server)["stalled-pg"]["restarts"] >= 2, 20)
        assert len(pg.accepted) >= 2
        wait_for("a restart", lambda: statuses(server)["stalled-read"]["restarts"] >= 2, 20)
        assert requests.get(server.url + "/health", timeout=5).status_code == 200

        server.create_table("stall.http", [{"name": "id", "data_type": "int64", "nullable": False}])
        server.ingest("stall.http", [{"id": i} for i in range(10)], mode="async")

        # SIGTERM while both plugins are blocked in host calls: a bounded shutdown that still
        # commits what was applied.
        before = len(pg.accepted)
        wait_for("the next blocked attempt", lambda: len(pg.accepted) > before, 40)
        proc = server.proc
        stop_at = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.time() - stop_at
        server.proc = None
        assert code == 0, server.read_log()
        assert took < 15, took
        log = server.read_log()
        assert "shutting down" in log, log
        assert sorted(r[0] for r in pyiceberg_rows(server.data_dir, "stall", "http")) == list(range(10)), log
    finally:
        pg.close()
        raw.close()
