"""Live pages: one watch per open page stream, made with the viewer's credentials, sent as server-sent events.

A page names what it shows (a kind, a namespace, perhaps one name); its script opens /live for it and, on each
change, fetches the page's main section again. No page polls: the API server pushes changes through one watch,
from the resourceVersion of a one-item list (so the watch does not replay every existing object), and the watch
is closed when the browser goes away. A watch that expired (410 Gone) starts again from a fresh list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import Kind
from steadfast.console import kube

HEARTBEAT_SECONDS = 20.0
WATCH_SECONDS = 240  # the API server ends a watch after this; the stream then opens the next one
_CLOSED = object()


def _selector(name: str | None) -> list[tuple[str, Any]]:
    return [("fieldSelector", f"metadata.name={name}")] if name else []


def _version(api: client.ApiClient, kind: Kind, namespace: str | None, name: str | None) -> str:
    """The resourceVersion to watch from: that of a one-item list (a consistent read, cheap at any size)."""
    body = kube.collection(api, kind, namespace, [("limit", 1), *_selector(name)])
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


class Watch:
    """One watch in a thread of its own, its changes handed to the event loop; `close` ends it at once."""

    def __init__(self, api: client.ApiClient, kind: Kind, namespace: str | None, name: str | None) -> None:
        self.api, self.kind, self.namespace, self.name = api, kind, namespace, name
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="console-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the server shut down (its loop closed) while watching
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self) -> None:
        try:
            version = _version(self.api, self.kind, self.namespace, self.name)
            while not self._stop.is_set():
                version = self._watch(version)
        except ApiException as exc:
            self._put({"type": "ERROR", "status": exc.status})
        except Exception:  # a closed connection, the browser gone: the stream ends
            if not self._stop.is_set():
                self._put({"type": "ERROR"})
        finally:
            self._put(_CLOSED)

    def _watch(self, version: str) -> str:
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", WATCH_SECONDS),
            *_selector(self.name),
        ]
        if version:
            query.append(("resourceVersion", version))
        self._response = kube.collection_response(self.api, self.kind, self.namespace, query)
        for line in self._response:
            if self._stop.is_set():
                break
            event = json.loads(line)
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:  # expired: start again from now, and let the page refresh once
                    self._put({"type": "RESYNC"})
                    return _version(self.api, self.kind, self.namespace, self.name)
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = meta.get("resourceVersion") or version
            if event.get("type") != "BOOKMARK":
                self._put(
                    {
                        "type": event.get("type"),
                        "namespace": meta.get("namespace"),
                        "name": meta.get("name"),
                        "phase": (obj.get("status") or {}).get("phase"),
                    }
                )
        return version

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown() if hasattr(response, "shutdown") else response.close()

    async def events(self, heartbeat: float = HEARTBEAT_SECONDS) -> AsyncIterator[dict[str, Any] | None]:
        """The watch's changes; None after `heartbeat` seconds without one (the stream then sends a comment, which
        finds out whether the browser is still there and keeps idle-closing proxies away)."""
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), heartbeat)
            except TimeoutError:
                yield None
                continue
            if item is _CLOSED:
                return
            assert isinstance(item, dict)
            yield item


KEEPALIVE = b": keep-alive\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event; `data` is JSON on one line, so no user text can start a new event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
