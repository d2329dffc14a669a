"""Whose credentials a request's API calls carry: the console never acts with rights of its own.

Three modes, chosen when the console starts:

- `kubeconfig` (local, `steadfast console`): the user's kubeconfig; the console is the user.
- `token` (in a cluster): the viewer's bearer token, from the request's Authorization header, is passed through
  to the API server; a request without one is refused (401). The console's own service account is never used.
- `proxy` (in a cluster, behind an authenticating proxy such as oauth2-proxy): the proxy's identity headers
  (X-Forwarded-User, X-Forwarded-Groups) become impersonation headers on the console's service account, which
  then needs `impersonate` rights. Whoever can reach the console can claim any identity with those headers, so
  they are accepted only from a trusted peer address (the proxy as a sidecar, on loopback), and never for
  Kubernetes' own identities (`system:` users and groups, system:masters among them).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client, config

Mode = Literal["kubeconfig", "token", "proxy"]
MODES: tuple[Mode, ...] = ("kubeconfig", "token", "proxy")
_SA = "/var/run/secrets/kubernetes.io/serviceaccount"
# Names Kubernetes gives its own users and groups (system:masters, system:serviceaccount:...): never impersonated.
RESERVED = "system:"
_CACHE = 64  # API clients kept per viewer (token or proxied identity); each holds a connection pool


class Unauthenticated(Exception):
    """The request carries no credentials this mode accepts (HTTP 401)."""


class Untrusted(Exception):
    """Identity headers from a peer that is not the trusted proxy (HTTP 403)."""


@dataclass(frozen=True)
class Viewer:
    """The credentials of one request: an API client that acts as the viewer, and a key naming the viewer (the
    CSRF token is bound to it, so a token issued to one viewer is worthless to another)."""

    api: client.ApiClient
    key: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Clients:
    """A small LRU of API clients by viewer key, so a viewer's page views reuse one connection pool."""

    def __init__(self, make: Callable[[], client.ApiClient]) -> None:
        self._make = make
        self._items: OrderedDict[str, client.ApiClient] = OrderedDict()

    def get(self, key: str, setup: Callable[[client.ApiClient], None]) -> client.ApiClient:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        api = self._make()
        setup(api)
        self._items[key] = api
        while len(self._items) > _CACHE:
            _, old = self._items.popitem(last=False)
            old.close()
        return api


def _server_only(kubeconfig: str | None, context: str | None, ca_file: str | None = None) -> client.Configuration:
    """Where the API server is and how to trust it, with no credentials: from a kubeconfig when given, else
    the pod's (KUBERNETES_SERVICE_HOST, and `ca_file` or the service account's CA; never a token)."""
    cfg = client.Configuration()
    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    else:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        cfg.host = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        cfg.ssl_ca_cert = ca_file or f"{_SA}/ca.crt"
    cfg.api_key = {}
    cfg.api_key_prefix = {}
    cfg.cert_file = cfg.key_file = None
    cfg.username = cfg.password = None
    cfg.refresh_api_key_hook = None
    return cfg


def _own(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """The console's own identity (proxy mode only: it impersonates the proxied viewer)."""
    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def _impersonating(api: client.ApiClient, user: str, groups: list[str]) -> None:
    """Make every request of `api` impersonate `user` and each of `groups`. The API server reads one group per
    Impersonate-Group header; the client keeps one value per header name, so the groups are added where the
    request is sent."""
    pool = api.rest_client.pool_manager
    send = pool.request

    def request(method: str, url: str, *args: Any, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        from urllib3 import HTTPHeaderDict

        merged = HTTPHeaderDict(headers or {})
        merged["Impersonate-User"] = user
        for group in groups:
            merged.add("Impersonate-Group", group)
        return send(method, url, *args, headers=merged, **kw)

    pool.request = request


def _peer_trusted(peer: str | None, trusted: Iterable[str]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in trusted)


class Credentials:
    """Turns a request's headers (and peer address) into the viewer's credentials, per the console's mode."""

    def __init__(
        self,
        mode: Mode,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128"),
        ca_file: str | None = None,
    ) -> None:
        self.mode = mode
        self.trusted_proxies = trusted_proxies
        if mode == "kubeconfig":
            self._local = config.new_client_from_config(config_file=kubeconfig, context=context)
        elif mode == "token":
            base = _server_only(kubeconfig, context, ca_file)
            self._clients = _Clients(lambda: client.ApiClient(copy.deepcopy(base)))
        else:
            self._clients = _Clients(lambda: _own(kubeconfig, context))

    def viewer(self, headers: dict[str, str], peer: str | None) -> Viewer:
        """The viewer behind a request with these headers (case-insensitive names) from `peer`."""
        if self.mode == "kubeconfig":
            return Viewer(self._local, "kubeconfig")
        if self.mode == "token":
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("send the viewer's bearer token (Authorization: Bearer ...)")
            key = "token:" + _digest(token.strip())

            def bearer(api: client.ApiClient) -> None:
                api.configuration.api_key = {"authorization": f"Bearer {token.strip()}"}

            return Viewer(self._clients.get(key, bearer), key)
        user = headers.get("x-forwarded-user", "").strip()
        if not _peer_trusted(peer, self.trusted_proxies):
            raise Untrusted(f"identity headers are accepted only from the authenticating proxy, not from {peer}")
        if not user:
            raise Unauthenticated("the authenticating proxy sent no X-Forwarded-User")
        groups = sorted({g.strip() for g in headers.get("x-forwarded-groups", "").split(",") if g.strip()})
        reserved = [n for n in (user, *groups) if n.startswith(RESERVED)]
        if reserved:  # the proxy's identity provider never names Kubernetes' own users and groups
            raise Untrusted(f"the console does not impersonate Kubernetes' own identities: {', '.join(reserved)}")
        key = "proxy:" + _digest("\n".join([user, *groups]))
        return Viewer(self._clients.get(key, lambda api: _impersonating(api, user, groups)), key)
