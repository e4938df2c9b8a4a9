"""Text that both the ``chouette`` command and the API show: a request's progress as
numbers, and strings from outside (the Chouette API's answers) made safe to print."""

from __future__ import annotations

import unicodedata
from typing import Any

Row = dict[str, Any]


def printable(text: str) -> str:
    """``text`` safe on a terminal: whitespace runs become one space and other control or
    format characters (escape sequences, bidi overrides) are shown escaped, ``\\x1b``.

    Errors and progress can quote the Chouette API (reason phrases, login answers): such
    text must not move the cursor, recolour or rewrite what ``status`` and ``watch`` show.
    """
    out = []
    for ch in " ".join(text.split()):
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def fraction(req: Row) -> tuple[int, int] | None:
    """A request row's (or notification's) progress as numbers: ``(12, 50)``, or None."""
    done, total = req.get("progress_done"), req.get("progress_total")
    return (int(done), int(total)) if done is not None and total is not None else None
