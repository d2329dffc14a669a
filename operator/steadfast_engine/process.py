"""Run the engine as a subprocess (``sys.executable -m steadfast_engine``).

Used by ``steadfast dev up``, test fixtures and the benchmark. A separate process is what makes the
crash tests honest: ``kill()`` is a real SIGKILL and a restart re-reads the same SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import grpc

from .protos import empty_pb2, pb_grpc

_LOG_TAIL_LINES = 40


class EngineStartError(RuntimeError):
    """The engine did not come up; the message carries the tail of its log."""


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_until_serving(address: str, timeout: float) -> bool:
    """True once a Hello RPC succeeds at ``address`` (waits for the channel, no busy loop)."""
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            pb_grpc.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=max(1.0, timeout))
        except (grpc.FutureTimeoutError, grpc.RpcError):
            return False
    return True


class EngineProcess:
    """A running engine subprocess; restartable on the same database and port."""

    name = "local"

    def __init__(
        self,
        db: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_file: Path | None = None,
        *,
        synchronous: str = "FULL",
        extra_args: list[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.db = Path(db)
        self.host = host
        self.port = port or 0
        self.log_file = Path(log_file) if log_file is not None else Path(f"{self.db}.log")
        self.synchronous = synchronous
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` as accepted by ``DAPR_GRPC_ENDPOINT`` and the SDK's ``host_address``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("engine is not running")
        return self._proc.pid

    def endpoints(self) -> list[tuple[int, str]]:
        """Every port the engine listens on, with what it is (an operator refuses them as action destinations)."""
        return [(self.port, "the local workflow engine")]

    @property
    def pids(self) -> dict[str, int]:
        """The engine's processes by name (one), for CPU and memory accounting."""
        return {"engine": self._proc.pid} if self.running and self._proc is not None else {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EngineProcess:
        """Launch and wait until it answers Hello; raise ``EngineStartError`` with the log tail otherwise."""
        if self.running:
            return self
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        fd, port_name = tempfile.mkstemp(prefix="engine-port-", dir=str(self.db.parent))
        os.close(fd)
        port_file = Path(port_name)
        port_file.unlink()
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()/kill()
        env = dict(os.environ)
        operator_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (operator_root, env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-m",
            "steadfast_engine",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--synchronous",
            self.synchronous,
            "--port-file",
            str(port_file),
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.start_timeout
        try:
            # the engine writes its port file once it listens; wait for that, then for Hello
            while not port_file.exists():
                if self._proc.poll() is not None:
                    raise EngineStartError(
                        f"engine exited with code {self._proc.returncode} during start; log {self.log_file}:\n"
                        + _tail(self.log_file)
                    )
                if time.monotonic() > deadline:
                    raise EngineStartError(
                        f"engine did not start within {self.start_timeout}s; log {self.log_file}:\n"
                        + _tail(self.log_file)
                    )
                time.sleep(0.02)
            self.port = int(port_file.read_text().strip())
            if not wait_until_serving(self.address, max(1.0, deadline - time.monotonic())):
                raise EngineStartError(
                    f"engine at {self.address} does not answer Hello; log {self.log_file}:\n" + _tail(self.log_file)
                )
        except BaseException:
            self.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                port_file.unlink()
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, no chance to flush anything (the chaos tests' crash)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._cleanup()

    def restart(self, *, hard: bool = False) -> EngineProcess:
        """Stop (or kill with ``hard``) and start again on the same database and port."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_file, lines)

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_engine(
    db: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_file: Path | None = None,
    *,
    synchronous: str = "FULL",
    extra_args: list[str] | None = None,
    start_timeout: float = 30.0,
) -> EngineProcess:
    """Launch the engine as a subprocess on ``port`` (a free loopback port when None) and wait for it."""
    return EngineProcess(
        db,
        host,
        port,
        log_file,
        synchronous=synchronous,
        extra_args=extra_args,
        start_timeout=start_timeout,
    ).start()
