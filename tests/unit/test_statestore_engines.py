"""The state-store engines' pure parts: engine names, and secret references resolved as the Dapr operator does."""

from __future__ import annotations

from typing import Any

import pytest

from steadfast.dev import engines, statestores


def test_engine_names_select_daprd_with_a_store() -> None:
    assert engines.parse("daprd-redis, local,daprd-postgres") == ["local", "daprd-postgres", "daprd-redis"]
    assert engines.STORES == {"daprd": "sqlite", "daprd-postgres": "postgresql", "daprd-redis": "redis"}
    with pytest.raises(ValueError, match="daprd-postgres"):
        engines.parse("daprd-postgresql")  # a typo names the valid choices


def component(ref: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {
            "type": "state.postgresql",
            "metadata": [{"name": "connectionString", "secretKeyRef": ref}, {"name": "tablePrefix", "value": "s_"}],
        },
    }


def test_secret_refs_are_inlined_from_the_named_secret_only() -> None:
    secrets = {statestores.POSTGRES_SECRET: "host=127.0.0.1"}
    name, key = statestores.POSTGRES_SECRET
    resolved = statestores.resolve_secrets(component({"name": name, "key": key}), secrets)
    assert resolved["spec"]["metadata"] == [
        {"name": "connectionString", "value": "host=127.0.0.1"},
        {"name": "tablePrefix", "value": "s_"},
    ]
    with pytest.raises(ValueError, match="do not name"):
        statestores.resolve_secrets(component({"name": name, "key": "other"}), secrets)
