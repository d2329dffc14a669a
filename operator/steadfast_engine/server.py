"""Assemble store, engine and gRPC server; run in the foreground until SIGTERM/SIGINT.

The server is also usable in-process (tests, embedding) through :class:`EngineServer`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import IO

import grpc

from .core import DEFAULT_MAX_MESSAGE_BYTES, Engine
from .defaults import DEFAULT_APP_ID, DEFAULT_WORKER_WAIT
from .protos import pb_grpc
from .service import TaskHubService
from .store import Store

log = logging.getLogger("steadfast.engine")

# Long-lived worker streams and waiting clients each hold a server thread while they wait, so the
# pool is large; threads are only created when needed.
MAX_RPC_THREADS = 512


class EngineLockedError(RuntimeError):
    """Another engine process already serves this database file."""


class EngineServer:
    """One engine serving one SQLite file on one address."""

    def __init__(
        self,
        db: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 4001,
        synchronous: str = "FULL",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        wait_for_start: bool = True,
        app_id: str = DEFAULT_APP_ID,
        worker_wait: float | None = DEFAULT_WORKER_WAIT,
    ) -> None:
        self.db = Path(db)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_lock(self.db)
        self.store = Store(self.db, synchronous=synchronous)
        self.engine = Engine(self.store, max_message_bytes=max_message_bytes, app_id=app_id, worker_wait=worker_wait)
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second engine on the same port must fail, not share it
            # the SDK pings every 30 s even without calls; accept that instead of answering GOAWAY
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_ping_strikes", 0),
            # notice dead workers (kill -9 of the host, cable pulled) and redeliver their work
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.keepalive_timeout_ms", 10000),
        ]
        self._pool = ThreadPoolExecutor(max_workers=MAX_RPC_THREADS, thread_name_prefix="engine-rpc")
        self.server = grpc.server(self._pool, options=options)
        pb_grpc.add_TaskHubSidecarServiceServicer_to_server(
            TaskHubService(self.engine, wait_for_start=wait_for_start), self.server
        )
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            self._close_storage()
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
        if self.port == 0:
            self._close_storage()
            raise OSError(f"cannot listen on {host}:{port} (address in use?)")
        self.host = host
        self._stopped = threading.Event()

    @staticmethod
    def _take_lock(db: Path) -> IO[str]:
        handle = open(f"{db}.lock", "a+")  # noqa: SIM115 - held for the server's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise EngineLockedError(f"another engine is already using {db}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EngineServer:
        self.server.start()
        log.info("steadfast workflow engine serving on %s (db %s)", self.address, self.db)
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving, then flush and close the database; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.engine.close()
        self.server.stop(grace).wait()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_storage()
        log.info("engine stopped")

    def _close_storage(self) -> None:
        with contextlib.suppress(Exception):
            self.store.close()
        with contextlib.suppress(Exception):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    db: Path | str,
    host: str,
    port: int,
    *,
    synchronous: str = "FULL",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    port_file: Path | None = None,
    app_id: str = DEFAULT_APP_ID,
    worker_wait: float | None = DEFAULT_WORKER_WAIT,
) -> int:
    """Run in the foreground until SIGTERM or SIGINT; returns the process exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = EngineServer(
            db,
            host=host,
            port=port,
            synchronous=synchronous,
            max_message_bytes=max_message_bytes,
            app_id=app_id,
            worker_wait=worker_wait,
        )
    except (OSError, EngineLockedError) as exc:
        log.error("%s", exc)
        return 2
    try:
        server.start()
        if port_file is not None:
            tmp = port_file.with_suffix(port_file.suffix + ".tmp")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(port_file)
        while not stop.wait(3600):  # wakes on the signal; the timeout only bounds the wait
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
