"""SQLite persistence: one file in WAL mode, written by a single thread with group commit.

The engine keeps its working state in memory and treats SQLite as the durable record of it. Every
mutation is turned into a small batch of SQL statements; a single writer thread applies all
batches queued since its last commit in one transaction. An RPC that changes state is answered only
after its batch has committed, so "acknowledged" means "in the WAL" (and, with the default
``synchronous=FULL``, fsynced). Grouping keeps the fsync cost per commit, not per RPC.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("steadfast.engine.store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    instance_id     TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    status          INTEGER NOT NULL,
    execution_id    TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    completed_at    REAL,
    not_before      REAL,
    input           TEXT,
    output          TEXT,
    custom_status   TEXT,
    failure         BLOB,
    parent_id       TEXT,
    event_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_parent ON instances (parent_id);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activities (
    instance_id TEXT NOT NULL, task_id INTEGER NOT NULL, execution_id TEXT NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (instance_id, task_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timers (
    instance_id TEXT NOT NULL, timer_id INTEGER NOT NULL, execution_id TEXT NOT NULL,
    fire_at REAL NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (instance_id, timer_id)) WITHOUT ROWID;
"""

INSTANCE_COLUMNS = (
    "instance_id",
    "name",
    "status",
    "execution_id",
    "created_at",
    "updated_at",
    "completed_at",
    "not_before",
    "input",
    "output",
    "custom_status",
    "failure",
    "parent_id",
    "event_count",
)

Op = tuple[str, tuple[Any, ...]]


class StoreError(Exception):
    """The database could not be written; nothing in the failed batch is durable."""


class Ticket:
    """Completion handle of one batch: ``wait()`` returns once it is durable."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch committed; raise ``StoreError`` if it did not."""
        if not self._done.wait(timeout):
            raise StoreError("timed out waiting for the database commit")
        if self._error is not None:
            raise StoreError(f"database write failed: {self._error}") from self._error


DONE = Ticket()
DONE._finish(None)


@dataclass
class LoadedState:
    """Everything needed to rebuild the engine's memory after a restart."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[bytes]] = field(default_factory=dict)
    inbox: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    activities: list[tuple[str, int, str, bytes]] = field(default_factory=list)
    timers: list[tuple[str, int, str, float, bytes]] = field(default_factory=list)
    max_inbox_seq: int = 0


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database; read-only connections never create or modify the file."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class Store:
    """Owns the SQLite file: schema, recovery reads and the group-commit writer thread."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"invalid synchronous mode {synchronous!r}")
        self.path = str(path)
        self._conn = connect(self.path)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self._conn.executescript(_SCHEMA)
        self._conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._reader = connect(self.path)
        self._reader_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: list[tuple[list[Op], Ticket]] = []
        self._closing = False
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="engine-sqlite-writer", daemon=True)
        self._thread.start()

    # -- writing -----------------------------------------------------------------------------

    def submit(self, ops: list[Op]) -> Ticket:
        """Queue a batch; it commits atomically with whatever else is queued."""
        if not ops:
            return DONE
        ticket = Ticket()
        with self._cond:
            if self._failed is not None or self._closing:
                ticket._finish(self._failed or StoreError("store is closed"))
                return ticket
            self._queue.append((ops, ticket))
            self._cond.notify()
        return ticket

    def barrier(self) -> Ticket:
        """A ticket that completes once everything queued before it is durable (read-your-writes)."""
        ticket = Ticket()
        with self._cond:
            if self._failed is not None or self._closing:
                ticket._finish(self._failed or StoreError("store is closed"))
                return ticket
            self._queue.append(([], ticket))
            self._cond.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                batch, self._queue = self._queue, []
            error: BaseException | None = None
            if not any(ops for ops, _ in batch):
                for _, ticket in batch:
                    ticket._finish(None)
                continue
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for ops, _ in batch:
                    for sql, params in ops:
                        self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except BaseException as exc:  # the batch is lost: fail every caller and stop accepting work
                error = exc
                log.exception("database write failed; the engine can no longer persist state")
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                with self._cond:
                    self._failed = exc
            for _, ticket in batch:
                ticket._finish(error)

    def close(self) -> None:
        """Flush queued batches, then close the connections."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=30)
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        self._reader.close()

    # -- reading -----------------------------------------------------------------------------

    def load(self) -> LoadedState:
        """Read the whole durable state (called once, before serving)."""
        state = LoadedState()
        cur = self._conn.execute(f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances")  # noqa: S608 - fixed names
        for row in cur:
            state.instances.append(dict(zip(INSTANCE_COLUMNS, row, strict=True)))
        for iid, event in self._conn.execute(
            "SELECT h.instance_id, h.event FROM history h JOIN instances i USING (instance_id) "
            "WHERE i.completed_at IS NULL ORDER BY h.instance_id, h.seq"
        ):
            state.history.setdefault(iid, []).append(event)
        for iid, seq, event in self._conn.execute("SELECT instance_id, seq, event FROM inbox ORDER BY seq"):
            state.inbox.setdefault(iid, []).append((seq, event))
            state.max_inbox_seq = max(state.max_inbox_seq, seq)
        state.activities = list(self._conn.execute("SELECT instance_id, task_id, execution_id, event FROM activities"))
        state.timers = list(
            self._conn.execute("SELECT instance_id, timer_id, execution_id, fire_at, event FROM timers")
        )
        return state

    def read_history(self, instance_id: str) -> list[bytes]:
        """Stored history of one instance, for instances whose history is not kept in memory."""
        with self._reader_lock:
            return [
                row[0]
                for row in self._reader.execute(
                    "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
                )
            ]


# -- statement builders (pure; the engine collects them into batches) ---------------------------


def op_upsert_instance(row: dict[str, Any]) -> Op:
    cols = ", ".join(INSTANCE_COLUMNS)
    marks = ", ".join("?" for _ in INSTANCE_COLUMNS)
    return (
        f"INSERT OR REPLACE INTO instances ({cols}) VALUES ({marks})",  # noqa: S608 - fixed column names
        tuple(row[c] for c in INSTANCE_COLUMNS),
    )


def op_delete_instance(iid: str) -> list[Op]:
    return [
        (f"DELETE FROM {table} WHERE instance_id = ?", (iid,))  # noqa: S608 - fixed table names
        for table in ("instances", "history", "inbox", "activities", "timers")
    ]


def op_history_append(iid: str, seq: int, event: bytes) -> Op:
    return ("INSERT OR REPLACE INTO history (instance_id, seq, event) VALUES (?, ?, ?)", (iid, seq, event))


def op_history_set(iid: str, seq: int, event: bytes) -> Op:
    return ("UPDATE history SET event = ? WHERE instance_id = ? AND seq = ?", (event, iid, seq))


def op_history_clear(iid: str) -> Op:
    return ("DELETE FROM history WHERE instance_id = ?", (iid,))


def op_inbox_add(iid: str, seq: int, event: bytes) -> Op:
    return ("INSERT INTO inbox (instance_id, seq, event) VALUES (?, ?, ?)", (iid, seq, event))


def op_inbox_delete(iid: str, seq: int) -> Op:
    return ("DELETE FROM inbox WHERE instance_id = ? AND seq = ?", (iid, seq))


def op_inbox_clear(iid: str) -> Op:
    return ("DELETE FROM inbox WHERE instance_id = ?", (iid,))


def op_activity_add(iid: str, task_id: int, execution_id: str, event: bytes) -> Op:
    return (
        "INSERT OR REPLACE INTO activities (instance_id, task_id, execution_id, event) VALUES (?, ?, ?, ?)",
        (iid, task_id, execution_id, event),
    )


def op_activity_delete(iid: str, task_id: int) -> Op:
    return ("DELETE FROM activities WHERE instance_id = ? AND task_id = ?", (iid, task_id))


def op_activities_clear(iid: str) -> Op:
    return ("DELETE FROM activities WHERE instance_id = ?", (iid,))


def op_timer_add(iid: str, timer_id: int, execution_id: str, fire_at: float, event: bytes) -> Op:
    return (
        "INSERT OR REPLACE INTO timers (instance_id, timer_id, execution_id, fire_at, event) VALUES (?, ?, ?, ?, ?)",
        (iid, timer_id, execution_id, fire_at, event),
    )


def op_timer_delete(iid: str, timer_id: int) -> Op:
    return ("DELETE FROM timers WHERE instance_id = ? AND timer_id = ?", (iid, timer_id))


def op_timers_clear(iid: str) -> Op:
    return ("DELETE FROM timers WHERE instance_id = ?", (iid,))


@contextlib.contextmanager
def readonly(path: Path | str) -> Iterator[sqlite3.Connection]:
    """A read-only connection for the inspect commands (they never write the engine's file)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no engine database at {path}")
    conn = connect(path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()
