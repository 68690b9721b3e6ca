"""Quality filters: datatrove's Gopher, C4 and FineWeb blocks, made safe for every script.

datatrove's filters take a ``language`` whose word tokenizer they load; for many of the 75
languages those tokenizers need packages or downloads (stanza, pythainlp, sudachi, ...). We hand
them :class:`ScriptAwareTokenizer` instead: Unicode words for spaced scripts and one token per
grapheme cluster for scripts without spaces, with sentence splitting on the terminal punctuation
of every script. ``QualityFilters.score(text, lang)`` returns ``None`` (keep) or the failing
filter's reason plus the scores behind it; the text itself is never changed here.
"""

from __future__ import annotations

import functools
from collections import Counter

import regex
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.utils.word_tokenizers import WordTokenizer

from pipelines.corpus.config import GopherQuality, GopherRepetition, QualityConfig
from pipelines.corpus.curated import CuratedFilters
from pipelines.corpus.quality_stats import failed_statistic

_NO_SPACE_CHAR = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]"
# word characters include marks and format characters (ZWJ/ZWNJ inside Indic and Persian words)
_TOKEN = regex.compile(rf"{_NO_SPACE_CHAR}[\p{{M}}\p{{Cf}}]*|[\p{{L}}\p{{N}}\p{{M}}\p{{Cf}}]+(?:['’\-][\p{{L}}\p{{N}}\p{{M}}\p{{Cf}}]+)*|[^\s\p{{L}}\p{{N}}\p{{M}}\p{{Cf}}]")
_SENT_END = regex.compile(r"(?<=[.!?。！？؟।॥။។።…])\s+|(?<=[。！？])|\n+")


class ScriptAwareTokenizer(WordTokenizer):
    """A datatrove WordTokenizer that needs no language model and works for any script."""

    def __init__(self):
        super().__init__("multilingual")

    def word_tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENT_END.split(text) if s and s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for m in _SENT_END.finditer(text):
            if m.start() > start:
                spans.append((start, m.start()))
            start = m.end()
        if start < len(text):
            spans.append((start, len(text)))
        return spans or [(0, len(text))]

    def __hash__(self) -> int:  # datatrove caches split results keyed by the tokenizer
        return hash(ScriptAwareTokenizer)

    def __eq__(self, other) -> bool:
        return isinstance(other, ScriptAwareTokenizer)


TOKENIZER = ScriptAwareTokenizer()


@functools.lru_cache(maxsize=128)
def stop_words(lang: str) -> frozenset[str]:
    """spaCy's stop-word list of ``lang`` (ships with spaCy, offline), empty if it has none.

    Only the ``stop_words`` module is imported: the language package itself compiles tokenizer
    exceptions for seconds (French: ~9 s).
    """
    import importlib

    try:
        module = importlib.import_module(f"spacy.lang.{'nb' if lang == 'no' else lang}.stop_words")
    except ImportError:
        return frozenset()
    return frozenset(w.lower() for w in getattr(module, "STOP_WORDS", ()))


def _gopher_quality(cfg: GopherQuality, stops: frozenset[str]) -> GopherQualityFilter:
    use_stops = cfg.min_stop_words if stops else None
    return GopherQualityFilter(
        min_doc_words=cfg.min_doc_words, max_doc_words=cfg.max_doc_words,
        min_avg_word_length=cfg.min_avg_word_length, max_avg_word_length=cfg.max_avg_word_length,
        max_symbol_word_ratio=cfg.max_symbol_word_ratio, max_bullet_lines_ratio=cfg.max_bullet_lines_ratio,
        max_ellipsis_lines_ratio=cfg.max_ellipsis_lines_ratio,
        max_non_alpha_words_ratio=cfg.max_non_alpha_words_ratio, min_stop_words=use_stops,
        stop_words=sorted(stops) if stops else None, language=TOKENIZER)


def top_ngram_reason(words: list[str], text_len: int, top_n_grams, joiner: str) -> str | None:
    """Gopher's "top n-gram character fraction", over n-grams that occur at least twice."""
    for n, frac in top_n_grams:
        if len(words) < n + 1:
            continue
        counts = Counter(joiner.join(words[i:i + n]) for i in range(len(words) - n + 1))
        gram, count = counts.most_common(1)[0]
        if count >= 2 and len(gram) * count / text_len > frac:
            return f"gopher_rep_top_{n}_gram"
    return None


class QualityFilters:
    """The configured datatrove filters, built once per language group."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self._repetition: dict[str, GopherRepetitionFilter | None] = {}
        c = cfg.c4
        self.c4 = C4QualityFilter(
            split_paragraph=c.split_paragraph, remove_citations=c.remove_citations,
            filter_no_terminal_punct=c.filter_no_terminal_punct, min_num_sentences=c.min_num_sentences,
            min_words_per_line=c.min_words_per_line, max_word_length=c.max_word_length,
            filter_lorem_ipsum=c.filter_lorem_ipsum, filter_javascript=c.filter_javascript,
            filter_curly_bracket=c.filter_curly_bracket, filter_policy=c.filter_policy,
            language=TOKENIZER) if c.enabled else None
        self._gopher: dict[str, GopherQualityFilter | None] = {}
        self._fineweb: dict[str, FineWebQualityFilter | None] = {}
        self.curated = CuratedFilters(cfg.curated, TOKENIZER)

    @staticmethod
    def _build_repetition(r: GopherRepetition) -> GopherRepetitionFilter | None:
        if not r.enabled:
            return None
        return GopherRepetitionFilter(
            dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac, dup_line_char_frac=r.dup_line_char_frac,
            dup_para_char_frac=r.dup_para_char_frac, top_n_grams=(), dup_n_grams=r.dup_n_grams, language=TOKENIZER)

    def stop_words_for(self, lang: str) -> frozenset[str]:
        """The thresholds table's stop words of ``lang``, else spaCy's (none for scripts without
        spaces, unless the table gives them)."""
        table = self.cfg.stop_words_for(lang)
        if table is not None:
            return frozenset(w.lower() for w in table)
        return frozenset() if lang in self.cfg.no_space_langs else stop_words(lang)

    def gopher_for(self, lang: str) -> GopherQualityFilter | None:
        """Gopher quality with the settings of ``lang`` (``quality.thresholds``), built once per language."""
        if lang not in self._gopher:
            g = self.cfg.gopher_quality_for(lang)
            self._gopher[lang] = _gopher_quality(g, self.stop_words_for(lang)) if g.enabled else None
        return self._gopher[lang]

    def repetition_for(self, lang: str) -> GopherRepetitionFilter | None:
        if lang not in self._repetition:
            self._repetition[lang] = self._build_repetition(self.cfg.repetition_for(lang))
        return self._repetition[lang]

    def fineweb_for(self, lang: str) -> FineWebQualityFilter | None:
        if lang not in self._fineweb:
            f = self.cfg.fineweb_for(lang)
            self._fineweb[lang] = FineWebQualityFilter(
                line_punct_thr=f.line_punct_thr, line_punct_exclude_zero=f.line_punct_exclude_zero,
                short_line_thr=f.short_line_thr, short_line_length=f.short_line_length,
                char_duplicates_ratio=f.char_duplicates_ratio, new_line_ratio=f.new_line_ratio,
                language=TOKENIZER) if f.enabled else None
        return self._fineweb[lang]

    def score(self, text: str, lang: str, doc_id: str = "", profile: str = "web") -> tuple[str | None, dict]:
        """(None, scores) to keep; (reason, scores) to drop. ``profile``: ``web`` (datatrove's
        reasons, prefixed) or ``curated`` (``curated_<statistic>``); a drop's scores hold the
        statistic that failed and its threshold (``statistic``, ``value``, ``threshold``, ``bound``)."""
        no_space = lang in self.cfg.no_space_langs
        words = TOKENIZER.word_tokenize(text)
        scores = {"n_words": len(words), "n_lines": text.count("\n") + 1, "profile": profile}
        if profile == "curated":
            reason, failed = self.curated.verdict(text, words, no_space)
            return reason, {**scores, **failed}
        reason = self._web_reason(text, words, lang, doc_id, no_space)
        if reason is None:
            return None, scores
        failed = failed_statistic(reason, text, words, lang, self.cfg, self.cfg.gopher_quality_for(lang),
                                  self.cfg.repetition_for(lang),
                                  stops=self.stop_words_for(lang) if reason == "gopher_enough_stop_words" else frozenset())
        return reason, {**scores, **failed}

    def _web_reason(self, text: str, words: list[str], lang: str, doc_id: str, no_space: bool) -> str | None:
        rep_cfg = self.cfg.repetition_for(lang)
        steps = (("gopher_rep", self.repetition_for(lang)), ("top_ngrams", rep_cfg.enabled),
                 ("gopher", self.gopher_for(lang)), ("c4", self.c4), ("fineweb", self.fineweb_for(lang)))
        for prefix, flt in steps:
            if not flt:
                continue
            if prefix == "top_ngrams":
                reason = top_ngram_reason(words, len(text), rep_cfg.top_n_grams, "" if no_space else " ")
                if reason:
                    return reason
                continue
            doc = Document(text=text, id=doc_id, metadata={"language": lang})
            verdict = flt.filter(doc)
            if verdict is True or (isinstance(verdict, tuple) and verdict[0]):
                continue
            reason = verdict[1] if isinstance(verdict, tuple) and len(verdict) > 1 else "failed"
            reason = str(reason).replace(" ", "_").replace("<", "lt")
            if not reason.startswith(prefix):
                reason = f"{prefix}_{reason}"
            return reason
        return None
