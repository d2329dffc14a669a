"""Whether the names a `kubernetes` action uses are Kubernetes names, field by field.

The object's apiVersion, kind, metadata.name and metadata.namespace become parts of request paths
(`/apis/<group>/<version>/namespaces/<namespace>/<plural>/<name>`). A part such as `..` or `a/b` would
change which path is asked for: `v1/../..` or a namespace `..` reaches other collections, a whole
cluster's among them. So each is checked as the API server names it, before any request is built: at
admission when the value is written literally, and after rendering when it holds a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = re.compile(rf"\A{_LABEL}\Z")  # namespaces, versions: at most 63
DNS_SUBDOMAIN = re.compile(rf"\A{_LABEL}(\.{_LABEL})*\Z")  # API groups: at most 253
KIND = re.compile(r"\A[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?\Z")  # a CRD's kind: a DNS-1035 label once lowercased
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

FIELDS = ("apiVersion", "kind", "metadata.name", "metadata.namespace")


def api_version_problem(value: str) -> str | None:
    parts = value.split("/")
    if len(parts) > 2:
        return "has more than one '/' (it is group/version, or version alone for the core group)"
    group, version = parts if len(parts) == 2 else ("", parts[0])
    if len(parts) == 2 and not (len(group) <= 253 and DNS_SUBDOMAIN.match(group)):
        return "has a group that is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
    if not (len(version) <= 63 and DNS_LABEL.match(version)):
        return "has a version that is not a DNS label (lowercase letters, digits and '-')"
    return None


def kind_problem(value: str) -> str | None:
    if len(value) <= 63 and KIND.match(value):
        return None
    return "is not a kind (letters, digits and '-', starting with a letter, at most 63)"


def name_problem(value: str) -> str | None:
    """The rule every resource's names keep (a resource may ask more; the API server then says so)."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "may not be '.' or '..'"
    if "/" in value or "%" in value:
        return "may not contain '/' or '%'"
    if _CONTROL.search(value):
        return "may not contain spaces or control characters"
    if len(value) > 253:
        return "is longer than 253 characters"
    return None


def namespace_problem(value: str) -> str | None:
    if len(value) <= 63 and DNS_LABEL.match(value):
        return None
    return "is not a namespace name (a DNS label: lowercase letters, digits and '-', at most 63)"


_CHECKS = {
    "apiVersion": api_version_problem,
    "kind": kind_problem,
    "metadata.name": name_problem,
    "metadata.namespace": namespace_problem,
}


def field_value(obj: Mapping[str, Any], field: str) -> Any:
    if field.startswith("metadata."):
        meta = obj.get("metadata")
        return meta.get(field.removeprefix("metadata.")) if isinstance(meta, Mapping) else None
    return obj.get(field)


def problems(obj: Mapping[str, Any], where: str, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """One message per field of `obj` that is not a Kubernetes name, e.g. `<where>.metadata.namespace '..' ...`.

    A missing or empty namespace is fine (the resource's own applies); `skip` leaves out fields not known yet (a
    placeholder's value is checked once rendered).
    """
    out: list[str] = []
    for field, check in _CHECKS.items():
        if field in skip:
            continue
        value = field_value(obj, field)
        if value in (None, "") and field == "metadata.namespace":
            continue
        if not isinstance(value, str):
            out.append(f"{where}.{field} must be a string")
            continue
        problem = check(value)
        if problem:
            out.append(f"{where}.{field} {_shown(value)} {problem}")
    return out


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")
