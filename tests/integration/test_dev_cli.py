"""`steadfast dev up / status / down` from a plain shell, as a newcomer runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dapr.ext.workflow as wf
import pytest
from dapr.conf import settings

from steadfast.dev import engines
from steadfast.dev.controlplane import processes

pytestmark = pytest.mark.controlplane


def steadfast(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "steadfast.cli", *args], capture_output=True, text=True, timeout=180)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_up_status_down(tmp_path: Path, kubectl_path: Path) -> None:
    state_dir = tmp_path / "dev"
    up = steadfast("dev", "up", "--dir", str(state_dir), "--no-engine", "--user", "alice:approvers,sre")
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
        )
        assert Path(exports["KUBECONFIG"]).is_file()
        # The processes outlive the CLI that started them.
        info = json.loads(steadfast("dev", "status", "--dir", str(state_dir), "--json").stdout)
        assert info["running"] is True
        assert set(info["components"]) == {"etcd", "kube-apiserver", "kube-controller-manager"}

        env = {**os.environ, "KUBECONFIG": exports["KUBECONFIG"]}
        whoami = subprocess.run(
            [str(kubectl_path), "--context", "alice", "auth", "whoami", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        user = json.loads(whoami.stdout)["status"]["userInfo"]
        assert user["username"] == "alice"
        assert {"approvers", "sre"} <= set(user["groups"])
        # A second `up` on the same folder is refused instead of starting a twin.
        again = steadfast("dev", "up", "--dir", str(state_dir), "--no-engine", check=False)
        assert again.returncode != 0
        assert "already runs" in again.stderr
    finally:
        steadfast("dev", "down", "--dir", str(state_dir))
    assert not any(processes.alive(c["pid"]) for c in info["components"].values())
    assert not state_dir.exists()
    assert steadfast("dev", "status", "--dir", str(state_dir), check=False).returncode == 1


def test_bad_user_flag_is_refused_with_a_reason(tmp_path: Path) -> None:
    done = steadfast("dev", "up", "--dir", str(tmp_path / "x"), "--user", "Alice!", check=False)
    assert done.returncode == 2
    assert "invalid user name" in done.stderr


@pytest.mark.parametrize("engine", engines.selected())
def test_up_with_an_engine_serves_workflows_and_down_stops_it(tmp_path: Path, engine: str) -> None:
    state_dir = tmp_path / "dev"
    up = steadfast("dev", "up", "--dir", str(state_dir), "--engine", engine)
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
        )
        info = json.loads(steadfast("dev", "status", "--dir", str(state_dir), "--json").stdout)
        assert info["running"] is True
        expected = {"engine"} if engine == "local" else {"daprd", "placement", "scheduler"}
        assert expected <= set(info["components"])
        # The exported address (with daprd's exported API token) is a workflow API the unmodified SDK can use.
        host, port = exports["DAPR_GRPC_ENDPOINT"].rsplit(":", 1)
        assert ("DAPR_API_TOKEN" in exports) == (engine != "local")
        previous = settings.DAPR_API_TOKEN
        settings.DAPR_API_TOKEN = exports.get("DAPR_API_TOKEN")  # type: ignore[attr-defined]  # read from the env at import
        client = wf.DaprWorkflowClient(host=host, port=port)
        try:
            assert client.get_workflow_state("nothing-here") is None
        finally:
            client.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints
            settings.DAPR_API_TOKEN = previous  # type: ignore[attr-defined]
    finally:
        steadfast("dev", "down", "--dir", str(state_dir))
    assert not any(processes.alive(c["pid"]) for c in info["components"].values())
