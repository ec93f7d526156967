"""A throwaway, real Postgres 15 cluster for end-to-end tests.

Usage::

    pg = PostgresCluster(wal_level="logical").start()
    pg.create_database("app")
    pg.execute("CREATE TABLE t (id int primary key, v text)", db="app")
    rows = pg.psql("SELECT id, v FROM t ORDER BY id", db="app")   # [("1", "a"), ("2", None)]
    pg.cleanup()

Everything psql returns is a string (or None for SQL NULL): bytea comes back as
'\\x...' hex, timestamps in ISO format, booleans as 't'/'f'.

Runs initdb/pg_ctl as the `postgres` OS user when we are root (initdb refuses root).
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin"
PG_OS_USER = "postgres"

# Separators/markers used to parse psql's unaligned output. Control characters that do not
# appear in normal test data; a value containing them would be mis-parsed.
FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
NULL_MARKER = "\x1dNULL\x1d"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_lsn(text):
    """'16/B374D848' -> int. None/'' -> None."""
    if text is None or text == "":
        return None
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value):
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class PsqlError(RuntimeError):
    def __init__(self, sql, returncode, stderr):
        super().__init__(f"psql failed ({returncode}) for {sql!r}:\n{stderr}")
        self.sql = sql
        self.returncode = returncode
        self.stderr = stderr


class PostgresCluster:
    host = "127.0.0.1"
    user = "postgres"

    def __init__(self, wal_level="logical", port=None, password="moonlink-test-pw", extra_conf=None,
                 start_timeout=30.0):
        self.bin = PG_BIN
        if not os.path.exists(self._bin("initdb")):
            raise RuntimeError(
                f"Postgres 15 initdb not found at {self._bin('initdb')}: "
                "install it with `apt-get install -y postgresql-15`")
        self.wal_level = wal_level
        self.port = port or free_port()
        self.password = password
        self.extra_conf = dict(extra_conf or {})
        self.start_timeout = start_timeout
        self._as_root = os.geteuid() == 0
        self.tmp = tempfile.mkdtemp(prefix="moonlink-pg-")
        os.chmod(self.tmp, 0o755)
        self.data_dir = os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.data_dir, "server.log")
        self._hba_extra = []  # user-added lines, tried before the generic ones
        self._initialized = False
        self._running = False

    # --- process plumbing ----------------------------------------------------------------
    def _bin(self, name):
        return os.path.join(self.bin, name)

    def _as_pg_user(self, args):
        if self._as_root:
            return ["runuser", "-u", PG_OS_USER, "--", *args]
        return list(args)

    def _chown(self, path):
        if self._as_root:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run_pg(self, args, timeout=120, check=True):
        proc = subprocess.run(self._as_pg_user(args), cwd=self.tmp, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"--- server log tail ---\n{self.read_log()}")
        return proc

    def read_log(self, limit=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-limit:]
        except OSError:
            return "<no server log>"

    # --- lifecycle -----------------------------------------------------------------------
    def _initdb(self):
        os.mkdir(self.data_dir, 0o700)
        self._chown(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        pwfile = os.path.join(self.tmp, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        self._chown(pwfile)
        os.chmod(pwfile, 0o600)
        try:
            self._run_pg([self._bin("initdb"), "-D", self.data_dir, "-U", self.user, "--pwfile", pwfile,
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                          "--locale=C", "--no-sync"])
        finally:
            os.unlink(pwfile)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.data_dir}'",
            "wal_level": self.wal_level,
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'128MB'",
            "max_connections": "50",
            "password_encryption": "'scram-sha-256'",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        for k, v in self.extra_conf.items():
            conf[k] = v if isinstance(v, str) else str(v)
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n# --- moonlink e2e harness ---\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        self._write_hba()
        self._initialized = True

    def _write_hba(self):
        lines = [
            "# written by tests/e2e/pg.py",
            "local   all          all                    trust",
            "local   replication  all                    trust",
            *self._hba_extra,
            "host    all          all   127.0.0.1/32     scram-sha-256",
            "host    replication  all   127.0.0.1/32     scram-sha-256",
        ]
        path = os.path.join(self.data_dir, "pg_hba.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._chown(path)
        os.chmod(path, 0o600)

    def start(self):
        if not self._initialized:
            self._initdb()
        self._run_pg([self._bin("pg_ctl"), "start", "-D", self.data_dir, "-l", self.log_path,
                      "-w", "-t", str(int(self.start_timeout))], timeout=self.start_timeout + 30, check=False)
        self._running = True
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.time() + self.start_timeout
        last = None
        while time.time() < deadline:
            try:
                if self.psql("SELECT 1", timeout=5) == [("1",)]:
                    return
            except (PsqlError, subprocess.TimeoutExpired) as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"postgres on port {self.port} did not become ready: {last}\n"
                           f"--- server log tail ---\n{self.read_log()}")

    def stop(self, mode="fast"):
        if not self._initialized:
            return
        pid = self.postmaster_pid()
        if pid is None:
            self._running = False
            return
        self._run_pg([self._bin("pg_ctl"), "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "60"],
                     timeout=90, check=False)
        self._wait_pid_gone(pid, 30)
        self._running = False

    def restart(self, mode="fast"):
        self.stop(mode)
        return self.start()

    def postmaster_pid(self):
        """Pid of the running postmaster, from postmaster.pid (None if not running)."""
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def kill(self):
        """SIGKILL the postmaster and its children (a crash; recovery runs on next start())."""
        pid = self.postmaster_pid()
        if pid is None:
            self._running = False
            return
        children = _children_of(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            for c in children:
                try:
                    os.kill(c, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except PermissionError:
            # Not allowed to signal it (not root, not owner): fall back to an immediate stop.
            self._run_pg([self._bin("pg_ctl"), "stop", "-D", self.data_dir, "-m", "immediate", "-w"],
                         check=False)
        self._wait_pid_gone(pid, 30)
        for c in children:
            self._wait_pid_gone(c, 10)
        # The dead postmaster may linger as an unreaped zombie (its parent is whatever reaped
        # pg_ctl's fork), and postgres treats a zombie's pid in postmaster.pid as "still running".
        # It is dead, so drop the stale lock file.
        # Same for the unix-socket lock file in the socket directory.
        if not _pid_alive(pid):
            for name in ("postmaster.pid", f".s.PGSQL.{self.port}.lock", f".s.PGSQL.{self.port}"):
                try:
                    os.unlink(os.path.join(self.data_dir, name))
                except FileNotFoundError:
                    pass
        self._running = False

    @staticmethod
    def _wait_pid_gone(pid, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and _pid_alive(pid):
            time.sleep(0.05)

    def cleanup(self):
        try:
            if self._initialized and self.postmaster_pid() is not None:
                try:
                    self.stop("immediate")
                except Exception:
                    self.kill()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # --- connection details --------------------------------------------------------------
    def dsn_for(self, db="postgres", user=None, password=None):
        user = user or self.user
        password = self.password if password is None and user == self.user else password
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{db}"

    @property
    def dsn(self):
        return self.dsn_for("postgres")

    def env(self, db="postgres", user=None, password=None):
        """os.environ plus PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for a subprocess."""
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=user or self.user, PGDATABASE=db,
                   PGCONNECT_TIMEOUT="10")
        pw = self.password if password is None and (user or self.user) == self.user else password
        if pw:
            env["PGPASSWORD"] = pw
        else:
            env.pop("PGPASSWORD", None)
        return env

    # --- SQL -------------------------------------------------------------------------------
    def psql(self, sql, db="postgres", user=None, password=None, timeout=60):
        """Run `sql` over TCP; returns rows as tuples of strings (None for NULL).

        Values may contain newlines. Use at most ONE row-returning statement per call: psql
        ends each result set with a bare '\n', so with several result sets the last row of one
        and the first of the next get glued together. execute() with many statements is fine
        (a multi-statement -c string runs as one implicit transaction)."""
        args = [self._bin("psql"), "-X", "-q", "-A", "-t", "-F", FIELD_SEP, "-R", RECORD_SEP,
                f"--pset=null={NULL_MARKER}", "-v", "ON_ERROR_STOP=1",
                "-h", self.host, "-p", str(self.port), "-U", user or self.user, "-d", db, "-c", sql]
        proc = subprocess.run(args, env=self.env(db, user, password), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise PsqlError(sql, proc.returncode, proc.stderr)
        out = proc.stdout
        if out.endswith("\n"):
            out = out[:-1]
        if out == "":
            return []
        rows = []
        # Records are RECORD_SEP-separated, so values may contain '\n'.
        for rec in out.split(RECORD_SEP):
            rows.append(tuple(None if v == NULL_MARKER else v for v in rec.split(FIELD_SEP)))
        return rows

    def execute(self, sql, db="postgres", **kw):
        self.psql(sql, db=db, **kw)

    def scalar(self, sql, db="postgres", **kw):
        rows = self.psql(sql, db=db, **kw)
        return rows[0][0] if rows else None

    def create_database(self, name):
        self.execute(f'CREATE DATABASE "{name}"')

    def reload(self):
        self.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the postmaster re-reads config asynchronously

    # --- auth helpers ------------------------------------------------------------------------
    def add_hba_line(self, line, first=True):
        """Add a pg_hba.conf line. first=True: before the generic scram lines (so it wins);
        first=False: after them. Call reload() afterwards."""
        if first:
            self._hba_extra.append(line)
            self._write_hba()
        else:
            path = os.path.join(self.data_dir, "pg_hba.conf")
            with open(path, "a") as f:
                f.write(line + "\n")

    def create_role(self, name, password=None, auth="scram-sha-256", replication=True, superuser=False,
                    db="all"):
        """CREATE ROLE with LOGIN; auth in {'scram-sha-256','md5','trust','password'} adds a hba
        line for this user (plus a replication line) ahead of the generic ones and reloads."""
        attrs = ["LOGIN"]
        if replication:
            attrs.append("REPLICATION")
        if superuser:
            attrs.append("SUPERUSER")
        stmts = []
        if password is not None:
            enc = "md5" if auth == "md5" else "scram-sha-256"
            stmts.append(f"SET password_encryption = '{enc}'")
            attrs.append("PASSWORD '" + password.replace("'", "''") + "'")
        stmts.append(f'CREATE ROLE "{name}" ' + " ".join(attrs))
        # One session so SET password_encryption applies to the CREATE ROLE.
        self.execute("; ".join(stmts))
        if auth != "scram-sha-256" or db != "all":
            self.add_hba_line(f"host    {db}  {name}  127.0.0.1/32  {auth}")
            if replication:
                self.add_hba_line(f"host    replication  {name}  127.0.0.1/32  {auth}")
            self.reload()
        return name

    def create_md5_role(self, name, password, **kw):
        return self.create_role(name, password, auth="md5", **kw)

    def create_trust_role(self, name, **kw):
        return self.create_role(name, None, auth="trust", **kw)

    # --- replication helpers -------------------------------------------------------------------
    def terminate_walsenders(self):
        """Kill every walsender backend (simulates a cut replication connection). Returns count."""
        rows = self.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        return sum(1 for r in rows if r[0] == "t")

    def walsender_count(self):
        return int(self.scalar("SELECT count(*) FROM pg_stat_replication"))

    def replication_slots(self):
        """[{slot_name, plugin, slot_type, database, active, restart_lsn, confirmed_flush_lsn}]"""
        cols = ["slot_name", "plugin", "slot_type", "database", "active", "restart_lsn", "confirmed_flush_lsn"]
        rows = self.psql(f"SELECT {', '.join(cols)} FROM pg_replication_slots ORDER BY slot_name")
        return [dict(zip(cols, r)) for r in rows]

    def slot_confirmed_lsn(self, slot):
        """confirmed_flush_lsn of a slot as int; None if the slot doesn't exist or has none."""
        lit = slot.replace("'", "''")
        return parse_lsn(self.scalar(f"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{lit}'"))

    def drop_slot(self, slot):
        lit = slot.replace("'", "''")
        self.execute(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{lit}'")

    def current_wal_lsn(self):
        return parse_lsn(self.scalar("SELECT pg_current_wal_lsn()"))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (unreaped child) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children_of(ppid):
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                kids.append(int(name))
        except (OSError, IndexError, ValueError):
            pass
    return kids
