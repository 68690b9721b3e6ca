"""Ranking candidates for a chunk of queries: exact FAISS inner product over memory-mapped shards
(default), or an IVF / HNSW index for large candidate sets.

Vectors are L2-normalised, so the inner product is the cosine. Exact search never loads the
candidate matrix: each embedding shard (memory-mapped ``.npy``) is searched in turn with
``faiss.knn`` (``faiss.knn_gpu`` when faiss-gpu sees a GPU) and the per-shard lists are merged, so
peak memory is one shard plus the query chunk's lists whatever the number of candidates.

The ranking of a query is by score descending, ties by the candidate's id ascending (``keys``:
each candidate's position in id order), so the same inputs rank the same on every run, engine and
shard layout. A tie that straddles a shard's cut (the shard's (k+1)-th score equals the merged
k-th one) could hide a candidate that the id order prefers: that query is then rescored over every
shard with numpy and ranked from the full row.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from foundation.ledger import atomic_write

log = logging.getLogger(__name__)
IVF_MIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid
IVF_TRAIN_PER_LIST = 256  # training sample: at most this many points per list


def order_keys(ids) -> np.ndarray:
    """Per candidate row, its position in id order (the tie-break: smaller id first)."""
    ids = np.asarray(ids, dtype=object)
    keys = np.empty(len(ids), dtype=np.int64)
    keys[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    return keys


def use_gpu(setting: str) -> bool:
    import faiss

    return setting == "auto" and hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    import faiss

    return faiss.StandardGpuResources()


def _knn(queries: np.ndarray, block: np.ndarray, k: int, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    if gpu:
        return faiss.knn_gpu(_gpu_resources(), queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)


def rank_top(rows: np.ndarray, scores: np.ndarray, k: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score descending, then id order) of these candidates."""
    order = np.lexsort((keys[rows], -scores))[:k]
    return rows[order], scores[order]


def full_row(query: np.ndarray, shards: list[np.ndarray], k: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ranking of one query over every shard (numpy), for the rare tie at a shard's cut."""
    scores = np.concatenate([np.asarray(s, dtype=np.float32) @ query for s in shards]).astype(np.float32)
    rows = np.arange(scores.size, dtype=np.int64)
    if scores.size > k:
        kth = np.partition(scores, scores.size - k)[scores.size - k]
        keep = scores >= kth
        rows, scores = rows[keep], scores[keep]
    return rank_top(rows, scores, k, keys)


def exact_search(queries: np.ndarray, shards: list[np.ndarray], ks: np.ndarray, keys: np.ndarray, *,
                 gpu: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query i, its ``ks[i]`` best candidates (rows, float32 scores), exact, in ranking order.

    A running list of the ``max(ks) + 1`` best per query is merged with each shard's; ``cut`` keeps,
    per query, the best score a candidate left out of the lists can have (a shard's or a merge's cut)."""
    n_total = sum(s.shape[0] for s in shards)
    ks = np.minimum(np.asarray(ks, dtype=np.int64), n_total)
    if len(queries) == 0 or n_total == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(queries))]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    want = int(ks.max()) + 1  # one more than needed: the cut score shows a tie straddling it
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    cut = np.full(len(queries), -np.inf, np.float32)
    offset = 0
    for shard in shards:
        block = np.ascontiguousarray(shard, dtype=np.float32)  # (n_shard, dim): one shard in memory
        k = min(want, block.shape[0])
        scores, rows = _knn(queries, block, k, gpu)  # (n_queries, k) each
        if k < block.shape[0]:
            cut = np.maximum(cut, scores[:, -1])  # what this shard did not return scores <= its k-th
        rows = np.concatenate([best_rows, rows.astype(np.int64) + offset], axis=1)
        scores = np.concatenate([best_scores, scores.astype(np.float32)], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")  # (n_queries, merged)
        if order.shape[1] > want:
            cut = np.maximum(cut, np.take_along_axis(scores, order[:, want:want + 1], axis=1)[:, 0])
            order = order[:, :want]
        best_rows = np.take_along_axis(rows, order, axis=1)
        best_scores = np.take_along_axis(scores, order, axis=1)
        offset += block.shape[0]
    out = []
    for i in range(len(queries)):
        valid = best_rows[i] >= 0
        rows, scores = rank_top(best_rows[i][valid], best_scores[i][valid], int(ks[i]), keys)
        if len(rows) and scores[-1] <= cut[i]:  # a left-out candidate may tie with the k-th: rank the full row
            rows, scores = full_row(queries[i], shards, int(ks[i]), keys)
        out.append((rows, scores))
    return out


# ---- approximate indexes ---------------------------------------------------------------------------
def index_params(cfg_search, n: int) -> dict:
    if cfg_search.index == "ivf":
        return {"index": "ivf", "nlist": max(1, min(cfg_search.nlist, n // IVF_MIN_PER_LIST))}
    return {"index": "hnsw", "m": cfg_search.hnsw_m, "ef_construction": cfg_search.ef_construction}


def index_path(entry: Path, params: dict) -> Path:
    tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return entry / f"index-{params['index']}-{tag}.faiss"


def build_index(shards: list[np.ndarray], params: dict, path: Path) -> Path:
    """An IVF-Flat or HNSW-Flat inner-product index over every shard, stored next to the vectors
    (tmp + rename) so later runs over the same candidates reuse it. IVF trains on evenly spaced rows
    (FAISS k-means with its fixed seed); HNSW is built on one thread, so the graph is the same
    on every run."""
    import faiss

    if path.is_file():
        return path
    dim = shards[0].shape[1]
    n = sum(s.shape[0] for s in shards)
    if params["index"] == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        sample = np.linspace(0, n - 1, num=min(n, IVF_TRAIN_PER_LIST * params["nlist"])).astype(np.int64)
        size = shards[0].shape[0]
        train = np.stack([np.asarray(shards[r // size][r % size], dtype=np.float32) for r in sample])
        index.train(train)
        index.quantizer_trains_alone = 0
    else:
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    threads = faiss.omp_get_max_threads()
    if params["index"] == "hnsw":
        faiss.omp_set_num_threads(1)
    try:
        for shard in shards:
            index.add(np.ascontiguousarray(shard, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    def write(tmp: Path) -> None:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # FAISS reports an I/O failure as a RuntimeError
            raise OSError(str(exc)) from exc

    atomic_write(path, write, private=True)  # a cache other runs may fill too
    log.info("mine: built %s over %d candidates -> %s", params, n, path)
    return path


def ann_search(index_file: Path, cfg_search, queries: np.ndarray, ks: np.ndarray,
               keys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query i, the index's best ``ks[i] + slack`` candidates in ranking order (approximate)."""
    import faiss

    index = faiss.read_index(str(index_file))
    if cfg_search.index == "ivf":
        index.nprobe = cfg_search.nprobe
    else:
        index.hnsw.efSearch = max(cfg_search.ef_search, int(ks.max()) + cfg_search.slack if len(ks) else 0)
    k = min(int(ks.max()) + cfg_search.slack, index.ntotal) if len(ks) else 0
    if k == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(queries))]
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    out = []
    for i in range(len(queries)):
        valid = rows[i] >= 0
        out.append(rank_top(rows[i][valid].astype(np.int64), scores[i][valid].astype(np.float32),
                            int(ks[i]) + cfg_search.slack, keys))
    return out
