"""The cluster as egress rules see it: Service addresses, namespace labels and SteadfastPolicies, watched.

A watch keeps each current (one list, then events), so checking an action's destination costs no API call.
Until all three are listed, `view()` waits, then gives up: actions are refused rather than let through on a
half-known cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast.api.kinds import POLICY
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.egress import IPAddress, IPNetwork
from steadfast.egress_rules import DEFAULT_CLUSTER_NETWORKS, ClusterView

log = logging.getLogger(__name__)


class ClusterWatch:
    def __init__(
        self, api: Callable[[], client.ApiClient], networks: tuple[IPNetwork, ...] = DEFAULT_CLUSTER_NETWORKS
    ) -> None:
        self._factory = api
        self._networks = networks
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], list[IPAddress]] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._policies: dict[str, SteadfastPolicySpec] = {}
        self._synced = {name: threading.Event() for name in ("services", "namespaces", "policies")}
        self._stopped = threading.Event()

    def start(self) -> None:
        for name in self._synced:
            threading.Thread(target=self._follow, args=(name,), name=f"watch-{name}", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def view(self, timeout: float = 10.0) -> ClusterView | None:
        """The current view, or None if the cluster has not been listed within `timeout`."""
        deadline = time.monotonic() + timeout
        for event in self._synced.values():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                return None
        with self._lock:
            services = {ip: key for key, ips in self._services.items() for ip in ips}
            return ClusterView(services, dict(self._labels), list(self._policies.items()), self._networks)

    def limit(self, default: int) -> Callable[[str], int]:
        """Actions a namespace may run at once: the lowest `limits` rule of the policies selecting it, else
        `default`. Read from the watched copies at each admission (cheap: no API request)."""

        def of(namespace: str) -> int:
            with self._lock:
                labels = self._labels.get(namespace, {})
                found = [
                    rule.actions_in_flight
                    for spec in self._policies.values()
                    for rule in spec.limits
                    if rule.namespace_selector.matches(labels)
                ]
            return min(found) if found else default

        return of

    # ---- list and watch -------------------------------------------------------------------------------

    def _lister(self, api: client.ApiClient, name: str) -> Callable[..., Any]:
        core = client.CoreV1Api(api)
        if name == "services":
            services: Callable[..., Any] = core.list_service_for_all_namespaces
            return services
        if name == "namespaces":
            namespaces: Callable[..., Any] = core.list_namespace
            return namespaces

        def policies(**kw: Any) -> Any:
            return client.CustomObjectsApi(api).list_cluster_custom_object(
                POLICY.group, POLICY.version, POLICY.plural, **kw
            )

        return policies

    def _follow(self, name: str) -> None:
        api = self._factory()
        lister = self._lister(api, name)
        while not self._stopped.is_set():
            try:
                listed = lister()
                items, version = _items(listed), _version(listed)
                with self._lock:
                    self._replace(name, items)
                self._synced[name].set()
                for event in watch.Watch().stream(lister, resource_version=version, timeout_seconds=300):
                    with self._lock:
                        self._apply(name, event["type"], event["object"])
            except ApiException as exc:
                if name == "policies" and exc.status == 404:
                    self._synced[name].set()  # the CRD is not installed: no policies
                else:
                    log.warning("watching %s: HTTP %s; listing again", name, exc.status)
            except Exception as exc:  # a dropped connection: list again
                log.warning("watching %s: %s; listing again", name, exc)
            self._stopped.wait(1.0)

    def _replace(self, name: str, items: list[Any]) -> None:
        if name == "services":
            self._services = {}
        elif name == "namespaces":
            self._labels = {}
        else:
            self._policies = {}
        for item in items:
            self._apply(name, "ADDED", item)

    def _apply(self, name: str, kind: str, obj: Any) -> None:
        meta = _meta(obj)
        if name == "services":
            key = (meta["namespace"], meta["name"])
            if kind == "DELETED":
                self._services.pop(key, None)
            else:
                self._services[key] = _cluster_ips(obj)
        elif name == "namespaces":
            if kind == "DELETED":
                self._labels.pop(meta["name"], None)
            else:
                self._labels[meta["name"]] = dict(meta.get("labels") or {})
        elif kind == "DELETED":
            self._policies.pop(meta["name"], None)
        else:
            try:
                self._policies[meta["name"]] = SteadfastPolicySpec.model_validate(_spec(obj))
            except ValidationError as exc:
                log.error("SteadfastPolicy %s is not valid, its egress rules are ignored: %s", meta["name"], exc)
                self._policies.pop(meta["name"], None)


def _items(listed: Any) -> list[Any]:
    return list(listed["items"] if isinstance(listed, dict) else listed.items)


def _version(listed: Any) -> str:
    return str(listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version)


def _meta(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj["metadata"])
    return {"name": obj.metadata.name, "namespace": obj.metadata.namespace, "labels": obj.metadata.labels}


def _spec(obj: Any) -> Any:
    return obj.get("spec") or {} if isinstance(obj, dict) else {}


def _cluster_ips(service: Any) -> list[IPAddress]:
    spec = service.spec
    texts = list(spec.cluster_i_ps or ([spec.cluster_ip] if spec.cluster_ip else []))
    out: list[IPAddress] = []
    for text in texts:
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            continue  # "None": a headless Service, whose names resolve to Pods
    return out
