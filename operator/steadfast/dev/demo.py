"""`steadfast dev demo`: the whole product on a laptop without Docker, in one command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from steadfast.dev.controlplane import binaries, cluster, identities

SAMPLES = cluster.REPO_ROOT / "config" / "samples"


def run(directory: Path) -> int:
    existing = cluster.status(directory)
    if existing["running"]:
        print(f"[demo] reusing the control plane already running from {directory}", file=sys.stderr)
        state = cluster.read_state(directory)
        assert state is not None
    else:
        if existing["components"]:
            cluster.ControlPlane(directory).down()
        users = [identities.Identity.parse(u) for u in ("alice:approvers", "bob:approvers", "carol")]
        state = cluster.ControlPlane(directory, users=users, detach=True).up()
    kubectl = str(binaries.ensure(binaries.KUBECTL)["kubectl"])
    env = {**os.environ, **state.env()}

    samples = sorted(SAMPLES.glob("*.yaml")) if SAMPLES.is_dir() else []
    for sample in samples:
        subprocess.run([kubectl, "apply", "-f", str(sample)], env=env, check=True)
    print("\n$ kubectl get steadfast -A", flush=True)
    subprocess.run([kubectl, "get", "steadfast", "-A"], env=env, check=False)
    print(
        "\nThe local control plane and workflow engine keep running. In another shell:\n"
        f"  {state.exports().strip().replace(chr(10), chr(10) + '  ')}\n"
        f"  {kubectl} get steadfast -A\n"
        f"Stop everything with: steadfast dev down --dir {directory}",
        flush=True,
    )
    return 0
