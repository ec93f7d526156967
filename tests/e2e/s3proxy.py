"""A fault-injecting, byte-counting HTTP proxy in front of the S3 test server.

moonlink-host talks to the proxy as its S3 endpoint; the proxy forwards each request to moto
and, on a seeded random choice, misbehaves the way real object stores and networks do:

- `error`: answers 503 SlowDown without forwarding;
- `error_after`: forwards (the write happens) and then answers 500 — the client cannot tell;
- `reset`: closes the connection without an answer (before or after forwarding);
- `stall`: holds the request longer than the client's timeout, then drops it;
- `slow`: forwards and trickles the answer out slowly.

`down()` closes the listener (connections refused) and `up()` reopens it on the same port.
`get_bytes` counts response body bytes of successful GETs, by object key, to measure what the
host downloads.
"""
import http.client
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("error", "error_after", "reset", "stall", "slow")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        self.connection.close()

    def _answer(self, status, headers, body, slow=False):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if slow and body:
            step = max(1, len(body) // 10)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(body)

    def _forward(self, body):
        proxy = self.server.proxy
        conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def setup(self):
        super().setup()
        with self.server.proxy.lock:
            self.server.proxy.conns.add(self.connection)

    def _handle(self):
        proxy = self.server.proxy
        body = self._body()
        if proxy.is_down:
            self._reset()
            return
        fault = proxy.choose(self.command, self.path)
        if fault == "error":
            self._answer(503, [("Content-Type", "application/xml")],
                         b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>")
            return
        if fault == "reset" and proxy.coin():
            self._reset()
            return
        if fault == "stall":
            time.sleep(proxy.stall_seconds)
            self._reset()
            return
        status, headers, data = self._forward(body)
        if fault == "error_after":
            self._answer(500, [("Content-Type", "application/xml")],
                         b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
            return
        if fault == "reset":
            self._reset()
            return
        if self.command == "GET" and 200 <= status < 300:
            proxy.count(self.path, len(data))
        self._answer(status, headers, data, slow=(fault == "slow"))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultProxy:
    def __init__(self, upstream_port, seed=0, rate=0.0, faults=FAULTS, stall_seconds=4.0):
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.rate = rate
        self.faults = tuple(faults)
        self.stall_seconds = stall_seconds
        self.lock = threading.Lock()
        self.injected = {f: 0 for f in FAULTS}
        self.get_bytes = {}
        self.conns = set()
        self.is_down = False
        self.port = None
        self.httpd = None
        self.thread = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def choose(self, method, path):
        with self.lock:
            if self.rate and self.rng.random() < self.rate:
                fault = self.rng.choice(self.faults)
                self.injected[fault] += 1
                return fault
            return None

    def coin(self):
        with self.lock:
            return self.rng.random() < 0.5

    def count(self, path, n):
        key = path.split("?")[0]
        with self.lock:
            self.get_bytes[key] = self.get_bytes.get(key, 0) + n

    def downloaded(self, suffixes=(".parquet", ".puffin")):
        with self.lock:
            return sum(n for k, n in self.get_bytes.items() if k.endswith(suffixes))

    def up(self):
        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.is_down = False
        self.httpd = Server(("127.0.0.1", self.port or 0), _Handler)
        self.httpd.proxy = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def down(self):
        """Refuses new connections and cuts the open ones (keep-alive pools included)."""
        self.is_down = True
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
