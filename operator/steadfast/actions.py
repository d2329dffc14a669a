"""Running the shared Action (HTTP) for a resource: idempotency keys, Secret headers, egress policy.

Activities are delivered at least once, so every request carries an `Idempotency-Key` that is the same
on every retry and after an operator restart; receivers deduplicate on it. Secret values go only into
the request: never into results, messages, Events or logs.
"""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlsplit

import certifi
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.action import Action, HttpAction
from steadfast.api.duration import parse_duration
from steadfast.egress import EgressDenied, EgressPolicy
from steadfast.records import Outcome as Outcome  # re-exported: the result type of ActionRunner.run
from steadfast.records import idempotency_key as idempotency_key

log = logging.getLogger(__name__)

REFERABLE_LABEL = "steadfast.dev/referable"
USER_AGENT = "steadfast/0.1"
_EXCERPT = 200


class ActionError(Exception):
    """The action could not be attempted (refused reference or destination); not worth retrying."""


class ActionRunner:
    def __init__(self, api: client.ApiClient | None, egress: EgressPolicy) -> None:
        self._core = client.CoreV1Api(api) if api is not None else None
        self._egress = egress

    def run(self, action: Action, *, namespace: str, key: str, timeout: float | None = None) -> Outcome:
        """Run `action` once. Failures come back as an Outcome with a message, never as an exception."""
        if action.http is None:
            return Outcome(False, message="no supported action kind is set")
        try:
            return self._http(action.http, namespace=namespace, key=key, timeout=timeout)
        except (ActionError, EgressDenied) as exc:
            return Outcome(False, message=str(exc))

    def _header_value(self, namespace: str, secret: str, key: str) -> str:
        if self._core is None:
            raise ActionError(f"Secret {secret} cannot be read: no Kubernetes client")
        try:
            obj = self._core.read_namespaced_secret(secret, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ActionError(f"Secret {namespace}/{secret} does not exist") from None
            raise ActionError(f"Secret {namespace}/{secret} cannot be read (HTTP {exc.status})") from None
        labels = obj.metadata.labels or {}
        if labels.get(REFERABLE_LABEL) != "true":
            raise ActionError(
                f"Secret {namespace}/{secret} is not referable: label it {REFERABLE_LABEL}=true "
                "to let Steadfast send it"
            )
        data = obj.data or {}
        if key not in data:
            raise ActionError(f"Secret {namespace}/{secret} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    def _http(self, http: HttpAction, *, namespace: str, key: str, timeout: float | None) -> Outcome:
        parts = urlsplit(http.url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        addresses = self._egress.check(host, port)
        headers = {"User-Agent": USER_AGENT, "Idempotency-Key": key, "Accept": "application/json, */*"}
        for header in http.headers:
            if header.value is not None:
                headers[header.name] = header.value
            elif header.value_from is not None:
                ref = header.value_from.secret_key_ref
                headers[header.name] = self._header_value(namespace, ref.name, ref.key)
        body: bytes | None = None
        if http.body is not None:
            body = json.dumps(http.body).encode()
            headers.setdefault("Content-Type", "application/json")
        default_port = 443 if https else 80
        headers["Host"] = host if port == default_port else f"{host}:{port}"
        limit = parse_duration(http.timeout).total_seconds()
        if timeout is not None:
            limit = max(0.001, min(limit, timeout))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        pool: urllib3.HTTPConnectionPool
        if https:
            pool = urllib3.HTTPSConnectionPool(
                addresses[0],
                port,
                server_hostname=host,
                assert_hostname=host,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
                maxsize=1,
            )
        else:
            pool = urllib3.HTTPConnectionPool(addresses[0], port, maxsize=1)
        try:
            response = pool.urlopen(
                http.method.value,
                path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(total=limit),
                preload_content=True,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # before TimeoutError: it subclasses it
            return Outcome(False, message=f"{http.method.value} {http.url}: cannot connect: {_short(str(exc))}")
        except urllib3.exceptions.TimeoutError:
            return Outcome(False, message=f"{http.method.value} {http.url}: no answer within {limit:g}s")
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            return Outcome(False, message=f"{http.method.value} {http.url}: {_short(str(reason))}")
        finally:
            pool.close()
        status = int(response.status)
        if http.accepts(status):
            return Outcome(True, status, f"{http.method.value} {http.url}: HTTP {status}")
        excerpt = response.data[:_EXCERPT].decode(errors="replace").strip()
        detail = f": {excerpt}" if excerpt else ""
        return Outcome(False, status, f"{http.method.value} {http.url}: HTTP {status}{detail}")


def _short(text: str) -> str:
    # urllib3 messages embed object reprs; keep the readable tail.
    return text.split(": ", 1)[-1][:300]
