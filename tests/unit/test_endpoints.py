"""Where the operator learns what no action may reach: the environment, the kubeconfig, its own flags."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from steadfast import endpoints
from steadfast.egress import EgressDenied, EgressPolicy

IP = ipaddress.ip_address


def test_every_dapr_port_and_endpoint_of_the_environment_is_protected() -> None:
    env = {
        "DAPR_HTTP_PORT": "3600",
        "DAPR_GRPC_PORT": "50011",
        "DAPR_HTTP_ENDPOINT": "http://127.0.0.1:3601",
        "DAPR_GRPC_ENDPOINT": "localhost:50012",
        "DAPR_API_TOKEN": "not-a-port",
        "DAPR_METRICS_PORT": "x",
        "HOME": "/root",
    }
    found = endpoints.dapr(env)
    assert {p for _, p in found} == {3600, 50011, 3601, 50012}
    assert found[(IP("127.0.0.1"), 3600)] == "the Dapr sidecar, the workflow engine (DAPR_HTTP_PORT)"


def test_a_kubeconfig_publishes_a_control_planes_endpoints(tmp_path: Path) -> None:
    published = [endpoints.Endpoint(host="127.0.0.1", port=2379, what="the control plane's etcd")]
    cluster = {"server": "https://127.0.0.1:6443", "extensions": [endpoints.extension(published)]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({"clusters": [{"name": "dev", "cluster": cluster}]}))
    broken = tmp_path / "broken"
    broken.write_text("clusters: [{cluster: {extensions: [{name: steadfast.dev/protected-endpoints, extension: 1}]}}]")
    found = endpoints.published([path, broken, tmp_path / "missing"])
    assert found == {(IP("127.0.0.1"), 2379): "the control plane's etcd"}
    assert endpoints.kubeconfig_paths({"KUBECONFIG": f"{path}:{broken}"}) == [path, broken]
    assert endpoints.kubeconfig_paths({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == []


def test_the_operators_own_listeners_are_protected_on_every_local_address() -> None:
    own = endpoints.listeners(
        [("0.0.0.0:9090", "the operator's metrics"), ("http://0.0.0.0:8080/healthz", "liveness"), ("", "off")]
    )
    assert own == {(IP("127.0.0.1"), 9090): "the operator's metrics", (IP("127.0.0.1"), 8080): "liveness"}
    policy = EgressPolicy.parse(allow=["0.0.0.0/0"]).protecting(own, local=[IP("10.1.2.3")])
    for host in ("127.0.0.1", "127.0.0.2", "10.1.2.3"):
        try:
            policy.check(host, 9090)
        except EgressDenied as exc:
            assert "the operator's metrics" in str(exc)
        else:
            raise AssertionError(f"{host}:9090 was allowed")
    assert policy.check("10.1.2.4", 9090) == ["10.1.2.4"]  # another host's port 9090 is not ours
