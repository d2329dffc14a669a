"""Running the shared Action for a resource: HTTP (idempotency keys, Secret headers, egress policy) or a
Kubernetes object (as the creator, see `objects`; waits handed to the shared watches of `waits`).

Activities are delivered at least once, so every request carries an `Idempotency-Key` that is the same
on every retry and after an operator restart; receivers deduplicate on it. Secret values go only into
the request, and only where the Secret's writer allows (`secret_refs`); a response to a request that
carried one is sealed: conditions and outputs see only its status and duration, and its message has
the status code alone (no reason phrase, no error text from the server).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.action import Action, HttpAction
from steadfast.api.duration import parse_duration
from steadfast.api.object_action import ObjectAction, ObjectOperation
from steadfast.api.saga import MAX_OUTPUT_BYTES
from steadfast.cluster_view import ClusterWatch
from steadfast.egress import EgressDenied, EgressPolicy, IPAddress
from steadfast.egress_rules import ClusterView, refusal
from steadfast.expressions.language import ExpressionError, left_operand, responding
from steadfast.expressions.sandbox import Sandbox
from steadfast.expressions.sandbox import shared as shared_sandbox
from steadfast.expressions.templates import map_strings, needs_rendering, render, strings_in, text_of
from steadfast.objects import KubeRequests, ObjectError, Objects, Undo
from steadfast.records import Actor
from steadfast.records import Outcome as Outcome  # re-exported: the result type of ActionRunner.run
from steadfast.records import idempotency_key as idempotency_key
from steadfast.secret_refs import Destination, StoredSecret
from steadfast.secret_refs import refusal as secret_refusal
from steadfast.shares import on_behalf_of
from steadfast.waits import RaiseEvent, Registration, WatchHub

log = logging.getLogger(__name__)

USER_AGENT = "steadfast/0.1"


class ActionError(Exception):
    """The action could not be attempted (refused reference or destination); not worth retrying."""


@dataclass(frozen=True)
class WaitTicket:
    """Where a waiting Kubernetes action's decision goes: the workflow instance's event, and for how long."""

    instance_id: str
    event: str
    seconds: float


class ActionRunner:
    def __init__(
        self,
        api: client.ApiClient | None,
        egress: EgressPolicy,
        sandbox: Sandbox | None = None,
        cluster: ClusterWatch | None = None,
        raise_event: RaiseEvent | None = None,
        kubernetes_off: str | None = None,
        secrets: Callable[[str, str], StoredSecret] | None = None,
    ) -> None:
        """`kubernetes_off`: why Kubernetes actions are refused. Without the admission webhooks nobody vouches
        for the recorded creator: anyone could write `requested-by: <an admin>`. `secrets` reads a Secret by
        namespace and name (default: from the API server), raising ActionError when it cannot."""
        self._core = client.CoreV1Api(api) if api is not None else None
        self._read_secret = secrets or self._secret_from_api
        self._egress = egress
        self._sandbox = sandbox
        self._cluster = cluster
        self._kubernetes_off = kubernetes_off
        self.objects = Objects(KubeRequests(api), lambda: self.sandbox) if api is not None else None
        self.hub = (
            WatchHub(self.objects.requests, self._judge_waiting, raise_event)
            if self.objects is not None and raise_event is not None
            else None
        )

    def _judge_waiting(self, registration: Registration, obj: Any) -> Outcome | None:
        assert self.objects is not None
        with on_behalf_of(registration.namespace):
            return self.objects.judge(
                registration.action,
                obj,
                said=registration.said,
                variables=registration.variables,
                outputs=registration.outputs,
            )

    def _view(self) -> ClusterView | None:
        return self._cluster.view() if self._cluster is not None else None

    def _inside(self, namespace: str) -> Callable[[str, IPAddress], str | None] | None:
        """The namespace layer of the egress check (own Services, admins' rules); None without a cluster."""
        if self._cluster is None:
            return None
        view = self._cluster.view()
        if view is None:
            unknown = "the operator has not read the cluster's Services, namespaces and policies yet; try again"
            return lambda host, ip: unknown
        return lambda host, ip: refusal(view, namespace, host, ip)

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox or shared_sandbox()

    def run(
        self,
        action: Action,
        *,
        namespace: str,
        key: str,
        timeout: float | None = None,
        variables: Mapping[str, Any] | None = None,
        outputs: Mapping[str, str] | None = None,
        conditions: Sequence[str] = (),
        actor: Actor | None = None,
        wait: WaitTicket | None = None,
        undo: Mapping[str, Any] | None = None,
        rearm: bool = False,
    ) -> Outcome:
        """Run `action` once. Failures come back as an Outcome with a message, never as an exception.

        `variables` feed the request's placeholders; `outputs` (name -> expression) and `conditions` read the
        response as well. Outputs come back only from a successful attempt. A Kubernetes action acts as
        `actor`; one that waits registers with the shared watches under `wait` (without: judged once), and
        `rearm` registers again without repeating the operation. `undo` undoes a recorded apply or patch.
        """
        if action.kubernetes is not None:
            try:
                return self._kubernetes(
                    action.kubernetes,
                    namespace=namespace,
                    key=key,
                    actor=actor,
                    variables=dict(variables or {}),
                    outputs=dict(outputs or {}),
                    conditions=tuple(conditions),
                    wait=wait,
                    undo=undo,
                    rearm=rearm,
                )
            except ObjectError as exc:
                return Outcome(False, message=str(exc))
        if action.http is None:
            return Outcome(False, message="no supported action kind is set")
        plan = _Plan(dict(variables or {}), dict(outputs or {}), list(conditions))
        try:
            return self._http(action.http, namespace=namespace, key=key, timeout=timeout, plan=plan)
        except (ActionError, EgressDenied) as exc:
            return Outcome(False, message=str(exc))

    def _kubernetes(
        self,
        action: ObjectAction,
        *,
        namespace: str,
        key: str,
        actor: Actor | None,
        variables: dict[str, Any],
        outputs: dict[str, str],
        conditions: tuple[str, ...],
        wait: WaitTicket | None,
        undo: Mapping[str, Any] | None,
        rearm: bool,
    ) -> Outcome:
        if self.objects is None:
            return Outcome(False, message="kubernetes actions need a Kubernetes client")
        if self._kubernetes_off:
            return Outcome(False, message=self._kubernetes_off)
        if actor is None or not actor.user:
            return Outcome(
                False,
                message="no creator of this resource is vouched for by Steadfast's admission webhook (the "
                "steadfast.dev/seal it writes at creation is missing or does not match; do the webhooks cover this "
                "namespace?): kubernetes actions act only as the user who asked",
            )
        if undo is not None:
            return self.objects.undo(Undo.from_dict(undo), actor=actor)
        obj, target = self.objects.locate(action, namespace=namespace, variables=variables)
        what = target.describe(str(obj.get("kind")))
        operation = ObjectOperation.WAIT if rearm else action.operation
        answer, done = self.objects.perform(action, obj, target, actor=actor, key=key, operation=operation)
        undo_record = done.to_dict() if done is not None and answer.ok else None
        if not answer.ok:
            return Outcome(False, answer.status, f"{operation.value} {what}: {answer.reason()}")
        said = f"{operation.value} {what}"
        verdict = self.objects.judge(
            action,
            answer.body,
            said=said,
            variables=variables,
            outputs=outputs,
            conditions=conditions,
            status=answer.status,
        )
        if verdict is not None:
            return replace(verdict, undo=undo_record)
        if wait is None or self.hub is None:
            return replace(self.objects.not_yet(action, answer.body, variables, said, conditions), undo=undo_record)
        self.hub.register(
            Registration(
                instance_id=wait.instance_id,
                event=wait.event,
                action=action,
                target=target,
                variables=variables,
                outputs=outputs,
                said=said,
                expires=time.monotonic() + wait.seconds + 60,
                namespace=namespace,
            )
        )
        return Outcome(
            False, answer.status, f"{said}: waiting for {action.success_when}", pending=True, undo=undo_record
        )

    def _secret_from_api(self, namespace: str, name: str) -> StoredSecret:
        if self._core is None:
            raise ActionError(f"Secret {namespace}/{name} cannot be read: no Kubernetes client")
        try:
            obj = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ActionError(f"Secret {namespace}/{name} does not exist") from None
            raise ActionError(f"Secret {namespace}/{name} cannot be read (HTTP {exc.status})") from None
        meta = obj.metadata
        return StoredSecret(namespace, name, meta.labels or {}, meta.annotations or {}, obj.data or {})

    def _header_value(self, namespace: str, secret: str, key: str, to: Destination) -> str:
        """The value of a Secret's key, once its label and its writer's destinations allow sending it to `to`."""
        stored = self._read_secret(namespace, secret)
        reason = secret_refusal(stored, to, self._view())
        if reason is not None:
            raise ActionError(reason)
        try:
            return stored.header_value(key)
        except ValueError as exc:
            raise ActionError(str(exc)) from None

    def _render(self, http: HttpAction, variables: dict[str, Any]) -> tuple[str, dict[str, str], Any]:
        """The request's url, inline header values and body with their placeholders filled in."""
        inline = [h for h in http.headers if h.value is not None]
        strings = strings_in(http.body)
        texts = [http.url, *(h.value or "" for h in inline), *strings]
        if not needs_rendering(texts):
            return http.url, {h.name: h.value or "" for h in inline}, http.body
        try:
            done = render([(http.url, _url_escape), *((t, None) for t in texts[1:])], variables, self.sandbox)
        except ExpressionError as exc:
            raise ActionError(f"cannot render the request: {exc}") from None
        url = str(done[0])
        headers = {h.name: text_of(v) for h, v in zip(inline, done[1 : 1 + len(inline)], strict=True)}
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ActionError(f"cannot render the request: header {name} would hold a line break")
        filled = iter(done[1 + len(inline) :])
        body = map_strings(http.body, lambda _: next(filled))
        return url, headers, body

    def _http(self, http: HttpAction, *, namespace: str, key: str, timeout: float | None, plan: _Plan) -> Outcome:
        url, inline, body_data = self._render(http, plan.variables)
        parts = urlsplit(url)
        try:
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ActionError(f"the rendered url {url!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ActionError(f"the rendered url {url!r} is not an absolute http(s) URL")
        https = parts.scheme == "https"
        addresses = self._egress.check(host, port, refuse=self._inside(namespace))
        # The Secrets' destinations are checked on the address the connection goes to, after every placeholder.
        to = Destination(parts.scheme, host.lower().rstrip("."), port, ipaddress.ip_address(addresses[0]))
        headers = {"User-Agent": USER_AGENT, "Idempotency-Key": key, "Accept": "application/json, */*"}
        secrets: list[str] = []
        for header in http.headers:
            if header.value is not None:
                headers[header.name] = inline[header.name]
            elif header.value_from is not None:
                ref = header.value_from.secret_key_ref
                headers[header.name] = self._header_value(namespace, ref.name, ref.key, to)
                secrets.append(headers[header.name])
        sealed = bool(http.secret_headers)
        body: bytes | None = None
        if body_data is not None:
            body = json.dumps(body_data).encode()
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
        what = f"{http.method.value} {url}"
        started = time.perf_counter()
        try:
            # No redirect is followed (a Location could name any host, and the Secret headers would go along).
            response = pool.urlopen(
                http.method.value,
                path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(total=limit),
                preload_content=False,
            )
            data = response.read(MAX_RESPONSE) if plan.reads_response(http) and not sealed else b""
            response.drain_conn()
        except urllib3.exceptions.NewConnectionError as exc:  # before TimeoutError: it subclasses it
            return Outcome(False, message=f"{what}: cannot connect: {_short(str(exc))}")
        except urllib3.exceptions.TimeoutError:
            return Outcome(False, message=f"{what}: no answer within {limit:g}s")
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            if sealed:  # the error may quote what the server sent (a malformed status line, a header)
                return Outcome(False, message=f"{what}: the request failed ({type(reason).__name__})")
            return Outcome(False, message=f"{what}: {_short(str(reason))}")
        finally:
            pool.close()
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        status = int(response.status)
        # The body never goes into a message: status would show any service's answer to whoever can
        # create a resource. Only declared outputs and a failed condition's value reach status. The reason
        # phrase is the server's text too: not shown when the request carried a Secret.
        said = f"{what}: HTTP {status}" + (f" {response.reason}" if response.reason and not sealed else "")
        if not plan.reads_response(http):
            return Outcome(http.accepts(status), status, said)
        answer: dict[str, Any] = {"status": status, "durationMs": elapsed_ms}
        if not sealed:  # admission refuses conditions and outputs that read more of a sealed response
            answer["headers"] = {k.lower(): v for k, v in response.headers.items()}
            answer["body"] = _parse(data, response.headers.get("content-type", ""))
        return plan.judge(http, status, said, answer, self.sandbox, secrets)


MAX_RESPONSE = 1024 * 1024  # bytes of a response body that conditions and outputs may read
_SHOWN = 200  # characters of a value shown after a failed condition


@dataclass
class _Plan:
    """What one attempt renders and reads besides the request: variables, outputs, extra conditions."""

    variables: dict[str, Any]
    outputs: dict[str, str]
    conditions: list[str]

    def reads_response(self, http: HttpAction) -> bool:
        return bool(self.outputs or self.conditions or http.success_when)

    def judge(
        self,
        http: HttpAction,
        status: int,
        said: str,
        answer: dict[str, Any],
        sandbox: Sandbox,
        secrets: list[str],
    ) -> Outcome:
        """Success by successWhen (or the status) and every condition; then the outputs, bounded and redacted."""
        scope = responding(frozenset(self.variables))
        data = {**self.variables, "response": answer}
        tests = ([http.success_when] if http.success_when else []) + self.conditions
        sides = [left_operand(t) for t in tests]
        items = [*tests, *(s for s in sides if s), *self.outputs.values()]
        results = sandbox.evaluate([(source, scope) for source in items], data)
        verdicts = results[: len(tests)]
        seen = iter(results[len(tests) : len(items) - len(self.outputs)])
        values = results[len(items) - len(self.outputs) :]
        if not http.success_when and not http.accepts(status):
            return Outcome(False, status, said)
        for test, side, verdict in zip(tests, sides, verdicts, strict=True):
            left = next(seen) if side else None
            if verdict.error is not None:
                return Outcome(False, status, f"{said}; {test}: {verdict.error}", failed_condition=f"{test} (error)")
            if verdict.value is not True:
                shown = test
                if left is not None and left.ok:
                    shown += f" (was {_clip(json.dumps(redact(left.value, secrets), ensure_ascii=False))})"
                elif verdict.value is not False:
                    shown += (
                        f" (gave {_clip(json.dumps(redact(verdict.value, secrets), ensure_ascii=False))}, not a bool)"
                    )
                return Outcome(False, status, f"{said}; condition not met: {shown}", failed_condition=shown)
        outputs: dict[str, Any] = {}
        for (name, _), value in zip(self.outputs.items(), values, strict=True):
            if value.error is not None:
                return Outcome(False, status, f"{said}; output {name}: {value.error}")
            outputs[name] = redact(value.value, secrets)
        size = len(json.dumps(outputs))
        if size > MAX_OUTPUT_BYTES:
            return Outcome(
                False, status, f"{said}; the outputs are {size} bytes of JSON, more than the {MAX_OUTPUT_BYTES} allowed"
            )
        return Outcome(True, status, said, outputs=outputs or None)


def _parse(data: bytes, content_type: str) -> Any:
    """A response body as conditions see it: JSON when it parses as JSON, else text."""
    text = data.decode(errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _url_escape(value: str) -> str:
    # A value fills one path segment or query value: it may not add a segment, a query or another host.
    return quote(value, safe="")


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every Secret value sent in the request masked, wherever a service echoed it."""
    live = [s for s in secrets if len(s) >= 4]
    if not live:
        return value

    def mask(text: str) -> str:
        for secret in live:
            text = text.replace(secret, "[redacted]")
        return text

    return map_strings(value, mask)


def _short(text: str) -> str:
    # urllib3 messages embed object reprs; keep the readable tail.
    return text.split(": ", 1)[-1][:300]
