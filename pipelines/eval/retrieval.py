"""First-stage retrieval and fusion over a fixed corpus: dense (FAISS), sparse (inverted index),
hybrid, and reranking of a candidate list.

A result is one :class:`Hits` per query: corpus row indices and scores, best first in trec_eval
order (score descending, then document id descending), so the ranks written to ``run.trec`` are
the ranks trec_eval computes from the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pipelines.embedding import SparseVectors
from pipelines.eval.metrics import as_trec_score


@dataclass
class Hits:
    docs: np.ndarray  # (n,) int64 corpus rows, best first
    scores: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return int(self.docs.size)

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.docs.tolist(), self.scores.tolist()))


def doc_order_keys(doc_ids: Sequence[str]) -> np.ndarray:
    """Per corpus row, its position in doc-id *descending* order (smaller = earlier on ties)."""
    ids = np.asarray(doc_ids, dtype=str)
    keys = np.empty(ids.size, dtype=np.int64)
    keys[np.argsort(ids, kind="stable")[::-1]] = np.arange(ids.size)
    return keys


def select_top(docs: np.ndarray, scores: np.ndarray, k: int, order_keys: np.ndarray) -> Hits:
    """The ``k`` best of the candidates in trec_eval order (ties at the cut decided by doc id).

    Scores are rounded to float32 first: trec_eval compares C floats, so a run whose scores are
    float32 values is ranked by trec_eval exactly as it is written.
    """
    docs = np.asarray(docs, dtype=np.int64)
    scores = as_trec_score(scores)
    if docs.size > k:
        kth = np.partition(scores, docs.size - k)[docs.size - k]  # k-th largest score
        keep = scores >= kth
        docs, scores = docs[keep], scores[keep]
    order = np.lexsort((order_keys[docs], -scores))[:k]
    return Hits(docs[order], scores[order])


def fill_with_zeros(hits: Hits, k: int, order_keys: np.ndarray) -> Hits:
    """Complete a lexical run to ``k`` documents with the ones it scores 0 (the true score of a
    document sharing no term with the query), in trec_eval tie order. Every query then has a full
    run, so every judged query is evaluated, as for dense retrieval."""
    need = min(k, order_keys.size) - len(hits)
    if need <= 0:
        return hits
    ranked = np.argsort(order_keys)[: need + len(hits)]  # corpus rows in doc-id descending order
    extra = ranked[~np.isin(ranked, hits.docs)][:need]
    return Hits(np.concatenate([hits.docs, extra]), np.concatenate([hits.scores, np.zeros(extra.size)]))


# -------------------------------------------------------------------------------------------------
# Dense.


def truncate_dim(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Matryoshka: keep the first ``dim`` dimensions and L2-normalise again."""
    if dim is None or dim >= vectors.shape[1]:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    cut = vectors[:, :dim].astype(np.float32)
    return np.ascontiguousarray(cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12))


def dense_search(doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int, order_keys: np.ndarray, *,
                 index_factory: str = "Flat", nprobe: int = 32, batch: int = 1024) -> list[Hits]:
    """Inner-product search with a FAISS index (``Flat`` = exact) over the whole corpus; an IVF index
    visits ``nprobe`` inverted lists per query."""
    import faiss

    n_docs, dim = doc_vectors.shape
    if n_docs == 0:
        return [Hits(np.zeros(0, np.int64), np.zeros(0)) for _ in range(len(query_vectors))]
    index = faiss.index_factory(dim, index_factory, faiss.METRIC_INNER_PRODUCT)
    docs = np.ascontiguousarray(doc_vectors, dtype=np.float32)
    if not index.is_trained:
        index.train(docs)
    index.add(docs)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(nprobe, ivf.nlist)
    k_search = min(k, n_docs)
    out: list[Hits] = []
    for start in range(0, len(query_vectors), batch):
        q = np.ascontiguousarray(query_vectors[start:start + batch], dtype=np.float32)
        scores, rows = index.search(q, k_search)  # (b, k) each
        for s, r in zip(scores, rows):
            valid = r >= 0  # approximate indexes may return fewer than k
            out.append(select_top(r[valid], s[valid].astype(np.float64), k, order_keys))
    return out


# -------------------------------------------------------------------------------------------------
# Sparse: an inverted index over term weights (postings per term; never a vocab-sized matrix).


class InvertedIndex:
    """term -> (documents, weights); s(q, d) = sum over shared terms of w_q * w_d."""

    def __init__(self, docs: SparseVectors):
        self.n_docs = len(docs)
        rows = np.repeat(np.arange(self.n_docs, dtype=np.int64), np.diff(docs.indptr))
        order = np.argsort(docs.terms, kind="stable")
        terms = docs.terms[order]
        self.post_docs = rows[order]  # (nnz,)
        self.post_weights = docs.weights[order].astype(np.float32)  # (nnz,)
        self.terms, starts = np.unique(terms, return_index=True)  # (n_terms,)
        self.starts = np.append(starts, terms.size).astype(np.int64)  # postings of term i: starts[i]:starts[i+1]

    def scores(self, terms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate documents (sharing a term with the query) and their scores."""
        pos = np.searchsorted(self.terms, terms)
        found = (pos < self.terms.size) & (self.terms[np.minimum(pos, self.terms.size - 1)] == terms) \
            if self.terms.size else np.zeros(terms.size, dtype=bool)
        pos, q_weights = pos[found], weights[found].astype(np.float64)
        if pos.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        lo, hi = self.starts[pos], self.starts[pos + 1]
        lengths = hi - lo
        flat = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
        docs = self.post_docs[flat]
        contrib = self.post_weights[flat].astype(np.float64) * np.repeat(q_weights, lengths)
        cand, inverse = np.unique(docs, return_inverse=True)
        return cand, np.bincount(inverse, weights=contrib, minlength=cand.size)

    def search(self, queries: SparseVectors, k: int, order_keys: np.ndarray) -> list[Hits]:
        out = []
        for i in range(len(queries)):
            cand, s = self.scores(*queries.row(i))
            keep = s > 0
            out.append(select_top(cand[keep], s[keep], k, order_keys))
        return out


# -------------------------------------------------------------------------------------------------
# Fusion and reranking.


def hybrid(dense: Sequence[Hits], sparse: Sequence[Hits], weight: float, k: int, order_keys: np.ndarray) -> list[Hits]:
    """score = dense + weight * sparse over the union of both candidate lists (missing side = 0)."""
    out = []
    for d, s in zip(dense, sparse):
        docs = np.union1d(d.docs, s.docs)
        total = np.zeros(docs.size, dtype=np.float64)
        total[np.searchsorted(docs, d.docs)] += d.scores
        total[np.searchsorted(docs, s.docs)] += weight * s.scores
        out.append(select_top(docs, total, k, order_keys))
    return out


def rerank(first_stage: Sequence[Hits], k: int, score_pairs: Callable[[list[int], list[int]], np.ndarray],
           order_keys: np.ndarray, first_stage_weight: float = 0.0) -> list[Hits]:
    """Rescore the ``k`` best candidates of each query with ``score_pairs(query_rows, doc_rows)``.

    The rest of the first-stage list follows in its first-stage order, scored strictly below every
    reranked document (min - 1, min - 2, ...), so the run keeps its depth (recall@100 of a top-20
    rerank is the first stage's recall@100). ``first_stage_weight`` > 0: see :func:`fuse_scores`.
    """
    return rerank_scored(first_stage, k, score_top(first_stage, k, score_pairs), order_keys, first_stage_weight)


def score_top(first_stage: Sequence[Hits], k: int,
              score_pairs: Callable[[list[int], list[int]], np.ndarray]) -> list[np.ndarray]:
    """The cross-encoder's score of each query's ``k`` best first-stage documents, in their order."""
    q_rows, d_rows, bounds = [], [], [0]
    for qi, hits in enumerate(first_stage):
        top = hits.docs[:k]
        q_rows += [qi] * top.size
        d_rows += top.tolist()
        bounds.append(bounds[-1] + top.size)
    scores = np.asarray(score_pairs(q_rows, d_rows), dtype=np.float64) if d_rows else np.zeros(0)
    return [scores[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def fuse_scores(reranker: np.ndarray, first: np.ndarray, first_stage_weight: float) -> np.ndarray:
    """``(1 - a) z(reranker) + a z(first)``: each side standardised over the query's reranked
    documents (mean 0, standard deviation 1; a constant side counts 0), ``a = first_stage_weight``.
    ``a = 0`` is the reranker's score as it is."""
    if first_stage_weight <= 0:
        return np.asarray(reranker, dtype=np.float64)

    def z(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        sd = x.std()
        return (x - x.mean()) / sd if x.size and sd > 0 else np.zeros_like(x)

    return (1.0 - first_stage_weight) * z(reranker) + first_stage_weight * z(first)


def rerank_scored(first_stage: Sequence[Hits], k: int, scored: Sequence[np.ndarray], order_keys: np.ndarray,
                  first_stage_weight: float = 0.0) -> list[Hits]:
    """:func:`rerank` from :func:`score_top`'s scores (one scoring, several fusion weights)."""
    out = []
    for hits, rr in zip(first_stage, scored):
        top = hits.docs[:k]
        head = select_top(top, fuse_scores(rr, hits.scores[:k], first_stage_weight), k, order_keys)
        tail = hits.docs[k:]
        floor = float(head.scores.min()) if len(head) else 0.0
        tail_scores = as_trec_score(floor - np.arange(1, tail.size + 1, dtype=np.float64))
        out.append(Hits(np.concatenate([head.docs, tail]), np.concatenate([head.scores, tail_scores])))
    return out
