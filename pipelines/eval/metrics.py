"""Retrieval metrics with trec_eval semantics, implemented once (numpy, vectorised over the run).

What trec_eval (and so pytrec_eval) does, and this module mirrors exactly (the tests compare with
pytrec_eval on random and real runs, ties and empty judgements included):

- The rank column of a TREC run is ignored: each query's documents are sorted by score descending,
  ties broken by document id descending (``strcmp``, i.e. code-point order). trec_eval keeps scores
  as C ``float``: two doubles that round to the same float32 are a tie.
- Only queries present in both the run and the qrels are evaluated; the overall value of a measure
  is the plain mean over those queries. A query judged only with grade 0 is evaluated (all zeros).
- A document is relevant when its grade >= ``relevance_level`` (1). nDCG uses the grade as gain
  (negative grades count 0) with discount ``log2(rank + 1)``; the ideal ranking is built from all
  judged documents of the query, retrieved or not.
- recall, MAP and nDCG of a query without relevant documents are 0.
- ``mrr@k`` is trec_eval's ``recip_rank`` computed on the run cut to its k best documents
  (trec_eval order); trec_eval itself has no cut-off for it.

Measure names: ``ndcg@k``, ``ndcg``, ``recall@k``, ``precision@k``, ``mrr@k``, ``mrr``, ``map``,
``map@k``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

MEASURES = ("ndcg@10", "recall@10", "recall@20", "recall@100", "mrr@10", "map")
_NAME = re.compile(r"^(ndcg|recall|precision|mrr|map)(?:@(\d+))?$")


@dataclass(frozen=True)
class Measure:
    name: str
    kind: str
    k: int | None  # None = the whole run

    @property
    def trec_eval(self) -> tuple[str, str] | None:
        """(pytrec_eval measure to request, key of its result), when trec_eval has it."""
        table = {("ndcg", True): "ndcg_cut", ("ndcg", False): "ndcg", ("recall", True): "recall",
                 ("precision", True): "P", ("map", True): "map_cut", ("map", False): "map",
                 ("mrr", False): "recip_rank"}
        base = table.get((self.kind, self.k is not None))
        if base is None:
            return None
        return (f"{base}.{self.k}", f"{base}_{self.k}") if self.k is not None else (base, base)


def parse_measure(name: str) -> Measure:
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"unknown measure {name!r} (known: ndcg@k, ndcg, recall@k, precision@k, mrr@k, mrr, "
                         f"map, map@k)")
    kind, k = match.group(1), match.group(2)
    if kind in ("recall", "precision") and k is None:
        raise ValueError(f"measure {name!r} needs a cut-off, e.g. {kind}@100")
    if k is not None and int(k) < 1:
        raise ValueError(f"measure {name!r}: cut-off must be >= 1")
    return Measure(name, kind, int(k) if k is not None else None)


def as_trec_score(scores) -> np.ndarray:
    """Scores as trec_eval compares them (C float), returned as float64."""
    return np.asarray(scores, dtype=np.float64).astype(np.float32).astype(np.float64)


def _ideal_dcg(grades: Iterable[int], k: int | None) -> float:
    gains = np.sort(np.maximum(np.fromiter(grades, dtype=np.float64), 0.0))[::-1]
    gains = gains[gains > 0]
    if k is not None:
        gains = gains[:k]
    return float(np.sum(gains / np.log2(np.arange(2, gains.size + 2))))


def evaluate_arrays(query_ids: Sequence[str], doc_ids: Sequence[str], scores: Sequence[float],
                    qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str] = MEASURES, *,
                    empty_queries: Iterable[str] = (), relevance_level: int = 1) -> dict[str, dict[str, float]]:
    """Per-query metrics of a flat run (one row per retrieved document).

    ``empty_queries`` are run queries without any document (possible in a dict run, never in a
    TREC file); like pytrec_eval, they are evaluated when judged.
    Returns ``{query_id: {measure: value, "num_rel": n, "num_ret": n}}`` for the evaluated queries.
    """
    parsed = [parse_measure(m) for m in measures]
    q_all = np.asarray(query_ids, dtype=str)
    d_all = np.asarray(doc_ids, dtype=str)
    s_all = np.asarray(scores, dtype=np.float64)
    if not (q_all.shape == d_all.shape == s_all.shape):
        raise ValueError("query_ids, doc_ids and scores must have the same length")
    if np.isnan(s_all).any():
        raise ValueError("run has NaN scores")
    run_queries, q_inverse = np.unique(q_all, return_inverse=True)
    names = sorted({q for q in run_queries.tolist() if q in qrels} | {q for q in empty_queries if q in qrels})
    if not names:
        return {}
    n_q = len(names)
    index = {q: i for i, q in enumerate(names)}
    code_of_run_query = np.array([index.get(q, -1) for q in run_queries.tolist()], dtype=np.int64)
    q_codes = code_of_run_query[q_inverse]
    judged = q_codes >= 0
    q_codes, d_arr, s_arr = q_codes[judged], d_all[judged], s_all[judged]

    # documents of the run and of the judgements share one code space: (query, doc) keys match by value
    j_q = np.repeat(np.arange(n_q), [len(qrels[q]) for q in names])
    j_d = np.array([d for q in names for d in qrels[q]], dtype=str)
    j_g = np.array([g for q in names for g in qrels[q].values()], dtype=np.float64)
    docs, d_codes = np.unique(np.concatenate([d_arr, j_d]), return_inverse=True)  # sorted = strcmp order
    run_d, judged_d = d_codes[: d_arr.size], d_codes[d_arr.size:]

    order = np.lexsort((-run_d, -as_trec_score(s_arr), q_codes))  # trec_eval order
    q_codes, run_d = q_codes[order], run_d[order]
    n = q_codes.size
    counts = np.bincount(q_codes, minlength=n_q)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(n) - np.repeat(starts, counts)  # 0-based rank within the query

    judged_keys = j_q * docs.size + judged_d
    key_order = np.argsort(judged_keys)
    sorted_keys = judged_keys[key_order]
    run_keys = q_codes * docs.size + run_d
    pos = np.minimum(np.searchsorted(sorted_keys, run_keys), max(sorted_keys.size - 1, 0))
    hit = sorted_keys[pos] == run_keys if sorted_keys.size else np.zeros(n, dtype=bool)
    grades = np.where(hit, j_g[key_order][pos] if sorted_keys.size else 0.0, 0.0)
    rel = grades >= relevance_level
    gain = np.maximum(grades, 0.0)
    discount = 1.0 / np.log2(rank + 2.0)
    num_rel = np.array([sum(g >= relevance_level for g in qrels[q].values()) for q in names], dtype=np.float64)
    has_rel = num_rel > 0
    safe_rel = np.where(has_rel, num_rel, 1.0)

    def per_query_sum(weights: np.ndarray) -> np.ndarray:
        return np.bincount(q_codes, weights=weights, minlength=n_q)

    values: dict[str, np.ndarray] = {}
    for m in parsed:
        within = rank < m.k if m.k is not None else np.ones(n, dtype=bool)
        if m.kind == "ndcg":
            dcg = per_query_sum(gain * discount * within)
            idcg = np.array([_ideal_dcg(qrels[q].values(), m.k) for q in names])
            values[m.name] = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)
        elif m.kind == "recall":
            values[m.name] = np.where(has_rel, per_query_sum(rel & within) / safe_rel, 0.0)
        elif m.kind == "precision":
            values[m.name] = per_query_sum(rel & within) / m.k
        elif m.kind == "map":
            hits = rel & within
            totals = per_query_sum(hits)
            cum_in_query = np.cumsum(hits) - np.repeat(np.cumsum(totals) - totals, counts)
            precision_at_hit = np.where(hits, cum_in_query / (rank + 1.0), 0.0)
            values[m.name] = np.where(has_rel, per_query_sum(precision_at_hit) / safe_rel, 0.0)
        elif m.kind == "mrr":
            first = np.full(n_q, np.inf)
            hit = rel & within
            np.minimum.at(first, q_codes[hit], rank[hit].astype(np.float64))
            values[m.name] = np.where(np.isfinite(first), 1.0 / (first + 1.0), 0.0)
    out = {}
    for i, q in enumerate(names):
        row = {m.name: float(values[m.name][i]) for m in parsed}
        row["num_rel"] = int(num_rel[i])
        row["num_ret"] = int(counts[i])
        out[q] = row
    return out


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
             measures: Sequence[str] = MEASURES, *, relevance_level: int = 1) -> dict[str, dict[str, float]]:
    """Per-query metrics of a run given as ``{query_id: {doc_id: score}}`` (pytrec_eval's input)."""
    q, d, s = [], [], []
    for qid, docs in run.items():
        for did, score in docs.items():
            q.append(qid)
            d.append(did)
            s.append(float(score))
    return evaluate_arrays(q, d, s, qrels, measures, empty_queries=[k for k, v in run.items() if not v],
                           relevance_level=relevance_level)


def mean(per_query: Mapping[str, Mapping[str, float]], measures: Sequence[str] = MEASURES,
         queries: Iterable[str] | None = None) -> dict[str, float]:
    """Mean of each measure over ``queries`` (default: every evaluated query); 0.0 when none."""
    keys = list(per_query) if queries is None else [q for q in queries if q in per_query]
    out = {m: (float(np.mean([per_query[q][m] for q in keys])) if keys else 0.0) for m in measures}
    out["n_queries"] = len(keys)
    return out


def read_trec_run(path: str) -> dict[str, dict[str, float]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``) into pytrec_eval's dict form."""
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 columns, got {len(parts)}")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run
