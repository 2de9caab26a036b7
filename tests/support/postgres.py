"""A real PostgreSQL server for tests, from Debian's `postgresql` package (issue 19).

``initdb`` + ``pg_ctl`` from /usr/lib/postgresql/*/bin in a private temp directory, on a
free loopback port, its unix socket in that directory. initdb refuses to run as root: as
root the server runs as the package's ``postgres`` system user (``runuser -u postgres --``)
and the directory is given to it. TCP logins need a password (scram-sha-256), so the
tests' URLs carry one, as a real deployment's do. Skipped, with the reason, when the
binaries or psycopg are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "orchgpt"


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def unavailable() -> str:
    """Why a PostgreSQL server cannot be started here ('' when it can)."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'orchgpt[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' system user to run the server"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync  # off for tests (-F); on for benchmarks of real commits
        self.bin = _bin_dir()
        assert self.bin is not None
        # as root in /tmp: the postgres user must reach it (a TMPDIR may be root's alone)
        self.dir = Path(tempfile.mkdtemp(prefix="orchgpt-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.dir / "data"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._n = 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        r = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stdout}{r.stderr}")

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            timeout=120,
        )
        pwfile.unlink()
        for attempt in range(5):
            self.port = _free_port()
            opts = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {'' if self.fsync else '-F '}"
                "-c max_connections=50 -c shared_buffers=16MB"
            )
            try:
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.dir / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                    timeout=90,
                )
                return
            except RuntimeError:  # the port was taken between the probe and the start
                if attempt == 4:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()) from None
                time.sleep(0.2)

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def socket_url(self, db: str = "postgres") -> str:
        """The URL of ``db`` through the server's unix socket (in its directory): reachable
        from a network namespace (tests/support/netns.py), where 127.0.0.1 is the namespace's
        own loopback. Local logins are trusted (initdb --auth-local=trust): no password."""
        return f"postgresql://{USER}@/{db}?host={self.dir}&port={self.port}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; its URL."""
        import psycopg

        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.port:
            try:
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                    timeout=60,
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- ORCHGPT_TEST_STORE=postgres: every test daemon on PostgreSQL (scripts/test-on-postgres.sh)
_shared: PostgresServer | None = None
_databases: dict[str, str] = {}


def wanted() -> bool:
    """True when the test daemons are to use PostgreSQL (ORCHGPT_TEST_STORE=postgres)."""
    return os.environ.get("ORCHGPT_TEST_STORE", "").lower() in ("postgres", "postgresql")


def shared_server() -> PostgresServer:
    """The session's server, started on first use (stopped by ``stop_shared`` or at exit)."""
    global _shared
    if _shared is None:
        why = unavailable()
        if why:
            raise RuntimeError(f"ORCHGPT_TEST_STORE=postgres, but: {why}")
        import atexit

        server = PostgresServer()
        server.start()
        atexit.register(server.stop)
        _shared = server
    return _shared


def database_for(data_dir: Path, *, unix_socket: bool = False) -> str:
    """One fresh database per daemon data directory: a daemon restarted on the same data
    dir finds its store again, two daemons with their own data dirs have their own.
    ``unix_socket``: its URL through the server's unix socket, for a daemon in a network
    namespace (which cannot reach the server's 127.0.0.1)."""
    key = str(Path(data_dir).resolve())
    if key not in _databases:
        _databases[key] = shared_server().new_database("d")
    if unix_socket:
        server = shared_server()
        return server.socket_url(_databases[key].rsplit("/", 1)[1])
    return _databases[key]


def stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None
        _databases.clear()
