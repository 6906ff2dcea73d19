"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder, as a non-root user.

PostgreSQL refuses to run as root, so as root the server runs as the user `hbgw-pgtest` (created when missing).
It listens on 127.0.0.1 on a free port only, trusts local connections, and is stopped and removed at the end.
No PostgreSQL is a failure, not a skip: scripts/install-system-deps.sh installs it.
"""
from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import free_port

TEST_USER = "hbgw-pgtest"


def postgres_bin() -> Path:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/VERSION/bin)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install-system-deps.sh (make system-deps)")
    return Path(found).resolve().parent


def _as_server_user(command: list[str]) -> list[str]:
    """Run as the unprivileged test user when we are root (the server will not run as root)."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        # Two test workers may both find the user missing: the second useradd fails, and the user exists.
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                       check=False, capture_output=True)
        pwd.getpwnam(TEST_USER)
    return ["runuser", "-u", TEST_USER, "--", *command]


class PostgresCluster:
    """One server for the whole test session; each test gets a database of its own (new_database)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="hbgw-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._started = False

    def start(self, *, durable: bool = False) -> PostgresCluster:
        """Start the server; not `durable` (the tests) skips fsync, since a crash of it loses only test data."""
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            _as_server_user(["true"])  # creates the user
            shutil.chown(self.root, TEST_USER)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-instructions")
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
                       " -c shared_buffers=32MB" + ("" if durable else " -c fsync=off -c full_page_writes=off"))
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                      "-w", "-t", "60", "start")
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, program: str, *args: str) -> None:
        """Run one of the server's programs as its user; a failure shows the program's and the server's log."""
        result = subprocess.run(_as_server_user([str(self.bin / program), *args]), check=False, capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{program} failed: {result.stderr.strip()}\n"
                               f"{log.read_text() if log.exists() else ''}")

    def dsn(self, database: str = "postgres") -> str:
        """The URI of one database on this server (trust authentication: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        name = f"test_{next(self._names)}"
        subprocess.run([str(self.bin / "psql"), "-q", "-d", self.dsn(), "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True, timeout=60)
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server at once and remove every file of it."""
        if self._started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
