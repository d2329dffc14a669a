"""Running `kubernetes` actions: requests as the resource's creator, undo records, conditions over the object.

Every request that reads or writes the user's object impersonates the creator and groups admission recorded
(`Impersonate-User`, one `Impersonate-Group` header per group), over the operator's own connection: RBAC
decides what Steadfast may do for them exactly as it decides for `kubectl`. Only discovery (which resource
serves a kind, public to every authenticated user) goes as the operator.

Activities run at least once, so each operation is safe to repeat: apply is server-side apply, an object a
step creates carries `steadfast.dev/created-by: <sealed mark of the idempotency key>` so a retry still knows it
created it, and the undo record (what to delete, or the values to restore) is computed before the first change
only. Both marks are sealed with the operator's key: nobody can plant one on an object a saga will change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client

from steadfast import metrics
from steadfast.api import kube_names
from steadfast.api.object_action import OBJECT, SECRETS_REFUSED, ObjectAction, ObjectOperation
from steadfast.api.saga import MAX_OUTPUT_BYTES
from steadfast.expressions.language import ExpressionError, left_operand
from steadfast.expressions.sandbox import Sandbox
from steadfast.expressions.templates import map_strings, needs_rendering, render, strings_in
from steadfast.records import Actor, Outcome
from steadfast.seals import SEALER

log = logging.getLogger(__name__)

FIELD_MANAGER = "steadfast"
CREATED_BY = "steadfast.dev/created-by"
UNDO_PREFIX = "steadfast.dev/undo-"  # + part of the step's key: the values its undo puts back (JSON)
DISCOVERY_TTL = 300.0
REQUEST_TIMEOUT = 30.0
_SHOWN = 200


def _record(before: dict[str, Any], key: str) -> str:
    """The undo record as stored on the object: the values to restore, sealed for this step."""
    text = json.dumps(before, separators=(",", ":"), sort_keys=True)
    return json.dumps({"restore": before, "seal": SEALER.mark(f"{key}:{text}")}, separators=(",", ":"), sort_keys=True)


def _recorded(stored: str | None, key: str) -> dict[str, Any] | None:
    """The values an earlier attempt of this step recorded, if its seal holds (a planted record does not)."""
    try:
        data = json.loads(stored or "")
        before = data["restore"]
        text = json.dumps(before, separators=(",", ":"), sort_keys=True)
    except (ValueError, KeyError, TypeError):
        return None
    return before if isinstance(before, dict) and data.get("seal") == SEALER.mark(f"{key}:{text}") else None


class ObjectError(Exception):
    """The action cannot be done as asked (unknown kind, refused, invalid); the message says why."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: its collection path and whether it is namespaced."""

    group_version: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.group_version.rpartition("/")[0]

    @property
    def is_secrets(self) -> bool:
        """The core group's Secrets, however the kind was spelled to reach them."""
        return self.group == "" and self.plural == "secrets"

    def collection(self, namespace: str | None) -> str:
        base = f"/api/{self.group_version}" if "/" not in self.group_version else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"


@dataclass(frozen=True)
class Target:
    """One object: its resource, namespace (None when cluster-scoped) and name."""

    resource: Resource
    namespace: str | None
    name: str

    def __post_init__(self) -> None:
        """Only Kubernetes names reach a request path: a `..` would ask for another collection (a whole cluster's)."""
        problem = kube_names.name_problem(self.name)
        if problem:
            raise ObjectError(f"the object's metadata.name {self.name!r} {problem}")
        if self.resource.namespaced:
            problem = kube_names.namespace_problem(self.namespace or "")
            if problem:
                raise ObjectError(f"the object's metadata.namespace {self.namespace!r} {problem}")
        elif self.namespace is not None:
            raise ObjectError(f"{self.resource.plural} are not namespaced")

    @property
    def collection(self) -> str:
        return self.resource.collection(self.namespace)

    @property
    def path(self) -> str:
        return f"{self.collection}/{quote(self.name, safe='')}"

    def describe(self, kind: str) -> str:
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def reason(self) -> str:
        """The API server's own message (e.g. 'configmaps is forbidden: User "x" cannot create ...')."""
        if isinstance(self.body, dict) and self.body.get("message"):
            return str(self.body["message"])
        return f"HTTP {self.status}"


class KubeRequests:
    """Raw requests to the API server over the operator's ApiClient (its TLS, token and connection pool).

    The generated client cannot send a header twice, and impersonating several groups needs exactly that.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._discovery: dict[str, tuple[float, dict[str, Resource]]] = {}
        self._lock = threading.Lock()

    def headers(self, actor: Actor | None, content_type: str | None = None) -> urllib3.HTTPHeaderDict:
        headers = urllib3.HTTPHeaderDict({"Accept": "application/json", "User-Agent": "steadfast/0.1"})
        for setting in self.api.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        if content_type:
            headers["Content-Type"] = content_type
        if actor is not None:
            headers["Impersonate-User"] = actor.user
            for group in actor.groups:
                headers.add("Impersonate-Group", group)
        return headers

    def call(
        self,
        method: str,
        path: str,
        *,
        actor: Actor | None,
        body: Any = None,
        content_type: str | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Answer:
        metrics.OBJECT_REQUESTS.labels(method.lower()).inc()
        url = self.api.configuration.host.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        try:
            response = self.api.rest_client.pool_manager.request(
                method,
                url,
                body=data,
                headers=self.headers(actor, content_type or ("application/json" if data else None)),
                timeout=urllib3.Timeout(total=timeout),
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ObjectError(f"{method} {path}: the API server did not answer: {exc}") from None
        text = response.data.decode(errors="replace")
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Answer(int(response.status), parsed)

    def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind` in `api_version` (discovery, cached; refreshed once on a miss).

        Refused: names that are not Kubernetes names (they would change the discovery path), a kind
        discovery does not resolve, and Secrets (group "", resource "secrets"), whatever the spelling.
        """
        problem = kube_names.api_version_problem(api_version)
        if problem:
            raise ObjectError(f"the object's apiVersion {api_version!r} {problem}")
        problem = kube_names.kind_problem(kind)
        if problem:
            raise ObjectError(f"the object's kind {kind!r} {problem}")
        for fresh in (False, True):
            found = self._kinds(api_version, fresh).get(kind)
            if found is not None:
                if found.is_secrets:
                    raise ObjectError(f"{kind} in {api_version} is Secrets: {SECRETS_REFUSED}")
                return found
        raise ObjectError(f"the API server serves no kind {kind} in {api_version}")

    def _kinds(self, api_version: str, fresh: bool) -> dict[str, Resource]:
        with self._lock:
            cached = self._discovery.get(api_version)
        if cached is not None and not fresh and time.monotonic() - cached[0] < DISCOVERY_TTL:
            return cached[1]
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        answer = self.call("GET", path, actor=None)
        kinds: dict[str, Resource] = {}
        if answer.ok and isinstance(answer.body, dict):
            for item in answer.body.get("resources") or []:
                if kube_names.DNS_LABEL.match(item.get("name", "")):  # not a subresource ("pods/log")
                    kinds[item["kind"]] = Resource(api_version, item["name"], bool(item.get("namespaced")))
        elif answer.status != 404:
            raise ObjectError(f"cannot discover {api_version}: {answer.reason()}")
        with self._lock:
            self._discovery[api_version] = (time.monotonic(), kinds)
        return kinds


def restore_patch(manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """A merge patch that puts back, in `live`, every value `manifest` sets (null where it had none).

    Leaves are compared whole: a list the manifest sets is restored as the list it replaced.
    """
    out: dict[str, Any] = {}
    for key, value in manifest.items():
        if key in ("apiVersion", "kind"):
            continue
        before = live.get(key) if isinstance(live, Mapping) else None
        if isinstance(value, dict) and value:
            nested = restore_patch(value, before if isinstance(before, Mapping) else None)
            if key == "metadata":
                nested.pop("name", None)
                nested.pop("namespace", None)
            if nested:
                out[key] = nested
        else:
            out[key] = before
    return out


@dataclass(frozen=True)
class Undo:
    """How to undo an apply or a patch: delete what it created (only that very object), or restore values."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    created: bool
    uid: str | None = None
    restore: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "created": self.created,
            "uid": self.uid,
            "restore": self.restore,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Undo:
        return cls(
            str(data["apiVersion"]),
            str(data["kind"]),
            str(data["name"]),
            data.get("namespace"),
            bool(data.get("created")),
            data.get("uid"),
            data.get("restore"),
        )


class Objects:
    """Runs one attempt of a `kubernetes` action; waits are handed to the shared watches (`waits`)."""

    def __init__(self, requests: KubeRequests, sandbox: Callable[[], Sandbox]) -> None:
        self.requests = requests
        self._sandbox = sandbox

    def _target(self, obj: Mapping[str, Any], namespace: str) -> Target:
        resource = self.requests.resource(str(obj.get("apiVersion")), str(obj.get("kind")))
        meta = obj.get("metadata") or {}
        ns = (meta.get("namespace") or namespace) if resource.namespaced else None
        return Target(resource, ns, str(meta.get("name")))

    def render(self, action: ObjectAction, variables: dict[str, Any]) -> dict[str, Any]:
        """The object with its placeholders filled in (one sandbox batch), its names checked as Kubernetes names."""
        strings = strings_in(action.object)
        rendered: Any = action.object
        if needs_rendering(strings):
            try:
                done = iter(render([(t, None) for t in strings], variables, self._sandbox()))
            except ExpressionError as exc:
                raise ObjectError(f"cannot render the object: {exc}") from None
            rendered = map_strings(action.object, lambda _: next(done))
        if not isinstance(rendered.get("metadata"), dict):
            raise ObjectError("the rendered object's metadata is not an object")
        found = kube_names.problems(rendered, "the rendered kubernetes.object")
        if found:
            raise ObjectError("; ".join(found))
        return dict(rendered)

    def locate(
        self, action: ObjectAction, *, namespace: str, variables: dict[str, Any]
    ) -> tuple[dict[str, Any], Target]:
        obj = self.render(action, variables)
        return obj, self._target(obj, namespace)

    def perform(
        self,
        action: ObjectAction,
        obj: dict[str, Any],
        target: Target,
        *,
        actor: Actor,
        key: str,
        operation: ObjectOperation | None = None,
    ) -> tuple[Answer, Undo | None]:
        """The operation (the action's, or `operation`: a re-arm only reads) and how to undo it."""
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        what = target.describe(kind)
        operation = operation or action.operation
        if operation == ObjectOperation.WAIT:
            return self.requests.call("GET", target.path, actor=actor), None
        if operation == ObjectOperation.DELETE:
            answer = self.requests.call("DELETE", target.path, actor=actor, body={"propagationPolicy": "Background"})
            return (Answer(200, {"metadata": {"name": target.name}}) if answer.status == 404 else answer), None
        live = self.requests.call("GET", target.path, actor=actor)
        if live.status not in (200, 404):
            return live, None
        existing = live.body if live.status == 200 and isinstance(live.body, dict) else None
        annotations = ((existing or {}).get("metadata") or {}).get("annotations") or {}
        if operation == ObjectOperation.PATCH and existing is None:
            return Answer(404, {"message": f"{what} does not exist: patch changes existing objects"}), None
        # Marks are sealed (steadfast.seals): the step's key is computable from the saga's UID, so a plain one
        # planted on an existing object would turn this step's undo into a delete, or a restore of planted values.
        created_mark = SEALER.mark(key)
        created = existing is None or annotations.get(CREATED_BY) == created_mark
        body = dict(obj)
        meta = dict(body.get("metadata") or {})
        marks: dict[str, str] = {CREATED_BY: created_mark} if created else {}
        restore: dict[str, Any] | None = None
        if not created:
            # The values to put back are recorded on the object with the change, so a redelivered attempt
            # (which sees the changed values) still restores the ones from before the first.
            mark = UNDO_PREFIX + key.removeprefix("sf-")[:20]
            before = _recorded(annotations.get(mark), key) or restore_patch(obj, existing)
            marks[mark] = _record(before, key)
            restore = json.loads(json.dumps(before))
            restore.setdefault("metadata", {}).setdefault("annotations", {})[mark] = None
        meta["annotations"] = {**(meta.get("annotations") or {}), **marks}
        if target.namespace:
            meta["namespace"] = target.namespace
        body["metadata"] = meta
        if operation == ObjectOperation.PATCH:
            answer = self.requests.call(
                "PATCH", target.path, actor=actor, body=body, content_type="application/merge-patch+json"
            )
        else:
            answer = self.requests.call(
                "PATCH",
                target.path,
                actor=actor,
                body=body,
                content_type="application/apply-patch+yaml",  # JSON is YAML
                query={"fieldManager": FIELD_MANAGER, "force": "true"},
            )
        uid = ((answer.body or {}).get("metadata") or {}).get("uid") if isinstance(answer.body, dict) else None
        return answer, Undo(
            api_version, kind, target.name, target.namespace, created, uid if created else None, restore
        )

    def undo(self, undo: Undo, *, actor: Actor) -> Outcome:
        """Delete what the step created (that very object, by UID) or restore the values it changed."""
        resource = self.requests.resource(undo.api_version, undo.kind)
        target = Target(resource, undo.namespace, undo.name)
        what = target.describe(undo.kind)
        if undo.created:
            body: dict[str, Any] = {"propagationPolicy": "Background"}
            if undo.uid:
                body["preconditions"] = {"uid": undo.uid}
            answer = self.requests.call("DELETE", target.path, actor=actor, body=body)
            if answer.status == 404:
                return Outcome(True, 404, f"{what} was already gone")
            if answer.status == 409:
                return Outcome(True, 409, f"{what} is another object now (its UID changed); left alone")
            if not answer.ok:
                return Outcome(False, answer.status, f"delete {what}: {answer.reason()}")
            return Outcome(True, answer.status, f"deleted {what}, which the step created")
        answer = self.requests.call(
            "PATCH", target.path, actor=actor, body=undo.restore or {}, content_type="application/merge-patch+json"
        )
        if answer.status == 404:
            return Outcome(True, 404, f"{what} is gone; nothing to restore")
        if not answer.ok:
            return Outcome(False, answer.status, f"restore {what}: {answer.reason()}")
        return Outcome(True, answer.status, f"restored the fields of {what} the step had changed")

    def judge(
        self,
        action: ObjectAction,
        obj: Any,
        *,
        said: str,
        variables: dict[str, Any],
        outputs: Mapping[str, str],
        conditions: tuple[str, ...] = (),
        status: int = 200,
    ) -> Outcome | None:
        """failureWhen, then successWhen (and `conditions`), over `obj`; when done, the outputs. None: pending.

        A condition that cannot be evaluated yet (a status field the controller has not written) is pending,
        not failed: the wait's timeout says what it last saw.
        """
        scope = frozenset(variables) | {OBJECT}
        tests = [c for c in (action.failure_when, action.success_when, *conditions) if c is not None]
        items = [*tests, *outputs.values()]
        results = self._sandbox().evaluate([(source, scope) for source in items], {**variables, OBJECT: obj})
        verdicts = iter(results[: len(tests)])
        if action.failure_when is not None:
            failed = next(verdicts)
            if failed.error is None and failed.value is True:
                return Outcome(
                    False,
                    status,
                    f"{said}; failureWhen holds: {action.failure_when}",
                    failed_condition=action.failure_when,
                )
        if any(v.error is not None or v.value is not True for v in verdicts):
            return None
        produced: dict[str, Any] = {}
        for (name, _), value in zip(outputs.items(), results[len(tests) :], strict=True):
            if value.error is not None:
                return Outcome(False, status, f"{said}; output {name}: {value.error}")
            produced[name] = value.value
        size = len(json.dumps(produced))
        if size > MAX_OUTPUT_BYTES:
            return Outcome(
                False, status, f"{said}; the outputs are {size} bytes of JSON, more than the {MAX_OUTPUT_BYTES} allowed"
            )
        return Outcome(True, status, said, outputs=produced or None)

    def not_yet(
        self, action: ObjectAction, obj: Any, variables: dict[str, Any], said: str, conditions: tuple[str, ...] = ()
    ) -> Outcome:
        """A failed outcome that shows which condition does not hold and what it saw (a monitor's check)."""
        scope = frozenset(variables) | {OBJECT}
        data = {**variables, OBJECT: obj}
        for test in [c for c in (action.success_when, *conditions) if c is not None]:
            side = left_operand(test)
            items = [test, *([side] if side else [])]
            results = self._sandbox().evaluate([(source, scope) for source in items], data)
            if results[0].error is None and results[0].value is True:
                continue
            shown = test
            if side and results[1].ok:
                shown += f" (was {_clip(json.dumps(results[1].value, ensure_ascii=False))})"
            elif results[0].error is not None:
                shown += f" ({_clip(results[0].error)})"
            return Outcome(False, 200, f"{said}; condition not met: {shown}", failed_condition=shown)
        return Outcome(False, 200, f"{said}; condition not met")


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
