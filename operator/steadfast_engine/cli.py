"""Command line: serve the engine, or inspect its database read-only (``list``, ``history``).

Wired as ``steadfast dev engine ...`` and ``python -m steadfast_engine ...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from . import DEFAULT_PORT
from .defaults import DEFAULT_APP_ID, DEFAULT_WORKER_WAIT
from .protos import pb, status_name
from .store import readonly

DEFAULT_DB = Path("steadfast-engine.db")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="steadfast dev engine",
        description="Run the local Dapr workflow engine (daprd's workflow gRPC API on SQLite). "
        "Subcommands: 'list --db PATH' and 'history ID --db PATH' inspect a database read-only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"SQLite file (default ./{DEFAULT_DB})")
    p.add_argument(
        "--synchronous",
        default="FULL",
        choices=["NORMAL", "FULL"],
        type=str.upper,
        help="SQLite synchronous mode: FULL (default) fsyncs every commit, so an acknowledged call "
        "survives power loss; NORMAL survives a crash of the engine process but not of the machine",
    )
    p.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024, help="gRPC message limit")
    p.add_argument(
        "--worker-wait",
        type=_seconds_or_off,
        default=DEFAULT_WORKER_WAIT,
        help="as daprd: with no worker connected, a call on an instance waits this long for one, then is refused "
        f"(FAILED_PRECONDITION), and a start waits until its deadline (default {DEFAULT_WORKER_WAIT:g}); "
        "'off' answers every call at once, worker or not",
    )
    p.add_argument(
        "--app-id",
        default=DEFAULT_APP_ID,
        help=f"the app ID daprd's messages name (default {DEFAULT_APP_ID})",
    )
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def _seconds_or_off(value: str) -> float | None:
    if value.lower() == "off":
        return None
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError("must be 'off' or a number of seconds >= 0")
    return seconds


def _fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _list(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="steadfast dev engine list", description="List workflow instances (read-only).")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="one JSON document (a list) for machines")
    args = p.parse_args(argv)
    with readonly(args.db) as conn:
        rows = conn.execute(
            "SELECT instance_id, name, status, event_count, created_at, updated_at, parent_id "
            "FROM instances ORDER BY created_at, instance_id"
        ).fetchall()
    items = [
        {
            "instance_id": r[0],
            "name": r[1],
            "status": status_name(r[2]),
            "events": r[3],
            "created_at": _fmt_time(r[4]),
            "updated_at": _fmt_time(r[5]),
            "parent_id": r[6],
        }
        for r in rows
    ]
    if args.json:
        json.dump(items, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    headers = ["INSTANCE", "NAME", "STATUS", "EVENTS", "CREATED", "UPDATED"]
    table = [
        [i["instance_id"], i["name"], i["status"], str(i["events"]), i["created_at"], i["updated_at"]] for i in items
    ]
    widths = [max(len(h), *(len(row[c]) for row in table)) if table else len(h) for c, h in enumerate(headers)]
    for row in [headers, *table]:
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
    return 0


def _event_summary(ev: Any) -> str:
    kind = ev.WhichOneof("eventType") or "unknown"
    body = getattr(ev, kind)
    text = json_format.MessageToJson(body, indent=None) if body.ByteSize() else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{ev.eventId:>4}  {kind:<32} {text}".rstrip()


def _history(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="steadfast dev engine history", description="Print an instance's history, one event per line (read-only)."
    )
    p.add_argument("instance_id")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    with readonly(args.db) as conn:
        exists = conn.execute("SELECT 1 FROM instances WHERE instance_id = ?", (args.instance_id,)).fetchone()
        if exists is None:
            print(f"no such instance: {args.instance_id}", file=sys.stderr)
            return 1
        blobs = [
            r[0]
            for r in conn.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (args.instance_id,))
        ]
        pending = [
            r[0]
            for r in conn.execute("SELECT event FROM inbox WHERE instance_id = ? ORDER BY seq", (args.instance_id,))
        ]
    for seq, blob in enumerate(blobs):
        ev = pb.HistoryEvent.FromString(blob)
        if args.json:
            doc = json_format.MessageToDict(ev)
            doc["seq"] = seq
            print(json.dumps(doc, sort_keys=True))
        else:
            print(f"{seq:>5}  {ev.timestamp.ToJsonString()}  {_event_summary(ev)}")
    for blob in pending:
        ev = pb.HistoryEvent.FromString(blob)
        if args.json:
            doc = json_format.MessageToDict(ev)
            doc["pending"] = True
            print(json.dumps(doc, sort_keys=True))
        else:
            print(f"    +  {ev.timestamp.ToJsonString()}  {_event_summary(ev)}  (pending)")
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``[--host H] [--port P] [--db PATH]`` serves; ``list`` / ``history`` inspect."""
    if argv and argv[0] in ("list", "history"):
        try:
            return _list(argv[1:]) if argv[0] == "list" else _history(argv[1:])
        except (FileNotFoundError, sqlite3.Error) as exc:
            print(f"steadfast dev engine {argv[0]}: {exc}", file=sys.stderr)
            return 1
    if argv and argv[0] == "serve":
        argv = argv[1:]
    args = _serve_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .server import serve

    return serve(
        args.db,
        args.host,
        args.port,
        synchronous=args.synchronous,
        max_message_bytes=args.max_message_bytes,
        port_file=args.port_file,
        app_id=args.app_id,
        worker_wait=args.worker_wait,
    )
