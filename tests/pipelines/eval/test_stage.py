"""`mgte eval` end to end: every method's metrics equal pytrec_eval computed independently from
the run files it wrote, per language too; stage accounting, rerun, config pinning, the embedding
cache, BM25-only runs on the bundled set, messy inputs, and the command line."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import numpy as np
import pytest

from foundation.config import load_config

from foundation.errors import ConfigError
from pipelines.eval import Config, run
from pipelines.eval.beir import read_beir
from foundation.ledger import read_manifest, read_stage_output
from foundation.errors import StageConflict
from tests.pipelines.eval.conftest import BUNDLED_BEIR, assert_metrics_match, pytrec_from_files

TINY = Path(__file__).resolve().parents[3] / "dags" / "configs" / "eval" / "tiny.yaml"


def _cfg(beir: Path, out: Path, *sets: str) -> Config:
    return load_config(Config, TINY, [f"input=['{beir}']", f"output='{out}'", *sets])


def _check_all_runs(out: Path, beir_dir: Path) -> dict:
    """metrics.json == pytrec_eval on run.trec (and on every runs/<method>.trec), overall and per language."""
    beir = read_beir([str(beir_dir)])
    langs = dict(zip(beir.queries.ids, beir.query_langs))
    qrels = next((beir_dir / "qrels").glob("test.tsv*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert_metrics_match(metrics, pytrec_from_files(out / "run.trec", qrels, langs))
    for method, values in metrics["methods"].items():
        assert_metrics_match(values, pytrec_from_files(out / values["run"], qrels, langs))
    assert (out / "run.trec").read_text() == (out / metrics["methods"][metrics["final_method"]]["run"]).read_text()
    return metrics


def test_all_methods_with_tiny_models(small_beir, tiny_models, tmp_path):
    out = tmp_path / "eval"
    cfg = _cfg(small_beir, out, f"model='{tiny_models['trm']}'", f"reranker='{tiny_models['reranker']}'",
               f"cache_dir='{tmp_path / 'cache'}'", "format.doc_max_length=64", "rerank.top_k=5",
               "hybrid.weight=0.01", "dense.dim=32")
    manifest = run(cfg)
    metrics = _check_all_runs(out, small_beir)
    assert set(metrics["methods"]) == {"bm25", "dense", "sparse", "hybrid", "rerank"}
    assert metrics["final_method"] == "rerank" and metrics["skipped"] == {}
    assert metrics["n_queries"] == 6 and set(metrics["per_language"]) == {"en", "de", "zh"}
    assert metrics["data"]["qrels_doc_not_in_corpus"] == 1
    assert manifest["counts"] == {"input": 7, "kept": 6, "dropped": 1, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"no_qrels": 1}
    assert manifest["extra"]["dense_dim"] == 32 and manifest["extra"]["cache_hit"] is False
    assert (out / "_SUCCESS").is_file() and read_manifest(out)["stage"] == "eval"
    table = read_stage_output(out, "data")
    assert set(table["method"].to_pylist()) == set(metrics["methods"])
    per_query = pq.read_table(out / "data/per_query.parquet").to_pylist()
    assert {r["query_id"] for r in per_query} == {"q1", "q2", "q3", "q4", "q5", "q6"}
    for rel in ("report.html", "plots/ndcg_per_language.png", "plots/overall.png"):
        assert (out / rel).read_bytes()[:4] in (b"<!do", b"\x89PNG")
    # hybrid = dense + 0.01 * sparse for a document both sides found
    lines = {m: {(l.split()[0], l.split()[2]): float(l.split()[4]) for l in (out / f"runs/{m}.trec").open()}
             for m in ("dense", "sparse", "hybrid")}
    both = [k for k in lines["hybrid"] if k in lines["dense"] and k in lines["sparse"] and lines["sparse"][k] > 0]
    assert both
    for k in both:
        assert lines["hybrid"][k] == pytest.approx(lines["dense"][k] + 0.01 * lines["sparse"][k], rel=1e-6)

    assert run(cfg) == manifest  # a finished stage is a no-op
    with pytest.raises(StageConflict):
        run(_cfg(small_beir, out, f"model='{tiny_models['trm']}'"))
    # another output, same model, corpus and protocol: corpus embeddings come from the cache
    again = run(load_config(Config, data={**json.loads(json.dumps(manifest["config"])), "output": str(tmp_path / "b")}))
    assert again["extra"]["cache_hit"] is True and again["extra"]["cache_key"] == manifest["extra"]["cache_key"]
    assert json.loads((tmp_path / "b/metrics.json").read_text())["methods"]["hybrid"]["ndcg@10"] == \
        metrics["methods"]["hybrid"]["ndcg@10"]
    # rerank.first_stage_weight: the top 5 scored (1 - w) z(cross-encoder) + w z(hybrid); the cross-encoder
    # alone is kept (run and metrics) and equals the unfused run above
    fused = run(load_config(Config, data={**json.loads(json.dumps(manifest["config"])), "output": str(tmp_path / "f"),
                                          "rerank": {**manifest["config"]["rerank"], "first_stage_weight": 0.3}}))
    assert fused["extra"]["cache_hit"] is True
    fm = _check_all_runs(tmp_path / "f", small_beir)
    alone = fm["rerank_fusion"]["reranker_alone"]
    assert alone["ndcg@10"] == metrics["methods"]["rerank"]["ndcg@10"] and alone["map"] == metrics["methods"]["rerank"]["map"]
    assert (tmp_path / "f/runs/rerank_alone.trec").read_text().replace("mgte-rerank_alone", "mgte-rerank") == \
        (out / "runs/rerank.trec").read_text()
    runs = {m: {} for m in ("hybrid", "rerank_alone", "rerank")}
    for m in runs:
        for line in (tmp_path / f"f/runs/{m}.trec").open():
            qid, _, doc, rank, score, _ = line.split()
            runs[m].setdefault(qid, []).append((int(rank), doc, float(score)))
    checked = 0
    for qid, rows in runs["hybrid"].items():
        top = [doc for _r, doc, _s in sorted(rows)[:5]]
        first = np.array([dict((d, s) for _r, d, s in rows)[d] for d in top])
        ce = np.array([dict((d, s) for _r, d, s in runs["rerank_alone"][qid])[d] for d in top])
        z = lambda x: (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)
        want = dict(zip(top, 0.7 * z(ce) + 0.3 * z(first)))
        got = {d: s for _r, d, s in runs["rerank"][qid] if d in want}
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6)  # runs hold float32 scores
        checked += 1
    assert checked == 6


def _tasks(out: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in (out / "_tasks").glob("*.json")}


def test_a_changed_model_reruns_exactly_the_methods_that_used_it(small_beir, tiny_models, tmp_path):
    """The BEIR files and both models are pinned by content; a retrained model in the same
    directory is refused by default, and with on_input_change=redo reruns only its tasks."""
    import shutil

    import torch

    import model
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

    models = tmp_path / "models"
    for name in ("trm", "reranker"):
        shutil.copytree(tiny_models[name], models / name)
    sets = [f"model='{models / 'trm'}'", f"reranker='{models / 'reranker'}'", f"cache_dir='{tmp_path / 'cache'}'",
            "format.doc_max_length=64", "rerank.top_k=5", "hybrid.weight=0.01"]
    out = tmp_path / "eval"
    first = run(_cfg(small_beir, out, *sets))
    assert {e.get("role") for e in first["inputs"]} == {None, "model", "reranker"}
    before = _tasks(out)
    assert sorted(t.split("-")[0] for t in before) == ["bm25", "model", "read", "rerank"]
    runs = {p.name: p.read_bytes() for p in (out / "runs").iterdir()}

    torch.manual_seed(1)  # a retrained reranker, written over the old one
    reranker = model.MGTEForSequenceClassification(model.MGTEConfig.tiny(num_labels=1))
    model.save_pretrained(reranker, models / "reranker", tokenizer=load_tokenizer(bundled_xlmr_tokenizer_json()))
    with pytest.raises(StageConflict, match="1 changed .*reranker"):
        run(_cfg(small_beir, out, *sets))
    again = run(_cfg(small_beir, out, *sets, "on_input_change=redo"))
    after = _tasks(out)
    rerun = {t for t in after if before.get(t) != after[t]}
    assert [t.split("-")[0] for t in rerun] == ["rerank"]
    assert set(before) - set(after) == {t for t in before if t.startswith("rerank-")}  # the old reranker's
    assert {p.name: p.read_bytes() for p in (out / "runs").iterdir() if p.name != "rerank.trec"} == {
        k: v for k, v in runs.items() if k != "rerank.trec"}
    assert again["extra"]["reranker_id"] != first["extra"]["reranker_id"]
    assert again["extra"]["model_id"] == first["extra"]["model_id"] and again["counts"] == first["counts"]
    _check_all_runs(out, small_beir)

    torch.manual_seed(2)  # a retrained embedding model: its runs and the rerank over them, not BM25
    trm = model.MGTEForEmbedding(model.MGTEConfig.tiny())
    model.save_pretrained(trm, models / "trm", tokenizer=load_tokenizer(bundled_xlmr_tokenizer_json()))
    run(_cfg(small_beir, out, *sets, "on_input_change=redo"))
    later = _tasks(out)
    assert sorted(t.split("-")[0] for t in later if after.get(t) != later[t]) == ["model", "rerank"]
    assert later["bm25"] == after["bm25"] and (out / "runs/bm25.trec").read_bytes() == runs["bm25.trec"]
    _check_all_runs(out, small_beir)


def test_mlm_encoder_and_bundled_set(tiny_models, tmp_path):
    """An MLM encoder (CLS, no sparse head) on the real multilingual bundled set."""
    out = tmp_path / "eval"
    run(_cfg(BUNDLED_BEIR, out, f"model='{tiny_models['mlm']}'", "cache=false", "format.doc_max_length=128"))
    metrics = _check_all_runs(out, BUNDLED_BEIR)
    assert set(metrics["methods"]) == {"bm25", "dense"} and metrics["final_method"] == "dense"
    assert metrics["skipped"]["hybrid"] == "the model has no sparse head"
    assert metrics["truncated"]["truncated_docs"] > 0 and metrics["n_queries"] == 130
    assert len(metrics["per_language"]) == 12


def test_minilm_with_a_hf_cross_encoder_via_the_cli(small_beir, tiny_bert, tmp_path):
    from dags.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--config", str(TINY), "--input", str(small_beir), "--output", str(out),
                 "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "format.query_instruction='query: '",
                 "--set", f"reranker={tiny_bert / 'ce'}", "--set", "rerank.top_k=3"]) == 0
    metrics = _check_all_runs(out, small_beir)
    assert metrics["model"] == "all-MiniLM-L6-v2" and set(metrics["methods"]) == {"bm25", "dense", "rerank"}
    assert metrics["methods"]["dense"]["ndcg@10"] > 0.5  # a real model finds the obvious documents
    assert main(["eval", "--config", str(TINY), "--input", str(small_beir), "--output", str(out),
                 "--set", "hybrid.weight=0.5"]) == 2


def test_bm25_only_on_messy_input(tmp_path):
    from tests.pipelines.eval.test_beir import _messy

    beir_dir = _messy(tmp_path / "beir")
    out = tmp_path / "eval"
    manifest = run(_cfg(beir_dir, out, "model=null"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_method"] == "bm25" and set(metrics["methods"]) == {"bm25"}
    assert manifest["counts"] == {"input": 6, "kept": 2, "dropped": 3, "quarantined": 1}
    quarantine = read_stage_output(out, "quarantine").to_pylist()
    assert {Path(r["path"]).name for r in quarantine} == {"corpus.jsonl", "queries.jsonl.gz", "test.tsv"}
    dropped = read_stage_output(out, "dropped").to_pylist()
    assert {(r["kind"], r["reason"]) for r in dropped} >= {("query", "no_qrels"), ("qrel", "duplicate_qrel"),
                                                            ("doc", "duplicate_id"), ("doc", "empty_text")}
    # the run reaches every document (zero-score ones in trec_eval tie order); metrics match pytrec_eval
    langs = {"q1": "en", "q4": "de"}
    ref = pytrec_from_files(out / "run.trec", beir_dir / "qrels/test.tsv", langs)
    assert_metrics_match(metrics, ref)


def test_config_checks():
    with pytest.raises(ConfigError, match="hybrid.weight 0.02"):
        load_config(Config, TINY, ["hybrid.weight=0.02"])
    with pytest.raises(ConfigError, match="unknown key 'hybrid.wieght'"):
        load_config(Config, TINY, ["hybrid.wieght=0.005"])
    with pytest.raises(ConfigError, match="recall@100"):
        load_config(Config, TINY, ["top_k=50"])
    with pytest.raises(ConfigError, match="doc_template"):
        load_config(Config, TINY, ["format.doc_template='{title}'"])
    paper = load_config(Config, TINY.with_name("paper.yaml"))
    assert paper.rerank.top_k == 100 and paper.format.doc_max_length == 8192 and paper.model is None
