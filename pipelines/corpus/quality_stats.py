"""The statistic behind a quality drop, beside its threshold.

datatrove's filters answer with a reason only; :func:`failed_statistic` recomputes, for that
reason, the value the filter compared (the same formula, over the same words) and returns it with
the configured threshold, so ``dropped.scores`` says ``{"statistic": "non_alpha_words_ratio",
"value": 0.62, "threshold": 0.8, "bound": "min"}`` instead of a bare name.
"""

from __future__ import annotations

import re

import numpy as np
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

from pipelines.corpus.config import GopherQuality, GopherRepetition, QualityConfig

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


def repetition_statistic(name: str, text: str, words: list[str], r: GopherRepetition) -> tuple[float, float]:
    """(value, threshold) of a Gopher repetition reason (``dup_line_frac``, ``duplicated_5_n_grams``, ...)."""
    if name.startswith("dup_para"):
        paras = _PARAGRAPHS.split(text.strip())
        dups, chars = find_duplicates(paras)
        return (dups / len(paras), r.dup_para_frac) if name == "dup_para_frac" else (chars / len(text), r.dup_para_char_frac)
    if name.startswith("dup_line"):
        lines = _LINES.split(text)
        dups, chars = find_duplicates(lines)
        return (dups / len(lines), r.dup_line_frac) if name == "dup_line_frac" else (chars / len(text), r.dup_line_char_frac)
    n = int(re.search(r"\d+", name).group())
    if name.startswith("top_"):
        return find_top_duplicate(get_n_grams(words, n)) / len(text), dict(r.top_n_grams).get(n)
    return find_all_duplicate(words, n) / len(text), dict(r.dup_n_grams).get(n)


def _gopher(name: str, text: str, words: list[str], g: GopherQuality) -> tuple[str, float, float | None, str]:
    non_symbol = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines() or [""]
    n = max(1, len(words))
    table = {
        "short_doc": lambda: ("words", len(non_symbol), g.min_doc_words, "min"),
        "long_doc": lambda: ("words", len(non_symbol), g.max_doc_words, "max"),
        "below_avg_threshold": lambda: ("avg_word_length", np.mean([len(w) for w in non_symbol]), g.min_avg_word_length, "min"),
        "above_avg_threshold": lambda: ("avg_word_length", np.mean([len(w) for w in non_symbol]), g.max_avg_word_length, "max"),
        "too_many_hashes": lambda: ("hash_word_ratio", text.count("#") / n, g.max_symbol_word_ratio, "max"),
        "too_many_ellipsis": lambda: ("ellipsis_word_ratio", (text.count("...") + text.count("…")) / n,
                                      g.max_symbol_word_ratio, "max"),
        "too_many_bullets": lambda: ("bullet_lines_ratio", sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines),
                                     g.max_bullet_lines_ratio, "max"),
        "too_many_end_ellipsis": lambda: ("end_ellipsis_lines_ratio",
                                          sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines),
                                          g.max_ellipsis_lines_ratio, "max"),
        "below_alpha_threshold": lambda: ("alpha_words_ratio", sum(any(c.isalpha() for c in w) for w in words) / n,
                                          g.max_non_alpha_words_ratio, "min"),
        "enough_stop_words": lambda: ("stop_words", None, g.min_stop_words, "min"),
    }
    return table[name]()


def _fineweb(name: str, text: str, words: list[str], cfg: QualityConfig, lang: str) -> tuple[str, float, float, str]:
    f = cfg.fineweb_for(lang)
    lines = [line for line in text.split("\n") if line.strip()] or [""]
    if name == "line_punct_ratio":
        return name, sum(line.endswith(tuple(TERMINAL_PUNCTUATION)) for line in lines) / len(lines), f.line_punct_thr, "min"
    if name == "short_line_ratio":
        return name, sum(len(line) <= f.short_line_length for line in lines) / len(lines), f.short_line_thr, "max"
    if name == "char_dup_ratio":
        return name, find_duplicates(lines)[1] / max(1, len(text.replace("\n", ""))), f.char_duplicates_ratio, "max"
    return "newline_words_ratio", text.count("\n") / max(1, len(words)), f.new_line_ratio, "max"


def failed_statistic(reason: str, text: str, words: list[str], lang: str, cfg: QualityConfig,
                     gopher: GopherQuality, repetition: GopherRepetition, stops: frozenset[str] = frozenset()) -> dict:
    """``{"statistic", "value", "threshold", "bound"}`` of a web-profile reason (the count of the
    offending pattern for C4's pattern rules; {} for a rule that compares nothing). ``stops``: the
    language's stop words (for ``gopher_enough_stop_words``)."""
    if reason.startswith("gopher_rep_"):
        name = reason.removeprefix("gopher_rep_")
        value, thr = repetition_statistic(name, text, words, repetition)
        stat, bound = name, "max"
    elif reason.startswith("gopher_"):
        stat, value, thr, bound = _gopher(reason.removeprefix("gopher_"), text, words, gopher)
        if stat == "stop_words":
            value = len(stops.intersection(words))
    elif reason.startswith("fineweb_"):
        stat, value, thr, bound = _fineweb(reason.removeprefix("fineweb_"), text, words, cfg, lang)
    elif reason.startswith("c4_"):
        pattern = {"c4_curly_bracket": "{", "c4_lorem_ipsum": "lorem ipsum", "c4_javascript": "javascript"}.get(reason)
        if pattern is None:
            return {}
        stat, value, thr, bound = f"count_{pattern.replace(' ', '_')}", text.lower().count(pattern), 0, "max"
    else:
        return {}
    return {"statistic": stat, "value": None if value is None else round(float(value), 4), "threshold": thr,
            "bound": bound}
