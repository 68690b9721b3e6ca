"""A fixed, small retrieval task that a model has to learn, for the learning tests of the TRM and
the reranker (tests/training/{trm,reranker}/test_learning.py).

Each query asks about one topic in one of a few phrasings; its positive describes the topic in
other words (it shares only the topic with the query); its mined negatives are "echo" documents
that repeat the query's own phrasing about other topics. Plain term matching and an untrained
model therefore rank an echo above the positive; a model that learned "the topic decides,
the phrasing does not" ranks the positive first, also for topics it never saw in training (the
held-out set: other topics, the same phrasings). Deterministic: no randomness at all.
"""

from __future__ import annotations

import numpy as np

TOPICS = ["rivers", "volcanoes", "bread", "chess", "bicycles", "orchids", "glaciers", "violins", "comets", "bees",
          "tea", "lighthouses", "maps", "owls", "salt", "kites", "tigers", "coffee", "bridges", "clocks", "deserts",
          "pianos", "tulips", "whales", "castles", "rockets", "cheese", "forests", "trains", "penguins", "islands",
          "candles", "dolphins", "mirrors", "gardens", "rainbows", "wolves", "lemons", "bells", "pirates", "dragons",
          "tomatoes", "caves", "parrots", "wheels", "spiders", "pyramids", "harbors"]
HELD_OUT = 12  # the last topics: never seen in training
QUERY_FORMS = ["what do people usually want to know about {t}?", "could you please tell me something about {t}",
               "where can i read a short text about {t}?", "i am looking for general information on {t}"]
DOC_FORMS = ["{T}. An overview of {t}, their origins and their place in everyday life.",
             "{T}: a description of {t}, with a few facts and some history.",
             "All about {t}, explained briefly for the curious reader."]


def query(i: int, t: str) -> str:
    return QUERY_FORMS[i % len(QUERY_FORMS)].format(t=t)


def positive(i: int, t: str) -> str:
    return DOC_FORMS[i % len(DOC_FORMS)].format(t=t, T=t.capitalize())


def echo(i: int, other: str) -> str:
    """Query i's own phrasing about another topic: the term-matching trap."""
    return query(i, other).capitalize() + " This question comes up often."


def split() -> tuple[list[str], list[str]]:
    return TOPICS[:-HELD_OUT], TOPICS[-HELD_OUT:]


def hard_negative_rows(n_neg: int = 3) -> list[dict]:
    """The training set as rows of the HARD_NEGATIVES table (what `mgte mine` writes)."""
    train, _ = split()
    rows = []
    for i, t in enumerate(train):
        others = [train[(i + k) % len(train)] for k in range(1, n_neg + 1)]
        rows.append({"query_id": f"q{i}", "query": query(i, t), "positive_id": f"d{i}", "positive": positive(i, t),
                     "positive_score": 0.8, "negative_ids": [f"e{i}-{o}" for o in others],
                     "negatives": [echo(i, o) for o in others], "negative_ranks": list(range(1, n_neg + 1)),
                     "negative_scores": [0.7] * n_neg, "source": "synthetic", "lang": "en", "miner": "test"})
    return rows


def held_out() -> tuple[list[str], list[str], np.ndarray]:
    """Held-out queries, their candidates (every held-out positive + two echoes per query) and the
    index of each query's positive among the candidates."""
    _, topics = split()
    base = len(TOPICS) - HELD_OUT
    queries = [query(base + i, t) for i, t in enumerate(topics)]
    docs = [positive(base + i, t) for i, t in enumerate(topics)]
    for i in range(len(topics)):
        docs += [echo(base + i, topics[(i + k) % len(topics)]) for k in (1, 2)]
    return queries, docs, np.arange(len(topics))


def mrr(scores: np.ndarray, gold: np.ndarray) -> float:
    """Mean reciprocal rank of each query's gold candidate; a tie ranks the gold last (no credit for ties)."""
    rank = (scores >= scores[np.arange(len(gold)), gold][:, None]).sum(axis=1)
    return float(np.mean(1.0 / rank))
