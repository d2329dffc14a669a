"""The egress policy: metadata and link-local never, loopback only when allowed, allow- and deny-lists."""

from __future__ import annotations

import pytest

from steadfast.egress import SIDECAR_PORTS, Destination, EgressDenied, EgressPolicy, endpoints_of


@pytest.mark.parametrize("host", ["169.254.169.254", "metadata.google.internal", "[fe80::1]", "0.0.0.0"])
def test_metadata_and_link_local_are_always_refused(host: str) -> None:
    policy = EgressPolicy.parse(allow=["0.0.0.0/0", "::/0"])
    with pytest.raises(EgressDenied):
        policy.check(host.strip("[]"), 80)


def test_loopback_needs_an_explicit_allow() -> None:
    with pytest.raises(EgressDenied, match="loopback"):
        EgressPolicy.parse().check("127.0.0.1", 80)
    assert EgressPolicy.parse(allow=["127.0.0.0/8"]).check("127.0.0.1", 80) == ["127.0.0.1"]


def test_allow_list_restricts_destinations() -> None:
    policy = EgressPolicy.parse(allow=["10.1.0.0/16"])
    assert policy.check("10.1.2.3", 443) == ["10.1.2.3"]
    with pytest.raises(EgressDenied, match="allow-list"):
        policy.check("10.2.0.1", 443)


def test_deny_list_wins() -> None:
    with pytest.raises(EgressDenied, match="denied"):
        EgressPolicy.parse(deny=["192.0.2.0/24"]).check("192.0.2.7", 80)


@pytest.mark.parametrize("port", sorted(SIDECAR_PORTS))
def test_the_sidecar_is_never_reachable_even_with_loopback_allowed(port: int) -> None:
    with pytest.raises(EgressDenied, match="Dapr sidecar"):
        EgressPolicy.parse(allow=["127.0.0.0/8", "::1/128"]).check("127.0.0.1", port)


def test_protected_endpoints_win_over_any_allow_and_cover_all_of_loopback() -> None:
    policy = EgressPolicy.parse(allow=["0.0.0.0/0", "::/0"]).protecting(
        {**endpoints_of("127.0.0.1", 6443, "the Kubernetes API server"), **endpoints_of("10.0.0.1", 443, "the API")}
    )
    with pytest.raises(EgressDenied, match=r"127\.0\.0\.1:6443 .* is the Kubernetes API server"):
        policy.check("127.0.0.1", 6443)
    with pytest.raises(EgressDenied, match="Kubernetes API server"):
        policy.check("127.0.0.9", 6443)  # another loopback address reaches a server bound to all of them
    with pytest.raises(EgressDenied, match="is the API"):
        policy.check("10.0.0.1", 443)
    assert policy.check("10.0.0.1", 8443) == ["10.0.0.1"]  # another port of that host is not the API server


def test_an_allow_entry_may_name_one_port() -> None:
    policy = EgressPolicy.parse(allow=["127.0.0.1:8089", "10.1.0.0/16:443", "api.example.test:8443", "[::1]:8089"])
    assert policy.check("127.0.0.1", 8089) == ["127.0.0.1"]
    assert policy.check("::1", 8089) == ["::1"]
    assert policy.check("10.1.2.3", 443) == ["10.1.2.3"]
    for host, port in (("127.0.0.1", 2379), ("127.0.0.2", 8089), ("10.1.2.3", 80), ("::1", 2379)):
        with pytest.raises(EgressDenied):
            policy.check(host, port)


@pytest.mark.parametrize(
    ("text", "network", "host", "port"),
    [
        ("10.0.0.0/8", "10.0.0.0/8", None, None),
        ("127.0.0.1:8089", "127.0.0.1/32", None, 8089),
        ("10.1.0.0/16:443", "10.1.0.0/16", None, 443),
        ("2001:db8::/32", "2001:db8::/32", None, None),
        ("[2001:db8::/32]:443", "2001:db8::/32", None, 443),
        ("[::1]", "::1/128", None, None),
        ("API.example.com.", None, "api.example.com", None),
        ("api.example.com:443", None, "api.example.com", 443),
    ],
)
def test_allow_entries_parse(text: str, network: str | None, host: str | None, port: int | None) -> None:
    parsed = Destination.parse(text)
    assert (str(parsed.network) if parsed.network else None, parsed.host, parsed.port) == (network, host, port)


@pytest.mark.parametrize("text", ["127.0.0.1:0", "127.0.0.1:70000", "host:http", "[::1]8080", ":80", "10.0.0.0/33:1"])
def test_malformed_allow_entries_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="egress destination"):
        Destination.parse(text)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",  # IPv4-mapped: the kernel connects to 127.0.0.1
        "::ffff:169.254.169.254",
        "::ffff:0:127.0.0.1",  # SIIT
        "64:ff9b::127.0.0.1",  # NAT64 (well-known prefix)
        "64:ff9b::169.254.169.254",
        "64:ff9b::10.96.0.1",  # the API server's Service address, protected below
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:7f00:1::1",  # Teredo whose server is 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is ~0x80fffffe = 127.0.0.1
        "fd00::5efe:127.0.0.1",  # ISATAP interface identifier
        "::127.0.0.1",  # IPv4-compatible: refused as a form
        "::8.8.8.8",
        "64:ff9b:1::808:808",  # local-use NAT64: refused as a form
    ],
)
def test_ipv6_forms_that_carry_ipv4_are_judged_by_it(address: str) -> None:
    """With all of IPv6 and more allowed (not this host), every one of these is refused by what it carries."""
    policy = EgressPolicy.parse(allow=["::/0", "8.0.0.0/8", "10.0.0.0/8"]).protecting(
        endpoints_of("10.96.0.1", 443, "the Kubernetes API server")
    )
    with pytest.raises(EgressDenied):
        policy.check(address, 443)


def test_ipv6_forms_pass_when_what_they_carry_passes() -> None:
    policy = EgressPolicy.parse(allow=["0.0.0.0/0", "::/0"])
    assert policy.check("64:ff9b::8.8.8.8", 443) == ["64:ff9b::808:808"]  # DNS64 for a public host
    assert policy.check("2001:db8::1", 443) == ["2001:db8::1"]
    only_public = EgressPolicy.parse(allow=["8.8.8.0/24"])
    with pytest.raises(EgressDenied, match="allow-list"):  # the IPv6 form must be allowed as well
        only_public.check("64:ff9b::8.8.8.8", 443)


@pytest.mark.parametrize("address", ["::ffff:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::"])
def test_embedded_loopback_is_refused_even_when_loopback_is_allowed_on_another_port(address: str) -> None:
    policy = EgressPolicy.parse(allow=["127.0.0.1:8089", "::/0"])
    with pytest.raises(EgressDenied, match="loopback"):
        policy.check(address, 2379)
