"""The HealthMonitor workflow's transition rules, on the local engine with fake activities.

Checks run every second (the shortest interval the model allows), so each test takes a few seconds of
real time; the outcome of every check is scripted, so what the monitor decides does not depend on timing.
"""

from __future__ import annotations

from typing import Any

import pytest
from workflow_fakes import SERVICE, Harness, Subject

from steadfast.api.kinds import HEALTH_MONITOR
from steadfast.api.monitor import HealthMonitorSpec
from steadfast.workflows.monitor import SPEC_CHANGED, SpecChange

pytestmark = pytest.mark.engine


def monitor_spec(*, failure_threshold: int = 1, send_on_recovery: bool = False) -> HealthMonitorSpec:
    return HealthMonitorSpec.model_validate(
        {
            "target": {"http": {"url": f"{SERVICE}/health"}},
            "healthyInterval": "1s",
            "unhealthyInterval": "1s",
            "failureThreshold": failure_threshold,
            "alert": {
                "webhook": {"http": {"method": "POST", "url": f"{SERVICE}/alerts"}},
                "severity": "critical",
                "sendOnRecovery": send_on_recovery,
            },
        }
    )


def after_check(subject: Subject, number: int) -> dict[str, Any]:
    """The status reported after check `number` (waits for it)."""
    return subject.log.wait_for(lambda s: s["checkCount"] == number, f"check {number}")


def alerts(subject: Subject) -> list[Any]:
    return [c.body for c in subject.service.calls_to("/alerts")]


def test_one_alert_after_failure_threshold_consecutive_failures(harness: Harness) -> None:
    subject = harness.subject(HEALTH_MONITOR)
    subject.service.script("/health", True, False, then=False)  # healthy, then down for good
    harness.start_monitor(subject, monitor_spec(failure_threshold=2))

    first = after_check(subject, 1)
    assert (first["phase"], first["healthy"], first["nextCheckTime"] is not None) == ("Healthy", True, True)
    one_failure = after_check(subject, 2)
    assert (one_failure["phase"], one_failure["consecutiveFailures"], one_failure["alertsSent"]) == ("Healthy", 1, 0)
    flipped = after_check(subject, 3)
    assert (flipped["phase"], flipped["healthy"], flipped["consecutiveFailures"]) == ("Unhealthy", False, 2)
    assert flipped["alertsSent"] == 1
    assert "HTTP 503" in flipped["lastError"]
    still_down = after_check(subject, 4)  # another failure while unhealthy: no second alert
    assert (still_down["phase"], still_down["consecutiveFailures"]) == ("Unhealthy", 3)

    assert alerts(subject) == [
        {
            "monitor": subject.ref.name,
            "namespace": "default",
            "state": "unhealthy",
            "severity": "critical",
            "lastError": flipped["lastError"],
            "checkCount": 3,
        }
    ]
    assert still_down["alertsSent"] == 1
    assert [c.category for c in subject.service.calls_to("/alerts")] == ["alert"]
    assert subject.log.reasons()[:2] == ["Healthy", "Unhealthy"] and subject.log.reasons().count("Unhealthy") == 1
    # Every check of the same resource is a different operation: a new Idempotency-Key each time.
    checks = subject.service.calls_to("/health")
    assert len({c.key for c in checks}) == len(checks)


def test_recovery_alert_only_with_send_on_recovery(harness: Harness) -> None:
    """Both monitors go down on check 1 and recover on check 2; only the one asking for it gets a recovery alert."""
    loud, quiet = harness.subject(HEALTH_MONITOR), harness.subject(HEALTH_MONITOR)
    for subject, send in ((loud, True), (quiet, False)):
        subject.service.script("/health", False, then=True)
        harness.start_monitor(subject, monitor_spec(send_on_recovery=send))
    for subject in (loud, quiet):
        down = after_check(subject, 1)
        assert (down["phase"], down["alertsSent"]) == ("Unhealthy", 1)
        up = after_check(subject, 2)
        assert (up["phase"], up["healthy"], up["lastError"]) == ("Healthy", True, None)
        after_check(subject, 3)  # healthy again: nothing more is sent

    assert [a["state"] for a in alerts(loud)] == ["unhealthy", "healthy"]
    assert alerts(loud)[1]["checkCount"] == 2 and alerts(loud)[1]["lastError"] is None
    assert [a["state"] for a in alerts(quiet)] == ["unhealthy"]
    assert after_check(loud, 3)["alertsSent"] == 2 and after_check(quiet, 3)["alertsSent"] == 1
    for subject in (loud, quiet):  # the Event is there either way
        assert subject.log.reasons().count("Recovered") == 1


def test_a_spec_change_during_a_check_is_applied(harness: Harness) -> None:
    """The change arrives while the check runs (no sleep left to interrupt): the next run must still use it."""
    subject = harness.subject(HEALTH_MONITOR)
    entered, release = subject.service.hold("/health")
    iid = harness.start_monitor(subject, monitor_spec())
    assert entered.wait(30), "the first check never started"
    edited = monitor_spec().model_copy(update={"suspend": True})
    harness.client.raise_workflow_event(iid, SPEC_CHANGED, data=SpecChange(spec=edited, generation=2).wire())
    release.set()
    suspended = subject.log.wait_for(lambda s: s.get("phase") == "Suspended", "the edited spec applied")
    assert suspended["observedGeneration"] == 2 and suspended["checkCount"] == 1
