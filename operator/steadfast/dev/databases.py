"""PostgreSQL and Redis servers for the state-store engines, started from the machine's Debian packages.

Each server listens on loopback on a free port, keeps its data in the folder it is given (the run's folder) and
asks for a random password, as a production store would. Both survive a restart of the server with their data:
the point of the tests that stop and start them under running sagas. PostgreSQL refuses to run as root, so when
we are root it runs as the `postgres` system user (created by the package), with the right to traverse the
run's folder (ambient CAP_DAC_READ_SEARCH/CAP_DAC_OVERRIDE: pytest's folders are private to root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from steadfast.dev.controlplane import processes

INSTALL_HINT = "install it with `apt-get install -y postgresql redis-server` (what .ci/run does on a fresh machine)"


class DatabaseError(RuntimeError):
    """A server is missing or did not start; the message says how to fix it."""


def _postgres_bin(name: str) -> str:
    """`initdb`/`postgres` of the newest PostgreSQL the packages installed (they are not on PATH on Debian)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise DatabaseError(f"PostgreSQL's {name} was not found: {INSTALL_HINT}")


def _as_postgres_user() -> list[str]:
    """The prefix that runs a PostgreSQL binary as a non-root user (nothing when we are not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise DatabaseError(f"running as root and there is no `postgres` user: {INSTALL_HINT}") from exc
    caps = "+dac_read_search,+dac_override"
    return [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        "--",
    ]


class Postgres:
    """One PostgreSQL server: `initdb` on the first start, then the same data folder on every start."""

    kind = "postgresql"
    user = "steadfast"
    database = "steadfast"

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", detach: bool = False) -> None:
        self.directory = Path(directory)
        self.host = host
        self.detach = detach
        self.port = processes.free_port()
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self._password_file = self.directory / "password"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        if not self._password_file.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)  # initdb reads it as the postgres user, through CAP_DAC_READ_SEARCH
        return self._password_file.read_text().strip()

    @property
    def connection_string(self) -> str:
        """What the chart's `connectionStringSecret` holds (the pgx keyword/value form Dapr documents)."""
        return (
            f"host={self.host} port={self.port} user={self.user} password={self.password} "
            f"dbname={self.database} sslmode=disable"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return {"postgres": self._proc} if self._proc is not None and self._proc.poll() is None else {}

    @property
    def pid(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("postgres is not running")
        return self._proc.pid

    def _initdb(self) -> None:
        self.password  # noqa: B018 (written on first read)
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self.data.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        done = subprocess.run(
            [
                *_as_postgres_user(),
                _postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={self._password_file}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise DatabaseError(f"initdb failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        # The first database: the server's `postgres` exists; Dapr's tables go into their own.
        self._start_server()
        try:
            self._psql(f"CREATE DATABASE {self.database}", database="postgres")
        finally:
            self.stop()

    def _psql(self, sql: str, *, database: str) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [
                _postgres_bin("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            raise DatabaseError(f"psql {sql!r} failed: {done.stderr.strip()}")

    def _start_server(self) -> None:
        args = [
            *_as_postgres_user(),
            _postgres_bin("postgres"),
            "-D",
            str(self.data),
            "-c",
            f"listen_addresses={self.host}",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",  # loopback TCP only: nothing in /var/run
            "-c",
            "fsync=on",
        ]
        self._proc = processes.launch(args, self.log, detach=self.detach)
        processes.wait_until(
            lambda: processes.tcp_open(self.host, self.port) and self._accepts(),
            what="postgres",
            timeout=60,
            pid=self._proc.pid,
            log=self.log,
        )

    def _accepts(self) -> bool:
        done = subprocess.run(
            [_postgres_bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.user, "-q"],
            capture_output=True,
        )
        return done.returncode == 0

    def start(self) -> Postgres:
        if self.running:
            return self
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._start_server()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: running transactions are rolled back, connections closed, data flushed)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            processes.stop(proc.pid, 1)
            proc.wait()

    def restart(self, *, down_for: float = 0.0) -> Postgres:
        self.stop()
        time.sleep(down_for)
        return self.start()


class Redis:
    """One Redis server with an append-only file in its folder, so a restart keeps what was acknowledged."""

    kind = "redis"

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", detach: bool = False) -> None:
        self.directory = Path(directory)
        self.host = host
        self.detach = detach
        self.port = processes.free_port()
        self.log = self.directory / "redis.log"
        self.password = secrets.token_urlsafe(24)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return {"redis": self._proc} if self._proc is not None and self._proc.poll() is None else {}

    @property
    def pid(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("redis is not running")
        return self._proc.pid

    def start(self) -> Redis:
        if self.running:
            return self
        server = shutil.which("redis-server")
        if not server:
            raise DatabaseError(f"redis-server was not found: {INSTALL_HINT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {self.port}",
                    f"dir {self.directory}",
                    f"requirepass {self.password}",
                    "protected-mode yes",
                    "daemonize no",
                    "save ''",
                    "appendonly yes",
                    "appendfsync everysec",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self._proc = processes.launch([server, str(conf)], self.log, detach=self.detach)
        processes.wait_until(self._accepts, what="redis", timeout=30, pid=self._proc.pid, log=self.log)
        return self

    def _accepts(self) -> bool:
        cli = shutil.which("redis-cli")
        if not cli:
            return processes.tcp_open(self.host, self.port)
        done = subprocess.run(
            [cli, "-h", self.host, "-p", str(self.port), "--no-auth-warning", "-a", self.password, "PING"],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() == "PONG"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.stop(proc.pid, timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)

    def restart(self, *, down_for: float = 0.0) -> Redis:
        self.stop()
        time.sleep(down_for)
        return self.start()
