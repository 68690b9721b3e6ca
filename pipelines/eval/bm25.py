"""The BM25 reference run (bm25s) with a tokenisation that works for every language.

``unicode`` terms: NFKC + casefold, Unicode word characters (``\\w+``); runs of scripts written
without spaces (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) become overlapping character
bigrams (a single character stays a unigram), so a Chinese or Thai query matches its documents
without a word segmenter. ``xlmr`` terms: the XLM-R SentencePiece pieces (the tokenizer every mGTE
model uses), the other multilingual-safe choice.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np

from foundation.progress import progress
from pipelines.eval.retrieval import Hits, select_top

_NO_SPACE = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff\u31f0-\u31ff"  # Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\U00020000-\U0002fa1f"
)
_TOKEN = re.compile(rf"[{_NO_SPACE}]+|(?:(?![{_NO_SPACE}])\w)+")
_NO_SPACE_RUN = re.compile(rf"[{_NO_SPACE}]+")


def unicode_terms(text: str) -> list[str]:
    """Words, and character bigrams inside runs of no-space scripts."""
    terms: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).casefold()):
        piece = match.group()
        if _NO_SPACE_RUN.fullmatch(piece):
            terms += [piece] if len(piece) == 1 else [piece[i:i + 2] for i in range(len(piece) - 1)]
        else:
            terms.append(piece)
    return terms


class Terms:
    """Text -> list of terms, by name (``unicode`` or ``xlmr``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._tokenizer = None
        if kind == "xlmr":
            from model.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer()
        elif kind != "unicode":
            raise ValueError(f"bm25 tokenizer {kind!r}: expected 'unicode' or 'xlmr'")

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        if self._tokenizer is None:
            return [unicode_terms(t) for t in texts]
        ids = self._tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [[str(i) for i in row] for row in ids]


class BM25Index:
    """bm25s (Lucene scoring) over the corpus; a query's candidates are the documents it matches."""

    def __init__(self, doc_texts: Sequence[str], *, k1: float, b: float, tokenizer: str = "unicode"):
        import bm25s

        self.terms = Terms(tokenizer)
        corpus_terms = self.terms(doc_texts)
        self.n_docs = len(corpus_terms)
        self.retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        if self.n_docs:
            self.retriever.index(corpus_terms, show_progress=False)

    def search(self, query_texts: Sequence[str], k: int, order_keys: np.ndarray) -> list[Hits]:
        out = []
        vocab = getattr(self.retriever, "vocab_dict", {}) if self.n_docs else {}
        for terms in progress(self.terms(query_texts), "bm25 search", unit="queries"):
            known = [t for t in terms if t in vocab and t != ""]
            if not known:
                out.append(Hits(np.zeros(0, np.int64), np.zeros(0)))
                continue
            scores = np.asarray(self.retriever.get_scores(known), dtype=np.float64)
            cand = np.flatnonzero(scores > 0)
            out.append(select_top(cand, scores[cand], k, order_keys))
        return out
