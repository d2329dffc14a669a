"""Kubernetes API access for the parts of the operator that run outside kopf (activities, the status writer)."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else `$KUBECONFIG` read now (not at import time)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None)
