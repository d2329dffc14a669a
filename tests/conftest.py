"""Shared fixtures: a real local control plane (etcd + kube-apiserver + kube-controller-manager).

Started once per test session on free loopback ports and stopped at the end, even when tests fail;
its processes die with the test run if pytest itself is killed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadfast.dev.controlplane import binaries, cluster, identities
from steadfast.seals import SEALER

_PLANE: dict[str, cluster.ControlPlane] = {}


@pytest.fixture(autouse=True, scope="session")
def seal_key() -> None:
    """In-process code that seals or checks stamps (unit and workflow tests) uses a test key."""
    if not SEALER.ready:
        SEALER.use(b"steadfast-test-seal-key-32-bytes")


# Identities the tests act as: two approvers, an SRE group member, and a user with no rights at all.
TEST_USERS = ["alice:approvers", "bob:approvers", "dave:sre", "mallory"]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.State]:
    directory = tmp_path_factory.mktemp("controlplane") / "dev"
    plane = cluster.ControlPlane(
        directory, users=[identities.Identity.parse(u) for u in TEST_USERS], engine=False, detach=False
    )
    state = plane.up()
    _PLANE["plane"] = plane
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = state.kubeconfig
    try:
        yield state
    finally:
        plane.down()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def plane(control_plane: cluster.State) -> cluster.ControlPlane:
    """The control plane object itself, for tests that restart its components."""
    return _PLANE["plane"]


@pytest.fixture(scope="session")
def kubectl_path() -> Path:
    return binaries.ensure(binaries.KUBECTL)["kubectl"]
