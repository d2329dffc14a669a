"""Fuzzed TaskSaga, HealthMonitor and ApprovalRequest specs against the real API server and a running operator.

Specs are built from the pydantic models' shapes (valid ones and mutations: wrong types, missing and
unknown fields, out-of-range numbers, bad durations and URLs, strings and lists at and past their
bounds, deep JSON bodies, RTL/emoji/NUL text). The models are the oracle:

- a spec the models accept must be accepted by the API server (CRD, CEL and admission webhooks);
- a spec the models refuse must be refused with 400/422 naming the field (admission refuses every spec
  the models refuse, with the message the Stalled condition would show), unless what the API server stores
  (nulls pruned, defaults filled in) is one the models accept: then the operator must process it;
- the operator never crashes and logs no traceback from our code.

Most examples use server-side dry-run; a sample is created for real so the operator processes it.
`STEADFAST_FUZZ_EXAMPLES=N` runs N examples per kind instead of the CI default.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from e2e_support import GROUP, VERSION, Operator, eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from steadfast.api import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA, Kind
from steadfast.api.action import URL_MAX_LENGTH
from steadfast.api.saga import MAX_STEPS
from steadfast.dev.controlplane import processes
from steadfast.webhooks import whoami

pytestmark = [pytest.mark.controlplane, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("STEADFAST_FUZZ_EXAMPLES") or 0)
DRY_EXAMPLES = EXAMPLES or 40  # per kind, server-side dry-run
REAL_EXAMPLES = max(EXAMPLES // 10, 4)  # per kind, created for real and processed by the operator
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=not EXAMPLES,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
DEAD_URL = "http://127.0.0.1:1/fuzz"  # connection refused at once: real creates fail fast, touch nothing

# ---- text ----------------------------------------------------------------------------------------

SPICY = [
    "\u202eevil\u202c",
    "مرحبا بالعالم",
    "שלום",
    "🙂👩‍👩‍👧‍👦🏳️‍🌈",
    "\x00",
    "a\x00b",
    "\ufeff",
    "\u200b\u200d",
    "Ω≈ç√∫",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",
    "ﷺ",
    "\\",
    "\"'`",
    "${x}",
    "{{x}}",
    "%s%n",
    "\n\r\t",
    "é" * 3,
]
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # annotated: mypy infers a tuple literal as tuple[str] here
CHARS = st.characters(codec="utf-8", exclude_categories=SURROGATES)  # every JSON-encodable code point


def texts(max_size: int = 24, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(CHARS, min_size=min_size, max_size=max_size),
        st.sampled_from([s for s in SPICY if min_size <= len(s) <= max_size]),
    )


def at_limit(limit: int, over: bool = False) -> st.SearchStrategy[str]:
    """Text exactly at `limit` characters (or just past it), multi-byte characters counting once."""
    return st.builds(lambda c: c * (limit + 1 if over else limit), st.sampled_from("xé🙂"))


def bounded(limit: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(texts(min(limit, 20), min_size), at_limit(limit))


def fuzz(valid: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `valid`, sometimes one of the `bad` alternatives."""
    return st.one_of(valid, valid, *bad)


DNS_LABELS = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
URL_TAIL = st.text(
    st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?#é🙂\u202e|"), max_size=30
)
GOOD_URLS = st.builds(
    lambda scheme, path: f"{scheme}://127.0.0.1:1/{path}", st.sampled_from(["http", "https"]), URL_TAIL
)
BAD_URLS = st.one_of(
    st.builds(
        lambda s, h, p: f"{s}://{h}{p}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "", "http:"]),
        st.one_of(
            DNS_LABELS,
            st.text(CHARS, max_size=8),
            st.sampled_from(["[::1]", "[::1", "h:x", ":80", "u@h", "h%41", "h%zz", "h#f", "h\\i"]),
        ),
        st.one_of(
            st.just(""),
            URL_TAIL.map(lambda t: "/" + t),
            st.text(CHARS, max_size=10),
            st.sampled_from(["/%zz", "/%4", "/a\u00a0b", "/\u2028", "/\x7f", "?\x00"]),
        ),
    ),
    st.builds(
        lambda n: "http://h/" + "a" * n, st.sampled_from([URL_MAX_LENGTH - 10, URL_MAX_LENGTH - 9, URL_MAX_LENGTH + 5])
    ),
    texts(),
)
UNITS = ["ns", "us", "ms", "s", "m", "h"]
SECONDS = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 59), st.just("s"))  # 1s..59s
MINUTES = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 59), st.just("m"))  # 1m..59m
BAD_DURATIONS = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 100), st.sampled_from(UNITS)),
    st.builds(lambda a, b, u: f"{a}.{b}{u}", st.integers(0, 9), st.integers(0, 999), st.sampled_from(UNITS)),
    st.builds(lambda h, m: f"{h}h{m}m", st.integers(0, 9000), st.integers(0, 90)),
    st.sampled_from(
        [
            "",
            "-1s",
            "1d",
            "1µs",
            "1.s",
            ".5s",
            "1 s",
            "1S",
            "99999999999999999999h",
            "2562048h",
            "8760h",
            "8760h1ns",
            "0s",
            "1h" * 17,
            "1s\n",
            "٣s",
        ]
    ),
    texts(8),
)

# ---- JSON bodies ---------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts(40),
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


BODIES = st.one_of(
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts(12), inner, max_size=4)),
        max_leaves=12,
    ),
    st.integers(1, 120).map(nested),  # deep, but within what every layer (pydantic: 255) can take
    st.builds(lambda n: {"blob": "🙂" * n}, st.sampled_from([1000, 50_000])),
    st.builds(lambda n: list(range(n)), st.sampled_from([0, 1000])),
)

# ---- specs ---------------------------------------------------------------------------------------


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None (the key is left out) or a value."""
    return st.one_of(st.none(), strategy)


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not None})


def unique_by(key: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda items: list({i[key]: i for i in items}.values())


@dataclass(frozen=True)
class Specs:
    """Spec strategies for all three kinds; `bad=True` mixes invalid values into every leaf."""

    bad: bool

    def leaf(self, valid: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return fuzz(valid, *bad) if self.bad else valid

    def action(self) -> st.SearchStrategy[dict[str, Any]]:
        header_name = self.leaf(st.from_regex(r"\A[-A-Za-z0-9!#$%&'*+.^_`|~]{1,12}\Z"), texts(8), st.just("a" * 257))
        secret = obj(
            name=self.leaf(DNS_LABELS, texts(8)), key=self.leaf(st.from_regex(r"\A[-._a-zA-Z0-9]{1,10}\Z"), texts(6))
        )
        header = st.one_of(
            obj(name=header_name, value=self.leaf(bounded(8192), at_limit(8192, over=True))),
            obj(name=header_name, valueFrom=obj(secretKeyRef=secret)),
        )
        http = obj(
            method=maybe(
                self.leaf(
                    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
                    st.sampled_from(["get", "TRACE", ""]),
                )
            ),
            url=self.leaf(GOOD_URLS, BAD_URLS),
            headers=maybe(st.lists(header, max_size=3).map(unique_by("name"))),
            body=maybe(BODIES),
            expectedStatus=maybe(
                st.lists(self.leaf(st.integers(100, 599), st.integers(-1, 1000)), max_size=4, unique=True)
            ),
            timeout=maybe(self.leaf(SECONDS, MINUTES, BAD_DURATIONS)),
        )
        return obj(http=http)

    def approvers(self) -> st.SearchStrategy[dict[str, Any]]:
        name = self.leaf(texts(12, min_size=1), st.just(""), at_limit(253, over=True))
        return st.one_of(
            st.lists(name, min_size=1, max_size=3, unique=True).flatmap(
                lambda users: obj(
                    users=st.just(users), required=maybe(self.leaf(st.integers(1, len(users)), st.integers(-1, 66)))
                )
            ),
            obj(
                groups=st.lists(name, min_size=1, max_size=3, unique=True),
                users=maybe(st.lists(name, max_size=3, unique=True)),
                required=maybe(self.leaf(st.integers(1, 64), st.integers(-1, 66))),
            ),
        )

    def saga(self) -> st.SearchStrategy[dict[str, Any]]:
        retry = obj(
            maxAttempts=maybe(self.leaf(st.integers(1, 100), st.integers(-1, 101))),
            initialInterval=maybe(self.leaf(SECONDS.filter(lambda d: int(d[:-1]) <= 30), BAD_DURATIONS)),
            backoffCoefficient=maybe(self.leaf(st.floats(1, 100), st.floats(-1, 101))),
            maxInterval=maybe(self.leaf(MINUTES, BAD_DURATIONS)),
        )
        step = obj(
            name=self.leaf(DNS_LABELS, texts(8), st.just("a" * 64)),
            action=self.action(),
            compensation=maybe(self.action()),
            retry=maybe(retry),
            timeout=maybe(self.leaf(MINUTES, BAD_DURATIONS)),
        )
        plain = [{"name": f"s{i}", "action": {"http": {"url": DEAD_URL}}} for i in range(MAX_STEPS + 1)]
        steps = self.leaf(
            st.lists(step, min_size=1, max_size=3).map(unique_by("name")),
            st.sampled_from([0, MAX_STEPS, MAX_STEPS + 1]).map(lambda n: plain[:n]),
        )
        gate = obj(
            required=st.just(True),
            approvers=self.approvers(),
            timeout=maybe(self.leaf(MINUTES, BAD_DURATIONS)),
            priorities=maybe(
                st.lists(
                    self.leaf(st.sampled_from(["low", "high"]), st.just(""), at_limit(63, over=True)),
                    max_size=3,
                    unique=True,
                )
            ),
        )
        return obj(
            task=obj(
                id=self.leaf(bounded(253, min_size=1), st.just(""), at_limit(253, over=True)),
                title=maybe(self.leaf(bounded(256), at_limit(256, over=True))),
                assignee=maybe(self.leaf(bounded(253), at_limit(253, over=True))),
                priority=maybe(self.leaf(st.sampled_from(["low", "high", "critical"]), at_limit(64))),
            ),
            steps=steps,
            approval=maybe(gate),
            onDelete=maybe(self.leaf(st.sampled_from(["Compensate", "Abandon"]), st.sampled_from(["abandon", ""]))),
        )

    def monitor(self) -> st.SearchStrategy[dict[str, Any]]:
        threshold = self.leaf(st.integers(1, 1000), st.integers(-5, 1005))
        return obj(
            target=self.action(),
            healthyInterval=maybe(self.leaf(MINUTES, BAD_DURATIONS)),
            unhealthyInterval=maybe(self.leaf(SECONDS, BAD_DURATIONS)),
            failureThreshold=maybe(threshold),
            successThreshold=maybe(threshold),
            alert=maybe(
                obj(
                    webhook=maybe(self.action()),
                    severity=maybe(self.leaf(st.sampled_from(["info", "critical"]), st.just("fatal"))),
                    sendOnRecovery=maybe(st.booleans()),
                )
            ),
            suspend=maybe(st.booleans()),
        )

    def approval(self, requester: str) -> st.SearchStrategy[dict[str, Any]]:
        # spec.decision and a foreign spec.subject.requester are refused by the admission webhook at creation
        # (policy, not schema), so they are not generated here; test_approval covers them.
        return obj(
            subject=obj(
                title=self.leaf(bounded(256, min_size=1), st.just(""), at_limit(256, over=True)),
                description=maybe(self.leaf(bounded(4096), at_limit(4096, over=True))),
                requester=maybe(st.just(requester)),
            ),
            approvers=self.approvers(),
            timeout=maybe(self.leaf(MINUTES, BAD_DURATIONS)),
            notify=maybe(self.action()),
            action=maybe(self.action()),
        )


GOOD, BAD = Specs(bad=False), Specs(bad=True)


def any_spec(
    good: st.SearchStrategy[dict[str, Any]], bad: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid specs, specs with invalid leaves, and valid specs with one node mangled."""
    return st.one_of(good, bad, mutated(good))


JUNK = st.one_of(
    SCALARS,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(texts(5), st.integers(), max_size=2),
    st.integers(-(10**15), 10**15),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A spec with one node replaced by junk, one key dropped, or one unknown key added."""
    spec: dict[str, Any] = draw(base)
    containers: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict | list) and len(containers) < 200:
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(spec)
    target = draw(st.sampled_from(containers))
    if isinstance(target, list):
        if target:
            target[draw(st.integers(0, len(target) - 1))] = draw(JUNK)
        else:
            target.append(draw(JUNK))
        return spec
    how = draw(st.sampled_from(["replace", "drop", "add"]))
    if how == "add" or not target:
        target[draw(st.sampled_from(["zz", "Url", "ünknown", "steps ", "$ref"]))] = draw(JUNK)
    elif how == "drop":
        del target[draw(st.sampled_from(sorted(target)))]
    else:
        target[draw(st.sampled_from(sorted(target)))] = draw(JUNK)
    return spec


# ---- the oracle ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    accepted: bool
    status: int = 0
    message: str = ""
    body: dict[str, Any] | None = None


class Fuzzer:
    def __init__(self, kube: client.ApiClient, namespace: str, operator: Operator) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.namespace = namespace
        self.operator = operator
        self.counts: dict[str, int] = {}

    def send(self, kind: Kind, spec: dict[str, Any], *, dry: bool) -> Outcome:
        name = f"fz-{uuid.uuid4().hex[:10]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
        extra: dict[str, Any] = {"dry_run": "All"} if dry else {}
        try:
            created = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, kind.plural, body, field_validation="Strict", **extra
            )
        except ApiException as exc:
            try:
                message = str(json.loads(exc.body or "{}").get("message", exc.body))
            except ValueError:
                message = str(exc.body)
            return Outcome(False, int(exc.status or 0), message)
        return Outcome(True, body=created)

    def check(self, kind: Kind, spec: dict[str, Any], *, dry: bool = True) -> None:
        assert self.operator.pid is not None and processes.alive(self.operator.pid), "the operator died"
        problems = _problems(kind, spec)
        out = self.send(kind, spec, dry=dry)
        key = f"{kind.kind}:{'valid' if not problems else 'invalid'}:{'accepted' if out.accepted else 'refused'}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if not problems:
            assert out.accepted, (
                f"the models accept this {kind.kind} spec but the API server refuses it "
                f"(HTTP {out.status}: {out.message[:2000]}):\n{_show(spec)}"
            )
        elif not out.accepted:
            assert out.status in (400, 422), f"HTTP {out.status} (want 400/422): {out.message[:2000]}"
            names = _field_names(problems)
            assert any(n in out.message for n in names), (
                f"the API server's refusal names none of {sorted(names)}: {out.message[:2000]}\n{_show(spec)}"
            )
            return
        # Accepted. What the operator sees is the stored spec (nulls pruned, defaults filled in): admission checked
        # that one, so the models must accept it and the operator must process it.
        assert out.body is not None
        stored_problems = _problems(kind, out.body["spec"])
        assert not stored_problems, (
            f"admitted, but the models refuse the stored spec ({_field_names(stored_problems)}): admission must "
            f"refuse it:\n{_show(out.body['spec'])}"
        )
        self.counts["accepted-normalised"] = self.counts.get("accepted-normalised", 0) + 1
        if dry:
            return
        self.expect_processed(kind, out)

    def _wait_status(self, kind: Kind, out: Outcome, check: Callable[[dict[str, Any]], bool], what: str) -> None:
        assert out.body is not None
        name = out.body["metadata"]["name"]

        def status() -> dict[str, Any] | None:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, kind.plural, name)
            s = dict(obj.get("status") or {})
            return s if check(s) else None

        try:
            eventually(status, timeout=15, what=what, interval=0.1)
        except AssertionError:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, kind.plural, name)
            raise AssertionError(
                f"{kind.kind} {name}: {what}; status {json.dumps(obj.get('status'))[:2000]}\n{_show(obj['spec'])}"
            ) from None

    def expect_processed(self, kind: Kind, out: Outcome) -> None:
        def ok(s: dict[str, Any]) -> bool:
            stalled = next((c for c in s.get("conditions") or [] if c.get("type") == "Stalled"), None)
            assert not (stalled and stalled.get("status") == "True" and stalled.get("reason") == "InvalidSpec"), (
                f"a valid spec was marked invalid: {stalled}"
            )
            return bool(s.get("phase"))

        self._wait_status(kind, out, ok, "the operator reports a phase")


def _problems(kind: Kind, spec: Any) -> list[ErrorDetails]:
    try:
        kind.parse_spec(spec)
    except ValidationError as exc:
        return list(exc.errors(include_url=False))
    return []


_TAGS = re.compile(r"^(dict|list|str|int|float|bool|none|function-.*|json-or-python.*|union.*|literal.*)$")


def _field_names(problems: list[ErrorDetails]) -> set[str]:
    """The wire names of the fields the models complain about (deepest named part of each error's path)."""
    names: set[str] = set()
    for p in problems:
        named = [str(part) for part in p["loc"] if isinstance(part, str) and not _TAGS.match(part)]
        names.update(named[-2:] or ["spec"])
    return names


def _show(spec: Any) -> str:
    text = json.dumps(spec, ensure_ascii=True)
    return text if len(text) < 3000 else text[:3000] + f"... ({len(text)} chars)"


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_start(operator: Operator) -> int:
    return len(operator.log.read_text(errors="replace"))


@pytest.fixture
def fuzzer(kube: client.ApiClient, namespace: str, operator: Operator, log_start: int) -> Iterator[Fuzzer]:
    f = Fuzzer(kube, namespace, operator)
    yield f
    print(f"\nfuzz outcomes: {json.dumps(f.counts, sort_keys=True)}")


@pytest.fixture(scope="module")
def admin_name(kube: client.ApiClient) -> str:
    return whoami(kube)


# ---- tests -----------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=DRY_EXAMPLES)
@given(spec=any_spec(GOOD.saga(), BAD.saga()))
def test_saga_specs(fuzzer: Fuzzer, spec: dict[str, Any]) -> None:
    fuzzer.check(TASK_SAGA, spec)


@settings(FUZZ, max_examples=DRY_EXAMPLES)
@given(spec=any_spec(GOOD.monitor(), BAD.monitor()))
def test_monitor_specs(fuzzer: Fuzzer, spec: dict[str, Any]) -> None:
    fuzzer.check(HEALTH_MONITOR, spec)


@settings(FUZZ, max_examples=DRY_EXAMPLES)
@given(data=st.data())
def test_approval_specs(fuzzer: Fuzzer, admin_name: str, data: st.DataObject) -> None:
    fuzzer.check(APPROVAL_REQUEST, data.draw(any_spec(GOOD.approval(admin_name), BAD.approval(admin_name))))


def _dead_urls(spec: Any) -> Any:
    """The spec with every action aimed at a closed loopback port, so real creates reach nothing."""
    if isinstance(spec, dict):
        return {k: (DEAD_URL if k == "url" and isinstance(v, str) else _dead_urls(v)) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_dead_urls(v) for v in spec]
    return spec


@settings(FUZZ, max_examples=REAL_EXAMPLES)
@given(data=st.data())
def test_real_creates_are_processed(fuzzer: Fuzzer, admin_name: str, data: st.DataObject) -> None:
    """Valid specs, created for real: the operator gives each a phase and never calls them invalid."""
    kind, base = data.draw(
        st.sampled_from(
            [(TASK_SAGA, GOOD.saga()), (HEALTH_MONITOR, GOOD.monitor()), (APPROVAL_REQUEST, GOOD.approval(admin_name))]
        )
    )
    spec = _dead_urls(data.draw(base))
    if kind is TASK_SAGA:  # keep real sagas short: one try per step
        for step in spec.get("steps") or []:
            if isinstance(step, dict):
                step.pop("retry", None)
    fuzzer.check(kind, spec, dry=False)


# Specs the CRD schema accepts but the models refuse: admission refuses them, naming the field.
DEEP_BODY = nested(300)  # pydantic's JSON validation stops at 255 levels; the API server takes far more


@pytest.mark.parametrize("kind", [TASK_SAGA, HEALTH_MONITOR, APPROVAL_REQUEST], ids=lambda k: k.kind)
def test_specs_the_schema_accepts_and_the_models_refuse_are_refused(fuzzer: Fuzzer, kind: Kind) -> None:
    action = {"http": {"url": DEAD_URL, "body": DEEP_BODY}}
    specs: dict[str, dict[str, Any]] = {
        TASK_SAGA.kind: {"task": {"id": "deep"}, "steps": [{"name": "a", "action": action}]},
        HEALTH_MONITOR.kind: {"target": action},
        APPROVAL_REQUEST.kind: {"subject": {"title": "deep"}, "approvers": {"users": ["alice"]}, "notify": action},
    }
    spec = specs[kind.kind]
    assert _problems(kind, spec)
    fuzzer.check(kind, spec, dry=False)
    assert fuzzer.counts == {f"{kind.kind}:invalid:refused": 1}


def test_very_deep_body_is_refused_and_the_operator_lives(
    operator: Operator, kubectl_path: Path, namespace: str, tmp_path: Path
) -> None:
    """Regression: a HealthMonitor whose http.body nested 3000 levels was stored, and every operator watching
    it died (kopf's json.loads raised RecursionError). Admission now refuses http bodies nested over 32 levels."""
    inner = '{"a":' * 3000 + "1" + "}" * 3000
    manifest = json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HealthMonitor",
            "metadata": {"name": "deep", "namespace": namespace},
            "spec": {"target": {"http": {"url": DEAD_URL, "body": None}}},
        }
    )
    path = tmp_path / "deep.json"
    path.write_text(manifest.replace('"body": null', f'"body": {inner}'))
    done = subprocess.run(
        [str(kubectl_path), "create", "-f", str(path)], capture_output=True, text=True, env=os.environ
    )
    assert done.returncode != 0
    assert "spec.target.http.body" in done.stderr and "nested more than 32 levels" in done.stderr
    time.sleep(1)
    assert operator.pid is not None and processes.alive(operator.pid)


def test_operator_survived(operator: Operator, log_start: int) -> None:
    """Runs last in this module: the operator is alive and none of our code raised an unhandled exception."""
    assert operator.pid is not None and processes.alive(operator.pid), "the operator died"
    log = operator.log.read_text(errors="replace")[log_start:]
    ours = [block for block in log.split("Traceback (most recent call last):")[1:] if "operator/steadfast/" in block]
    assert not ours, "tracebacks from our code in the operator log:\n" + "\n----\n".join(b[:3000] for b in ours)


@settings(FUZZ, max_examples=EXAMPLES or 300)
@given(
    kind_spec=st.one_of(
        st.tuples(st.just(TASK_SAGA), any_spec(GOOD.saga(), BAD.saga())),
        st.tuples(st.just(HEALTH_MONITOR), any_spec(GOOD.monitor(), BAD.monitor())),
        st.tuples(st.just(APPROVAL_REQUEST), any_spec(GOOD.approval("admin"), BAD.approval("admin"))),
    )
)
def test_models_refuse_only_with_validation_errors(kind_spec: tuple[Kind, dict[str, Any]]) -> None:
    """No API server: whatever the spec, the models answer with a result or a ValidationError, never a crash."""
    kind, spec = kind_spec
    with contextlib.suppress(ValidationError):
        kind.parse_spec(spec)


@pytest.mark.parametrize("text", ["2562048h", "99999999999999999999h", "2562047h47m16.854775808s"])
def test_overlong_duration_is_a_validation_error(text: str) -> None:
    """Regression: parse_duration raised OverflowError (not ValueError), so pydantic let it escape."""
    with pytest.raises(ValidationError, match="healthyInterval"):
        HEALTH_MONITOR.parse_spec({"target": {"http": {"url": DEAD_URL}}, "healthyInterval": text})


@pytest.mark.parametrize(
    "url",
    [
        "HTTP://h/",
        "http://h:abc/",
        "http://h?\x00",
        "http://h/%zz",
        "http://h#f",
        "http://h\\i/",
        "http://u%zz@h/",
        "http://h/a\u00a0b",
        "http://h/\u2028",
    ],
)
def test_urls_the_api_server_refuses_are_refused_by_the_models(url: str, fuzzer: Fuzzer) -> None:
    """Regression: each of these split the models and the CRD (fuzzing found them); now both refuse."""
    fuzzer.check(HEALTH_MONITOR, {"target": {"http": {"url": url}}})
    with pytest.raises(ValidationError):
        HEALTH_MONITOR.parse_spec({"target": {"http": {"url": url}}})
