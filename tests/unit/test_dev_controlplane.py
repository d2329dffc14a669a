"""Pure pieces of the local control plane: identities, kubeconfig, build prerequisites."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from steadfast.dev.controlplane import binaries, identities


def test_identity_parse_with_groups() -> None:
    ident = identities.Identity.parse("alice:approvers,sre")
    assert ident.name == "alice"
    assert ident.groups == ("approvers", "sre")


@pytest.mark.parametrize("text", ["Alice", "admin", "bob:system:masters", ""])
def test_identity_parse_refuses_bad_or_privileged_names(text: str) -> None:
    with pytest.raises(ValueError):
        identities.Identity.parse(text)


def test_token_file_and_kubeconfig_have_one_context_per_identity(tmp_path: Path) -> None:
    people = [identities.admin(), identities.Identity.parse("alice:approvers")]
    identities.write_token_file(tmp_path / "tokens.csv", people)
    rows = (tmp_path / "tokens.csv").read_text().splitlines()
    assert rows[1] == f"{people[1].token},alice,alice,approvers"
    assert people[0].token != people[1].token
    doc = yaml.safe_load(identities.kubeconfig("https://127.0.0.1:1", b"PEM", people))
    assert [c["name"] for c in doc["contexts"]] == ["admin", "alice"]
    assert doc["current-context"] == "admin"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"PEM"


def test_missing_go_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEADFAST_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(binaries.BuildError, match="Go is not installed"):
        binaries.ensure(binaries.ETCD)


def test_present_binaries_are_reused_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEADFAST_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / f"etcd-{binaries.ETCD_VERSION}"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert binaries.ensure(binaries.ETCD) == {"etcd": fake}
