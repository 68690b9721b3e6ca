"""Ranking: FAISS exact search over shards equals a brute-force ranking (ties by id included);
an IVF index probing every list equals it too; HNSW finds nearly all of it."""

import numpy as np
import pytest

from pipelines.mine.search import ann_search, build_index, exact_search, index_params, order_keys, rank_top


def brute(queries, docs, k, keys):
    out = []
    for q in queries:
        scores = (docs @ q).astype(np.float32)
        rows = np.arange(len(docs))
        out.append(rank_top(rows, scores, k, keys))
    return out


def data(seed=0, n=700, dim=12, nq=40, dup=True):
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(n, dim)).astype(np.float32)
    if dup:  # exact copies: ties in score that only the id order can break
        docs[100:130] = docs[5]
        docs[400:405] = docs[7]
        docs[200:300] = docs[9]  # a tie larger than any list a shard returns: the full-row path
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.normal(size=(nq, dim)).astype(np.float32)
    if dup:
        queries[:6] = docs[5]  # queries whose top list is one tie across shards
        queries[6:9] = docs[9]  # ... and one that straddles every shard's cut
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"doc-{(i * 7919) % n:05d}" for i in range(n)]  # id order differs from row order
    return docs, queries, order_keys(ids)


@pytest.mark.parametrize("shard", [64, 250, 700])
def test_exact_search_equals_brute_force_with_ties(shard):
    docs, queries, keys = data()
    shards = [docs[i:i + shard] for i in range(0, len(docs), shard)]
    ks = np.asarray([5, 10, 31, 50] * 10)
    got = exact_search(queries, shards, ks, keys)
    ref = brute(queries, docs, 50, keys)
    for (rows, scores), (ref_rows, ref_scores), k in zip(got, ref, ks):
        np.testing.assert_array_equal(rows, ref_rows[:k])
        np.testing.assert_allclose(scores, ref_scores[:k], atol=1e-5)


def test_exact_search_keeps_id_order_within_a_tie():
    docs, queries, keys = data()
    (rows, scores), = exact_search(queries[:1], [docs[i:i + 64] for i in range(0, 700, 64)], np.asarray([40]), keys)
    tied = rows[np.isclose(scores, scores[0], atol=1e-6)]
    assert len(tied) >= 31 and list(keys[tied]) == sorted(keys[tied])


def test_ivf_probing_every_list_is_exact_and_hnsw_recall(tmp_path):
    from pipelines.mine.config import SearchConfig

    docs, queries, keys = data(dup=False, n=2000)
    shards = [docs[i:i + 512] for i in range(0, len(docs), 512)]
    ks = np.full(len(queries), 20)
    ref = exact_search(queries, shards, ks, keys)
    ivf = SearchConfig(index="ivf", nlist=16, nprobe=16, slack=0)
    path = build_index(shards, index_params(ivf, len(docs)), tmp_path / "ivf.faiss")
    for (rows, _), (ref_rows, _) in zip(ann_search(path, ivf, queries, ks, keys), ref):
        np.testing.assert_array_equal(rows, ref_rows)
    hnsw = SearchConfig(index="hnsw", hnsw_m=16, ef_search=128, slack=0)
    path = build_index(shards, index_params(hnsw, len(docs)), tmp_path / "hnsw.faiss")
    found = ann_search(path, hnsw, queries, ks, keys)
    recall = np.mean([len(set(a[0]) & set(b[0])) / 20 for a, b in zip(found, ref)])
    assert recall > 0.95


def _faiss_gpus() -> int:
    try:
        import faiss
    except ImportError:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "knn_gpu") else 0


@pytest.mark.skipif(_faiss_gpus() == 0, reason="needs faiss-gpu and a CUDA GPU (faiss-cpu here)")
def test_faiss_gpu_ranks_like_faiss_cpu():
    """`mgte mine` searches with faiss-gpu when it sees a GPU (`search.use_gpu`): the same
    negatives as faiss-cpu, ties by id included."""
    from pipelines.mine.search import use_gpu

    assert use_gpu("auto")
    docs, queries, keys = data()
    shards = [docs[i:i + 250] for i in range(0, len(docs), 250)]
    ks = np.asarray([5, 10, 31, 50] * 10)
    for (rows, scores), (ref_rows, ref_scores) in zip(exact_search(queries, shards, ks, keys, gpu=True),
                                                      exact_search(queries, shards, ks, keys, gpu=False)):
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
