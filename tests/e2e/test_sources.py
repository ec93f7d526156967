"""Source plugins end to end: datagen, transform chains, kill -9 exactly-once, faults."""
import os
import random
import re
import time

import requests

from conftest import PLUGIN_DIR
from readers import duckdb_rows, pyiceberg_rows

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ["click", "view", "purchase", "signup"]
MASK64 = (1 << 64) - 1


def mix(seed, row):
    """datagen's splitmix64, to predict its rows exactly."""
    z = seed ^ ((row * 0x9E3779B97F4A7C15) & MASK64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def plugin_status(server, name, timeout=60, until=("finished",)):
    deadline = time.time() + timeout
    while time.time() < deadline:
        plugins = {p["name"]: p for p in requests.get(server.url + "/plugins").json()["plugins"]}
        status = plugins.get(name)
        if status and status["state"] in until:
            return status
        time.sleep(0.1)
    raise AssertionError(f"plugin {name} never reached {until}: {status}\n{server.read_log()}")


def ids(server, table):
    loc = server.table(table)["metadata_location"]
    duck = sorted(r[0] for r in duckdb_rows(loc, "id"))
    ns, name = table.rsplit(".", 1)
    py = sorted(r[0] for r in pyiceberg_rows(server.data_dir, ns, name))
    assert duck == py
    return duck


def write_config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_datagen_example_config_produces_exactly_its_rows(make_server):
    server = make_server(["--plugin", "datagen.wasm", "--config", os.path.join(ROOT, "plugins/datagen/example.toml")])
    status = plugin_status(server, "datagen")
    assert status["acked_checkpoint"] == "100000" and status["rows"] == 100000
    assert ids(server, "demo.events") == list(range(100000))
    row = duckdb_rows(server.table("demo.events")["metadata_location"], "id, kind, user_id")[:1]
    r = mix(42, 0)
    assert row == [(0, KINDS[(r >> 20) % 4], r % 100000)]


def test_filter_and_mask_chain(make_server):
    server = make_server(["--plugin", "datagen.wasm", "--config", os.path.join(ROOT, "plugins/filter/example.toml")])
    plugin_status(server, "purchases")
    expected = [i for i in range(20000) if KINDS[(mix(7, i) >> 20) % 4] == "purchase"]
    assert 0 < len(expected) < 20000
    assert ids(server, "demo.purchases") == expected
    notes = [r[0] for r in duckdb_rows(server.table("demo.purchases")["metadata_location"], "note")]
    assert all(n is None or re.fullmatch(r"[0-9a-f]{64}", n) for n in notes)
    assert any(n is not None for n in notes)


def test_mask_example_hashes_emails(make_server):
    server = make_server(["--plugin", "datagen.wasm", "--config", os.path.join(ROOT, "plugins/mask/example.toml")])
    plugin_status(server, "users-masked")
    rows = duckdb_rows(server.table("demo.users")["metadata_location"], "id, email")
    assert len(rows) == 10000
    assert all(email is None or re.fullmatch(r"[0-9a-f]{64}", email) for _, email in rows)
    assert server.table("demo.users")["primary_key"] == ["id"]


def test_kill_minus_9_while_streaming_is_exactly_once(make_server, tmp_path):
    config = write_config(tmp_path, "stream.toml", """
name = "stream"
[settings]
table = "demo.stream"
rows = 40000
rate = 20000
seed = 3
[poll]
max_rows = 500
timeout_ms = 100
""")
    server = make_server(["--plugin", "datagen.wasm", "--config", config])
    rng = random.Random(99)
    for _ in range(2):
        time.sleep(rng.uniform(0.4, 1.2))
        server.kill()
        server.start()
    plugin_status(server, "stream", timeout=60)
    assert ids(server, "demo.stream") == list(range(40000))


def test_a_source_resumes_after_a_graceful_restart(make_server, tmp_path):
    config = write_config(tmp_path, "slow.toml", """
name = "slow"
[settings]
table = "demo.slow"
rows = 6000
rate = 5000
""")
    server = make_server(["--plugin", "datagen.wasm", "--config", config])
    time.sleep(0.5)
    server.restart()
    status = plugin_status(server, "slow")
    assert status["acked_checkpoint"] == "6000"
    assert ids(server, "demo.slow") == list(range(6000))


def test_faults_restart_the_source_and_lose_nothing(make_server, tmp_path):
    faults = ["trap", "loop", "oom", "malformed", "error"]
    configs = []
    for fault in faults:
        configs += ["--plugin", "faulty_source.wasm", "--config", write_config(tmp_path, f"{fault}.toml", f"""
name = "{fault}"
[settings]
table = "faults.{fault}"
rows = 5000
fault = "{fault}"
fault_at = 2500
[poll]
max_rows = 1000
""")]
    server = make_server(["--plugin-timeout-ms", "1000", "--plugin-memory-mib", "64", *configs])
    for fault in faults:
        status = plugin_status(server, fault, timeout=90)
        assert status["restarts"] >= 1, status
        assert status["last_error"], status
        assert ids(server, f"faults.{fault}") == list(range(5000)), fault
    assert requests.get(server.url + "/health").json()["status"] == "healthy"


def test_invalid_component_is_reported_and_the_host_keeps_running(make_server, tmp_path):
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"\0asm\x01\0\0\0 definitely not a component")
    config = write_config(tmp_path, "g.toml", "[settings]\n")
    server = make_server(["--plugin", str(garbage), "--config", config])
    status = plugin_status(server, "garbage", until=("failed",))
    assert "garbage.wasm" in status["last_error"]
    assert requests.get(server.url + "/health").status_code == 200


def test_one_config_file_describes_several_plugins(make_server, tmp_path):
    config = write_config(tmp_path, "two.toml", """
[[plugins]]
name = "a"
path = "datagen.wasm"
settings = { table = "multi.a", rows = 300 }

[[plugins]]
name = "b"
path = "datagen.wasm"
settings = { table = "multi.b", rows = 500, preset = "users" }
""")
    server = make_server(["--config", config])
    plugin_status(server, "a")
    plugin_status(server, "b")
    assert ids(server, "multi.a") == list(range(300))
    assert ids(server, "multi.b") == list(range(500))


def test_sandbox_grants_only_listed_addresses_and_directories(make_server, tmp_path):
    import socket

    allowed, other = socket.socket(), socket.socket()
    for s in (allowed, other):
        s.bind(("127.0.0.1", 0))
        s.listen(4)
    allowed_addr = "127.0.0.1:%d" % allowed.getsockname()[1]
    other_addr = "127.0.0.1:%d" % other.getsockname()[1]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi")
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    config = write_config(tmp_path, "probe.toml", f"""
name = "probe"
[settings]
table = "sandbox.probe"
rows = 10
connect = ["{allowed_addr}", "{other_addr}"]
read = ["/data/hello.txt", "{secret}"]
[capabilities]
network = ["{allowed_addr}"]
directories = [{{ host = "{shared}", guest = "/data" }}]
""")
    server = make_server(["--plugin", "faulty_source.wasm", "--config", config])
    plugin_status(server, "probe")
    log = server.read_log()
    assert f"probe connect {allowed_addr}: ok" in log, log
    assert f"probe connect {other_addr}: denied" in log, log
    assert "probe read /data/hello.txt: ok" in log, log
    assert f"probe read {secret}: denied" in log, log
    # Without capabilities, nothing gets through.
    bare = write_config(tmp_path, "bare.toml", f"""
name = "bare"
[settings]
table = "sandbox.bare"
rows = 10
connect = ["{allowed_addr}"]
read = ["/data/hello.txt"]
""")
    server2 = make_server(["--plugin", "faulty_source.wasm", "--config", bare])
    plugin_status(server2, "bare")
    log = server2.read_log()
    assert f"probe connect {allowed_addr}: denied" in log, log
    assert "probe read /data/hello.txt: denied" in log, log
    allowed.close()
    other.close()


def test_per_plugin_limits_override_the_host_defaults(make_server, tmp_path):
    # The host default would let a looping call run for ten minutes; this plugin gets 300 ms.
    config = write_config(tmp_path, "limited.toml", """
name = "limited"
[settings]
table = "limits.loop"
rows = 3000
fault = "loop"
fault_at = 1500
[capabilities]
timeout_ms = 300
memory_mib = 64
[poll]
max_rows = 1000
""")
    server = make_server(["--plugin-timeout-ms", "600000", "--plugin", "faulty_source.wasm", "--config", config])
    status = plugin_status(server, "limited", timeout=60)
    assert status["restarts"] >= 1 and "time limit" in status["last_error"], status
    assert ids(server, "limits.loop") == list(range(3000))
