"""The chart's files without a cluster: the CRD copies, and every value documented and typed.

Rendering and the API server's verdict are in tests/integration/test_chart.py (it needs the helm binary).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
# Values that are Kubernetes objects passed through whole; their parent's comment documents them.
PASS_THROUGH = {"resources", "livenessProbe", "readinessProbe", "startupProbe", "podSecurityContext", "securityContext"}


def test_chart_crds_are_the_generated_crds() -> None:
    """crds/ (generated from the models) is the one source; the chart carries byte-identical copies."""
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert copies == source, (
        "charts/steadfast/files/crds differs from crds/: run "
        "`cp crds/*.yaml charts/steadfast/files/crds/` after `make crds`"
    )


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        inside = [name for _, name in parents]
        parents.append((indent, key))
        if inside and inside[0] in PASS_THROUGH:
            continue
        previous = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        nested = number + 1 < len(lines) and line.rstrip().endswith(":")
        if not previous.startswith("#") and not nested:
            undocumented.append(".".join([*inside, key]))
    assert not undocumented, f"values without a comment: {undocumented}"


def _paths(value: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys of `value` the schema does not declare."""
    missing = []
    if isinstance(value, dict) and schema.get("type") == "object" and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                missing.append(prefix + key)
            else:
                missing += _paths(sub, schema["properties"][key], f"{prefix}{key}.")
    return missing


def test_schema_declares_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _paths(values, schema) == []
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    assert _paths(full, schema) == []
    assert set(schema["properties"]) - {"global"} == set(values), "schema and values.yaml name different values"
