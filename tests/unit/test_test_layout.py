"""The test tree itself: pytest imports test modules by basename (rootdir-relative `sys.path` entries), so two
test files of one name in different folders make the whole run fail at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique_across_folders() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "__init__.py" and p.name != "conftest.py")
    repeated = sorted(n for n, c in names.items() if c > 1)
    assert not repeated, f"test modules with the same name in two folders: {repeated}"
