"""The mining rule for one (query, positive): a plain function over a ranked candidate list.

1. The query's ranking loses its own positives (the candidates with a positive's id; for a
   positive without id, those with its normalised-text hash); the rest are ranked 1, 2, ... in
   score order (ties by candidate id).
2. A candidate may be a negative when it is not a copy of a positive (same normalised-text hash
   under another id: it keeps its rank but is never chosen), its rank is in ``rank_range`` [lo, hi], its score is below
   ``max_score_ratio`` x the positive's score (when set) and below the positive's score minus
   ``margin`` (when set).
3. ``select: top`` takes the best-ranked ``num_negatives`` of those; ``random`` a sample seeded by
   ``seed`` and the (query, positive), whatever chunk or engine it runs in; negatives are returned
   in rank order. Fewer than ``num_negatives`` passing -> ``too_few_negatives`` (never padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

TOO_FEW = "too_few_negatives"


@dataclass(frozen=True)
class Rule:
    num_negatives: int
    lo: int
    hi: int
    max_score_ratio: float | None
    margin: float | None
    select: str
    seed: int

    @classmethod
    def of(cls, cfg) -> "Rule":
        return cls(cfg.num_negatives, cfg.rank_range[0], cfg.rank_range[1], cfg.max_score_ratio, cfg.margin,
                   cfg.select, cfg.seed)


def ranked_without(rows: np.ndarray, scores: np.ndarray, excluded: np.ndarray, hi: int):
    """(rows, scores, 1-based ranks) of the ranking with ``excluded`` rows removed, up to rank ``hi``."""
    keep = ~np.isin(rows, excluded)
    rows, scores = rows[keep][:hi], scores[keep][:hi]
    return rows, scores, np.arange(1, len(rows) + 1, dtype=np.int32)


def sample_seed(seed: int, query_id: str, positive_key: str) -> list[int]:
    return [seed, xxhash.xxh64_intdigest(f"{query_id}\x00{positive_key}".encode())]


def choose(rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, positive_score: float, rule: Rule,
           seed: list[int], copies: np.ndarray | None = None) -> tuple[np.ndarray | None, dict]:
    """Indices (into ``rows``, ascending rank) of the negatives, or None; and the counts behind it.
    ``copies``: a mask of the candidates that are copies of a positive (never chosen)."""
    in_window = (ranks >= rule.lo) & (ranks <= rule.hi)
    facts = {"ranked": int(len(rows)), "in_window": int(in_window.sum())}
    if copies is not None and copies.any():
        in_window &= ~copies
        facts["not_copy"] = int(in_window.sum())
    passing = in_window.copy()
    if rule.max_score_ratio is not None:
        below = scores < rule.max_score_ratio * positive_score
        facts["below_ratio"] = int((in_window & below).sum())
        passing &= below
    if rule.margin is not None:
        below = scores < positive_score - rule.margin
        facts["below_margin"] = int((in_window & below).sum())
        passing &= below
    candidates = np.flatnonzero(passing)
    facts["passing"] = int(candidates.size)
    if candidates.size < rule.num_negatives:
        return None, facts
    if rule.select == "top":
        return candidates[:rule.num_negatives], facts
    picked = np.random.default_rng(seed).choice(candidates, size=rule.num_negatives, replace=False)
    return np.sort(picked), facts
