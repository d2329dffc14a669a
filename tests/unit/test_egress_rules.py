"""Egress inside the cluster: own namespace's Services, outside addresses, and what admins' rules open."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from steadfast.api.policy import SteadfastPolicySpec
from steadfast.egress_rules import ClusterView, refusal

IP = ipaddress.ip_address
SERVICES = {IP("10.96.0.10"): ("team-a", "tasks"), IP("10.96.0.20"): ("team-b", "payments")}
LABELS = {"team-a": {"tier": "apps"}, "team-b": {"tier": "apps", "shares": "payments"}, "ops": {}}


def view(*egress: dict[str, Any]) -> ClusterView:
    return ClusterView(SERVICES, LABELS, [("org", SteadfastPolicySpec.model_validate({"egress": list(egress)}))])


def test_own_services_and_the_internet_are_reachable_by_default() -> None:
    assert refusal(view(), "team-a", "tasks.team-a.svc", IP("10.96.0.10")) is None
    assert refusal(view(), "team-a", "api.example.com", IP("93.184.216.34")) is None


def test_another_namespaces_service_and_pods_are_refused_by_default() -> None:
    reason = refusal(view(), "team-a", "payments.team-b.svc", IP("10.96.0.20"))
    assert reason is not None and "Service team-b/payments, in another namespace than team-a" in reason
    pod = refusal(view(), "team-a", "10.244.1.7", IP("10.244.1.7"))
    assert pod is not None and "in the cluster's networks" in pod


def test_rules_open_namespaces_networks_and_hosts_to_the_namespaces_they_select() -> None:
    shared = {
        "name": "shared-payments",
        "namespaceSelector": {"matchLabels": {"tier": "apps"}},
        "allow": [{"namespaces": {"matchLabels": {"shares": "payments"}}}, {"cidr": "10.244.1.0/24"}],
    }
    by_name = {"name": "db", "allow": [{"host": "*.db.internal"}]}
    open_view = view(shared, by_name)
    assert refusal(open_view, "team-a", "payments.team-b.svc", IP("10.96.0.20")) is None
    assert refusal(open_view, "team-a", "10.244.1.7", IP("10.244.1.7")) is None
    assert refusal(open_view, "team-a", "pg.db.internal", IP("10.50.0.5")) is None
    assert refusal(open_view, "team-a", "10.244.2.7", IP("10.244.2.7")) is not None
    # ops is not selected by shared-payments: team-b's Service stays closed to it.
    assert refusal(open_view, "ops", "payments.team-b.svc", IP("10.96.0.20")) is not None


@pytest.mark.parametrize(
    "address", ["64:ff9b::10.96.0.20", "::ffff:10.96.0.20", "2002:a60:14::1", "64:ff9b::10.244.1.7"]
)
def test_ipv6_forms_of_another_namespaces_addresses_are_refused(address: str) -> None:
    reason = refusal(view(), "team-a", address, IP(address))
    assert reason is not None and "which carries 10." in reason


def test_ipv6_forms_of_own_services_and_the_internet_pass() -> None:
    assert refusal(view(), "team-a", "x", IP("64:ff9b::10.96.0.10")) is None
    assert refusal(view(), "team-a", "x", IP("64:ff9b::8.8.8.8")) is None
    assert refusal(view(), "team-a", "x", IP("::10.0.0.1")) is not None  # IPv4-compatible: refused as a form
