"""The compiled-plugin cache is shared by data directories (issue 12: a fresh data directory
paid ~0.25 s per plugin to compile it again at every start, a third of a 2M-row initial copy).

By default it lives in the user's cache (`$XDG_CACHE_HOME/moonlink/plugins`, else
`~/.cache/moonlink/plugins`); `--plugin-cache-dir` moves it. Entries stay verified by the HMAC
key kept beside them, which several hosts adopt rather than overwrite."""
import glob
import os

import pytest


def entries(cache):
    """Entry path -> inode: an entry is rewritten by write-then-rename (a new inode), while a
    use only refreshes its modification time (the cache's least-recently-used order)."""
    return {path: os.stat(path).st_ino for path in glob.glob(os.path.join(cache, "*.cwasm"))}


@pytest.mark.parametrize("how", ["flag", "home", "xdg"])
def test_a_fresh_data_dir_reuses_the_compiled_plugins(make_server, tmp_path, how):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": ""}
    args = []
    if how == "flag":
        cache = str(tmp_path / "compiled")
        args = ["--plugin-cache-dir", cache]
    elif how == "home":
        cache = str(home / ".cache" / "moonlink" / "plugins")
    else:
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
        cache = str(tmp_path / "xdg" / "moonlink" / "plugins")
    first = make_server(args, data_dir=str(tmp_path / "a"), env=env)
    compiled = entries(cache)
    assert compiled, f"no compiled plugin in {cache}"
    key = open(os.path.join(cache, "cache.key"), "rb").read()
    assert oct(os.stat(os.path.join(cache, "cache.key")).st_mode & 0o777) == "0o600"
    # A second host on another, fresh data directory, while the first still runs.
    second = make_server(args, data_dir=str(tmp_path / "b"), env=env)
    assert entries(cache) == compiled, "the second host compiled and rewrote the plugins again"
    assert open(os.path.join(cache, "cache.key"), "rb").read() == key
    for server in (first, second):
        assert not os.path.exists(os.path.join(server.data_dir, "cache", "plugins"))
        server.create_table("demo.t", [{"name": "id", "data_type": "int64", "nullable": False}])
        server.ingest("demo.t", [{"id": 1}, {"id": 2}])
        assert server.table("demo.t")["total_records"] == 2


def test_a_tampered_entry_is_recompiled_not_loaded(make_server, tmp_path):
    cache = str(tmp_path / "compiled")
    args = ["--plugin-cache-dir", cache]
    make_server(args, data_dir=str(tmp_path / "a")).kill()
    for path in entries(cache):
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
    tampered = entries(cache)
    server = make_server(args, data_dir=str(tmp_path / "b"))
    after = entries(cache)
    assert set(after) == set(tampered)
    assert all(after[p] != tampered[p] for p in after), "a tampered entry was kept"
    server.create_table("demo.t", [{"name": "id", "data_type": "int64", "nullable": False}])
    server.ingest("demo.t", [{"id": 1}])
    assert server.table("demo.t")["total_records"] == 1
