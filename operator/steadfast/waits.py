"""Shared watches for waiting Kubernetes actions: one per resource and namespace, however many steps wait.

A waiting action registers here (after its impersonated read proved the creator may read that object) and
its activity ends; the workflow then waits for an event. Each collection (e.g. Jobs in namespace `team-a`)
has one list-then-watch loop as the operator, whose cache holds the collection's objects; every change to a
registered name is judged, and a decided wait raises the workflow's event. A collection nobody waits on
closes at its next reconnect. A collection is never wider than one namespace for a namespaced resource:
`objects.Target` accepts only Kubernetes names (a namespace `..` would have made the path a cluster-wide
one), and an object is judged for a wait only if its namespace and name are the wait's.

Registrations live in memory: after an operator restart the workflows register again (the binding raises
their re-arm event on resume, and a waiting workflow re-arms every few minutes anyway), from their recorded
inputs, so no wait is lost and none is served twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3

from steadfast import metrics
from steadfast.api.object_action import ObjectAction
from steadfast.objects import KubeRequests, ObjectError, Target
from steadfast.records import Outcome

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # the API server ends each watch after this; the loop then continues from its version
RETRY_SECONDS = 2.0


@dataclass
class Registration:
    """One waiting action: which object, how to judge it, and whom to tell."""

    instance_id: str
    event: str
    action: ObjectAction
    target: Target
    variables: dict[str, Any]
    outputs: dict[str, str]
    said: str
    expires: float  # monotonic; the workflow has given up by then
    namespace: str = ""  # the waiting resource's namespace: judging it is charged to its share

    @property
    def key(self) -> tuple[str, str]:
        return self.instance_id, self.event


Judge = Callable[[Registration, Any], "Outcome | None"]
RaiseEvent = Callable[[str, str, dict[str, Any]], None]


@dataclass
class _Collection:
    path: str
    waiting: dict[tuple[str, str], Registration] = field(default_factory=dict)
    objects: dict[tuple[str, str], Any] = field(default_factory=dict)  # by (namespace or "", name)
    synced: bool = False

    def for_object(self, key: tuple[str, str]) -> list[Registration]:
        return [r for r in self.waiting.values() if _key_of(r.target) == key]


def _key_of(target: Target) -> tuple[str, str]:
    return target.namespace or "", target.name


def _object_key(obj: Any) -> tuple[str, str]:
    meta = (obj.get("metadata") if isinstance(obj, dict) else None) or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchHub:
    def __init__(self, requests: KubeRequests, judge: Judge, raise_event: RaiseEvent) -> None:
        self._requests = requests
        self._judge = judge
        self._raise = raise_event
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}

    def register(self, registration: Registration) -> None:
        target = registration.target
        if target.resource.namespaced and not target.namespace:  # a Target checks the name; never cluster-wide
            raise ObjectError(f"a wait on {target.resource.plural} needs a namespace")
        path = target.collection
        with self._lock:
            collection = self._collections.get(path)
            if collection is None:
                collection = self._collections[path] = _Collection(path)
                threading.Thread(target=self._run, args=(collection,), name=f"watch {path}", daemon=True).start()
                metrics.OBJECT_WATCHES.set(len(self._collections))
            collection.waiting[registration.key] = registration
            cached = collection.objects.get(_key_of(target)) if collection.synced else None
            metrics.OBJECT_WAITS.set(sum(len(c.waiting) for c in self._collections.values()))
        if cached is not None:  # a change the watch saw before this registration
            self._consider(collection, [registration], cached)

    def _consider(self, collection: _Collection, registrations: list[Registration], obj: Any) -> None:
        for registration in registrations:
            try:
                outcome = self._judge(registration, obj)
            except Exception:  # a sandbox failure must not end the watch
                log.exception("judging %s for %s", registration.target.path, registration.instance_id)
                continue
            if outcome is not None:
                self._decide(collection, registration, outcome)

    def _decide(self, collection: _Collection, registration: Registration, outcome: Outcome) -> None:
        try:
            self._raise(registration.instance_id, registration.event, outcome.to_dict())
        except Exception as exc:
            if not _gone(exc):  # the engine is away: the next change or the workflow's re-arm retries
                log.warning("cannot raise %s on %s: %s", registration.event, registration.instance_id, exc)
                return
        with self._lock:
            if collection.waiting.get(registration.key) is registration:
                del collection.waiting[registration.key]
            metrics.OBJECT_WAITS.set(sum(len(c.waiting) for c in self._collections.values()))

    def _prune(self, collection: _Collection) -> bool:
        """Drop expired registrations; True when the collection is idle and closed (removed)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, r in collection.waiting.items() if r.expires < now]:
                del collection.waiting[key]
            if collection.waiting:
                return False
            del self._collections[collection.path]
            metrics.OBJECT_WATCHES.set(len(self._collections))
            return True

    def _run(self, collection: _Collection) -> None:
        version: str | None = None
        while True:
            if self._prune(collection):
                return
            try:
                if version is None:
                    version = self._list(collection)
                version = self._watch(collection, version)
            except Exception as exc:
                log.warning("watch of %s: %s; starting over", collection.path, exc)
                version = None
                time.sleep(RETRY_SECONDS)

    def _list(self, collection: _Collection) -> str:
        metrics.OBJECT_REQUESTS.labels("list").inc()
        answer = self._requests.call("GET", collection.path, actor=None)
        if answer.status == 403:
            self._refused(collection, answer.reason())
        if not answer.ok or not isinstance(answer.body, dict):
            raise RuntimeError(f"list: {answer.reason()}")
        items = {_object_key(item): item for item in answer.body.get("items") or []}
        with self._lock:
            collection.objects = items
            collection.synced = True
            waiting = list(collection.waiting.values())
        for registration in waiting:
            found = items.get(_key_of(registration.target))
            if found is not None:
                self._consider(collection, [registration], found)
        return str(answer.body.get("metadata", {}).get("resourceVersion") or "")

    def _refused(self, collection: _Collection, reason: str) -> None:
        """The operator may not watch this resource: every wait on it fails now, saying so."""
        with self._lock:
            waiting = list(collection.waiting.values())
        message = (
            f"the operator may not list and watch {collection.path} to wait ({reason}); an admin can allow it "
            "(Helm value kubernetesActions.watch)"
        )
        for registration in waiting:
            self._decide(collection, registration, Outcome(False, 403, f"{registration.said}: {message}"))
        raise RuntimeError(message)

    def _watch(self, collection: _Collection, version: str) -> str | None:
        """One watch request; the version to continue from, or None to list again (410 Gone)."""
        metrics.OBJECT_REQUESTS.labels("watch").inc()
        api = self._requests.api
        query = f"watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={version}"
        response = api.rest_client.pool_manager.request(
            "GET",
            api.configuration.host.rstrip("/") + collection.path + "?" + query,
            headers=self._requests.headers(None),
            timeout=urllib3.Timeout(connect=10, read=WATCH_SECONDS + 30),
            preload_content=False,
            retries=False,
        )
        try:
            if response.status != 200:
                raise RuntimeError(f"watch: HTTP {response.status}")
            buffer = b""
            for chunk in response.stream(64 * 1024):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        seen = self._event(collection, json.loads(line), version)
                        if seen is None:
                            return None
                        version = seen
        finally:
            response.release_conn()
        return version

    def _event(self, collection: _Collection, event: dict[str, Any], version: str) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            return None  # 410 Gone and the like: list again
        meta = obj.get("metadata") or {}
        seen = str(meta.get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return seen
        key = _object_key(obj)
        with self._lock:
            if kind == "DELETED":
                collection.objects.pop(key, None)
            else:
                collection.objects[key] = obj
            waiting = collection.for_object(key)
        if waiting and kind != "DELETED":
            self._consider(collection, waiting, obj)
        return seen


def _gone(exc: Exception) -> bool:
    """Whether raising failed because the instance no longer exists (its resource was deleted and purged)."""
    code = getattr(exc, "code", None)
    if callable(code) and getattr(code(), "name", "") == "NOT_FOUND":
        return True
    text = str(exc).lower()
    return "not found" in text or "no such instance" in text
