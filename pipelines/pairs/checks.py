"""The per-pair filters of ``mgte pairs``: content, length (characters, then tokens) and language.

One :class:`PairChecker` serves the stage's read tasks and :func:`pipelines.pairs.read.read_raw_pairs`;
the first failing check names the drop reason.
"""

from __future__ import annotations

import functools

from pipelines.pairs.config import Config
from pipelines.pairs.records import dropped_row, lang_label, norm_key, pair_hash, parse_lang, text_hash


@functools.lru_cache(maxsize=4)
def load_fast_tokenizer(name_or_path: str):
    """A ``tokenizers.Tokenizer`` (:func:`model.tokenizer.backend_tokenizer`), else the tokenizer itself."""
    from model.tokenizer import backend_tokenizer, load_tokenizer

    return backend_tokenizer(name_or_path) or load_tokenizer(name_or_path)


class PairChecker:
    """The per-pair filters, first failure wins: the reason names it. Loads its models lazily."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._tokenizer = None
        self._lid = None

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.cfg.tokenizer:
            self._tokenizer = load_fast_tokenizer(self.cfg.tokenizer)
        return self._tokenizer

    @property
    def lid(self):
        if self._lid is None and self.cfg.lang.identify:
            from pipelines.corpus.lid import load_identifier

            self._lid = load_identifier(self.cfg.lang.backend, self.cfg.lang.model_path)
        return self._lid

    def identify(self, text: str) -> tuple[str, float] | None:
        lang = self.cfg.lang
        if self.lid is None or len(text) < lang.min_chars:
            return None
        label, score = self.lid.identify(text[: lang.max_chars])
        return label, round(float(score), 4)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def __call__(self, pair: dict) -> tuple[dict | None, dict | None]:
        """-> (kept row, None) or (None, dropped row)."""
        limits = self.cfg.limits
        query, positive = pair["query"], pair["positive"]
        scores: dict = {}

        def drop(reason: str):
            return None, dropped_row(pair, reason, scores)

        if not query:
            return drop("empty_query")
        if not positive:
            return drop("empty_positive")
        if norm_key(query).casefold() == norm_key(positive).casefold():
            return drop("identical_query_positive")
        scores.update(query_chars=len(query), positive_chars=len(positive))
        if len(query) > limits.max_chars:
            return drop("over_long_query")
        if len(positive) > limits.max_chars:
            return drop("over_long_positive")
        q_tokens = p_tokens = None
        if self.tokenizer is not None:
            q_tokens, p_tokens = self.count_tokens(query), self.count_tokens(positive)
            scores.update(query_tokens=q_tokens, positive_tokens=p_tokens)
            if q_tokens > limits.drop_query_tokens:
                return drop("over_long_query")
            if p_tokens > limits.drop_document_tokens:
                return drop("over_long_positive")

        langs = self.languages(pair, scores)
        if isinstance(langs, str):
            return drop(langs)
        return {
            "pair_id": pair["pair_id"], "query": query, "positive": positive, "source": pair["source"],
            "lang": lang_label(*langs),
            "query_hash": text_hash(query), "positive_hash": text_hash(positive),
            "pair_hash": pair_hash(query, positive),
            "query_tokens": q_tokens, "positive_tokens": p_tokens,
            "query_truncated": q_tokens is not None and q_tokens > limits.query_max_tokens,
            "positive_truncated": p_tokens is not None and p_tokens > limits.document_max_tokens,
            "path": pair["path"], "line": pair["line"],
        }, None

    def languages(self, pair: dict, scores: dict) -> tuple[str | None, str | None] | str:
        """(query lang, positive lang) from the declared code and the identifier, or a drop reason.

        Identifier results go into ``scores`` (they explain a drop)."""
        lang_cfg = self.cfg.lang
        declared = parse_lang(pair["lang"])
        langs = []
        for side, expected in (("query", declared[0]), ("positive", declared[1])):
            found = self.identify(pair[side])
            if found is not None:
                scores[f"{side}_lid"] = list(found)
            if expected is not None:
                if expected not in lang_cfg.languages:
                    return "lang_not_in_set"
                if found is not None and found[1] >= lang_cfg.min_score and found[0] != expected:
                    return "lang_mismatch"
                langs.append(expected)
            elif found is not None and found[1] >= lang_cfg.min_score:
                if found[0] not in lang_cfg.languages:
                    return "lang_not_in_set"
                langs.append(found[0])
            else:
                langs.append(None)
        if declared == (None, None):  # one identified side stands for both
            return langs[0] or langs[1], langs[1] or langs[0]
        return langs[0], langs[1]
