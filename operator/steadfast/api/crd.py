"""Generate the CustomResourceDefinitions in `crds/` from the models (`steadfast crds [DIR] [--check]`).

Output is deterministic (sorted keys, fixed kind order) so that a test and `--check` can compare
the committed files byte for byte and fail when a model changed without regenerating.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from steadfast.api.kinds import KINDS, POLICY, SCHEDULE_KINDS, TEMPLATES, Kind
from steadfast.api.structural import Schema, to_structural, violations

HEADER = "# Generated from operator/steadfast/api by `steadfast crds`; do not edit.\n"
SUFFIX = ".steadfast.dev.yaml"


def _strip_defaults(schema: Schema) -> Schema:
    """Status is written by the operator only; API-server defaults there would only add noise."""
    out = {k: v for k, v in schema.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {n: _strip_defaults(s) for n, s in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _strip_defaults(out["items"])
    return out


def open_api_schema(kind: Kind) -> Schema:
    """The structural openAPIV3Schema of `kind`; raises ValueError if it is not structural."""
    spec = to_structural(kind.spec_model.model_json_schema(by_alias=True, mode="validation"))
    status = _strip_defaults(to_structural(kind.status_model.model_json_schema(by_alias=True, mode="validation")))
    spec.setdefault("description", kind.spec_model.__doc__ or "")
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if kind.root_rules:
        root["x-kubernetes-validations"] = [r.as_dict() for r in kind.root_rules]
    problems = violations(root)
    if problems:
        raise ValueError(f"{kind.kind} schema is not structural:\n  " + "\n  ".join(problems))
    return root


def build_crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition object for `kind`."""
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": kind.list_kind,
        "plural": kind.plural,
        "singular": kind.singular,
        "shortNames": list(kind.short_names),
        "categories": list(kind.categories),
    }
    version: dict[str, Any] = {
        "name": kind.version,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": [c.as_dict() for c in kind.printer_columns],
        "schema": {"openAPIV3Schema": open_api_schema(kind)},
    }
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": path} for path in kind.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "steadfast"}},
        "spec": {
            "group": kind.group,
            "names": names,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [version],
        },
    }


def render(kind: Kind) -> str:
    """The YAML text of `kind`'s CRD."""
    return HEADER + yaml.safe_dump(build_crd(kind), sort_keys=True, default_flow_style=False, width=100)


def filename(kind: Kind) -> str:
    return f"{kind.plural}{SUFFIX}"


def render_all() -> dict[str, str]:
    """File name → YAML text, one CRD per kind."""
    return {filename(k): render(k) for k in (*KINDS, *SCHEDULE_KINDS, POLICY, *TEMPLATES)}


def default_dir() -> Path:
    """`crds/` at the repository root when running from a checkout, else under the current directory."""
    root = Path(__file__).resolve().parents[3]
    return root / "crds" if (root / "pyproject.toml").is_file() else Path.cwd() / "crds"


def drift(directory: Path) -> list[str]:
    """Files in `directory` that differ from, lack, or are not in the generated set."""
    wanted = render_all()
    out = [n for n, text in sorted(wanted.items()) if _read(directory / n) != text]
    stale = sorted(p.name for p in directory.glob(f"*{SUFFIX}") if p.name not in wanted) if directory.is_dir() else []
    return out + stale


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def write(directory: Path) -> list[str]:
    """Write the CRDs, remove stale generated ones; returns the names of files changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = drift(directory)
    wanted = render_all()
    for name in changed:
        path = directory / name
        if name in wanted:
            path.write_text(wanted[name], encoding="utf-8")
        elif path.read_text(encoding="utf-8").startswith(HEADER):
            path.unlink()
    return changed


def main(argv: list[str]) -> int:
    """`steadfast crds [DIR] [--check]`: write the CRDs, or exit 1 listing the files that drifted."""
    parser = argparse.ArgumentParser(prog="steadfast crds", description="Generate CRDs from the API models.")
    parser.add_argument("directory", nargs="?", type=Path, default=None, help="output folder (default: crds/)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (same as DIRECTORY)")
    parser.add_argument("--check", action="store_true", help="change nothing; fail if the files are not current")
    args = parser.parse_args(argv)
    directory: Path = args.out or args.directory or default_dir()
    if args.check:
        drifted = drift(directory)
        for name in drifted:
            print(f"drifted: {directory / name}", file=sys.stderr)
        if drifted:
            print("run `steadfast crds` to regenerate", file=sys.stderr)
        return 1 if drifted else 0
    for name in write(directory):
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
