"""A fuzzed stream of malformed gRPC calls to the local engine: it answers each with a status and never crashes.

Three kinds of garbage, on every method of `TaskHubSidecarService`: random bytes as the request message
(identity serializers on a raw channel), real request messages with random field values (built from
the protobuf descriptors: huge strings, odd unicode, extreme numbers, nested messages), and calls out of
order (completing work items that were never handed out, raising events on unknown instances, huge
payloads). Afterwards the engine must still be alive, answer Hello and run a real workflow through the
SDK. `STEADFAST_FUZZ_EXAMPLES=N` runs N examples instead of the CI default.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any, Literal

import dapr.ext.workflow as wf
import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import descriptor, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadfast_engine.process import EngineProcess

pytestmark = [pytest.mark.engine, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("STEADFAST_FUZZ_EXAMPLES") or 0)
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=not EXAMPLES,
    max_examples=EXAMPLES or 60,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
SERVICE = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
METHODS = {m.name: m for m in SERVICE.methods}
PREFIX = f"/{SERVICE.full_name}/"
CALL_TIMEOUT = 0.3  # waits (WaitForInstance*, GetWorkItems) end at the deadline
MAX_MESSAGE = 4 * 1024 * 1024  # gRPC's default receive limit; the engine keeps it

_identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731

# ---- strategies ------------------------------------------------------------------------------------

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # annotated: mypy infers a tuple literal as tuple[str] here
CHARS = st.characters(codec="utf-8", exclude_categories=SURROGATES)
TEXT = st.one_of(
    st.text(CHARS, max_size=30),
    st.sampled_from(
        [
            "",
            "\x00",
            "\u202e\u202d",
            "🙂👩‍👩‍👧",
            "../../etc/passwd",
            "'; DROP TABLE instances; --",
            "%s%n{0}",
            "a" * 10_000,
            "é" * 100_000,
        ]
    ),
)
RAW = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"\x00" * 64, b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f"]),
    st.builds(lambda seed, n: random.Random(seed).randbytes(n), st.integers(0, 99), st.sampled_from([1000, 100_000])),
)
_INT_RANGES = {
    descriptor.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-3, 3).filter(lambda v: lo <= v <= hi), st.sampled_from([lo, hi]), st.integers(lo, hi))


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_RANGES:
        return _ints(*_INT_RANGES[t])
    if t == descriptor.FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None  # an enum field always has its enum's descriptor
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), _ints(-(2**31), 2**31 - 1))
    if t == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if t == descriptor.FieldDescriptor.TYPE_FLOAT else 64)
    if t == descriptor.FieldDescriptor.TYPE_BYTES:
        return RAW
    return TEXT


def _fill(msg: Any, draw: st.DrawFn, depth: int) -> None:
    """Set a random subset of `msg`'s fields to random values, recursing into message fields."""
    for field in msg.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        is_message = field.type == descriptor.FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.GetOptions().map_entry:
            key_f, value_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            target = getattr(msg, field.name)
            for _ in range(draw(st.integers(0, 2))):
                key = draw(_scalar(key_f))
                if value_f.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                    if depth > 0:
                        _fill(target[key], draw, depth - 1)
                else:
                    target[key] = draw(_scalar(value_f))
            continue
        repeated = field.is_repeated
        if is_message:
            if depth <= 0:
                continue
            for _ in range(draw(st.integers(0, 2)) if repeated else 1):
                _fill(getattr(msg, field.name).add() if repeated else getattr(msg, field.name), draw, depth - 1)
                if not repeated:
                    getattr(msg, field.name).SetInParent()
        elif repeated:
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(msg, field.name, draw(_scalar(field)))


@st.composite
def messages(draw: st.DrawFn, method: str) -> bytes:
    """A well-formed request for `method` with random field values, serialized."""
    cls = message_factory.GetMessageClass(METHODS[method].input_type)
    msg = cls()
    _fill(msg, draw, depth=draw(st.integers(0, 4)))
    data: bytes = msg.SerializeToString()
    return data


# Method names beyond the service's own: unknown and malformed ones must be UNIMPLEMENTED, nothing worse.
ALL_METHODS = st.one_of(st.sampled_from(sorted(METHODS)), st.sampled_from(["Nope", "", "Hello/../Hello", "🙂"]))


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(ALL_METHODS)
    if name in METHODS and draw(st.booleans()):
        return name, draw(messages(name))
    return name, draw(RAW)


# ---- calling -------------------------------------------------------------------------------------


@pytest.fixture
def channel(engine: EngineProcess) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(engine.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    try:
        yield ch
    finally:
        ch.close()


def call(channel: grpc.Channel, name: str, payload: bytes) -> grpc.StatusCode:
    """One raw call; returns its status code. Only gRPC errors are expected, never anything else."""
    path = PREFIX + name
    try:
        if name in METHODS and METHODS[name].server_streaming:
            stream = channel.unary_stream(path, request_serializer=_identity, response_deserializer=_identity)(
                payload, timeout=CALL_TIMEOUT
            )
            for i, _ in enumerate(stream):
                if i >= 2:
                    stream.cancel()
                    break
        else:
            channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)(
                payload, timeout=CALL_TIMEOUT
            )
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        assert code != grpc.StatusCode.UNAVAILABLE, f"{name}: the engine is unreachable: {exc.details()}"
        if code == grpc.StatusCode.INTERNAL:  # the guard caught an exception in our code: a bug to report
            details = exc.details() or ""
            assert "failed:" not in details, f"{name}: engine raised: {details}"
        return code
    return grpc.StatusCode.OK


def assert_healthy(engine: EngineProcess, channel: grpc.Channel) -> None:
    assert engine.running, f"the engine died:\n{engine.log_tail()}"
    assert call(channel, "Hello", b"") == grpc.StatusCode.OK


# ---- tests -----------------------------------------------------------------------------------------


@settings(FUZZ)
@given(stream=st.lists(calls(), min_size=1, max_size=8))
def test_fuzzed_call_stream(engine: EngineProcess, channel: grpc.Channel, stream: list[tuple[str, bytes]]) -> None:
    for name, payload in stream:
        call(channel, name, payload)
    assert_healthy(engine, channel)


IDS = st.one_of(TEXT, st.uuids().map(str))


@settings(FUZZ)
@given(data=st.data())
def test_out_of_order_and_unknown_targets(engine: EngineProcess, channel: grpc.Channel, data: st.DataObject) -> None:
    """Completing work never handed out, events and controls for instances that do not exist, huge payloads."""
    iid, token, name = data.draw(IDS), data.draw(TEXT), data.draw(TEXT)
    payload = data.draw(
        st.one_of(TEXT, st.builds(lambda n: "x" * n, st.sampled_from([MAX_MESSAGE // 2, MAX_MESSAGE + 10])))
    )
    requests: list[tuple[str, Any]] = [
        (
            "CompleteActivityTask",
            pb.ActivityResponse(
                instanceId=iid, taskId=data.draw(st.integers(-(2**31), 2**31 - 1)), completionToken=token
            ),
        ),
        ("CompleteOrchestratorTask", pb.WorkflowResponse(instanceId=iid, completionToken=token)),
        ("CompleteWorkflowTask", pb.WorkflowResponse(instanceId=iid, completionToken=token)),
        ("RaiseEvent", pb.RaiseEventRequest(instanceId=iid, name=name)),
        ("TerminateInstance", pb.TerminateRequest(instanceId=iid, recursive=data.draw(st.booleans()))),
        ("SuspendInstance", pb.SuspendRequest(instanceId=iid)),
        ("ResumeInstance", pb.ResumeRequest(instanceId=iid)),
        ("PurgeInstances", pb.PurgeInstancesRequest(instanceId=iid, recursive=data.draw(st.booleans()))),
        ("GetInstanceHistory", pb.GetInstanceHistoryRequest(instanceId=iid)),
        ("WaitForInstanceCompletion", pb.GetInstanceRequest(instanceId=iid)),
        ("StartInstance", pb.CreateInstanceRequest(instanceId=iid, name=name)),
        ("RaiseEvent", pb.RaiseEventRequest(instanceId=iid, name=name)),  # now the instance may exist
    ]
    for method, request in data.draw(st.permutations(requests)):
        if method in ("RaiseEvent", "StartInstance"):
            request.input.value = payload
        elif method == "CompleteActivityTask":
            request.result.value = payload
        call(channel, method, request.SerializeToString())
    assert_healthy(engine, channel)


def test_engine_still_runs_workflows_after_fuzzing(
    engine: EngineProcess, channel: grpc.Channel, request: pytest.FixtureRequest
) -> None:
    """A short fuzz burst, then a real SDK worker and client on the same engine: the workflow completes."""
    burst = [
        ("StartInstance", pb.CreateInstanceRequest(instanceId=f"junk-{i}", name="no-such-workflow").SerializeToString())
        for i in range(5)
    ]
    burst += [("CompleteOrchestratorTask", b"\xff" * 10), ("GetWorkItems", b"\x00"), ("RaiseEvent", b"\x0a")]
    for name, payload in burst:
        call(channel, name, payload)
    assert_healthy(engine, channel)
    client: wf.DaprWorkflowClient = request.getfixturevalue("client")
    request.getfixturevalue("runtime")
    iid = client.schedule_new_workflow("chain4", input=3)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=30)
    assert state is not None and state.runtime_status.name == "COMPLETED", state
    assert json.loads(state.serialized_output or "null") == 48
    assert_healthy(engine, channel)
