"""Self-test for the Postgres harness in pg.py."""
import subprocess

import pytest

from pg import PsqlError, parse_lsn, format_lsn


def test_roundtrip_and_wal_level(postgres):
    postgres.execute("CREATE TABLE t (id int primary key, v text, b bytea, ts timestamptz)", db="app")
    postgres.execute("INSERT INTO t VALUES (1, 'a', '\\x0102', '2024-01-02 03:04:05+00'), "
                     "(2, NULL, NULL, NULL), (3, 'multi\nline|x', '', now())", db="app")
    rows = postgres.psql("SELECT id, v, b, ts FROM t ORDER BY id", db="app")
    assert rows[0] == ("1", "a", "\\x0102", "2024-01-02 03:04:05+00")
    assert rows[1] == ("2", None, None, None)
    assert rows[2][:3] == ("3", "multi\nline|x", "\\x")
    assert postgres.psql("SELECT '' AS e, 'x'") == [("", "x")]
    assert postgres.psql("SELECT 1 WHERE false") == []
    assert postgres.scalar("SHOW wal_level") == "logical"
    with pytest.raises(PsqlError):
        postgres.execute("SELECT * FROM no_such_table", db="app")


def test_lsn_helpers(postgres):
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    lsn = postgres.current_wal_lsn()
    postgres.execute("SELECT pg_create_logical_replication_slot('s1', 'pgoutput')", db="app")
    assert postgres.slot_confirmed_lsn("s1") >= lsn
    assert postgres.slot_confirmed_lsn("nope") is None
    assert [s["slot_name"] for s in postgres.replication_slots()] == ["s1"]
    assert postgres.terminate_walsenders() == 0
    postgres.drop_slot("s1")
    assert postgres.replication_slots() == []


def test_md5_and_trust_roles(postgres):
    postgres.create_md5_role("md5user", "md5pass")
    assert postgres.scalar("SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'md5user'") == "t"
    assert postgres.psql("SELECT current_user", db="app", user="md5user", password="md5pass") == [("md5user",)]
    with pytest.raises(PsqlError):
        postgres.psql("SELECT 1", db="app", user="md5user", password="wrong")

    postgres.create_trust_role("trustuser")
    assert postgres.psql("SELECT current_user", db="app", user="trustuser", password="") == [("trustuser",)]

    # scram is still the default for everybody else
    postgres.create_role("scramuser", "scrampass")
    assert postgres.psql("SELECT current_user", user="scramuser", password="scrampass") == [("scramuser",)]
    with pytest.raises(PsqlError):
        postgres.psql("SELECT 1", user="scramuser", password="wrong")


def test_env_for_subprocess(postgres):
    out = subprocess.run([postgres._bin("psql"), "-X", "-A", "-t", "-c", "SELECT current_database()"],
                         env=postgres.env(db="app"), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "app"
    assert postgres.dsn == f"postgresql://postgres:{postgres.password}@127.0.0.1:{postgres.port}/postgres"


def test_restart_and_kill_keep_data(postgres):
    postgres.execute("CREATE TABLE k (id int); INSERT INTO k VALUES (1), (2)", db="app")
    postgres.restart()
    assert postgres.psql("SELECT count(*) FROM k", db="app") == [("2",)]
    # synchronous_commit=off: a commit is only durable once its WAL is flushed (walwriter,
    # ~200ms) -- CHECKPOINT in its own statement forces that before the crash.
    postgres.execute("INSERT INTO k VALUES (3)", db="app")
    postgres.execute("CHECKPOINT", db="app")
    postgres.kill()
    assert postgres.postmaster_pid() is None
    postgres.start()
    assert postgres.psql("SELECT count(*) FROM k", db="app") == [("3",)]


def test_replica_wal_level(make_postgres):
    pg = make_postgres(wal_level="replica")
    assert pg.scalar("SHOW wal_level") == "replica"


def test_synchronous_commit_override(make_postgres):
    pg = make_postgres(extra_conf={"synchronous_commit": "on"})
    assert pg.scalar("SHOW synchronous_commit") == "on"
    assert pg.scalar("SHOW fsync") == "off"


def test_missing_initdb_message(monkeypatch):
    import pg
    monkeypatch.setattr(pg, "PG_BIN", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install -y postgresql-15"):
        pg.PostgresCluster()
