"""Our trec_eval-semantics metrics against pytrec_eval: random runs with ties, near-ties (trec_eval
compares float32), graded and negative judgements, queries without relevant documents, queries
missing from the run or the qrels, and a real BM25 run on the bundled set."""

import random

import numpy as np
import pytest
import pytrec_eval

from pipelines.eval import metrics as M

MEASURES = ("ndcg@10", "recall@20", "recall@100", "map", "precision@5", "map@10", "mrr", "ndcg@3")


def _pytrec(run, qrels, measures):
    spec = {m: M.parse_measure(m).trec_eval for m in measures}
    return spec, pytrec_eval.RelevanceEvaluator(qrels, {v[0] for v in spec.values()}).evaluate(run)


def _random_case(rng: random.Random, grades=(0, 0, 1, 2, 3, -1)):
    docs = [f"d{i}" for i in range(60)] + ["D", "d", "d1x", "é", "z"]
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        if rng.random() < 0.9:
            qrels[qid] = {d: rng.choice(grades) for d in rng.sample(docs, rng.randint(1, 8))}
        if rng.random() < 0.9:  # some queries have an empty run, some are missing
            run[qid] = {d: float(rng.choice([0.1, 0.2, 0.5, -0.5, rng.random(), 1 + rng.random() * 1e-7]))
                        for d in rng.sample(docs, rng.randint(0, 45))}
    return run, qrels


@pytest.mark.parametrize("seed", range(25))
def test_random_runs_equal_pytrec_eval(seed):
    run, qrels = _random_case(random.Random(seed))
    ours = M.evaluate(run, qrels, MEASURES)
    spec, ref = _pytrec(run, qrels, MEASURES)
    assert set(ours) == set(ref)  # queries in both run and qrels, empty runs included
    for q in ref:
        for m in MEASURES:
            assert abs(ours[q][m] - ref[q][spec[m][1]]) < 1e-6, (q, m)


def test_full_ndcg_equals_pytrec_eval_on_non_negative_grades():
    # pytrec_eval's uncut `ndcg` hangs on some qrels with negative grades, so only grades >= 0 here
    for seed in range(10):
        run, qrels = _random_case(random.Random(100 + seed), grades=(0, 0, 1, 2, 3))
        ours = M.evaluate(run, qrels, ("ndcg",))
        ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg"}).evaluate(run)
        assert set(ours) == set(ref)
        for q in ref:
            assert abs(ours[q]["ndcg"] - ref[q]["ndcg"]) < 1e-6


def test_ties_are_broken_by_doc_id_descending():
    qrels = {"q": {"a": 1, "c": 0}}
    run = {"q": {"a": 0.5, "b": 0.5, "c": 0.5}}  # trec_eval order: c, b, a
    ours = M.evaluate(run, qrels, ("mrr", "ndcg@10"))["q"]
    assert ours["mrr"] == pytest.approx(1 / 3)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
    assert ours["mrr"] == pytest.approx(ref)


def test_scores_equal_in_float32_are_ties():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.00000002, "b": 1.00000001}}  # distinct doubles, one float32
    assert M.evaluate(run, qrels, ("mrr",))["q"]["mrr"] == 0.5
    assert pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"] == 0.5


def test_queries_without_relevant_documents_and_missing_queries():
    qrels = {"judged_zero": {"a": 0}, "judged": {"a": 1}, "not_run": {"a": 1}}
    run = {"judged_zero": {"a": 1.0}, "judged": {"b": 2.0, "a": 1.0}, "not_judged": {"a": 1.0}}
    ours = M.evaluate(run, qrels)
    assert set(ours) == {"judged_zero", "judged"}
    assert ours["judged_zero"] == {**{m: 0.0 for m in M.MEASURES}, "num_rel": 0, "num_ret": 1}
    assert ours["judged"]["mrr@10"] == 0.5 and ours["judged"]["recall@20"] == 1.0
    assert M.mean(ours)["n_queries"] == 2


def test_mrr_at_k_is_recip_rank_of_the_cut_run():
    rng = random.Random(7)
    run, qrels = _random_case(rng)
    cut = {}
    for q, docs in run.items():
        ordered = sorted(sorted(docs.items(), reverse=True), key=lambda kv: -np.float32(kv[1]))
        cut[q] = dict(ordered[:10])
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    ours = M.evaluate(run, qrels, ("mrr@10",))
    for q in ref:
        assert abs(ours[q]["mrr@10"] - ref[q]["recip_rank"]) < 1e-9


def test_flat_arrays_equal_dict_form():
    run, qrels = _random_case(random.Random(3))
    q, d, s = zip(*[(qq, dd, ss) for qq, docs in run.items() for dd, ss in docs.items()])
    flat = M.evaluate_arrays(q, d, s, qrels)
    nested = M.evaluate(run, qrels)
    assert {k: v for k, v in nested.items() if run[k]} == flat


def test_measure_names():
    assert M.parse_measure("ndcg@10").trec_eval == ("ndcg_cut.10", "ndcg_cut_10")
    assert M.parse_measure("recall@100").trec_eval == ("recall.100", "recall_100")
    assert M.parse_measure("mrr@10").trec_eval is None
    for bad in ("recall", "ndcg@0", "bleu"):
        with pytest.raises(ValueError):
            M.parse_measure(bad)


def test_real_bm25_run_on_bundled_set(tmp_path):
    from pipelines.eval.beir import read_beir
    from pipelines.eval.bm25 import BM25Index
    from pipelines.eval.retrieval import doc_order_keys
    from tests.pipelines.eval.conftest import BUNDLED_BEIR

    beir = read_beir([str(BUNDLED_BEIR)])
    keys = doc_order_keys(beir.corpus.ids)
    hits = BM25Index(beir.corpus.texts, k1=0.9, b=0.4).search(beir.queries.texts, 100, keys)
    run = {q: {beir.corpus.ids[i]: s for i, s in zip(h.docs.tolist(), h.scores.tolist())}
           for q, h in zip(beir.queries.ids, hits)}
    measures = ("ndcg@10", "recall@20", "recall@100", "map")
    ours = M.evaluate(run, beir.qrels, measures)
    spec, ref = _pytrec(run, beir.qrels, measures)
    assert len(ref) > 50
    for q in ref:
        for m in measures:
            assert abs(ours[q][m] - ref[q][spec[m][1]]) < 1e-6


def test_read_trec_run(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 0.25 tag\n\nq2 Q0 d1 1 1.0 tag\n")
    assert M.read_trec_run(str(path)) == {"q1": {"d1": 0.5, "d2": 0.25}, "q2": {"d1": 1.0}}
    path.write_text("q1 d1 0.5\n")
    with pytest.raises(ValueError, match="6 columns"):
        M.read_trec_run(str(path))
