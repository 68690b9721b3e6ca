"""A small corpus with planted drops of known reasons in known languages, for the audit's matrix.

Texts are articles of the bundled UDHR file (01-udhr-a.jsonl) that the tiny config keeps
(truth.jsonl). Planted, per language (kept / exact_duplicate / gopher_short_doc):
de 4 / 2 / 2, fr 2 / 1 / 3, es 3 / 0 / 0; under ``und``: 2 empty_text, 1 quarantined (broken JSON).
A short text is the first SHORT_WORDS words of another article: under Gopher's 20 words.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.pipelines.corpus.conftest import RAW, TRUTH, corpus_config

SHORT_WORDS = 12
PLAN = {"de": (4, 2, 2), "fr": (2, 1, 3), "es": (3, 0, 0)}  # kept, exact duplicates, short texts
EMPTY, BROKEN = 2, 1


def _articles(lang: str, n: int) -> list[str]:
    lines = [r["line"] for r in map(json.loads, TRUTH.read_text().splitlines())
             if r["file"] == "01-udhr-a.jsonl" and r["expected_lang"] == lang and r["expected_outcome"] == "kept"]
    raw = (RAW / "01-udhr-a.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(raw[line - 1])["text"] for line in lines[:n]]


def write_input(path: Path) -> tuple[Counter, Counter]:
    """The planted JSONL; returns the expected (kept per language, dropped per (language, reason))."""
    records, kept, dropped = [], Counter(), Counter()
    for lang, (n_kept, n_dup, n_short) in PLAN.items():
        texts = _articles(lang, n_kept + n_short)
        for i, text in enumerate(texts[:n_kept]):
            records.append(json.dumps({"id": f"{lang}-{i}", "text": text}, ensure_ascii=False))
        for i in range(n_dup):
            records.append(json.dumps({"id": f"{lang}-dup-{i}", "text": texts[i % n_kept]}, ensure_ascii=False))
        for i, text in enumerate(texts[n_kept:]):
            short = " ".join(text.split()[:SHORT_WORDS])
            records.append(json.dumps({"id": f"{lang}-short-{i}", "text": short}, ensure_ascii=False))
        kept[lang] = n_kept
        dropped.update({(lang, "exact_duplicate"): n_dup, (lang, "gopher_short_doc"): n_short})
    records += [json.dumps({"id": f"empty-{i}", "text": "  \n "}) for i in range(EMPTY)]
    records += ['{"id": "broken", "text": "no closing quote}'] * BROKEN
    dropped.update({("und", "empty_text"): EMPTY, ("und", "quarantined"): BROKEN})
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    return kept, +dropped


def build(tmp: Path, *sets: str) -> tuple[Path, dict, Counter, Counter]:
    """The planted corpus built with the tiny config (local engine): (output, manifest, kept, dropped)."""
    from pipelines.corpus import run

    src = tmp / "planted.jsonl"
    kept, dropped = write_input(src)
    out = tmp / "corpus"
    manifest = run(corpus_config(out, "engine=local", *sets, inputs=(str(src),)))
    return out, manifest, kept, dropped
