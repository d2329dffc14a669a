"""Where the seal key lives: a Secret that only the operator (and cluster admins) can read.

Every replica must use the same key (any of them may admit a resource, any may later act on it) and the key must
outlive the pods, so it is kept in the cluster, not on a pod's disk. The first replica to start makes it; the
others, and later restarts, read it. Whoever can read this Secret can forge identities through Steadfast: grant
`get` on it to nobody else.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.seals import KEY_FIELD, new_key

log = logging.getLogger(__name__)

DEFAULT_NAME = "steadfast-seal-key"
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_location() -> str:
    """NAMESPACE/NAME: the operator's own namespace in a cluster; kube-system outside one (admins only)."""
    namespace = os.environ.get("POD_NAMESPACE")
    if not namespace and _SA_NAMESPACE.exists() and not os.environ.get("KUBECONFIG"):
        namespace = _SA_NAMESPACE.read_text().strip()
    return f"{namespace or 'kube-system'}/{DEFAULT_NAME}"


def load(api: client.ApiClient, location: str) -> bytes:
    """The key in Secret `location` (NAMESPACE/NAME), made there first if it does not exist yet."""
    namespace, _, name = location.partition("/")
    if not (namespace and name):
        raise SystemExit(f"--seal-key-secret must be NAMESPACE/NAME, not {location!r}")
    core = client.CoreV1Api(api)
    for _ in range(3):
        try:
            secret = core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise SystemExit(f"cannot read the seal key Secret {location}: HTTP {exc.status}") from exc
        else:
            data = (secret.data or {}).get(KEY_FIELD)
            if not data:
                raise SystemExit(f"Secret {location} has no data.{KEY_FIELD}: it is not a seal key")
            return base64.b64decode(data)
        body = {
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "steadfast"}},
            "type": "Opaque",
            "data": {KEY_FIELD: base64.b64encode(new_key()).decode()},
        }
        try:
            core.create_namespaced_secret(namespace, body)
            log.info("made the seal key in Secret %s", location)
        except ApiException as exc:
            if exc.status != 409:  # another replica made it first: read theirs
                raise SystemExit(f"cannot create the seal key Secret {location}: HTTP {exc.status}") from exc
    raise SystemExit(f"cannot read or create the seal key Secret {location}")
