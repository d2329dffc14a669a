"""The egress policy: metadata and link-local never, loopback only when allowed, allow- and deny-lists."""

from __future__ import annotations

import pytest

from steadfast.egress import EgressDenied, EgressPolicy


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
