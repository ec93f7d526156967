"""Starts the real moonlink-host binary on a free loopback port with a fresh data directory."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

BIN = os.environ.get("MOONLINK_BIN") or os.path.expanduser("~/.cache/moonlink-target/debug/moonlink-host")
PLUGIN_DIR = os.environ.get("MOONLINK_PLUGIN_DIR") or os.path.expanduser("~/.cache/moonlink-target/wasm32-wasip2/release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir, extra_args=(), env=None):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        # The S3 test server (`s3server.MotoServer`) when the warehouse is in S3: readers use it.
        self.s3 = None
        self.proc = None
        self.port = None
        self.log_path = data_dir.rstrip("/") + ".log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        assert os.path.exists(BIN), f"{BIN} missing: build it with `cargo build -p moonlink-host`"
        self.port = free_port()
        args = [BIN, "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}", *self.extra_args]
        if "--commit-interval-ms" not in self.extra_args:
            args += ["--commit-interval-ms", "500"]
        if "--plugin-dir" not in self.extra_args:
            args += ["--plugin-dir", PLUGIN_DIR]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moonlink-host exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("moonlink-host did not become healthy: " + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        """kill -9: no shutdown hooks, no final commit."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    # --- API helpers -------------------------------------------------------------------
    def create_table(self, name, schema, expect_status=201, **extra):
        body = {"schema": schema, "table_config": {}, **extra}
        r = requests.post(f"{self.url}/tables/{name}", json=body, timeout=30)
        assert r.status_code == expect_status, r.text
        return r.json()

    def ingest(self, name, data, operation="insert", mode="sync", expect_status=200):
        body = {"operation": operation, "request_mode": mode, "data": data}
        r = requests.post(f"{self.url}/ingest/{name}", json=body, timeout=60)
        assert r.status_code == expect_status, r.text
        return r.json()

    def commit(self, name):
        r = requests.post(f"{self.url}/tables/{name}/commit", timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def table(self, name):
        r = requests.get(f"{self.url}/tables/{name}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def tables(self):
        r = requests.get(f"{self.url}/tables", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["tables"]


@pytest.fixture
def make_server():
    servers = []
    tmp = tempfile.mkdtemp(prefix="moonlink-e2e-")

    def make(extra_args=(), data_dir=None, env=None, s3=None):
        server = Server(data_dir or os.path.join(tmp, f"data{len(servers)}"), extra_args, env)
        server.s3 = s3
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        s.kill()


@pytest.fixture
def server(make_server):
    return make_server()


# --- real Postgres 15 cluster (tests/e2e/pg.py) --------------------------------------------
from pg import PostgresCluster  # noqa: E402


@pytest.fixture
def make_postgres():
    """Factory: make_postgres(wal_level="logical", **kw) -> started PostgresCluster."""
    clusters = []

    def make(wal_level="logical", **kw):
        cluster = PostgresCluster(wal_level=wal_level, **kw)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for c in clusters:
        c.cleanup()


@pytest.fixture
def postgres(make_postgres):
    """A started wal_level=logical cluster with a database `app`."""
    cluster = make_postgres()
    cluster.create_database("app")
    return cluster


# --- S3 and Glue APIs (tests/e2e/s3server.py) ------------------------------------------------
from s3server import MotoServer  # noqa: E402


@pytest.fixture
def moto():
    """A started moto_server (S3 + Glue) on a loopback port."""
    server = MotoServer().start()
    yield server
    server.stop()
