"""Where the operator may send HTTP requests on users' behalf.

Steadfast holds cluster-wide rights and runs next to the Dapr sidecar, so a URL in a spec must not
reach what its author could not: cloud metadata services, link-local addresses, the pod's own
loopback (the sidecar's API), the control plane or, when the admin says so, anything outside an allow-list.
Names are resolved once and the connection goes to the checked address, so DNS rebinding cannot swap it.
Every IPv6 form that carries an IPv4 address is judged by that address too (`addresses.forms`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from steadfast.addresses import IPAddress, forms, refused_form

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
__all__ = ["IPAddress", "IPNetwork"]

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
# The Dapr sidecar's default ports (HTTP and gRPC API, internal gRPC, public health, metrics, profiling): the
# operator's own daprd would run any workflow, read any state the operator can, with the operator's identity.
# The ports a pod's environment names (DAPR_HTTP_PORT, ...) are added by `endpoints.protected`.
SIDECAR_PORTS = frozenset({3500, 3501, 50001, 50002, 9090, 7777})


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
class Destination:
    """One allow-list entry: a network or a host name, on one port or on all.

    Written `10.0.0.0/8`, `api.example.com`, `127.0.0.1:8080`, `10.1.0.0/16:443`, `api.example.com:443`,
    `[::1]:8080` or `[fd00::/64]:443` (IPv6 with a port in brackets).
    """

    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Destination:
        item, port = text.strip(), None
        if item.startswith("["):
            inside, _, rest = item[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"egress destination {text!r}: expected [address]:port")
            item, port = inside, (rest[1:] or None)
        elif item.count(":") == 1:
            item, port = item.split(":")
        number = None
        if port is not None:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"egress destination {text!r}: the port must be a number from 1 to 65535")
            number = int(port)
        if not item:
            raise ValueError(f"egress destination {text!r} names no network or host")
        try:
            return cls(network=ipaddress.ip_network(item, strict=False), port=number)
        except ValueError:
            if ":" in item or "/" in item:
                raise ValueError(
                    f"egress destination {text!r} is not a network, a host or either with a port"
                ) from None
            return cls(host=item.lower().rstrip("."), port=number)

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def admits_address(self, ip: IPAddress, port: int) -> bool:
        return self.network is not None and ip in self.network and self._port_ok(port)

    def admits_name(self, name: str, port: int) -> bool:
        return self.host is not None and self.host == name and self._port_ok(port)


@dataclass(frozen=True)
class EgressPolicy:
    """`allow`: destinations that are allowed (empty = any host not denied).

    Loopback is refused unless an entry allows it explicitly (the local demo and tests allow the sample task
    service's port, e.g. 127.0.0.1:8089).
    """

    allow: tuple[Destination, ...] = ()
    deny_networks: tuple[IPNetwork, ...] = ()
    # Endpoints no allow-list can open: the API server's addresses, the workflow engine, the sidecar's ports, the
    # operator's own listeners, the dev control plane's components; (ip, port) -> what.
    protected: Mapping[tuple[IPAddress, int], str] = field(default_factory=dict)
    # This host's own addresses besides loopback (the pod's IP): a server bound to all interfaces answers there too.
    local: frozenset[IPAddress] = field(default_factory=frozenset)

    def protecting(
        self, endpoints: Mapping[tuple[IPAddress, int], str], local: Iterable[IPAddress] = ()
    ) -> EgressPolicy:
        """This policy, also refusing `endpoints` whatever it allows; `local`: more of this host's addresses."""
        return replace(self, protected={**self.protected, **endpoints}, local=self.local | frozenset(local))

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> EgressPolicy:
        return cls(
            tuple(Destination.parse(a) for a in allow), tuple(ipaddress.ip_network(d, strict=False) for d in deny)
        )

    def _is_local(self, ip: IPAddress) -> bool:
        return any(ip in n for n in LOOPBACK) or ip in self.local

    def _protected(self, ip: IPAddress, port: int) -> str | None:
        what = self.protected.get((ip, port))
        if what is None and self._is_local(ip):
            # A server bound to 0.0.0.0 answers on every local address: one protected is all protected.
            what = next((w for (p, q), w in self.protected.items() if q == port and self._is_local(p)), None)
            if what is None and port in SIDECAR_PORTS:
                what = "the Dapr sidecar's port on this host"
        return what

    def _judge(self, host: str, name: str, ip: IPAddress, port: int, shown: str) -> None:
        """Raise EgressDenied if this layer refuses `ip`:`port` (one form of the resolved address, `shown`)."""
        if any(ip in n for n in ALWAYS_DENIED):
            raise EgressDenied(
                f"destination {host} ({shown}) is link-local or a metadata address, which Steadfast never calls"
            )
        what = self._protected(ip, port)
        if what is not None:
            raise EgressDenied(f"destination {host}:{port} ({shown}) is {what}, which Steadfast never calls")
        if any(ip in n for n in self.deny_networks):
            raise EgressDenied(f"destination {host} ({shown}) is denied by the operator's egress policy")
        explicitly = any(d.admits_address(ip, port) for d in self.allow)
        if self._is_local(ip) and not explicitly:
            kind = "a loopback address" if any(ip in n for n in LOOPBACK) else "an address of the operator's own host"
            raise EgressDenied(
                f"destination {host}:{port} ({shown}) is {kind}; the operator's egress policy does not allow it"
            )
        if self.allow and not (explicitly or any(d.admits_name(name, port) for d in self.allow)):
            raise EgressDenied(f"destination {host}:{port} ({shown}) is not in the operator's egress allow-list")

    def check(self, host: str, port: int, refuse: Callable[[str, IPAddress], str | None] | None = None) -> list[str]:
        """Resolve `host` and return the addresses that may be used; raise EgressDenied otherwise.

        `refuse` is the next layer (the namespace's rules, see egress_rules): a reason refuses the address.
        """
        name = host.lower().rstrip(".")
        if name in DENIED_HOSTS:
            raise EgressDenied(f"destination {host} is a cloud metadata service, which Steadfast never calls")
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise EgressDenied(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed: list[str] = []
        for text in addresses:
            resolved = ipaddress.ip_address(text.split("%", 1)[0])
            odd = refused_form(resolved)
            if odd is not None:
                raise EgressDenied(f"destination {host} ({resolved}) is {odd}, which Steadfast never calls")
            for ip in forms(resolved):
                self._judge(host, name, ip, port, str(ip) if ip == resolved else f"{resolved}, which carries {ip}")
            reason = refuse(name, resolved) if refuse is not None else None
            if reason is not None:
                raise EgressDenied(reason)
            allowed.append(str(forms(resolved)[0]))
        if not allowed:
            raise EgressDenied(f"cannot resolve {host}")
        return allowed
