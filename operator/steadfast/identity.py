"""Who asked: the authenticated user of an admission request, and the annotations Steadfast records it in.

Identity comes from the API server's admission request (`userInfo`), never from a field users type. The
mutating webhooks stamp the creator (`steadfast.dev/requested-by`) and an approval's decider
(`steadfast.dev/decided-by`), each with a seal (`steadfast.seals`) that the operator checks before it believes
them; these helpers read resources and refuse edits of the stamps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steadfast import seals
from steadfast.api.kinds import REQUESTED_BY, REQUESTED_GROUPS, SEAL


@dataclass(frozen=True)
class User:
    """The authenticated user of an admission request."""

    name: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def from_userinfo(cls, info: Mapping[str, Any]) -> User:
        return cls(str(info.get("username") or ""), frozenset(info.get("groups") or ()))


def groups_stamp(user: User) -> str:
    """The groups annotation's value: a sorted JSON list, so any group name (commas included) round-trips."""
    return json.dumps(sorted(user.groups), separators=(",", ":"), ensure_ascii=False)


def creator_stamps(
    user: User, new: Mapping[str, Any] | None, *, namespace: str, old: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The creator's annotations and their seal (`old`: a restamp at a spec change, bound to the UID)."""
    kind = str((new or old or {}).get("kind") or "")
    seal = seals.creator_seal(
        kind, new, namespace=namespace, user=user.name, groups=sorted(user.groups), now=time.time(), old=old
    )
    return {REQUESTED_BY: user.name, REQUESTED_GROUPS: groups_stamp(user), SEAL: seal}


def meta_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return meta_of(obj).get("annotations") or {}


def spec_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def status_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def name_of(obj: Mapping[str, Any] | None) -> str:
    found = meta_of(obj)
    return f"{found.get('namespace', '')}/{found.get('name') or found.get('generateName', '')}"


def stamp_unchanged(key: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str | None:
    if annotations_of(old).get(key) != annotations_of(new).get(key):
        return (
            f"annotation {key} is recorded by Steadfast's admission webhook from the authenticated user; "
            "it cannot be set, changed or removed by hand"
        )
    return None
