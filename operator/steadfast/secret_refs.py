"""Where a Secret that a header references may be sent: what its writer allowed, checked per request.

A Secret is sent only if its writer opted in (label `steadfast.dev/referable=true`) and only where its writer
allows: the hosts the annotation `steadfast.dev/send-to` lists, or, without it, the Services of the Secret's own
namespace. The writer of a Secret can read it anyway, so the choice is theirs; the author of a saga, who may not
be able to read it, cannot send it to a server of their own. Pure: the caller reads the Secret and resolves the
destination (after placeholders, after the egress layers), and asks here before the value goes into a request.

`send-to` syntax: destinations separated by commas or spaces, each `[http:// | https://]HOST[:PORT]`, where HOST is
a DNS name (`hooks.example.com`), a wildcard over the names below one (`*.example.com`: `a.example.com` and
`a.b.example.com`, not `example.com`), an IP address (`10.0.0.7`, `[fd00::7]`; matched against the address the
operator connects to) or `*` (anywhere the egress layers allow). A scheme or a port, if given, must match as well
(a URL without a port has 80 or 443). An annotation with no destination sends the Secret nowhere.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from steadfast.egress import IPAddress
from steadfast.egress_rules import ClusterView

REFERABLE_LABEL = "steadfast.dev/referable"
SEND_TO = "steadfast.dev/send-to"

_ENTRY = re.compile(r"(?:(?P<scheme>https?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]@?#]+)(?::(?P<port>[0-9]{1,5}))?")
_LABEL = r"[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class Destination:
    """Where one request goes: the rendered URL's scheme, host (lower case) and port, and the address used."""

    scheme: str
    host: str
    port: int
    address: IPAddress

    def describe(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port} ({self.address})"


@dataclass(frozen=True)
class Allowed:
    """One destination of a `send-to` annotation."""

    scheme: str | None
    host: str  # a name, `*.name`, or `*`; empty when `address` is set
    port: int | None
    address: IPAddress | None = None

    @classmethod
    def parse(cls, text: str) -> Allowed:
        match = _ENTRY.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not [http:// or https://]HOST[:PORT]")
        scheme, host, port = match["scheme"], match["host"].lower().rstrip("."), match["port"]
        number = int(port) if port is not None else None
        if number is not None and not 0 < number < 65536:
            raise ValueError(f"{text!r} has a port outside 1-65535")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            return cls(scheme, "", number, address)
        name = host[2:] if host.startswith("*.") else host
        if host != "*" and not _NAME.fullmatch(name):
            raise ValueError(f"{text!r}: {host!r} is not a host name, *.name, an IP address or *")
        return cls(scheme, host, number, None)

    def matches(self, to: Destination) -> bool:
        if (self.scheme is not None and self.scheme != to.scheme) or (self.port is not None and self.port != to.port):
            return False
        if self.address is not None:
            return self.address == to.address
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return to.host.endswith(self.host[1:])
        return to.host == self.host


@dataclass(frozen=True)
class StoredSecret:
    """A Secret as the operator read it (by name, in the resource's namespace)."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)  # base64, as the API gives it

    @property
    def ref(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def header_value(self, key: str) -> str:
        """The decoded value of `key` as a header value; ask `refusal` first. Raises ValueError naming the key,
        never quoting the value (an HTTP library's own error for a bad header would quote it)."""
        if key not in self.data:
            raise ValueError(f"{self.ref} has no key {key!r}")
        try:
            text = base64.b64decode(self.data[key]).decode()
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{self.ref} key {key!r} is not UTF-8 text") from None
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"{self.ref} key {key!r} holds a line break or NUL, which a header value cannot")
        return text


def refusal(secret: StoredSecret, to: Destination, view: ClusterView | None) -> str | None:
    """Why `secret` may not be sent to `to`, or None when its writer allows it. The message is safe for status.

    `view` (the cluster's Services) decides the default: the address must be a Service of the Secret's namespace.
    """
    if secret.labels.get(REFERABLE_LABEL) != "true":
        return f"{secret.ref} is not referable: label it {REFERABLE_LABEL}=true to let Steadfast send it"
    listed = secret.annotations.get(SEND_TO)
    if listed is not None:
        entries = [entry for entry in re.split(r"[,\s]+", listed) if entry]
        try:
            allowed = [Allowed.parse(entry) for entry in entries]
        except ValueError as exc:
            return f"{secret.ref} is not sent: its {SEND_TO} annotation cannot be read: {_clip(str(exc))}"
        if any(a.matches(to) for a in allowed):
            return None
        return (
            f"{secret.ref} may not be sent to {to.describe()}: its {SEND_TO} annotation allows only "
            f"{_clip(', '.join(entries)) or 'nothing'}"
        )
    if view is None:
        return f"{secret.ref} is not sent: the operator does not know the cluster's Services yet; try again"
    service = view.services.get(to.address)
    if service is not None and service[0] == secret.namespace:
        return None
    return (
        f"{secret.ref} may not be sent to {to.describe()}: without a {SEND_TO} annotation a Secret goes only to "
        f"Services of its own namespace ({secret.namespace}); its writer may annotate it with the hosts it may reach"
    )


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
