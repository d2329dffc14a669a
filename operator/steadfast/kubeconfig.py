"""The commands users run against their own cluster: the kubeconfig user, never the operator's identity."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import Kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")


def connect(args: argparse.Namespace) -> tuple[client.CustomObjectsApi, str]:
    api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    namespace = args.namespace
    if namespace is None:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next((c for c in contexts if c["name"] == args.context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(api), namespace


def api_message(exc: ApiException) -> str:
    """The API server's own message (an admission webhook's refusal included), else the HTTP status."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"HTTP {exc.status} {exc.reason}")


def get(api: client.CustomObjectsApi, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
    return obj
