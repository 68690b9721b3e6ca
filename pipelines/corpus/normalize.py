"""Text normalisation: Unicode NFC (or NFKC), control characters, whitespace.

Every step that removes characters is counted (:func:`normalize_with_changes`), so a stage can
record on the record what was taken out of it instead of removing it silently.
"""

from __future__ import annotations

import re
import unicodedata

# C0/C1 controls except tab and newline, plus the BOM / zero-width no-break space.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")
_HSPACE = re.compile(r"[^\S\n]+")  # horizontal whitespace, any script (NBSP, ideographic space, ...)
_MANY_NEWLINES = re.compile(r"\n{3,}")

# What the counts of :func:`normalize_with_changes` name (characters removed, never replaced).
CHANGE_KINDS = {
    "crlf": "CR of a CRLF line end (a lone CR becomes LF, nothing removed)",
    "nul": "U+0000",
    "bom": "U+FEFF (byte order mark / zero-width no-break space) inside the text",
    "control": "other C0/C1 control characters (not tab or newline), DEL",
    "unicode_form": "characters merged by the Unicode normal form (e.g. e + combining acute -> é)",
    "whitespace": "spaces of a run, spaces at line ends, blank lines beyond one, leading/trailing blanks",
}


def normalize_with_changes(text: str, form: str = "NFC") -> tuple[str, dict[str, int]]:
    """:func:`normalize_text` and how many characters each step removed (only non-zero counts,
    keys of :data:`CHANGE_KINDS`)."""
    changes = {"crlf": text.count("\r\n")}
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    n = len(text)
    changes["nul"], changes["bom"] = text.count("\x00"), text.count("\ufeff")
    text = _CONTROL.sub("", text)
    changes["control"] = n - len(text) - changes["nul"] - changes["bom"]
    n = len(text)
    text = unicodedata.normalize(form, text)
    changes["unicode_form"] = max(n - len(text), 0)  # NFKC may also expand (ﬁ -> fi): nothing removed
    n = len(text)
    text = _HSPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _MANY_NEWLINES.sub("\n\n", text).strip()
    changes["whitespace"] = n - len(text)
    return text, {k: v for k, v in changes.items() if v}


def normalize_text(text: str, form: str = "NFC") -> str:
    """NFC, CRLF/CR -> LF, controls removed, runs of spaces -> one, lines stripped, <= 1 blank line."""
    return normalize_with_changes(text, form)[0]
