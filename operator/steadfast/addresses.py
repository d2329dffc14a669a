"""What an IP address reaches: the IPv6 forms that carry an IPv4 address inside.

A check on the IPv6 address alone is a check on the wrong thing: `::ffff:127.0.0.1` is loopback to the kernel,
`64:ff9b::a9fe:a9fe` is 169.254.169.254 to a NAT64 gateway, `2002:7f00:1::` goes to 127.0.0.1 through a 6to4
relay. Both egress layers judge every address `forms` returns, and refuse if any is refused.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # the socket connects to the IPv4 address itself
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 7915)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # 6to4 (RFC 3056)
_TEREDO = ipaddress.ip_network("2001::/32")  # Teredo (RFC 4380)
_COMPATIBLE = ipaddress.ip_network("::/96")  # IPv4-compatible (deprecated by RFC 4291)
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # ISATAP interface identifiers (RFC 5214): ...:0:5efe:a.b.c.d


def _v4(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value & 0xFFFFFFFF)


def refused_form(ip: IPAddress) -> str | None:
    """Why an IPv6 form is refused whatever it embeds, or None.

    IPv4-compatible addresses (`::a.b.c.d`) are deprecated and have no legitimate destination; a local-use NAT64
    prefix places the IPv4 address where the network's configuration says (anywhere from /48 to /96), so the
    operator cannot know what it reaches.
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _COMPATIBLE and int(ip) > 1:
        return "an IPv4-compatible IPv6 address (deprecated)"
    if ip in _NAT64_LOCAL:
        return "in the local-use NAT64 prefix 64:ff9b:1::/48, whose IPv4 embedding the operator cannot know"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a packet to `ip` ends up at (mapped, SIIT, NAT64, 6to4, Teredo, ISATAP); () for none."""
    value = int(ip)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return (_v4(value),)
    if ip in _SIX_TO_FOUR:
        return (_v4(value >> 80),)
    if ip in _TEREDO:
        return (_v4(value >> 64), _v4(~value))  # the server, and the client (stored inverted)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        return (_v4(value),)
    return ()


def forms(ip: IPAddress) -> tuple[IPAddress, ...]:
    """Every address that decides where `ip` goes: itself, or for an IPv4-mapped one only the IPv4 address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return (ip,)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    return (ip, *embedded_ipv4(ip))
