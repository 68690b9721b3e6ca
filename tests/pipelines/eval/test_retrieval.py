"""Retrieval pieces against brute force: FAISS top-k, the inverted index, hybrid fusion (missing
side = 0), reranking, zero-filling, Matryoshka cuts, and the multilingual BM25 terms."""

import numpy as np
import pytest

from pipelines.embedding import SparseVectors
from pipelines.eval.bm25 import BM25Index, unicode_terms
from pipelines.eval.retrieval import (
    Hits,
    InvertedIndex,
    dense_search,
    doc_order_keys,
    fill_with_zeros,
    hybrid,
    rerank,
    select_top,
    truncate_dim,
)


def _brute_top(scores: np.ndarray, ids: list[str], k: int) -> list[int]:
    """Reference trec_eval order with Python sorting: float32 score desc, doc id desc."""
    rows = sorted(range(len(ids)), key=lambda i: ids[i], reverse=True)
    rows = sorted(rows, key=lambda i: -np.float32(scores[i]))
    return rows[:k]


def test_doc_order_keys_and_select_top_break_ties_by_doc_id_descending():
    ids = ["a", "c", "b", "d10", "d9"]
    keys = doc_order_keys(ids)
    assert [ids[i] for i in np.argsort(keys)] == ["d9", "d10", "c", "b", "a"]
    hits = select_top(np.arange(5), np.array([1.0, 1.0, 1.0, 2.0, 1.0]), 3, keys)
    assert [ids[i] for i in hits.docs] == ["d10", "d9", "c"]


def test_dense_search_equals_brute_force():
    rng = np.random.default_rng(0)
    docs = truncate_dim(rng.normal(size=(200, 16)).astype(np.float32), None)
    docs[10] = docs[11]  # duplicate documents tie
    queries = truncate_dim(rng.normal(size=(7, 16)).astype(np.float32), None)
    ids = [f"doc{i:03d}" for i in range(200)]
    keys = doc_order_keys(ids)
    for q, hits in zip(queries, dense_search(docs, queries, 20, keys)):
        scores = docs @ q
        assert hits.docs.tolist() == _brute_top(scores, ids, 20)
        np.testing.assert_allclose(hits.scores, scores[hits.docs], rtol=1e-6)


def test_ivf_visits_nprobe_lists():
    """An IVF index searching all its lists is exact; with one list (FAISS's default) it is not."""
    rng = np.random.default_rng(2)
    docs = truncate_dim(rng.normal(size=(2000, 16)).astype(np.float32), None)
    queries = truncate_dim(rng.normal(size=(20, 16)).astype(np.float32), None)
    keys = doc_order_keys([f"doc{i:04d}" for i in range(2000)])
    exact = [h.docs.tolist() for h in dense_search(docs, queries, 10, keys)]
    every_list = [h.docs.tolist() for h in dense_search(docs, queries, 10, keys, index_factory="IVF16,Flat",
                                                         nprobe=16)]
    one_list = [h.docs.tolist() for h in dense_search(docs, queries, 10, keys, index_factory="IVF16,Flat",
                                                       nprobe=1)]
    assert every_list == exact
    assert one_list != exact


def test_matryoshka_cut_renormalises():
    x = truncate_dim(np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32), 8)
    assert x.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)


def _random_sparse(rng, n, vocab=300, terms=12):
    rows = []
    for _ in range(n):
        t = rng.choice(vocab, size=rng.integers(0, terms), replace=False)
        rows.append({int(a): float(b) for a, b in zip(t, rng.uniform(0.01, 2.0, size=t.size))})
    return rows


def test_inverted_index_equals_dot_products():
    rng = np.random.default_rng(2)
    doc_rows, query_rows = _random_sparse(rng, 150), _random_sparse(rng, 9)
    docs, queries = SparseVectors.from_dicts(doc_rows), SparseVectors.from_dicts(query_rows)
    ids = [f"d{i}" for i in range(150)]
    keys = doc_order_keys(ids)
    index = InvertedIndex(docs)
    assert index.terms.size <= 300  # postings per term present, not a vocab-sized matrix
    for qrow, hits in zip(query_rows, index.search(queries, 30, keys)):
        scores = np.array([sum(w * d.get(t, 0.0) for t, w in qrow.items()) for d in doc_rows])
        expected = [i for i in _brute_top(scores, ids, 30) if scores[i] > 0]
        assert hits.docs.tolist() == expected
        np.testing.assert_allclose(hits.scores, scores[hits.docs], rtol=1e-6)


def test_hybrid_adds_weighted_sparse_and_zero_for_the_missing_side():
    keys = doc_order_keys(["a", "b", "c", "d"])
    dense = [Hits(np.array([0, 1]), np.array([0.9, 0.8]))]
    sparse = [Hits(np.array([2, 1]), np.array([50.0, 10.0]))]
    out = hybrid(dense, sparse, 0.01, 10, keys)[0]
    got = dict(zip(out.docs.tolist(), out.scores.tolist()))
    assert got == pytest.approx({0: 0.9, 1: 0.8 + 0.1, 2: 0.5})
    assert out.docs.tolist() == [1, 0, 2]


def test_rerank_rescores_the_top_k_and_keeps_the_tail_in_order():
    keys = doc_order_keys([f"d{i}" for i in range(6)])
    first = [Hits(np.array([5, 4, 3, 2, 1]), np.array([5.0, 4, 3, 2, 1]))]
    seen = []

    def score(q_rows, d_rows):
        seen.append((list(q_rows), list(d_rows)))
        return np.array([d * 10.0 for d in d_rows])  # reverses the first three

    out = rerank(first, 3, score, keys)[0]
    assert seen == [([0, 0, 0], [5, 4, 3])]
    assert out.docs.tolist() == [5, 4, 3, 2, 1]
    assert out.scores.tolist() == [50.0, 40.0, 30.0, 29.0, 28.0]
    assert rerank(first, 3, lambda q, d: -np.asarray(d, float), keys)[0].docs.tolist() == [3, 4, 5, 2, 1]


def test_first_stage_weight_fuses_standardised_scores():
    keys = doc_order_keys([f"d{i}" for i in range(6)])
    first = [Hits(np.array([5, 4, 3, 2]), np.array([0.9, 0.5, 0.4, 0.1]))]
    ce = lambda q, d: np.array([{5: 1.0, 4: 3.0, 3: 2.0}[x] for x in d])
    assert rerank(first, 3, ce, keys)[0].docs.tolist() == [4, 3, 5, 2]  # the cross-encoder alone
    assert rerank(first, 3, ce, keys, first_stage_weight=1.0)[0].docs.tolist() == [5, 4, 3, 2]  # first stage
    # z(ce) = (-1.22, 1.22, 0), z(first) = (1.39, -0.46, -0.93): w = 0.5 -> 0.08, 0.38, -0.46
    out = rerank(first, 3, ce, keys, first_stage_weight=0.5)[0]
    assert out.docs.tolist() == [4, 5, 3, 2]
    z = lambda x: (x - x.mean()) / x.std()
    want = 0.5 * z(np.array([1.0, 3.0, 2.0])) + 0.5 * z(np.array([0.9, 0.5, 0.4]))
    assert out.scores[:3].tolist() == pytest.approx(sorted(want, reverse=True))
    assert out.scores[3] < out.scores[2]  # the tail stays below
    const = rerank(first, 3, lambda q, d: np.ones(len(d)), keys, first_stage_weight=0.5)[0]
    assert const.docs.tolist() == [5, 4, 3, 2]  # a constant side counts 0: the other decides


def test_fill_with_zeros_completes_a_lexical_run():
    ids = ["a", "b", "c", "d", "e"]
    keys = doc_order_keys(ids)
    out = fill_with_zeros(Hits(np.array([1]), np.array([2.5])), 4, keys)
    assert [ids[i] for i in out.docs] == ["b", "e", "d", "c"]
    assert out.scores.tolist() == [2.5, 0.0, 0.0, 0.0]
    assert len(fill_with_zeros(Hits(np.zeros(0, np.int64), np.zeros(0)), 10, keys)) == 5


def test_unicode_terms_split_no_space_scripts_into_bigrams():
    assert unicode_terms("Hello, WÖRLD x") == ["hello", "wörld", "x"]
    assert unicode_terms("东京タワー") == ["东京", "京タ", "タワ", "ワー"]
    assert unicode_terms("ภาษา ไทย") == ["ภา", "าษ", "ษา", "ไท", "ทย"]
    assert unicode_terms("猫 한국어 Ｆｕｌｌ") == ["猫", "한국어", "full"]


def test_bm25_finds_cjk_and_scores_in_trec_order():
    docs = ["the cat sat on the mat", "a dog barked", "中华人民共和国成立", "cat and dog and cat"]
    keys = doc_order_keys(["d0", "d1", "d2", "d3"])
    index = BM25Index(docs, k1=0.9, b=0.4)
    cat, chinese, nothing = index.search(["cat", "人民共和国", "zzz"], 10, keys)
    assert set(cat.docs.tolist()) == {0, 3} and cat.docs[0] == 3
    assert chinese.docs.tolist() == [2]
    assert len(nothing) == 0
