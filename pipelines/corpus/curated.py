"""The ``curated`` quality profile: junk rules only, for trusted sources.

Web heuristics read documentation as junk: command options, paths and numbers are not
alphabetic words (Gopher's alpha threshold), code examples hold curly brackets (C4), option
tables repeat phrases (Gopher's duplicated n-grams). This profile keeps only the rules that catch
junk whatever the source: too short / too long, byte noise, boilerplate-only text, markup-only
text, lorem ipsum, one line or paragraph repeated (datatrove's Gopher repetition filter on lines
and paragraphs) and one phrase repeated over half the text.

Each rule is a statistic and a threshold; :func:`curated_verdict` returns the first failing rule
with both, so the dropped table shows why (``{"statistic": .., "value": .., "threshold": ..}``).
"""

from __future__ import annotations

import unicodedata

import regex
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter

from pipelines.corpus.config import CuratedQuality, GopherRepetition
from pipelines.corpus.quality_stats import repetition_statistic

_LETTER = regex.compile(r"[\p{L}\p{M}]")
_HEX_TOKEN = regex.compile(r"[0-9A-Fa-f]+[,.;:]?")
_TWO_LETTERS = regex.compile(r"\p{L}\p{M}*\p{L}")
# a navigation menu: >= 3 spaced separators between short items ("Home | News | Contact | ...")
_MENU_SEP = regex.compile(r"\s[|»›>•·/]\s")
_POLICY = regex.compile(
    r"cookie|privacy policy|terms of (use|service)|all rights reserved|subscribe to our|sign up for our|"
    r"datenschutz|impressum|mentions légales|politique de confidentialité|política de privacidad|"
    r"политика конфиденциальности|隐私政策|プライバシーポリシー", regex.IGNORECASE)
_TAG = regex.compile(r"<script\b.*?</script>|<style\b.*?</style>|<[A-Za-z/!][^<>]*>", regex.DOTALL | regex.IGNORECASE)
_BAD_CATEGORIES = {"Co", "Cn", "Cs", "Cc"}


def _is_menu_line(line: str) -> bool:
    parts = _MENU_SEP.split(f" {line.strip()} ")
    return len(parts) >= 4 and all(len(p.split()) <= 5 for p in parts)


def boilerplate_word_ratio(text: str) -> float:
    """Share of the text's whitespace words that sit in navigation-menu or cookie/privacy lines."""
    total = bp = 0
    for line in text.split("\n"):
        n = len(line.split())
        total += n
        if n and (_is_menu_line(line) or _POLICY.search(line)):
            bp += n
    return bp / total if total else 0.0


def noise_statistics(text: str) -> dict[str, float]:
    """Byte-noise statistics of a text."""
    chars = [c for c in text if not c.isspace()]
    n = max(1, len(chars))
    tokens = text.split()
    wordlike = sum(1 for t in tokens if _TWO_LETTERS.search(t) and not _HEX_TOKEN.fullmatch(t))
    bad = sum(1 for c in chars if c == "\ufffd" or unicodedata.category(c) in _BAD_CATEGORIES)
    return {"letter_ratio": sum(1 for c in chars if _LETTER.match(c)) / n,
            "word_token_ratio": wordlike / max(1, len(tokens)),
            "bad_char_ratio": bad / n,
            "mean_token_chars": len(chars) / max(1, len(tokens))}


def _failed(statistic: str, value: float, threshold: float, direction: str) -> tuple[str, dict]:
    return f"curated_{statistic}", {"statistic": statistic, "value": round(float(value), 4),
                                    "threshold": threshold, "bound": direction}


def _repetition_filter(r: GopherRepetition, language) -> GopherRepetitionFilter:
    return GopherRepetitionFilter(dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac,
                                  dup_line_char_frac=r.dup_line_char_frac, dup_para_char_frac=r.dup_para_char_frac,
                                  top_n_grams=(), dup_n_grams=r.dup_n_grams, language=language)


class CuratedFilters:
    """The curated rules of one :class:`CuratedQuality`; ``tokenizer``: the quality tokenizer."""

    def __init__(self, cfg: CuratedQuality, tokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._repetition = {False: _repetition_filter(cfg.repetition, tokenizer),
                            True: _repetition_filter(cfg.repetition_no_space, tokenizer)}

    def verdict(self, text: str, words: list[str], no_space: bool) -> tuple[str | None, dict]:
        """(None, {}) to keep, else (``curated_<statistic>``, the statistic and its threshold)."""
        c = self.cfg
        n_words = sum(1 for w in words if _LETTER.search(w) or w.isdigit())
        lo, hi = (c.min_words_no_space, c.max_words_no_space) if no_space else (c.min_words, c.max_words)
        if n_words < lo:
            return _failed("words", n_words, lo, "min")
        if n_words > hi:
            return _failed("words", n_words, hi, "max")
        noise = noise_statistics(text)
        for stat, threshold, bound in (("letter_ratio", c.min_letter_ratio, "min"),
                                       ("word_token_ratio", c.min_word_token_ratio, "min"),
                                       ("bad_char_ratio", c.max_bad_char_ratio, "max"),
                                       ("mean_token_chars", None if no_space else c.max_mean_token_chars, "max")):
            value = noise[stat]
            if threshold is not None and (value < threshold if bound == "min" else value > threshold):
                return _failed(stat, value, threshold, bound)
        bp = boilerplate_word_ratio(text)
        if bp > c.max_boilerplate_word_ratio:
            return _failed("boilerplate_word_ratio", bp, c.max_boilerplate_word_ratio, "max")
        markup = sum(len(m) for m in _TAG.findall(text)) / len(text)
        if markup > c.max_markup_char_ratio:
            return _failed("markup_char_ratio", markup, c.max_markup_char_ratio, "max")
        if c.lorem_ipsum and "lorem ipsum" in text.lower():
            return _failed("lorem_ipsum", 1, 0, "max")
        rep_cfg = c.repetition_no_space if no_space else c.repetition
        if rep_cfg.enabled:
            verdict = self._repetition[no_space].filter(Document(text=text, id=""))
            if verdict is not True:
                name = verdict[1]
                value, threshold = repetition_statistic(name, text, words, rep_cfg)
                return _failed(f"rep_{name}", value, threshold, "max")
        return None, {}
