"""Where the operator may send HTTP requests on users' behalf.

Steadfast holds cluster-wide rights and runs next to the Dapr sidecar, so a URL in a spec must not
reach what its author could not: cloud metadata services, link-local addresses, the pod's own
loopback (the sidecar's API) or, when the admin says so, anything outside an allow-list. Names are
resolved once and the connection goes to the checked address, so DNS rebinding cannot swap it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_DENIED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS, GCP, Azure metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",  # multicast
    )
)
LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
DENIED_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.internal"})
# The Dapr sidecar's ports on loopback (HTTP and gRPC API, internal gRPC, health, metrics): the operator's own
# daprd would run any workflow, read any state the operator can, with the operator's identity.
SIDECAR_PORTS = frozenset({3500, 3501, 50001, 50002, 9090})


def endpoints_of(host: str, port: int, what: str) -> dict[tuple[IPAddress, int], str]:
    """Every address `host` resolves to, with `port`, labelled `what` (nothing if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return {}
    return {(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]), port): what for info in infos}


class EgressDenied(Exception):
    """A destination the policy refuses; the message says why and is safe to show in status."""


@dataclass(frozen=True)
class EgressPolicy:
    """`allow`: networks or host names that are allowed (empty = any host not denied).

    Loopback is refused unless allowed explicitly (the local demo and tests allow 127.0.0.0/8).
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    deny_networks: tuple[IPNetwork, ...] = ()
    # Endpoints no allow-list can open: the API server's addresses and the workflow engine (ip, port) -> what.
    protected: Mapping[tuple[IPAddress, int], str] = field(default_factory=dict)

    def protecting(self, endpoints: Mapping[tuple[IPAddress, int], str]) -> EgressPolicy:
        """This policy, also refusing `endpoints` whatever it allows."""
        return replace(self, protected={**self.protected, **endpoints})

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> EgressPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for item in allow:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts), tuple(ipaddress.ip_network(d, strict=False) for d in deny))

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        return any(ip in n for n in self.allow_networks)

    def check(self, host: str, port: int, refuse: Callable[[str, IPAddress], str | None] | None = None) -> list[str]:
        """Resolve `host` and return the addresses that may be used; raise EgressDenied otherwise.

        `refuse` is the next layer (the namespace's rules, see egress_rules): a reason refuses the address.
        """
        name = host.lower().rstrip(".")
        if name in DENIED_HOSTS:
            raise EgressDenied(f"destination {host} is a cloud metadata service, which Steadfast never calls")
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise EgressDenied(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed: list[str] = []
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if any(ip in n for n in ALWAYS_DENIED):
                raise EgressDenied(
                    f"destination {host} ({ip}) is link-local or a metadata address, which Steadfast never calls"
                )
            what = self.protected.get((ip, port))
            if what is None and any(ip in n for n in LOOPBACK):
                # Any loopback address reaches a server bound to 0.0.0.0: one protected is all protected.
                what = next((w for (p, q), w in self.protected.items() if q == port and p.is_loopback), None)
                if what is None and port in SIDECAR_PORTS:
                    what = "the Dapr sidecar's port on loopback"
            if what is not None:
                raise EgressDenied(f"destination {host}:{port} ({ip}) is {what}, which Steadfast never calls")
            if any(ip in n for n in self.deny_networks):
                raise EgressDenied(f"destination {host} ({ip}) is denied by the operator's egress policy")
            if any(ip in n for n in LOOPBACK) and not self._explicitly_allowed(ip):
                raise EgressDenied(
                    f"destination {host} ({ip}) is a loopback address; the operator's egress policy does not allow it"
                )
            if (self.allow_networks or self.allow_hosts) and not (
                self._explicitly_allowed(ip) or name in self.allow_hosts
            ):
                raise EgressDenied(f"destination {host} ({ip}) is not in the operator's egress allow-list")
            reason = refuse(name, ip) if refuse is not None else None
            if reason is not None:
                raise EgressDenied(reason)
            allowed.append(str(ip))
        if not allowed:
            raise EgressDenied(f"cannot resolve {host}")
        return allowed
