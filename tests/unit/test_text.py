"""Text users wrote, shown to others: controls, bidi overrides and invisible characters are escaped."""

from __future__ import annotations

import pytest

from steadfast.text import shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Deploy payments v2", "Deploy payments v2"),
        ("Déploiement — 日本", "Déploiement — 日本"),  # letters of any script stay as they are
        ("pay \u202eevil\u202c", "pay \\u202eevil\\u202c"),  # right-to-left override, pop
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # isolates
        ("ok\u200b\u200d\ufeff", "ok\\u200b\\u200d\\ufeff"),  # zero-width space, joiner, BOM
        ("line\x1b[2Jclear", "line\\u001b[2Jclear"),  # a terminal escape
        ("c1\x85\x9b", "c1\\u0085\\u009b"),
        ("two\nlines\r", "two\\u000alines\\u000d"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("sep\u2028x", "sep\\u2028x"),
    ],
)
def test_shown_escapes_what_changes_how_text_reads(text: str, expected: str) -> None:
    assert shown(text) == expected


def test_newlines_may_be_kept() -> None:
    assert shown("a\nb\u202e", newlines=True) == "a\nb\\u202e"
