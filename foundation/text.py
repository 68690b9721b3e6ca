"""One notion of "the same text": the key and hashes that pairs dedup, mining, CPT, the TRM and the
reranker use to decide that two texts are one (dedup, own-positive removal, in-batch
false-negative masking, random-negative exclusion).

The key is the text with C0/C1 control characters and the BOM removed, Unicode NFC, and every
whitespace run (spaces, tabs, newlines, NBSP, ideographic space, ...) collapsed to one space,
stripped at both ends; case is kept. It equals ``" ".join(normalize_text(t).split())`` of the
corpus normaliser (:func:`pipelines.corpus.normalize.normalize_text`, NFC), so the hashes the
pairs stage stored before this module existed are unchanged.

NFC, not NFKC: NFC only merges canonically equivalent spellings (``e`` + combining acute and
``é`` render the same); NFKC would also merge compatibility variants that can differ in meaning
(full-width and ASCII forms, superscript digits, ligatures, CJK compatibility ideographs), and
the corpus stage normalises to NFC too.
"""

from __future__ import annotations

import re
import unicodedata

import xxhash

# The controls the corpus normaliser removes: C0/C1 except tab, LF and CR, DEL, and U+FEFF.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")


def text_key(text: str) -> str:
    """The text two inputs are compared by: controls removed, NFC, whitespace runs -> one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", _CONTROL.sub("", text)).split())


def text_hash(text: str) -> str:
    """xxh3-128 (hex) of :func:`text_key`: the stored hash (pairs ``query_hash`` / ``positive_hash``,
    mine's candidate ``hash``)."""
    return xxhash.xxh3_128_hexdigest(text_key(text).encode("utf-8"))


def hash_to_int64(hex_digest: str) -> int:
    """The first 64 bits of a hex text hash as a signed int64 (for tensor comparisons and gathers)."""
    value = int(hex_digest[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def text_id(text: str) -> int:
    """:func:`text_hash` as a signed int64: what the in-batch masks compare (equal to
    ``hash_to_int64`` of a stored hash of the same text)."""
    return hash_to_int64(text_hash(text))
