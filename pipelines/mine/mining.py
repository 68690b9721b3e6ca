"""The mining tasks: ``index`` (an IVF / HNSW index, when configured) and ``search-NNNNN`` (one per
chunk of ``search.query_chunk`` queries): rank the candidates for the chunk's queries, apply the
rule of :mod:`pipelines.mine.select` to each (query, positive) (the negatives its set gave come
first, rank 0, scored by the miner; mined ones fill up to ``num_negatives``), write its rows of the
hard-negatives table and its ``too_few_negatives`` drops, then its marker.

A search task holds its chunk's query vectors, one candidate shard at a time (exact search) and
the few candidate texts its negatives need (read from a memory-mapped Arrow file), so its memory
does not grow with the number of candidates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foundation.ledger import StageOutput
from pipelines.mine.encode import open_vectors, read_column, rows_of
from pipelines.mine.inputs import dropped_row
from pipelines.mine.search import ann_search, build_index, exact_search, index_params, index_path, use_gpu
from pipelines.mine.select import TOO_FEW, Rule, choose, ranked_without, sample_seed
from pipelines.mine.tasks import CANDIDATE_KEYS, CANDIDATES, QUERY_TABLE, ROWS, counts
from storage_schemas.mine import HARD_NEGATIVES, HARD_NEGATIVES_DROPPED


def search_task(chunk: int) -> str:
    return f"search-{chunk:05d}"


def build_ann(task: str, candidates_marker: dict, cfg, out: StageOutput, deps: str) -> dict:
    """The ``index`` task: an approximate index over the candidate shards, kept in the cache."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    shards = open_vectors(candidates_marker)
    params = index_params(cfg.search, candidates_marker["rows"])
    path = build_index(shards, params, index_path(Path(candidates_marker["cache_entry"]), params))
    return out.mark_task(task, counts(0, 0, 0, 0), [], deps=deps, extra={"index_file": str(path), "params": params})


def _rank(cfg, queries: np.ndarray, ks: np.ndarray, cand_marker: dict, index_marker: dict | None, keys: np.ndarray):
    if index_marker is None:
        return exact_search(queries, open_vectors(cand_marker), ks, keys, gpu=use_gpu(cfg.search.gpu))
    return ann_search(Path(index_marker["index_file"]), cfg.search, queries, ks, keys)


def mine_chunk(task: str, chunk: int, vectors: dict[str, dict], index_marker: dict | None, cfg, out: StageOutput,
               deps: str) -> dict:
    """Queries ``[chunk x query_chunk, (chunk + 1) x query_chunk)``: their rows of the table."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    size = cfg.search.query_chunk
    lo_q = chunk * size
    qtable = pq.read_table(out.root / QUERY_TABLE).slice(lo_q, size)
    qids, removed = qtable.column("query_id").to_pylist(), qtable.column("removed").to_pylist()
    copies = qtable.column("copies").to_pylist()
    rows = pq.read_table(out.root / ROWS, filters=[("qrow", ">=", lo_q), ("qrow", "<", lo_q + len(qids))])
    rows = rows.sort_by([("qrow", "ascending"), ("path", "ascending"), ("line", "ascending")]).to_pylist()
    queries = rows_of(open_vectors(vectors["queries"]), np.arange(lo_q, lo_q + len(qids)))
    rule = Rule.of(cfg)
    ks = np.asarray([rule.hi + len(e) for e in removed], dtype=np.int64)
    keys = np.load(out.root / CANDIDATE_KEYS)
    ranked = _rank(cfg, queries, ks, vectors["candidates"], index_marker, keys)
    positives = {name: open_vectors(vectors[name]) for name in ("candidates", "positives")}
    kept, dropped, picks = [], [], []

    def score(i: int, where: str, at: int) -> float:
        return float(np.float32(queries[i] @ rows_of(positives[where], np.asarray([at]))[0]))

    for row in rows:
        i = row["qrow"] - lo_q
        positive_score = score(i, row["pos_in"], row["pos_row"])
        given = min(len(row["negatives"]), rule.num_negatives)  # the set's own negatives come first
        given_scores = [score(i, w, at) for w, at in zip(row["neg_in"][:given], row["neg_rows"][:given])]
        cand_rows, scores, ranks = ranked_without(*ranked[i], np.asarray(removed[i], dtype=np.int64), rule.hi)
        seed = sample_seed(rule.seed, row["query_id"], row["positive_id"] or row["positive_hash"])
        chosen, facts = choose(cand_rows, scores, ranks, positive_score,
                               dataclasses.replace(rule, num_negatives=rule.num_negatives - given), seed,
                               copies=np.isin(cand_rows, np.asarray(copies[i], dtype=np.int64)))
        if given:
            facts["given"] = given
        if chosen is None:
            dropped.append(dropped_row(row, TOO_FEW, facts, positive_score))
            continue
        picks.append(cand_rows[chosen])
        kept.append({"query_id": row["query_id"], "query": row["query"], "positive_id": row["positive_id"],
                     "positive": row["positive"], "positive_score": positive_score,
                     "given_ids": row["negative_ids"][:given], "given": row["negatives"][:given],
                     "negative_ranks": [0] * given + ranks[chosen].tolist(),
                     "negative_scores": given_scores + scores[chosen].tolist(),
                     "negative_given": [True] * given + [False] * len(chosen),
                     "source": row["source"], "lang": row["lang"]})
    _fill_negatives(out, kept, picks, vectors["queries"]["miner"])  # model (kind:fingerprint)
    files = []
    if kept:
        files.append(out.write_rows(f"data/part-{chunk:05d}.parquet", kept, HARD_NEGATIVES))
    if dropped:
        files.append(out.write_rows(f"dropped/{task}.parquet", dropped, HARD_NEGATIVES_DROPPED))
    return out.mark_task(task, counts(len(rows), len(kept), len(dropped), 0), files, deps=deps)


def _fill_negatives(out: StageOutput, kept: list[dict], picks: list[np.ndarray], miner: str) -> None:
    """Ids and texts of the chosen candidates, taken from the memory-mapped candidate file."""
    if not kept:
        return
    flat = np.concatenate(picks).astype(np.int64)
    ids = pc.take(read_column(out.root / CANDIDATES, "id"), flat).to_pylist()
    texts = pc.take(read_column(out.root / CANDIDATES, "text"), flat).to_pylist()
    start = 0
    for row, pick in zip(kept, picks):
        row["negative_ids"] = row.pop("given_ids") + ids[start:start + len(pick)]
        row["negatives"] = row.pop("given") + texts[start:start + len(pick)]
        row["miner"] = miner
        start += len(pick)


def chunks(n_queries: int, size: int) -> list[int]:
    return list(range((n_queries + size - 1) // size))
