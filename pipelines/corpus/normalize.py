"""Text normalisation: Unicode NFC (or NFKC), control characters, whitespace."""

from __future__ import annotations

import re
import unicodedata

# C0/C1 controls except tab and newline, plus the BOM / zero-width no-break space.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")
_HSPACE = re.compile(r"[^\S\n]+")  # horizontal whitespace, any script (NBSP, ideographic space, ...)
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str, form: str = "NFC") -> str:
    """NFC, CRLF/CR -> LF, controls removed, runs of spaces -> one, lines stripped, <= 1 blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize(form, text)
    text = _HSPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", text).strip()
