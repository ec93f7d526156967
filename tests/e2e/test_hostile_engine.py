"""The engine under hostile input and faults (issue 10), against the real binary.

Each test names the defect of issue 10 it covers and fails on a server without the fix. Rows
are always read back the way a user would: DuckDB (metadata file from `GET /tables`) and
PyIceberg (the SQLite catalog), and both must agree.
"""
import base64
import datetime
import glob
import os
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import BIN, PLUGIN_DIR, Server, free_port
from readers import duckdb_rows, expect, pyiceberg_rows

ID_NAME = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
]
ID_ONLY = [{"name": "id", "data_type": "int64", "nullable": False}]
# Nothing commits unless a request asks for it: rows stay in the write-ahead log only.
NO_TIMED_COMMITS = ["--commit-interval-ms", "600000"]


# --- helpers -------------------------------------------------------------------------------
def alive(server):
    """The process runs, answers /health, and no worker panicked on the way."""
    assert server.proc is not None and server.proc.poll() is None, server.read_log()
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert "panicked" not in server.read_log(), server.read_log()


def error_of(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text[:1000])
    body = r.json()
    if code is not None:
        assert body["error"] == code, body
    return body


def post_ingest(server, name, data, operation="insert", mode="sync", timeout=60):
    return requests.post(f"{server.url}/ingest/{name}",
                         json={"operation": operation, "request_mode": mode, "data": data}, timeout=timeout)


def both_readers(server, name, columns="*"):
    """The table's rows as DuckDB and PyIceberg read them; asserts they agree."""
    namespace, table = name.split(".")
    info = server.table(name)
    duck = duckdb_rows(info["metadata_location"], columns)
    py = pyiceberg_rows(server.data_dir, namespace, table)
    if columns != "*":
        names = [c["name"] for c in info["schema"]]
        idx = [names.index(c.strip()) for c in columns.split(",")]
        py = expect(*(tuple(row[i] for i in idx) for row in py))
    assert duck == py, (duck[:20], py[:20])
    return duck


def ids(server, name):
    return sorted(r[0] for r in both_readers(server, name, "id"))


def table_entry(server, name):
    found = [t for t in server.tables() if t["name"] == name]
    assert len(found) == 1, [t["name"] for t in server.tables()]
    return found[0]


def b64(raw):
    return base64.b64encode(raw).decode()


# --- 1. a second process on the same data directory (issue 10 #6) ---------------------------
def test_second_process_on_the_same_data_dir_refuses_to_start(make_server):
    """Issue 10 #6: a second moonlink-host on the same --data-dir used to start; when it
    stopped it deleted the first one's live WAL segment and moved the table pointer, so an async
    row the first had answered 200 was gone after a crash. Now the second refuses to start with
    a clear message, and the first keeps serving and loses nothing."""
    first = make_server(NO_TIMED_COMMITS)
    first.create_table("lock.t", ID_NAME)
    assert post_ingest(first, "lock.t", [{"id": 1, "name": "sync"}]).status_code == 200
    assert post_ingest(first, "lock.t", [{"id": 2, "name": "async"}], mode="async").status_code == 200

    port = free_port()
    second = subprocess.Popen(
        [BIN, "--data-dir", first.data_dir, "--listen", f"127.0.0.1:{port}", "--plugin-dir", PLUGIN_DIR,
         "--commit-interval-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        second.terminate()
        out, _ = second.communicate(timeout=30)
        pytest.fail("a second moonlink-host on the same data directory kept running: "
                    + out.decode(errors="replace")[-2000:])
    text = out.decode(errors="replace")
    assert second.returncode != 0, text
    assert "in use by another moonlink-host process" in text, text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)

    # The first keeps serving; one more async row after the refused start.
    alive(first)
    assert post_ingest(first, "lock.t", [{"id": 3, "name": "after"}], mode="async").status_code == 200
    first.kill()
    first.start()
    first.commit("lock.t")
    assert both_readers(first, "lock.t") == expect((1, "sync"), (2, "async"), (3, "after"))
    alive(first)


# --- 2. time values outside a day (issue 10 #2) ---------------------------------------------
TIME_TABLE = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "t", "data_type": "time", "nullable": True},
]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_time_outside_a_day_is_refused_and_the_table_keeps_committing(make_server, mode):
    """Issue 10 #2: a `time` value outside 0..86,399,999,999 µs (-5, 10^15, "24:00:00") was
    answered 200 and logged; then every commit of the table failed forever, also after a restart
    (the WAL replayed it). Now it is refused with 422 naming the column, before the log, and the
    table keeps committing."""
    server = make_server()
    server.create_table("tm.t", TIME_TABLE)
    for bad in (-5, 86400000000, 10**15, "24:00:00"):
        r = post_ingest(server, "tm.t", [{"id": 1, "t": "01:00:00"}, {"id": 2, "t": bad}], mode=mode)
        body = error_of(r, 422)
        assert body["column"] == "t", (bad, body)
        assert body["row"] == 1, (bad, body)
    alive(server)
    # A good row commits and both readers see it (and nothing of the refused requests).
    reply = server.ingest("tm.t", [{"id": 10, "t": "23:59:59.999999"}, {"id": 11, "t": 0}])
    assert reply["snapshot_id"] is not None
    want = [(10, datetime.time(23, 59, 59, 999999)), (11, datetime.time(0, 0))]
    assert both_readers(server, "tm.t") == expect(*want)
    assert table_entry(server, "tm.t")["last_error"] is None
    # A crash and a restart: nothing bad was logged, so the table opens and commits.
    server.ingest("tm.t", [{"id": 12, "t": 86399999999}], mode="async")
    server.kill()
    server.start()
    server.ingest("tm.t", [{"id": 13, "t": "12:30:00"}])
    want += [(12, datetime.time(23, 59, 59, 999999)), (13, datetime.time(12, 30))]
    assert both_readers(server, "tm.t") == expect(*want)
    assert table_entry(server, "tm.t")["last_error"] is None
    alive(server)


# --- 3. a batch decoded against a schema that was dropped meanwhile (issue 10 #3) ------------
def big_ndjson(n):
    return "".join('{"id":%d,"name":"name-%d"}\n' % (i, i) for i in range(n)).encode()


def test_drop_and_recreate_during_a_large_ingest_never_poisons_the_log(make_server):
    """Issue 10 #3: a large ingest decoded against (id, name) while the table was dropped and
    recreated as (id) was answered 500 but its old-shape record was already in the WAL; after
    kill -9 the server could not start ("number of columns(1) must match number of fields(2)").
    Now the ingest is refused (409 schema_changed, or 404 while the name is absent) or succeeds
    if it finished before the drop; never 500, and the server restarts with x.y usable."""
    server = make_server(NO_TIMED_COMMITS)
    body = big_ndjson(200_000)
    path = "/ingest/x.y?operation=insert&request_mode=async"
    headers = {"content-type": "application/x-ndjson"}

    # How long one undisturbed ingest takes, to aim the drop inside it.
    server.create_table("x.y", ID_NAME)
    started = time.monotonic()
    r = requests.post(server.url + path, data=body, headers=headers, timeout=300)
    duration = time.monotonic() - started
    assert r.status_code == 200, r.text[:500]

    statuses = []
    for attempt, fraction in enumerate((0.15, 0.3, 0.45, 0.6, 0.75, 0.9)):
        requests.delete(f"{server.url}/tables/x.y", timeout=60).raise_for_status()
        server.create_table("x.y", ID_NAME)
        result = {}
        url = server.url + path

        def ingest():
            try:
                result["r"] = requests.post(url, data=body, headers=headers, timeout=300)
            except requests.RequestException as e:  # the connection dropped: a crash
                result["e"] = e

        t = threading.Thread(target=ingest)
        t.start()
        time.sleep(duration * fraction)
        d = requests.delete(f"{server.url}/tables/x.y", timeout=60)
        assert d.status_code == 200, d.text
        server.create_table("x.y", ID_ONLY)
        t.join(timeout=300)
        assert "e" not in result, f"attempt {attempt}: {result['e']!r}\n{server.read_log()}"
        r = result["r"]
        statuses.append(r.status_code)
        assert r.status_code in (200, 404, 409), (attempt, r.status_code, r.text[:500])
        if r.status_code == 409:
            assert r.json()["error"] == "schema_changed", r.text[:500]
        if r.status_code == 404:
            assert r.json()["error"] == "table_not_found", r.text[:500]
        alive(server)

        # kill -9 before any commit: whatever reached the log must replay into a working server.
        server.kill()
        server.start()
        assert [c["name"] for c in server.table("x.y")["schema"]] == ["id"]
        assert table_entry(server, "x.y")["last_error"] is None
        reply = server.ingest("x.y", [{"id": attempt}])
        assert reply["snapshot_id"] is not None
        # Only the row written to the new table: nothing of the old shape leaked into it.
        assert both_readers(server, "x.y") == expect((attempt,)), attempt
        alive(server)
    print("race statuses:", statuses)


# --- 4. a damaged write-ahead log fails its table, not the server (issue 10 #4) --------------
def wal_records(path):
    """(offset, length) of each framed record: `len u32 | crc u32 | lsn u64 | payload`."""
    data = open(path, "rb").read()
    records, offset = [], 0
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        if offset + 16 + length > len(data):
            break
        records.append((offset, length))
        offset += 16 + length
    return records


def table_id(data_dir, name):
    con = sqlite3.connect(f"file:{os.path.join(data_dir, 'catalog.db')}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT id FROM moonlink_tables WHERE name = ?", (name,)).fetchone()
    finally:
        con.close()
    assert row, f"{name} not in moonlink_tables"
    return row[0]


def test_a_damaged_log_fails_only_its_table(make_server):
    """Issue 10 #4 (and the "one bad table must never stop the server" rule): a flipped bit in
    a WAL record's length used to make replay stop there and silently drop every later
    acknowledged record of that table. Now the damaged table opens in a failed state with the
    reason (listed by GET /tables, writes answered 503 table_failed), the other tables serve
    and keep their rows, and the failed table can be dropped and its name reused."""
    server = make_server(NO_TIMED_COMMITS)
    server.create_table("d.a", ID_NAME)
    server.create_table("d.b", ID_NAME)
    for i in range(3):
        assert post_ingest(server, "d.a", [{"id": i, "name": "a" * 300}], mode="async").status_code == 200
    for i in range(2):
        assert post_ingest(server, "d.b", [{"id": 100 + i, "name": "b"}], mode="async").status_code == 200
    server.kill()

    a_id = table_id(server.data_dir, "d.a")
    segments = sorted(glob.glob(os.path.join(server.data_dir, "cache", "wal", a_id, "*.wal")))
    damaged = [p for p in segments if len(wal_records(p)) >= 2]
    assert damaged, {p: wal_records(p) for p in segments}
    with open(damaged[0], "r+b") as f:
        f.seek(1)  # a bit of the first record's 4-byte length
        byte = f.read(1)[0]
        f.seek(1)
        f.write(bytes([byte ^ 0x01]))

    server.start()  # must start despite d.a
    alive(server)
    a = table_entry(server, "d.a")
    assert a.get("failed") is True, a
    assert a["last_error"] and "corrupt" in a["last_error"], a
    r = post_ingest(server, "d.a", [{"id": 50}], mode="async")
    error_of(r, 503, "table_failed")
    # Health says so, and why.
    health = requests.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "degraded", health
    assert any("d.a" in reason and "corrupt" in reason for reason in health["reasons"]), health
    b = table_entry(server, "d.b")
    assert not b.get("failed"), b
    server.commit("d.b")
    assert both_readers(server, "d.b") == expect((100, "b"), (101, "b"))
    server.ingest("d.b", [{"id": 102, "name": "later"}])
    assert ids(server, "d.b") == [100, 101, 102]

    # The failed table can be dropped and the name created again.
    r = requests.delete(f"{server.url}/tables/d.a", timeout=60)
    assert r.status_code == 200, r.text
    assert "d.a" not in [t["name"] for t in server.tables()]
    server.create_table("d.a", ID_ONLY)
    server.ingest("d.a", [{"id": 7}])
    assert both_readers(server, "d.a") == expect((7,))
    # And a restart is clean: the old damaged log went with the dropped table.
    server.kill()
    server.start()
    assert not table_entry(server, "d.a").get("failed"), table_entry(server, "d.a")
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "healthy"
    assert both_readers(server, "d.a") == expect((7,))
    assert ids(server, "d.b") == [100, 101, 102]
    alive(server)


# --- 5. crafted key collisions (issue 10 #5) ------------------------------------------------
# The index used to hash a binary key as xxh3_64(key, seed=xxh3_64(len_le_u64, seed=SEED0)).
OLD_SEED0 = 0x6D6F6F6E6C696E6B
# read64(kSecret[0..8]): the first 8 bytes of XXH3's 192-byte default secret
# (b8 fe 6c 39 23 a4 4b be, `XXH3_kSecret` in xxhash.h / DEFAULT_SECRET in xxhash-rust).
XXH3_SECRET_WORD0 = 0xBE4BA423396CFEB8


def old_key_hash(xxhash, key):
    seed = xxhash.xxh3_64_intdigest(struct.pack("<Q", len(key)), seed=OLD_SEED0)
    return xxhash.xxh3_64_intdigest(key, seed=seed)


def colliding_binary_keys():
    """Two distinct 43-byte keys with equal old index hashes. For 17..128-byte inputs XXH3 adds
    mix16B(block, secret, seed) = fold64((read64(block) ^ (read64(secret) + seed)) *
    (read64(block + 8) ^ (read64(secret + 8) - seed))) per 16-byte block; bytes 0..8 chosen as
    read64(secret) + seed zero the first factor, so the block at offset 0 contributes 0 whatever
    bytes 8..16 are. In a 43-byte input bytes 8..10 belong to no other block (the others start
    at 11, 16 and 27), so keys differing only there collide."""
    import xxhash  # tests/requirements.txt

    seed = xxhash.xxh3_64_intdigest(struct.pack("<Q", 43), seed=OLD_SEED0)
    head = struct.pack("<Q", (XXH3_SECRET_WORD0 + seed) % 2**64)
    tail = bytes(range(11, 43))
    a, b = head + b"AAA" + tail, head + b"BBB" + tail
    assert len(a) == len(b) == 43 and a != b
    assert old_key_hash(xxhash, a) == old_key_hash(xxhash, b), "the crafted keys do not collide"
    return a, b


KEYED_BINARY = [
    {"name": "k", "data_type": "binary", "nullable": False},
    {"name": "v", "data_type": "string", "nullable": True},
]


def test_crafted_colliding_keys_stay_distinct_rows(make_server):
    """Issue 10 #5: two binary keys crafted for the same xxh3 value under the fixed public seed:
    inserting B after A was a false 409, and an upsert of one silently replaced the other.
    Now keys are compared as keys (and hashed under a per-table secret): both rows live, an
    upsert of A touches only A, a delete of B removes only B — committed in files and buffered."""
    a, b = colliding_binary_keys()
    server = make_server(NO_TIMED_COMMITS)
    server.create_table("kc.files", KEYED_BINARY, primary_key=["k"])

    # A committed to a data file first, then B against the file index.
    r = post_ingest(server, "kc.files", [{"k": b64(a), "v": "a1"}])
    assert r.status_code == 200, r.text
    r = post_ingest(server, "kc.files", [{"k": b64(b), "v": "b1"}])
    assert r.status_code == 200, r.text  # 409 key_conflict before the fix
    assert r.json()["matched"] == 0, r.text
    assert both_readers(server, "kc.files") == expect((a, "a1"), (b, "b1"))
    r = post_ingest(server, "kc.files", [{"k": b64(a), "v": "a2"}], operation="upsert")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    assert both_readers(server, "kc.files") == expect((a, "a2"), (b, "b1"))
    r = post_ingest(server, "kc.files", [{"k": b64(b)}], operation="delete")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    assert both_readers(server, "kc.files") == expect((a, "a2"))
    # Inserting A again is a real conflict; inserting B again is not.
    error_of(post_ingest(server, "kc.files", [{"k": b64(a), "v": "dup"}]), 409, "key_conflict")
    assert post_ingest(server, "kc.files", [{"k": b64(b), "v": "b2"}]).status_code == 200
    assert both_readers(server, "kc.files") == expect((a, "a2"), (b, "b2"))

    # Both keys in one buffered batch (the buffer's index), then upsert/delete while buffered.
    server.create_table("kc.buffer", KEYED_BINARY, primary_key=["k"])
    r = post_ingest(server, "kc.buffer", [{"k": b64(a), "v": "a1"}, {"k": b64(b), "v": "b1"}], mode="async")
    assert r.status_code == 200, r.text
    r = post_ingest(server, "kc.buffer", [{"k": b64(a), "v": "a2"}], operation="upsert", mode="async")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    server.commit("kc.buffer")
    assert both_readers(server, "kc.buffer") == expect((a, "a2"), (b, "b1"))
    r = post_ingest(server, "kc.buffer", [{"k": b64(b)}], operation="delete", mode="async")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    # Replayed from the log after kill -9, the result is the same.
    server.kill()
    server.start()
    server.commit("kc.buffer")
    assert both_readers(server, "kc.buffer") == expect((a, "a2"))
    assert both_readers(server, "kc.files") == expect((a, "a2"), (b, "b2"))
    alive(server)


# --- 6. key column types (issue 10 #12 and the float-key refusal) ---------------------------
@pytest.mark.parametrize("float_type", ["float64", "float32"])
def test_float_keys_are_refused_at_create(server, float_type):
    """Issue 10 "key column types the index supports are checked at create": a float key made
    Iceberg refuse the identifier field deep inside create (500 internal). Now 400
    invalid_schema naming the column, nothing created, server alive."""
    r = requests.post(f"{server.url}/tables/kf.t", json={
        "schema": [{"name": "f", "data_type": float_type, "nullable": False},
                   {"name": "v", "data_type": "string", "nullable": True}],
        "primary_key": ["f"], "table_config": {}}, timeout=30)
    body = error_of(r, 400, "invalid_schema")
    assert "f" in body["message"], body
    assert requests.get(f"{server.url}/tables/kf.t", timeout=10).status_code == 404
    alive(server)
    server.create_table("kf.t", ID_NAME, primary_key=["id"])  # the name is still free


def test_time_keyed_table_supports_upsert_and_delete(server):
    """Issue 10 #12: a table keyed on a `time` column panicked a worker on every write
    (`unreachable!` in the key hasher): the connection dropped with no response. Now inserts,
    conflicts, upserts and deletes work on time keys."""
    server.create_table("kt.t", [{"name": "t", "data_type": "time", "nullable": False},
                                 {"name": "v", "data_type": "string", "nullable": True}], primary_key=["t"])
    r = post_ingest(server, "kt.t", [{"t": "01:02:03", "v": "one"}, {"t": "04:05:06.5", "v": "two"},
                                     {"t": "23:59:59.999999", "v": "three"}])
    assert r.status_code == 200, r.text
    error_of(post_ingest(server, "kt.t", [{"t": "01:02:03", "v": "again"}]), 409, "key_conflict")
    r = post_ingest(server, "kt.t", [{"t": "01:02:03", "v": "uno"}], operation="upsert")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    r = post_ingest(server, "kt.t", [{"t": "04:05:06.500000"}], operation="delete")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    r = post_ingest(server, "kt.t", [{"t": "00:00:00", "v": "zero"}], operation="upsert", mode="async")
    assert r.status_code == 200 and r.json()["matched"] == 0, r.text
    server.commit("kt.t")
    want = expect((datetime.time(1, 2, 3), "uno"), (datetime.time(23, 59, 59, 999999), "three"),
                  (datetime.time(0, 0), "zero"))
    assert both_readers(server, "kt.t") == want
    server.kill()
    server.start()
    r = post_ingest(server, "kt.t", [{"t": "23:59:59.999999"}], operation="delete")
    assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    assert both_readers(server, "kt.t") == expect((datetime.time(1, 2, 3), "uno"), (datetime.time(0, 0), "zero"))
    alive(server)


# --- 7. names Iceberg cannot represent (issue 10 #10 and #13) -------------------------------
def test_a_column_named_like_a_list_element_is_refused(server):
    """Issue 10 #10/#13: a column `l.element` beside list `l` (whose element's full name is
    `l.element`) got 500 + an ERROR log line from Iceberg's schema check. Now 400
    invalid_schema before anything is created; the server stays up and the name stays free."""
    r = requests.post(f"{server.url}/tables/n.t", json={
        "schema": [{"name": "id", "data_type": "int64", "nullable": False},
                   {"name": "l", "data_type": "list<int64>", "nullable": True},
                   {"name": "l.element", "data_type": "int64", "nullable": True}],
        "table_config": {}}, timeout=30)
    error_of(r, 400, "invalid_schema")
    assert requests.get(f"{server.url}/tables/n.t", timeout=10).status_code == 404
    assert "n.t" not in [t["name"] for t in server.tables()]
    alive(server)
    server.create_table("n.t", [{"name": "id", "data_type": "int64", "nullable": False},
                                {"name": "l", "data_type": "list<int64>", "nullable": True}])
    server.ingest("n.t", [{"id": 1, "l": [1, 2]}])
    assert both_readers(server, "n.t", "id") == expect((1,))


# --- 8. a full disk (issue 10 #4) -----------------------------------------------------------
TMPFS_MB = 32
FILLER_MB = 12


def _row(i):
    return {"id": i, "name": f"row-{i}-" + "x" * 1000}


class FullDisk:
    """A small tmpfs as the data directory, with a filler file to free later."""

    def __init__(self):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        self.root = tempfile.mkdtemp(prefix="moonlink-tmpfs-")
        self.mount = os.path.join(self.root, "data")
        os.mkdir(self.mount)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", self.mount],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
        self.filler = os.path.join(self.mount, "filler.bin")
        with open(self.filler, "wb") as f:
            f.write(b"\0" * (FILLER_MB * 1024 * 1024))
        self.server = Server(self.mount, NO_TIMED_COMMITS)

    def free(self):
        os.remove(self.filler)

    def close(self):
        try:
            self.server.kill()
        finally:
            subprocess.run(["umount", "-l", self.mount], check=False)
            shutil.rmtree(self.root, ignore_errors=True)

    def fill(self, table):
        """Async batches of ~100 KB until three in a row are refused with 503 (a smaller
        batch may still fit after a refusal). Returns (acked ids, refused ids, next id)."""
        acked, refused, next_id, in_a_row = set(), set(), 0, 0
        for _ in range(2000):
            batch = [_row(i) for i in range(next_id, next_id + 100)]
            next_id += 100
            r = post_ingest(self.server, table, batch, mode="async")
            assert r.status_code in (200, 503), (r.status_code, r.text[:500])
            if r.status_code == 200:
                acked.update(row["id"] for row in batch)
                in_a_row = 0
            else:
                refused.update(row["id"] for row in batch)
                in_a_row += 1
                if in_a_row == 3:
                    break
        else:
            pytest.fail("the disk never filled")
        return acked, refused, next_id


def test_a_full_disk_answers_503_and_loses_nothing_acknowledged():
    """Issue 10 #4: when the WAL's disk filled, the failed write left a partial record and later
    rows were still answered 200; after kill -9 only the rows before the partial record existed
    (replay stopped there). Now a full disk answers 503 (the server keeps answering), and every
    row answered 200 — before the disk filled and after space is freed — survives kill -9."""
    disk = FullDisk()
    try:
        server = disk.server.start()
        server.create_table("full.t", ID_NAME)
        acked, refused, next_id = disk.fill("full.t")
        assert len(acked) > 1000, len(acked)
        # While full: still answering, no crash.
        alive(server)
        assert table_entry(server, "full.t")["name"] == "full.t"
        batch = [_row(i) for i in range(next_id, next_id + 100)]
        next_id += 100
        r = post_ingest(server, "full.t", batch, mode="async")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable", r.text
        assert r.headers.get("retry-after"), r.headers
        refused.update(row["id"] for row in batch)

        disk.free()
        # Space is back: requests succeed again (the log continues in a new segment).
        for _ in range(5):
            batch = [_row(i) for i in range(next_id, next_id + 100)]
            next_id += 100
            r = post_ingest(server, "full.t", batch, mode="async")
            assert r.status_code == 200, r.text
            acked.update(row["id"] for row in batch)
        alive(server)

        server.kill()
        server.start()
        server.commit("full.t")
        got = ids(server, "full.t")
        assert len(got) == len(set(got)), "duplicate rows after recovery"
        missing = acked - set(got)
        assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:10]}"
        assert not (set(got) & refused), f"rows answered 503 were written: {sorted(set(got) & refused)[:10]}"
        # And the table keeps working after the recovery.
        server.ingest("full.t", [{"id": next_id, "name": "last"}])
        assert next_id in ids(server, "full.t")
        alive(server)
    finally:
        disk.close()


def test_rows_answered_503_for_a_full_disk_are_never_duplicated():
    """Issue 10 #4: a batch answered 503 because its log write failed has an unknown outcome (as
    any 5xx: it was buffered before the write failed, and is committed unless the process dies
    first — see README). What must hold without a crash in between: every row answered 200 is
    committed, nothing appears twice, and the table keeps committing once space is back."""
    disk = FullDisk()
    try:
        server = disk.server.start()
        server.create_table("full.t", ID_NAME)
        acked, refused, next_id = disk.fill("full.t")
        disk.free()
        r = post_ingest(server, "full.t", [_row(next_id)], mode="sync")
        assert r.status_code == 200, r.text
        acked.add(next_id)
        got = ids(server, "full.t")
        assert len(got) == len(set(got)), "duplicate rows"
        assert acked <= set(got), f"{len(acked - set(got))} acknowledged rows missing"
        assert set(got) <= acked | refused, "rows nobody sent"
        alive(server)
    finally:
        disk.close()
