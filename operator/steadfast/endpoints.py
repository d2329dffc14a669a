"""The endpoints no action may reach, whatever the egress allow-list says, and where the operator learns them.

- the Kubernetes API server, as the operator reaches it and as pods name it (the `kubernetes` Service);
- the Dapr sidecar: every `DAPR_*_PORT` and `DAPR_*_ENDPOINT` of the environment (a sidecar on other ports than
  the defaults is protected as well as one on them; the defaults are in `egress.SIDECAR_PORTS`);
- the operator's own listeners (admission webhooks, metrics, liveness probe);
- what a control plane publishes in the kubeconfig the operator runs with: a cluster entry's extension
  `steadfast.dev/protected-endpoints` lists its components (the dev control plane's etcd, controller manager,
  daprd, placement, scheduler, local engine), so a local operator refuses them however it is started.

On loopback or another address of this host, one protected port is protected on all of them (`EgressPolicy`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from steadfast.egress import IPAddress, endpoints_of

EXTENSION = "steadfast.dev/protected-endpoints"
Endpoints = dict[tuple[IPAddress, int], str]


class Endpoint(BaseModel):
    """One published endpoint: where a component listens, and what it is (shown in the refusal)."""

    host: str
    port: int
    what: str


class Published(BaseModel):
    """The extension's content."""

    endpoints: list[Endpoint]


def extension(endpoints: Iterable[Endpoint]) -> dict[str, object]:
    """The kubeconfig `extensions` entry a control plane adds to its cluster (kubectl ignores it)."""
    return {"name": EXTENSION, "extension": Published(endpoints=list(endpoints)).model_dump()}


def _address(host: str, port: int, what: str) -> Endpoints:
    """A listener's endpoints; an unspecified address (0.0.0.0, ::, empty) is this host's loopback."""
    with contextlib.suppress(ValueError):
        if not host or ipaddress.ip_address(host.strip("[]")).is_unspecified:
            host = "127.0.0.1"
    return endpoints_of(host.strip("[]"), port, what)


def _host_port(text: str) -> tuple[str, int] | None:
    parts = urlsplit(text if "://" in text else f"//{text}")
    with contextlib.suppress(ValueError):
        if parts.port:
            return parts.hostname or "", parts.port
    return None


def published(paths: Iterable[Path]) -> Endpoints:
    """The endpoints every cluster of these kubeconfig files publishes (unreadable files publish nothing)."""
    out: Endpoints = {}
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in doc.get("clusters") or []:
            for ext in ((entry or {}).get("cluster") or {}).get("extensions") or []:
                if (ext or {}).get("name") != EXTENSION:
                    continue
                try:
                    content = Published.model_validate(ext.get("extension"))
                except ValidationError:
                    continue
                for e in content.endpoints:
                    out |= _address(e.host, e.port, e.what)
    return out


def kubeconfig_paths(env: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files the operator reads: $KUBECONFIG (a path list), else ~/.kube/config out of a cluster."""
    if env.get("KUBECONFIG"):
        return [Path(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
    if env.get("KUBERNETES_SERVICE_HOST"):
        return []
    return [Path.home() / ".kube" / "config"]


def dapr(env: Mapping[str, str]) -> Endpoints:
    """The sidecar's ports and endpoints the environment names (DAPR_HTTP_PORT, DAPR_GRPC_ENDPOINT, ...)."""
    out: Endpoints = {}
    for name, value in sorted(env.items()):
        if not name.startswith("DAPR_"):
            continue
        what = f"the Dapr sidecar, the workflow engine ({name})"
        if name.endswith("_PORT") and value.strip().isdigit() and 0 < int(value) < 65536:
            out |= _address("127.0.0.1", int(value), what)
        elif name.endswith("_ENDPOINT") and (found := _host_port(value.strip())) is not None:
            out |= _address(*found, what)
    return out


def api_server(host_url: str, env: Mapping[str, str]) -> Endpoints:
    """The API server as the operator reaches it (`host_url`) and as pods name it (the kubernetes Service)."""
    out: Endpoints = {}
    what = "the Kubernetes API server"
    server = urlsplit(host_url)
    if server.hostname:
        out |= endpoints_of(server.hostname, server.port or (443 if server.scheme == "https" else 80), what)
    service_host, service_port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT") or "443"
    if service_host and service_port.isdigit():
        out |= endpoints_of(service_host, int(service_port), what)
    return out


def listeners(addresses: Iterable[tuple[str, str]]) -> Endpoints:
    """The operator's own servers, given as (`host:port` or URL, what); empty or unparsable ones are skipped."""
    out: Endpoints = {}
    for text, what in addresses:
        found = _host_port(text) if text else None
        if found is not None:
            out |= _address(*found, what)
    return out


def local_addresses() -> set[IPAddress]:
    """This host's own addresses besides loopback (in a pod: its IP), which its servers on 0.0.0.0 answer on."""
    out: set[IPAddress] = set()
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM):
            out.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    return {ip for ip in out if not ip.is_loopback}
