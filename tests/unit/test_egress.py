"""The egress policy: metadata and link-local never, loopback only when allowed, allow- and deny-lists."""

from __future__ import annotations

import pytest

from steadfast.egress import SIDECAR_PORTS, EgressDenied, EgressPolicy, endpoints_of


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
