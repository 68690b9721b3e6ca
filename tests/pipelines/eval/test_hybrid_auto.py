"""`hybrid.weight: auto`: the weight is the grid point with the best dev nDCG@10, checked against a
brute-force computation (every document scored dense + w * sparse, pytrec_eval on the result); the
pick is in metrics.json; a dev query judged in the test split is left out; a missing dev split is
refused in one line; a number still means score = dense + w * sparse."""

import json
from pathlib import Path

import numpy as np
import pytest

from foundation.config import load_config
from foundation.errors import ConfigError
from pipelines.eval import Config, run
from pipelines.eval.retrieval import Hits
from pipelines.eval.stage import AUTO_GRID, pick_weight
from tests.pipelines.eval.conftest import SMALL_DOCS, SMALL_QRELS, SMALL_QUERIES, write_beir

TINY = Path(__file__).resolve().parents[3] / "dags" / "configs" / "eval" / "tiny.yaml"
DIM = 8
GRID = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DEV_QUERIES = [("q8", "purring pets at home", "en"), ("q9", "capital of Spain", "es"),
               ("q10", "longest river on Earth", "en"), ("q11", "Berlin Deutschland", "de"),
               ("q12", "memory safe systems language", "en")]
# q2 is judged in the test split as well: auto must not choose on it
DEV_QRELS = ["q8\td01\t1", "q8\td06\t1", "q8\td08\t1", "q9\td12\t1", "q10\td09\t1", "q11\td05\t1",
             "q12\td11\t1", "q2\td03\t1"]


def _beir(root: Path, dev_qrels=DEV_QRELS) -> Path:
    write_beir(root, SMALL_DOCS, SMALL_QUERIES + DEV_QUERIES, SMALL_QRELS)
    if dev_qrels is not None:
        (root / "qrels" / "dev.tsv").write_text("\n".join(["query-id\tcorpus-id\tscore", *dev_qrels]) + "\n")
    return root


def _cfg(beir: Path, out: Path, model: Path, *sets: str) -> Config:
    return load_config(Config, TINY, [f"input=['{beir}']", f"output='{out}'", f"model='{model}'",
                                      f"cache_dir='{out.parent / 'cache'}'", "format.doc_max_length=64",
                                      "bm25.enabled=false", f"dense.dim={DIM}", *sets])


def _brute_force_dev_ndcg(model: Path, grid) -> list[float]:
    """nDCG@10 (pytrec_eval) of dense + w * sparse over every document, for the dev queries not in test."""
    import pytrec_eval

    from pipelines.embedding import load_embedder

    emb = load_embedder(str(model), device="cpu", dtype="float32", pooling="auto")
    docs = emb.encode([f"{t}\n{x}" if t else x for _, t, x, _ in SMALL_DOCS], max_length=64, max_tokens=16384,
                      max_batch=32, sparse=True)
    queries = emb.encode([t for _, t, _ in DEV_QUERIES], max_length=512, max_tokens=16384, max_batch=32, sparse=True)

    def sparse_dict(vectors, i):
        terms, weights = vectors.row(i)
        return dict(zip(terms.tolist(), weights.tolist()))

    def cut(v):  # dense.dim=DIM: the tiny random model's full vectors all have cosine ~0.99996
        v = np.asarray(v[:, :DIM], dtype=np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    dense = cut(queries.dense) @ cut(docs.dense).T  # (queries, docs)
    d_terms = [sparse_dict(docs.sparse, j) for j in range(len(SMALL_DOCS))]
    sparse = np.array([[sum(w * d.get(t, 0.0) for t, w in sparse_dict(queries.sparse, i).items()) for d in d_terms]
                       for i in range(len(DEV_QUERIES))])  # (queries, docs)
    qrels = {}
    for line in DEV_QRELS:
        q, d, g = line.split("\t")
        if q != "q2":
            qrels.setdefault(q, {})[d] = int(g)
    out = []
    for w in grid:
        total = dense + w * sparse
        run_ = {q: {d[0]: float(total[i, j]) for j, d in enumerate(SMALL_DOCS)}
                for i, (q, _, _) in enumerate(DEV_QUERIES)}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run_)
        out.append(float(np.mean([v["ndcg_cut_10"] for v in per_query.values()])))
    return out


def test_auto_picks_the_best_grid_point_on_dev_and_records_it(tiny_models, tmp_path):
    beir = _beir(tmp_path / "beir")
    out = tmp_path / "eval"
    run(_cfg(beir, out, tiny_models["trm"], "hybrid.weight=auto", f"hybrid.grid={list(GRID)}"))
    metrics = json.loads((out / "metrics.json").read_text())
    h = metrics["hybrid"]
    expected = _brute_force_dev_ndcg(tiny_models["trm"], GRID)
    assert len(set(np.round(expected, 6))) > 1  # the grid matters on this set, so a wrong pick shows
    assert h["grid"] == list(GRID) and h["dev_ndcg@10"] == pytest.approx(expected, abs=1e-6)
    assert h["weight"] == GRID[int(np.argmax(expected))]
    assert h["dev_split"] == "dev" and h["dev_qrels"].endswith("qrels/dev.tsv")
    assert h["dev_queries"] == 5 and h["dev_queries_in_test_left_out"] == 1  # q2
    assert metrics["n_queries"] == 6  # the test split is untouched by the dev queries
    lines = {m: {(x.split()[0], x.split()[2]): float(x.split()[4]) for x in (out / f"runs/{m}.trec").open()}
             for m in ("dense", "sparse", "hybrid")}
    both = [k for k in lines["hybrid"] if k in lines["dense"] and k in lines["sparse"] and lines["sparse"][k] > 0]
    assert both
    for k in both:  # the test run is fused with the chosen weight
        fused = lines["dense"][k] + h["weight"] * lines["sparse"][k]
        assert lines["hybrid"][k] == pytest.approx(fused, rel=1e-5, abs=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(str(e["path"]).endswith("qrels/dev.tsv") for e in manifest["inputs"])  # the dev qrels is pinned


def test_a_number_is_the_paper_fusion_and_no_dev_split_is_needed(tiny_models, tmp_path):
    beir = _beir(tmp_path / "beir", dev_qrels=None)
    out = tmp_path / "eval"
    run(_cfg(beir, out, tiny_models["trm"], "hybrid.weight=0.01"))
    assert json.loads((out / "metrics.json").read_text())["hybrid"] == {"weight": 0.01, "chosen_by": "config"}


def test_missing_dev_split_is_refused_in_one_line(tiny_models, tmp_path, capsys):
    from dags.cli import main

    beir = _beir(tmp_path / "beir", dev_qrels=None)
    assert main(["eval", "--config", str(TINY), "--input", str(beir), "--output", str(tmp_path / "eval"),
                 "--set", f"model={tiny_models['trm']}", "--set", "hybrid.weight=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{beir}/qrels/dev.tsv not found" in err
    assert not (tmp_path / "eval").exists()


def test_dev_queries_all_in_the_test_split_are_refused(tiny_models, tmp_path):
    from foundation.errors import BadInputError

    beir = _beir(tmp_path / "beir", dev_qrels=["q2\td03\t1", "q3\td04\t1"])
    with pytest.raises(BadInputError, match=r"qrels/dev.tsv has no judged query outside the test split \(2 judged"):
        run(_cfg(beir, tmp_path / "eval", tiny_models["trm"], "hybrid.weight=auto", f"hybrid.grid={list(GRID)}"))


def test_pick_weight_takes_the_best_and_the_smallest_of_a_tie():
    from pipelines.eval.beir import BeirSet, Texts
    from pipelines.eval.retrieval import doc_order_keys

    ids = ["a", "b", "c"]
    keys = doc_order_keys(ids)
    dev = BeirSet("", Texts(ids=ids), Texts(ids=["q"], titles=[""], texts=["q"], langs=[None], lines=[1]), ["und"],
                  {"q": {"c": 1}}, {}, [], [], {}, [])
    dense = [Hits(np.array([0, 1, 2]), np.array([0.9, 0.8, 0.1]))]  # c last
    sparse = [Hits(np.array([2]), np.array([7.5]))]  # c only: 2nd at w = 0.1, 1st from w = 1
    w, values = pick_weight(dense, sparse, [0.0, 0.1, 1.0, 10.0], 10, keys, dev)
    assert w == 1.0 and values[0] < values[1] < values[2] == values[3] == 1.0  # 1 and 10 tie: the smaller


def test_config():
    cfg = load_config(Config, TINY, ["hybrid.weight=auto"])
    assert cfg.hybrid.auto and cfg.hybrid.grid == AUTO_GRID and AUTO_GRID[0] == 0.0 and AUTO_GRID[-1] >= 1000
    assert 0.001 in AUTO_GRID and 0.01 in AUTO_GRID  # the paper's range is searched too
    with pytest.raises(ConfigError, match="hybrid.weight 0.02 is outside the paper's range"):
        load_config(Config, TINY, ["hybrid.weight=0.02"])
    with pytest.raises(ConfigError, match="hybrid.dev_split 'test' is the evaluated split"):
        load_config(Config, TINY, ["hybrid.weight=auto", "hybrid.dev_split=test"])
    with pytest.raises(ConfigError, match="strictly ascending"):
        load_config(Config, TINY, ["hybrid.weight=auto", "hybrid.grid=[0.1, 0.01]"])
    with pytest.raises(ConfigError, match="hybrid.weight"):
        load_config(Config, TINY, ["hybrid.weight=best"])
