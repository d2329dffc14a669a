"""One engine with the test workflows' worker and a client, as the fidelity tests compare them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import dapr.ext.workflow as wf

from steadfast.dev import engines

_RUN = uuid.uuid4().hex[:8]


@dataclass
class Bed:
    """One engine with the test workflows' worker and a client: what the fidelity tests compare."""

    name: str
    engine: engines.Engine
    client: wf.DaprWorkflowClient
    marks: Path

    def id(self, label: str) -> str:
        """The instance ID for `label` in this run: the same on every engine, so messages that name it compare."""
        return f"{label}-{_RUN}"
