"""Which kinds the operator runs, each as its binding, workflow function and any kind-specific handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.saga import OnDelete, SagaPhase
from steadfast.binding import Binding, Bindings
from steadfast.workflows import saga


@dataclass(frozen=True)
class Setup:
    binding: Binding
    workflow_fn: Callable[..., Any]
    register_extra: Callable[[Bindings, kopf.OperatorRegistry], None] = lambda bindings, registry: None


def _saga_stop_event(spec: Any) -> str | None:
    return None if (spec or {}).get("onDelete") == OnDelete.ABANDON.value else saga.CANCEL_EVENT


SAGA = Setup(
    binding=Binding(
        kind=TASK_SAGA, workflow=saga.NAME, stop_event=_saga_stop_event,
        terminal_phases=frozenset(p.value for p in SagaPhase if p.terminal),
    ),
    workflow_fn=saga.saga_workflow,
)

BINDINGS: tuple[Setup, ...] = (SAGA,)
