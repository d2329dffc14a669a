"""`steadfast retry | skip | compensate | resolve`: the patch each verb sends, a repeated decision, bulk results.

The API server is a small in-memory fake of the CustomObjectsApi calls the commands make: it applies JSON merge
patches, stamps the deciding user as the mutating webhook would and refuses what it is told to, the way a
validating webhook answers. The webhook itself is tested end to end with the operator.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from steadfast import cli, kubeconfig
from steadfast.api.kinds import APPROVAL_REQUEST, REPAIRED_BY, TASK_SAGA
from steadfast.repair.decisions import Decision, Outcome, already_carries, summary


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies `--type=merge`."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            inner = out.get(key)
            out[key] = _merge(inner if isinstance(inner, dict) else {}, value)
        else:
            out[key] = value
    return out


class FakeApi:
    """The CustomObjectsApi calls of the repair commands, over objects held in memory."""

    def __init__(self, user: str = "alice") -> None:
        self.user = user
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.refusals: dict[str, tuple[int, str]] = {}  # name -> (HTTP status, the webhook's message)
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.lists: list[tuple[str | None, str]] = []
        self.prunes_repair = False  # a CRD without spec.repair: the API server drops the field

    def add(
        self, plural: str, namespace: str, name: str, labels: dict[str, str] | None = None, phase: str = "Paused"
    ) -> None:
        meta = {"name": name, "namespace": namespace, "generation": 1, "labels": labels or {}}
        self.objects[(plural, namespace, name)] = {"metadata": meta, "spec": {}, "status": {"phase": phase}}

    def _missing(self) -> ApiException:
        exc = ApiException(status=404, reason="Not Found")
        exc.body = json.dumps({"message": "not found"})
        return exc

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        if (plural, ns, name) not in self.objects:
            raise self._missing()
        return self.objects[(plural, ns, name)]

    def _selected(self, plural: str, namespace: str | None, selector: str) -> dict[str, Any]:
        self.lists.append((namespace, selector))
        wanted = dict(term.split("=", 1) for term in selector.split(","))
        items = [
            obj
            for (p, ns, _), obj in self.objects.items()
            if p == plural
            and namespace in (None, ns)
            and all(obj["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return {"items": items}

    def list_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, label_selector: str
    ) -> dict[str, Any]:
        return self._selected(plural, ns, label_selector)

    def list_cluster_custom_object(self, group: str, version: str, plural: str, label_selector: str) -> dict[str, Any]:
        return self._selected(plural, None, label_selector)

    def patch_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str, body: dict[str, Any]
    ) -> Any:
        self.patches.append((plural, f"{ns}/{name}", body))
        if (plural, ns, name) not in self.objects:
            raise self._missing()
        if name in self.refusals:
            status, message = self.refusals[name]
            exc = ApiException(status=status, reason="Refused")
            exc.body = json.dumps({"kind": "Status", "message": message})
            raise exc
        old = self.objects[(plural, ns, name)]
        new = _merge(old, body)
        if self.prunes_repair:
            new["spec"].pop("repair", None)
        if new["spec"] != old["spec"]:
            new["metadata"] = {
                **new["metadata"],
                "generation": old["metadata"]["generation"] + 1,
                "annotations": {REPAIRED_BY: self.user},
            }
        self.objects[(plural, ns, name)] = new
        return new


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()

    def connect(args: argparse.Namespace) -> tuple[FakeApi, str]:
        return fake, args.namespace or "payments"

    monkeypatch.setattr(kubeconfig, "connect", connect)
    return fake


def _repair(api: FakeApi, name: str, namespace: str = "payments", plural: str = "tasksagas") -> Any:
    return api.objects[(plural, namespace, name)]["spec"].get("repair")


# The patch each verb sends.


@pytest.mark.parametrize(
    ("argv", "repair"),
    [
        (["retry", "order-42"], {"action": "Retry"}),
        (
            ["skip", "order-42", "--reason", "quota raised by hand"],
            {"action": "Skip", "reason": "quota raised by hand"},
        ),
        (["compensate", "order-42", "--step", "charge"], {"action": "Compensate", "step": "charge"}),
        (
            ["resolve", "order-42", "--step", "refund", "--reason", "refunded in the console"],
            {"action": "Resolve", "step": "refund", "reason": "refunded in the console"},
        ),
    ],
)
def test_each_verb_patches_spec_repair(api: FakeApi, argv: list[str], repair: dict[str, str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    assert cli.main(argv) == 0
    assert _repair(api, "order-42") == repair
    # A merge patch, every field present: null removes what an earlier decision left.
    body = api.patches[0][2]
    assert set(body["spec"]["repair"]) == {"action", "step", "reason"}


def test_a_new_decision_leaves_nothing_of_the_previous_one(api: FakeApi) -> None:
    api.add("tasksagas", "payments", "order-42")
    assert cli.main(["skip", "order-42", "--step", "charge", "--reason", "charged by hand"]) == 0
    assert cli.main(["retry", "order-42"]) == 0
    assert _repair(api, "order-42") == {"action": "Retry"}


def test_the_answer_says_who_it_was_recorded_for(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    assert cli.main(["retry", "order-42"]) == 0
    assert capsys.readouterr().out == "TaskSaga payments/order-42: Retry recorded for alice (generation 2)\n"


def test_retry_of_an_approval_request(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("approvalrequests", "payments", "deploy-7")
    assert cli.main(["retry", "--kind", "apr", "deploy-7", "-n", "payments"]) == 0
    assert _repair(api, "deploy-7", plural="approvalrequests") == {"action": "Retry"}
    assert capsys.readouterr().out.startswith("ApprovalRequest payments/deploy-7: Retry recorded for alice")


@pytest.mark.parametrize("kind", ["apr", "approvalrequest", "ApprovalRequest", "approvalrequests"])
def test_kind_names_as_kubectl_spells_them(kind: str) -> None:
    args = cli.parser().parse_args(["retry", "--kind", kind, "x"])
    assert args.kind is APPROVAL_REQUEST
    assert cli.parser().parse_args(["retry", "x"]).kind is TASK_SAGA


@pytest.mark.parametrize(
    "argv",
    [
        ["skip", "order-42"],  # a skip needs a reason
        ["resolve", "order-42", "--reason", "done by hand"],  # resolve names the step
        ["resolve", "order-42", "--step", "refund"],  # ... and says why
        ["compensate", "--kind", "apr", "x"],  # only retry acts on an ApprovalRequest
        ["retry", "--kind", "hmon", "x"],
    ],
)
def test_missing_or_wrong_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(argv)
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["retry"],  # neither a name nor a selector
        ["retry", "order-42", "-l", "team=payments"],  # both
        ["retry", "order-42", "-A"],  # -A needs a selector
        ["retry", "--kind", "apr", "--step", "charge", "deploy-7"],
        ["retry", "order-42", "--phase", "Paused"],  # --phase narrows a selector
    ],
)
def test_ambiguous_targets_are_refused_before_any_call(
    api: FakeApi, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert api.patches == [] and api.lists == []


# A repeated decision: the API server would see no change.


def test_the_same_decision_twice_is_no_change(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    assert cli.main(["retry", "order-42", "--reason", "refund service is back"]) == 0
    capsys.readouterr()
    assert cli.main(["retry", "order-42", "--reason", "refund service is back"]) == 1
    err = capsys.readouterr().err
    assert "already carries this exact decision (recorded for alice)" in err
    assert "--reason" in err
    assert len(api.patches) == 1  # nothing sent the second time
    assert cli.main(["retry", "order-42", "--reason", "refund service is back, second try"]) == 0


def test_no_change_compares_the_stored_value() -> None:
    obj = {"spec": {"repair": {"action": "Retry", "reason": "back"}}}
    assert already_carries(obj, Decision(action="Retry", reason="back"))
    assert not already_carries(obj, Decision(action="Retry"))
    assert not already_carries(obj, Decision(action="Retry", step="refund", reason="back"))
    assert not already_carries({"spec": {}}, Decision(action="Retry"))


# Refusals: the API server's words, as they came.


def test_a_refusal_is_shown_verbatim(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    message = 'admission webhook "tasksagas.steadfast.dev" denied the request: Skip fits a Paused saga, not Succeeded'
    api.refusals["order-42"] = (400, message)
    assert cli.main(["skip", "order-42", "--reason", "x"]) == 1
    assert capsys.readouterr().err == f"error: TaskSaga payments/order-42: {message}\n"


def test_text_users_wrote_is_escaped(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    api.refusals["order-42"] = (400, "step \u202eegrahc\u202c is not the paused step")
    assert cli.main(["retry", "order-42", "--step", "\u202eegrahc\u202c"]) == 1
    assert "step \\u202eegrahc\\u202c is not" in capsys.readouterr().err


def test_a_crd_without_the_field_decides_nothing(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-42")
    api.prunes_repair = True
    assert cli.main(["retry", "order-42"]) == 1
    assert "did not keep spec.repair" in capsys.readouterr().err


def test_a_missing_resource(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["retry", "order-404"]) == 1
    assert capsys.readouterr().err == "error: TaskSaga payments/order-404: not found\n"


# Bulk: every match, one line each, a summary and an exit code.


def test_bulk_acts_on_every_match_and_sums_up(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("order-41", "order-42", "order-43"):
        api.add("tasksagas", "payments", name, {"team": "payments"})
    api.add("tasksagas", "payments", "order-99", {"team": "shipping"})
    api.refusals["order-43"] = (403, "alice may not repair tasksagas in payments")
    assert cli.main(["retry", "-l", "team=payments", "--reason", "refund service is back"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "payments/order-41: Retry recorded for alice (generation 2)",
        "payments/order-42: Retry recorded for alice (generation 2)",
        "payments/order-43: alice may not repair tasksagas in payments",
        "2 done, 1 refused",
    ]
    assert api.lists == [("payments", "team=payments")]
    assert _repair(api, "order-99") is None


def test_bulk_in_every_namespace(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "eu", "order-1", {"team": "payments"})
    api.add("tasksagas", "us", "order-2", {"team": "payments"})
    assert cli.main(["retry", "-A", "-l", "team=payments"]) == 0
    assert api.lists == [(None, "team=payments")]
    assert capsys.readouterr().out.splitlines()[-1] == "2 done, 0 refused"


def test_bulk_counts_a_repeated_decision_as_not_done(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "payments", "order-41", {"team": "payments"})
    assert cli.main(["retry", "order-41"]) == 0
    api.add("tasksagas", "payments", "order-42", {"team": "payments"})
    capsys.readouterr()
    assert cli.main(["retry", "-l", "team=payments"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("payments/order-41: already carries this exact decision")
    assert out[-1] == "1 done, 1 refused"


def test_bulk_narrowed_to_a_phase(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add("tasksagas", "eu", "order-1", {"team": "payments"}, phase="CompensationFailed")
    api.add("tasksagas", "us", "order-2", {"team": "payments"}, phase="Succeeded")
    api.add("tasksagas", "us", "order-3", {"team": "payments"}, phase="CompensationFailed")
    assert cli.main(["retry", "-A", "-l", "team=payments", "--phase", "CompensationFailed"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "eu/order-1: Retry recorded for alice (generation 2)",
        "us/order-3: Retry recorded for alice (generation 2)",
        "2 done, 0 refused",
    ]
    assert "1 other match(es) not in phase CompensationFailed: left alone" in captured.err
    assert _repair(api, "order-2", namespace="us") is None


def test_bulk_with_no_match(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["retry", "-l", "team=paymnets"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "0 done, 0 refused\n"
    assert "no TaskSaga matches -l team=paymnets in namespace payments" in captured.err


def test_summary_and_exit_code() -> None:
    done = Outcome(name="a/x", done=True, message="Retry recorded for alice")
    refused = Outcome(name="a/y", done=False, message="no")
    assert summary([done, done]) == ("2 done, 0 refused", 0)
    assert summary([done, refused, refused]) == ("1 done, 2 refused", 1)
    assert summary([]) == ("0 done, 0 refused", 0)
