"""Where one namespace's actions may go inside the cluster: its own Services, and what admins' rules open.

Pure: `cluster_view` keeps the cluster's Services, namespaces and SteadfastPolicies up to date; this decides
for one resolved address. Applied after the cluster-wide layer (`egress.EgressPolicy`: metadata, loopback,
the Helm allow/deny lists), so a rule here cannot open what that layer refuses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steadfast.addresses import forms, refused_form
from steadfast.api.policy import EgressRule, SteadfastPolicySpec
from steadfast.egress import IPAddress, IPNetwork

# The private ranges where clusters put their Pod and Service networks, unless the admin names them.
DEFAULT_CLUSTER_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


@dataclass(frozen=True)
class ClusterView:
    """What the operator knows of the cluster: Service addresses, namespace labels, the admins' policies."""

    services: Mapping[IPAddress, tuple[str, str]]  # cluster IP -> (namespace, name)
    namespace_labels: Mapping[str, Mapping[str, str]]
    policies: Sequence[tuple[str, SteadfastPolicySpec]]
    networks: tuple[IPNetwork, ...] = DEFAULT_CLUSTER_NETWORKS

    def rules_for(self, namespace: str) -> list[tuple[str, EgressRule]]:
        labels = dict(self.namespace_labels.get(namespace) or {})
        return [
            (f"{name}/{rule.name}", rule)
            for name, policy in sorted(self.policies, key=lambda p: p[0])
            for rule in policy.egress
            if rule.namespace_selector.matches(labels)
        ]


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def refusal(view: ClusterView, namespace: str, host: str, ip: IPAddress) -> str | None:
    """Why an action of `namespace` may not reach `host` at `ip`, or None when it may.

    An IPv6 address that carries an IPv4 one (NAT64, 6to4, Teredo, mapped) is judged as each address it carries
    too: `64:ff9b::10.96.0.20` is another namespace's Service if `10.96.0.20` is.
    """
    odd = refused_form(ip)
    if odd is not None:
        return f"destination {host} ({ip}) is {odd}, which Steadfast never calls"
    for form in forms(ip):
        reason = _refusal(view, namespace, host, form)
        if reason is not None:
            return reason if form == ip else reason.replace(f"({form})", f"({ip}, which carries {form})", 1)
    return None


def _refusal(view: ClusterView, namespace: str, host: str, ip: IPAddress) -> str | None:
    service = view.services.get(ip)
    if service is not None and service[0] == namespace:
        return None  # a Service of the resource's own namespace
    inside = service is not None or any(ip in n for n in view.networks)
    if not inside:
        return None  # outside the cluster's networks: the public internet (the cluster-wide layer decides)
    for _, rule in view.rules_for(namespace):
        for dest in rule.allow:
            if dest.cidr is not None and ip in ipaddress.ip_network(dest.cidr, strict=False):
                return None
            if dest.host is not None and _host_matches(dest.host, host):
                return None
            if (
                dest.namespaces is not None
                and service is not None
                and dest.namespaces.matches(dict(view.namespace_labels.get(service[0]) or {}))
            ):
                return None
    if service is not None:
        what = f"Service {service[0]}/{service[1]}, in another namespace than {namespace}"
    else:
        what = "in the cluster's networks (a Pod, or a Service the operator does not know)"
    return (
        f"destination {host} ({ip}) is {what}; actions reach their own namespace's Services and outside "
        "addresses unless an egress rule of a SteadfastPolicy allows more"
    )
