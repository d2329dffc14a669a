"""Kubernetes API access for the parts of the operator that run outside kopf (activities, the status writer)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes import client, config


def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else `$KUBECONFIG` read now (not at import time)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None)


@dataclass(frozen=True)
class ObjectRef:
    """Which resource a workflow works for; carried in workflow inputs, so plain data only."""

    group: str
    version: str
    kind: str
    plural: str
    namespace: str
    name: str
    uid: str

    def to_dict(self) -> dict[str, str]:
        return {
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
            "plural": self.plural,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> ObjectRef:
        return cls(**{k: data[k] for k in ("group", "version", "kind", "plural", "namespace", "name", "uid")})

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"
