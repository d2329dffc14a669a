"""Token identities of the local control plane and the kubeconfig that carries them.

Static tokens (`--token-auth-file`) give tests real, distinct authenticated users with groups, so
authorization (RBAC, admission webhooks that read `userInfo`) is exercised as in a cluster.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steadfast.endpoints import Endpoint, extension

ADMIN = "admin"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.@]*[a-z0-9])?$")


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(24), compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Identity:
        """`alice` or `alice:approvers,sre` -> an identity with those groups."""
        name, _, groups = text.partition(":")
        name = name.strip()
        if not _NAME.match(name) or name == ADMIN:
            raise ValueError(
                f"invalid user name {name!r} in --user {text!r}: use lowercase letters, "
                "digits, '-', '.', '@', and not 'admin'"
            )
        group_list = tuple(g.strip() for g in groups.split(",") if g.strip())
        for group in group_list:
            if group.startswith("system:"):
                raise ValueError(f"group {group!r} in --user {text!r}: system: groups are reserved")
        return cls(name, group_list)


def admin() -> Identity:
    return Identity(ADMIN, ("system:masters",))


def write_token_file(path: Path, identities: list[Identity]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for ident in identities:
        row = [ident.token, ident.name, ident.name]
        if ident.groups:
            row.append(",".join(ident.groups))
        writer.writerow(row)
    path.write_text(buffer.getvalue())
    path.chmod(0o600)


def kubeconfig(
    server: str, ca_pem: bytes, identities: list[Identity], current: str = ADMIN, protected: Sequence[Endpoint] = ()
) -> str:
    """One context per identity, named after it; `current` is selected.

    `protected`: the control plane's endpoints, published in the cluster's extension for the operator to refuse.
    """
    ca = base64.b64encode(ca_pem).decode()
    cluster: dict[str, Any] = {"server": server, "certificate-authority-data": ca}
    if protected:
        cluster["extensions"] = [extension(protected)]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "steadfast-dev", "cluster": cluster}],
        "users": [{"name": i.name, "user": {"token": i.token}} for i in identities],
        "contexts": [
            {"name": i.name, "context": {"cluster": "steadfast-dev", "user": i.name, "namespace": "default"}}
            for i in identities
        ],
        "current-context": current,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
