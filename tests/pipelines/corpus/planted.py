"""A small corpus with planted drops of known reasons in known languages, for the audit's matrix.

Texts are articles of the bundled UDHR file (01-udhr-a.jsonl) that the tiny config keeps.
Planted, per language (kept / exact_duplicate / gopher_short_doc): de 4 / 2 / 2, fr 2 / 1 / 3,
es 3 / 0 / 0; under ``und``: 2 empty_text, 1 quarantined (broken JSON). A short text is the first
SHORT_WORDS words of another article, which the config drops as too short.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.pipelines.corpus.conftest import RAW, TRUTH, corpus_config

SHORT_WORDS = 12
PLAN = {"de": (4, 2, 2), "fr": (2, 1, 3), "es": (3, 0, 0)}  # kept, exact duplicates, short texts
EMPTY, BROKEN = 2, 1


def _articles(lang: str) -> list[str]:
    lines = [r["line"] for r in map(json.loads, TRUTH.read_text().splitlines())
             if r["file"] == "01-udhr-a.jsonl" and r["expected_lang"] == lang and r["expected_outcome"] == "kept"]
    raw = (RAW / "01-udhr-a.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(raw[line - 1])["text"] for line in lines]


def _pick(lang: str, n_kept: int, n_short: int, cfg) -> tuple[list[str], list[str]]:
    """``n_kept`` articles the config keeps and ``n_short`` others cut to SHORT_WORDS words that it drops
    as too short (asked of the stage's own per-document function, so that threshold changes such as
    per-language minimums pick other articles, not other outcomes)."""
    from pipelines.corpus.steps import process_document

    kept, short = [], []
    for text in _articles(lang):
        cut = " ".join(text.split()[:SHORT_WORDS])
        if len(kept) < n_kept and process_document(text, cfg)[1] is None:
            kept.append(text)
        elif len(short) < n_short and process_document(cut, cfg)[1] == "gopher_short_doc":
            short.append(cut)
    if (len(kept), len(short)) != (n_kept, n_short):
        raise AssertionError(f"01-udhr-a.jsonl holds {len(kept)} kept and {len(short)} short {lang} articles "
                             f"under the tiny config; the plan needs {n_kept} and {n_short}")
    return kept, short


def write_input(path: Path, cfg) -> tuple[Counter, Counter]:
    """The planted JSONL; returns the expected (kept per language, dropped per (language, reason))."""
    records, kept, dropped = [], Counter(), Counter()
    for lang, (n_kept, n_dup, n_short) in PLAN.items():
        texts, shorts = _pick(lang, n_kept, n_short, cfg)
        for i, text in enumerate(texts):
            records.append(json.dumps({"id": f"{lang}-{i}", "text": text}, ensure_ascii=False))
        for i in range(n_dup):
            records.append(json.dumps({"id": f"{lang}-dup-{i}", "text": texts[i % n_kept]}, ensure_ascii=False))
        for i, short in enumerate(shorts):
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

    tmp.mkdir(parents=True, exist_ok=True)
    src, out = tmp / "planted.jsonl", tmp / "corpus"
    cfg = corpus_config(out, "engine=local", *sets, inputs=(str(src),))
    kept, dropped = write_input(src, cfg)
    manifest = run(cfg)
    return out, manifest, kept, dropped
