"""Text a user wrote, made safe to show to someone else.

A saga's author writes `spec.task.title`, step names and labels; approvers read them in an ApprovalRequest,
`steadfast status`, `approve` and Events. A bidi override (U+202E) can make `evil.example/moc.knab` read as a
different host, a zero-width or control character can hide text or move the cursor in a terminal. `shown`
escapes every such character as `\\uXXXX`, so what an approver reads is what the author wrote.
"""

from __future__ import annotations

import unicodedata

# Unicode categories that change how text around them looks rather than showing a glyph: controls (C0, DEL,
# C1), format characters (bidi embeddings, overrides and isolates, marks, zero-width space and joiners, word
# joiner, BOM, soft hyphen, tags) and the line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text: str, *, newlines: bool = False) -> str:
    """`text` with every control, format and separator character escaped (`newlines`: keep `\\n` as it is)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        _escape(c) if unicodedata.category(c) in _HIDDEN and not (newlines and c == "\n") else c for c in text
    )
