"""The fleet view (`steadfast list`): what is asked of the API server, what is kept, and how it is shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, KINDS, TASK_SAGA, Kind
from steadfast.cli import parser
from steadfast.fleet import query, render, rows
from steadfast.fleet.cli import listing
from steadfast.fleet.filters import Filters, Request, parse_age, parse_kinds
from steadfast.fleet.record import FleetRecord, from_object

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def obj(
    name: str, phase: str | None, *, ns: str = "team-a", age: timedelta = timedelta(hours=1), **rest: Any
) -> dict[str, Any]:
    created = (NOW - age).isoformat().replace("+00:00", "Z")
    status = {"phase": phase, **rest.pop("status", {})} if phase else rest.pop("status", {})
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "status": status, **rest}


def approval(name: str, phase: str = "Pending", users: list[str] | None = None, **rest: Any) -> dict[str, Any]:
    spec = {"subject": {"title": "Drop table"}, "approvers": {"users": users or ["alice"], "required": 1}}
    return obj(name, phase, spec=spec, **rest)


# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("45s", 45), ("2w", 1209600)]
)
def test_ages_read_as_kubectl_writes_them(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "h", "3 days", "1y", "-5m"])
def test_an_age_without_a_unit_is_refused_with_the_units_named(text: str) -> None:
    with pytest.raises(ValueError, match="s, m, h, d, w"):
        parse_age(text)


def test_kinds_by_any_kubectl_name_repeated_or_comma_listed_in_fixed_order() -> None:
    assert parse_kinds([]) == KINDS
    assert parse_kinds(["hmon,saga"]) == (TASK_SAGA, HEALTH_MONITOR)
    assert parse_kinds(["approvalrequests", "TaskSaga"]) == (TASK_SAGA, APPROVAL_REQUEST)
    assert parse_kinds(["approval"]) == (APPROVAL_REQUEST,)
    with pytest.raises(KeyError, match="no Steadfast kind named 'pods'"):
        parse_kinds(["pods"])


def test_a_phase_no_selected_kind_has_is_refused_and_one_of_several_is_warned() -> None:
    with pytest.raises(ValueError, match="no TaskSaga has phase Unhealthy"):
        Filters.build(kinds=["saga"], phases=["Unhealthy"])
    assert Filters.build(phases=["Paused,Compensatd"]).unknown == ("Compensatd",)


# --- what the API server is asked --------------------------------------------------------------------------------


def test_no_filter_asks_once_per_kind_and_a_phase_is_a_field_selector() -> None:
    assert Filters.build().requests() == [Request(k) for k in KINDS]
    saga = Filters.build(kinds=["saga"], phases=["CompensationFailed"]).requests()
    assert saga == [Request(TASK_SAGA, "CompensationFailed")]
    assert saga[0].field_selector == "status.phase=CompensationFailed"


def test_a_phase_is_asked_only_of_the_kinds_that_have_it() -> None:
    assert Filters.build(phases=["Pending"]).requests() == [
        Request(TASK_SAGA, "Pending"),
        Request(APPROVAL_REQUEST, "Pending"),
    ]


def test_needs_person_asks_for_exactly_the_phases_that_wait_for_a_person() -> None:
    asked = {(r.kind.kind, r.phase) for r in Filters.build(needs_person=True).requests()}
    assert asked == {
        ("TaskSaga", "Paused"),
        ("TaskSaga", "CompensationFailed"),
        ("TaskSaga", "AwaitingApproval"),
        ("ApprovalRequest", "Pending"),
        ("HealthMonitor", "Unhealthy"),
    }
    # Combined with --phase: both must hold.
    both = Filters.build(needs_person=True, phases=["CompensationFailed", "Running"]).requests()
    assert both == [Request(TASK_SAGA, "CompensationFailed")]


def test_waiting_for_a_user_asks_for_pending_requests_and_sagas_awaiting_repair_only() -> None:
    asked = {(r.kind.kind, r.phase) for r in Filters.build(waiting_for="alice").requests()}
    assert asked == {("TaskSaga", "Paused"), ("TaskSaga", "CompensationFailed"), ("ApprovalRequest", "Pending")}


# --- records and what the client keeps --------------------------------------------------------------------------


def test_records_say_what_waits_for_a_person_and_why() -> None:
    paused = from_object(
        TASK_SAGA,
        obj(
            "pay",
            "Paused",
            status={
                "pause": {"step": "charge", "expiresAt": "2026-12-07T12:00:00Z"},
                "steps": [{"name": "charge", "phase": "Failed", "message": "HTTP 503"}],
            },
        ),
        NOW,
    )
    assert paused.needs_person and paused.waiting_for == "repair: Retry, Skip or Compensate"
    assert paused.detail == "step charge failed: HTTP 503; compensates at 2026-12-07T12:00:00Z"
    stuck = from_object(
        TASK_SAGA,
        obj(
            "undo",
            "CompensationFailed",
            status={"compensations": [{"step": "reserve", "phase": "Failed", "message": "timeout"}]},
        ),
        NOW,
    )
    assert (stuck.waiting_for, stuck.detail) == ("repair: Retry or Resolve", "compensation failed: reserve: timeout")
    gated = from_object(TASK_SAGA, obj("gated", "AwaitingApproval", status={"approvalRequest": "gated-approval"}), NOW)
    assert gated.waiting_for == "approval of ApprovalRequest gated-approval"
    request = from_object(APPROVAL_REQUEST, approval("drop", users=["alice", "bob"]), NOW)
    assert request.needs_person and request.approvers == ["alice", "bob"]
    assert request.waiting_for == "decision by alice, bob (0/1)"
    sick = from_object(
        HEALTH_MONITOR, obj("db", "Unhealthy", status={"failedCondition": 'x == "UP" (was "DOWN")'}), NOW
    )
    assert sick.needs_person and sick.detail == 'x == "UP" (was "DOWN")'
    done = from_object(TASK_SAGA, obj("ok", "Succeeded"), NOW)
    assert not done.needs_person and done.waiting_for is None and done.age_seconds == 3600


def test_age_filters_keep_by_creation_time() -> None:
    young = from_object(TASK_SAGA, obj("young", "Running", age=timedelta(minutes=10)), NOW)
    old = from_object(TASK_SAGA, obj("old", "Running", age=timedelta(days=2)), NOW)
    since_yesterday = Filters.build(newer_than="24h")
    assert [r.name for r in (young, old) if since_yesterday.keep(r)] == ["young"]
    assert [r.name for r in (young, old) if Filters.build(older_than="1d").keep(r)] == ["old"]


def test_waiting_for_keeps_requests_naming_the_user_and_every_saga_awaiting_repair() -> None:
    mine = from_object(APPROVAL_REQUEST, approval("mine", users=["alice"]), NOW)
    theirs = from_object(APPROVAL_REQUEST, approval("theirs", users=["bob"]), NOW)
    saga = from_object(TASK_SAGA, obj("s", "Paused"), NOW)
    assert [r.name for r in (mine, theirs, saga) if Filters.build(waiting_for="alice").keep(r)] == ["mine", "s"]


# --- rendering -------------------------------------------------------------------------------------------------


def records() -> list[FleetRecord]:
    return [
        from_object(TASK_SAGA, obj("pay", "CompensationFailed", age=timedelta(hours=3)), NOW),
        from_object(APPROVAL_REQUEST, approval("drop", ns="team-b", age=timedelta(days=2)), NOW),
    ]


def test_table_has_the_columns_a_person_reads_and_namespaces_only_across_namespaces() -> None:
    lines = render.table(records(), namespaces=True).splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE", "NAME", "PHASE", "AGE", "WAITS", "FOR", "/", "DETAIL"]
    assert lines[1].split()[:5] == ["TaskSaga", "team-a", "pay", "CompensationFailed", "3h"]
    assert lines[2].split()[:5] == ["ApprovalRequest", "team-b", "drop", "Pending", "2d"]
    assert "decision by alice (0/1); Drop table" in lines[2]
    assert "NAMESPACE" not in render.table(records(), namespaces=False)


def test_table_escapes_text_users_wrote() -> None:
    sneaky = from_object(
        TASK_SAGA, obj("s", "Failed", status={"result": {"status": "Failed", "error": "ok\u202egpj.exe"}}), NOW
    )
    assert "\\u202e" in render.table([sneaky], namespaces=False)


def test_json_is_a_list_of_records_with_stable_camel_case_fields() -> None:
    data = json.loads(render.as_json(records()))
    assert [set(d) for d in data] == [
        {
            "kind",
            "namespace",
            "name",
            "phase",
            "createdAt",
            "ageSeconds",
            "needsPerson",
            "waitingFor",
            "approvers",
            "detail",
        }
    ] * 2
    assert data[1]["approvers"] == ["alice"] and data[1]["needsPerson"] is True
    assert [FleetRecord.model_validate(d) for d in data] == records()


def test_name_output_is_kind_slash_name_lines() -> None:
    assert render.names(records()) == "tasksaga/pay\napprovalrequest/drop"


# --- the listing as a whole, on an API that pages and refuses one kind ------------------------------------------


MANAGED = {"manager": "steadfast", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}


def _at(obj: dict[str, Any], json_path: str) -> Any:
    value: Any = obj
    for key in json_path.lstrip(".").split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def as_table(kind: Kind, items: list[dict[str, Any]], meta: dict[str, Any], manager: str) -> dict[str, Any]:
    """What the API server answers for the Table format with includeObject=Metadata: a Name column, the
    printer columns (dates as ages), each row's metadata with its managedFields."""
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}] + [
        {"name": c.name, "type": c.type, "format": "", "description": c.description, "priority": c.priority}
        for c in kind.printer_columns
    ]
    rows = [
        {
            "cells": [
                o["metadata"]["name"],
                *("1h" if c.type == "date" else _at(o, c.json_path) for c in kind.printer_columns),
            ],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {**o["metadata"], "managedFields": [{**MANAGED, "manager": manager}]},
            },
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    }


class PagingApi:
    """Answers list calls as the API server does (pages with continue tokens, field and label selectors
    applied, lists or Tables as the Accept header asks, compact JSON), and refuses `refused` kinds as RBAC
    would."""

    def __init__(
        self, objects: dict[str, list[dict[str, Any]]], refused: tuple[str, ...] = ("approvalrequests",)
    ) -> None:
        self.objects = objects
        self.refused = refused
        self.calls: list[dict[str, Any]] = []
        self.api_client = self
        self.manager = "steadfast"  # who wrote the objects, as their managedFields say

    def call_api(
        self,
        path: str,
        method: str,
        *,
        path_params: dict[str, str],
        query_params: list[tuple[str, Any]],
        header_params: dict[str, str],
        **_: Any,
    ) -> Any:
        plural, namespace, options = path_params["plural"], path_params.get("namespace"), dict(query_params)
        table = "as=Table" in header_params["Accept"]
        self.calls.append({"plural": plural, "namespace": namespace, "table": table, **options})
        return self._list(plural, namespace, options, table)

    def _list(self, plural: str, namespace: str | None, options: dict[str, Any], table: bool) -> Any:
        if plural in self.refused:
            raise ApiException(status=403, reason="Forbidden")
        items = [o for o in self.objects.get(plural, []) if namespace in (None, o["metadata"]["namespace"])]
        if selector := options.get("fieldSelector"):
            items = [o for o in items if f"status.phase={o['status'].get('phase')}" == selector]
        start = int(options.get("continue") or 0)
        page = items[start : start + options["limit"]]
        meta = {"continue": str(start + options["limit"]) if start + options["limit"] < len(items) else None}
        kind = next(k for k in KINDS if k.plural == plural)
        body = as_table(kind, page, meta, self.manager) if table else {"items": page, "metadata": meta}

        class Response:
            data = json.dumps(body, separators=(",", ":")).encode()

        return Response()


def test_listing_pages_filters_on_the_server_and_warns_of_a_kind_it_may_not_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(query, "PAGE", 2)
    sagas = [obj(f"s{i}", "CompensationFailed" if i % 2 else "Succeeded") for i in range(7)]
    api = PagingApi({"tasksagas": sagas, "healthmonitors": [obj("m", "Unhealthy")]})
    found, warnings = listing(api, Filters.build(needs_person=True), None, NOW)
    assert [(r.kind, r.name) for r in found] == [
        ("TaskSaga", "s1"),
        ("TaskSaga", "s3"),
        ("TaskSaga", "s5"),
        ("HealthMonitor", "m"),
    ]
    assert warnings == ["warning: cannot list approvalrequests in any namespace (-A): HTTP 403 Forbidden"]
    failed = [c for c in api.calls if c.get("fieldSelector") == "status.phase=CompensationFailed"]
    assert len(failed) == 2 and failed[1]["continue"] == "2"  # three matches, two per page


def test_the_command_is_registered_with_its_options() -> None:
    args = parser().parse_args(
        ["list", "-A", "--kind", "saga", "--phase", "CompensationFailed", "--newer-than", "24h", "-o", "name"]
    )
    assert (args.all_namespaces, args.kind, args.phase, args.newer_than, args.output) == (
        True,
        ["saga"],
        ["CompensationFailed"],
        "24h",
        "name",
    )


class NoSelectableFieldApi(PagingApi):
    """An API server whose CRDs have no selectable status.phase (installed on Kubernetes before 1.31)."""

    def _list(self, plural: str, namespace: str | None, options: dict[str, Any], table: bool) -> Any:
        if options.get("fieldSelector"):
            raise _bad_request()
        return super()._list(plural, namespace, options, table)


def _bad_request() -> ApiException:
    exc = ApiException(status=400, reason="Bad Request")
    exc.body = json.dumps({"message": "field label not supported: status.phase"})
    return exc


def test_without_selectable_fields_the_phase_is_filtered_in_the_client() -> None:
    sagas = [obj("a", "CompensationFailed"), obj("b", "Succeeded")]
    api = NoSelectableFieldApi({"tasksagas": sagas})
    found, warnings = listing(api, Filters.build(kinds=["saga"], phases=["CompensationFailed"]), "team-a", NOW)
    assert [r.name for r in found] == ["a"] and warnings == []


# --- the table from the Table format: the same rows, a fraction of the bytes --------------------------------------


def mixed_fleet() -> dict[str, list[dict[str, Any]]]:
    """Every kind in phases whose detail comes from the printer columns and in phases that need the object."""
    hours = timedelta(hours=1)
    return {
        "tasksagas": [
            obj("run", "Running", status={"currentStep": "charge"}, age=timedelta(minutes=5)),
            obj("bad", "Failed", status={"result": {"status": "Failed", "error": "HTTP 400"}}, age=3 * hours),
            obj("ok", "Succeeded", age=timedelta(days=3)),
            obj(
                "pay",
                "Paused",
                status={
                    "currentStep": "charge",
                    "pause": {"step": "charge", "expiresAt": "2026-12-07T12:00:00Z"},
                    "steps": [{"name": "charge", "phase": "Failed", "message": "HTTP 503"}],
                },
            ),
            obj(
                "undo",
                "CompensationFailed",
                status={"compensations": [{"step": "r", "phase": "Failed", "message": "x"}]},
            ),
            obj("gated", "AwaitingApproval", status={"approvalRequest": "gated-approval"}),
        ],
        "approvalrequests": [
            approval("ask", "Pending", users=["alice", "bob"], status={"approvals": [{"approved": True}]}),
            approval("no", "Rejected", status={"reason": "too risky", "approver": "bob"}),
            approval("yes", "Completed", status={"approver": "alice"}, age=timedelta(days=9)),
            approval("boom", "ActionFailed", status={"actionResult": {"error": "HTTP 500"}}),
        ],
        "healthmonitors": [
            obj("db", "Healthy", status={"checkCount": 42}),
            obj("api", "Unhealthy", status={"lastTransitionTime": "2026-12-06T11:00:00Z", "lastError": "timeout"}),
            obj("off", "Suspended", status={"failedCondition": 'status == "UP"'}),
        ],
    }


def shown(found: list[FleetRecord]) -> str:
    return render.table(found, namespaces=True) + "\n" + render.names(found)


@pytest.mark.parametrize("filters", [Filters.build(), Filters.build(older_than="2h"), Filters.build(phases=["Failed"])])
def test_the_table_from_printer_columns_shows_what_whole_objects_show(filters: Filters) -> None:
    api = PagingApi(mixed_fleet(), refused=())
    from_objects, _ = listing(api, filters, None, NOW, output="json")
    api.calls.clear()
    from_table, warnings = listing(api, filters, None, NOW, output="table")
    assert shown(from_table) == shown(from_objects) and from_table and warnings == []
    # Whole objects only for the phases whose detail needs them, each by its field selector.
    whole = [c for c in api.calls if not c["table"]]
    assert all(
        c["fieldSelector"].split("=")[1]
        in ("Paused", "CompensationFailed", "AwaitingApproval", "Pending", "ActionFailed", "Unhealthy")
        for c in whole
    )
    assert any(c["table"] for c in api.calls)


def test_a_phase_that_needs_the_object_and_a_filter_on_approvers_read_whole_objects_only() -> None:
    api = PagingApi(mixed_fleet(), refused=())
    found, _ = listing(api, Filters.build(needs_person=True), None, NOW, output="table")
    assert {r.name for r in found} == {"pay", "undo", "gated", "ask", "api"}
    found, _ = listing(api, Filters.build(waiting_for="alice"), None, NOW, output="name")
    assert {r.name for r in found} == {"pay", "undo", "ask"}
    assert not any(c["table"] for c in api.calls)


def test_managed_fields_are_cut_before_parsing_and_an_unexpected_layout_is_parsed_whole() -> None:
    api = PagingApi(mixed_fleet(), refused=())
    answer = api._list("tasksagas", None, {"limit": 100}, table=True).data
    lean = rows.loads(answer)
    assert len(lean["rows"]) == 6 and all("managedFields" not in r["object"]["metadata"] for r in lean["rows"])
    assert [r["cells"] for r in lean["rows"]] == [r["cells"] for r in json.loads(answer)["rows"]]
    # A manager name that looks like the end of a row: the cut answer does not parse, so the whole one is read.
    api.manager = "x]}}}]"
    odd = api._list("tasksagas", None, {"limit": 100}, table=True).data
    assert rows.loads(odd) == json.loads(odd)
    found, _ = listing(api, Filters.build(), None, NOW, output="table")
    assert shown(found) == shown(listing(api, Filters.build(), None, NOW, output="json")[0])


def test_without_selectable_fields_the_table_reads_detailed_phases_from_one_list() -> None:
    api = NoSelectableFieldApi(mixed_fleet(), refused=())
    found, warnings = listing(api, Filters.build(), None, NOW, output="table")
    assert warnings == [] and shown(found) == shown(
        listing(PagingApi(mixed_fleet(), refused=()), Filters.build(), None, NOW)[0]
    )
    found, _ = listing(api, Filters.build(phases=["Succeeded"]), None, NOW, output="table")
    assert [r.name for r in found] == ["ok"]


def test_a_kind_the_viewer_may_not_list_is_one_warning_in_the_table_too() -> None:
    api = PagingApi(mixed_fleet())
    found, warnings = listing(api, Filters.build(), "team-a", NOW, output="table")
    assert {r.kind for r in found} == {"TaskSaga", "HealthMonitor"}
    assert warnings == ["warning: cannot list approvalrequests in namespace team-a: HTTP 403 Forbidden"]
