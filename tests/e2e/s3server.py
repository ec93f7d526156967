"""A real S3 (and Glue) API for the tests: `moto_server` from PyPI on a loopback port.

`MotoServer().start()` runs one server; `bucket(name)` creates a bucket; `env()` is the AWS
environment a moonlink-host (or boto3/PyIceberg/DuckDB) needs to reach it. Credentials are any
non-empty strings.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import requests

REGION = "us-east-1"
ACCESS_KEY = "moonlink-test-key"
SECRET_KEY = "moonlink-test-secret"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, env=None):
        self.port = None
        self.proc = None
        self.extra_env = dict(env or {})

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.extra_env},
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                requests.get(self.endpoint + "/moto-api/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def client(self, service="s3"):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def bucket(self, name):
        """Creates bucket `name` unless it exists."""
        s3 = self.client()
        if name not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket=name)
        return name

    def keys(self, bucket, prefix=""):
        """Every object key under `prefix` (paginated)."""
        s3 = self.client()
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def env(self):
        """Environment for a moonlink-host talking to this server (standard AWS variables)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def host_args(self, endpoint=None):
        """moonlink-host flags for an S3-compatible server on loopback."""
        return ["--s3-endpoint", endpoint or self.endpoint, "--s3-region", REGION, "--s3-path-style", "--s3-allow-http"]

    def pyiceberg_props(self):
        return {
            "s3.endpoint": self.endpoint,
            "s3.region": REGION,
            "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY,
            "s3.path-style-access": "true",
        }

    def duckdb_setup(self, con):
        """Points a DuckDB connection (httpfs loaded) at this server."""
        con.execute(
            f"""CREATE OR REPLACE SECRET moto (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}',
                REGION '{REGION}', ENDPOINT '127.0.0.1:{self.port}', URL_STYLE 'path', USE_SSL false)"""
        )
