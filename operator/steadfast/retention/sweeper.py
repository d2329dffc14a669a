"""Deletes finished resources whose `status.retainedUntil` has passed, every few seconds.

It lists only removable phases (`status.phase` is a selectable field, so the API server filters) and deletes
with a UID and resourceVersion precondition: a resource that changed since the list (a person's decision, a
newer status) is left for the next sweep to look at again. Deletion takes the normal path: kopf's delete
handler (steadfast.binding `stop`) purges the workflow instance, which has ended, so nothing is compensated,
and removes the finalizer. Every replica sweeps (a standby too): a delete that another already made is a 404
or a 409, and is ignored.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast import metrics
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA, Kind
from steadfast.retention.rules import REMOVABLE, Outcome, due, outcome_of

log = logging.getLogger(__name__)

KINDS: tuple[Kind, ...] = (TASK_SAGA, APPROVAL_REQUEST)
INTERVAL = 30.0  # seconds between sweeps (--retention-sweep-interval)
PAGE = 500


@dataclass(frozen=True)
class Finished:
    """One finished resource as listed: what the delete's precondition and the log line need."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    resource_version: str
    outcome: Outcome
    retained_until: datetime | None
    deleting: bool

    @classmethod
    def of(cls, kind: Kind, item: dict[str, Any]) -> Finished | None:
        meta, status = item.get("metadata") or {}, item.get("status") or {}
        has_action = kind is APPROVAL_REQUEST and (item.get("spec") or {}).get("action") is not None
        outcome = outcome_of(kind.kind, status.get("phase"), has_action=has_action)
        if outcome is None:
            return None
        return cls(
            kind,
            meta["namespace"],
            meta["name"],
            meta["uid"],
            meta["resourceVersion"],
            outcome,
            _moment(status.get("retainedUntil")),
            bool(meta.get("deletionTimestamp")),
        )


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


class Scope:
    """The namespaces the operator watches (`steadfast run -n`, glob patterns allowed); empty: all."""

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns = tuple(patterns)

    def literal(self) -> tuple[str, ...] | None:
        """The namespaces to list one by one, or None to list across the cluster (and filter with `covers`)."""
        if not self.patterns or any(set(p) & set("*?[!") for p in self.patterns):
            return None
        return self.patterns

    def covers(self, namespace: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(namespace, p) for p in self.patterns)


class Sweeper:
    """Runs `sweep` every `interval` seconds in a thread of its own until `stop`."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        interval: float = INTERVAL,
        scope: Scope | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = client.CustomObjectsApi(api)
        self.interval = interval
        self.scope = scope or Scope()
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # the next sweep tries again; the operator goes on
                log.warning("retention sweep failed; trying again in %gs", self.interval, exc_info=True)

    def sweep(self) -> list[Finished]:
        """One pass over every kind: delete what is due; returns what was deleted."""
        removed: list[Finished] = []
        now = self.clock()
        for kind in KINDS:
            kept = 0
            for found in self._finished(kind):
                if found.deleting:
                    continue  # on its way out already
                if due(found.retained_until, now) and self._delete(found):
                    removed.append(found)
                else:
                    kept += 1
            metrics.RETAINED.labels(kind.kind).set(kept)
        return removed

    def _finished(self, kind: Kind) -> Iterator[Finished]:
        namespaces = self.scope.literal()
        for phase in REMOVABLE[kind.kind]:
            selector = f"status.phase={phase}"
            for namespace in namespaces if namespaces is not None else (None,):
                for item in self._pages(kind, selector, namespace):
                    found = Finished.of(kind, item)
                    if found is not None and self.scope.covers(found.namespace):
                        yield found

    def _pages(self, kind: Kind, selector: str, namespace: str | None) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"field_selector": selector, "limit": PAGE}
            if token:
                args["_continue"] = token
            try:
                if namespace is None:
                    page = self.api.list_cluster_custom_object(kind.group, kind.version, kind.plural, **args)
                else:
                    page = self.api.list_namespaced_custom_object(
                        kind.group, kind.version, namespace, kind.plural, **args
                    )
            except ApiException as exc:
                metrics.API_ERRORS.labels("list_retained", str(exc.status)).inc()
                if exc.status == 404:
                    return  # the CRD (or the namespace) is not there: nothing of it to remove
                raise
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _delete(self, found: Finished) -> bool:
        kind = found.kind
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=found.uid, resource_version=found.resource_version),
            propagation_policy="Background",
        )
        try:
            self.api.delete_namespaced_custom_object(
                kind.group, kind.version, found.namespace, kind.plural, found.name, body=options
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False  # gone already (another replica), or changed since the list: the next sweep sees
            metrics.API_ERRORS.labels("delete_retained", str(exc.status)).inc()
            log.warning("cannot remove %s %s/%s: HTTP %s", kind.kind, found.namespace, found.name, exc.status)
            return False
        metrics.RETENTION_REMOVALS.labels(kind.kind, found.outcome.value).inc()
        until = found.retained_until.isoformat() if found.retained_until else "?"
        log.info(
            "retention: removed %s %s/%s (%s, retained until %s); its workflow instance is purged on deletion",
            kind.kind,
            found.namespace,
            found.name,
            found.outcome.value,
            until,
        )
        return True
