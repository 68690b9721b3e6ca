"""`mgte train reranker` end to end: a tiny run from an MLM-8192-like encoder and one from the real
all-MiniLM-L6-v2, checkpoints and an accounted manifest, resume after SIGTERM with the same losses,
export round trips in a fresh offline process (AutoModelForSequenceClassification, CrossEncoder and
our scoring API give the same scores), `mgte eval --set reranker=DIR`, and Ray Train."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from foundation import faults
from storage_schemas.mine import HARD_NEGATIVES
from training import reranker
from training.loop import Preempted
from training.metrics import read_metrics
from tests.training.cpt.test_cpt import init_dir  # noqa: F401  (the tiny encoder fixture)
from tests.training.reranker.test_reranker import REPO, tiny_cfg, topic_rows

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mined") / "hard_negatives.parquet"
    rows = topic_rows()
    rows.append({**rows[0], "query_id": "short", "negatives": rows[0]["negatives"][:2],
                 "negative_ids": rows[0]["negative_ids"][:2], "negative_ranks": [1, 2], "negative_scores": [0.5, 0.4]})
    pq.write_table(HARD_NEGATIVES.from_rows(rows), path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mined, init_dir):
    tmp = tmp_path_factory.mktemp("reranker")
    os.environ["HF_HUB_OFFLINE"] = "1"
    cfg = tiny_cfg(tmp, [mined], f"init={init_dir}")
    return tmp, cfg, reranker.run(cfg)


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory, mined):
    tmp = tmp_path_factory.mktemp("reranker-minilm")
    os.environ["HF_HUB_OFFLINE"] = "1"
    cfg = tiny_cfg(tmp, [mined], f"init={MINILM}", "model.rope_theta=null", "loop.max_steps=2")
    return tmp, cfg, reranker.run(cfg)


def test_tiny_run_writes_model_checkpoints_and_an_accounted_manifest(finished_run):
    tmp, cfg, manifest = finished_run
    out = tmp / "out"
    assert manifest["counts"] == {"input": 17, "kept": 16, "dropped": 1, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"too_few_negatives": 1}
    assert manifest["extra"]["final"]["step"] == 4 and manifest["extra"]["family"] == "mgte"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["units"] == 4 for r in rows)
    # accuracy = groups whose positive scored first / queries of the step (whether it rises:
    # tests/training/reranker/test_learning.py)
    assert all(float(r["accuracy"] * r["units"]).is_integer() for r in rows)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["MGTEForSequenceClassification"] and len(config["id2label"]) == 1
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling.MGTEForSequenceClassification"
    assert config["rope_theta"] == 160_000.0  # the MLM-8192 base, kept
    assert reranker.run(cfg) == manifest  # a rerun of a finished run is a no-op


def test_resume_after_sigterm_reproduces_the_losses(finished_run, tmp_path, monkeypatch, init_dir, no_ray):
    ref_dir, ref_cfg, _ = finished_run
    cfg = tiny_cfg(tmp_path, ref_cfg.input, f"init={init_dir}")
    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=sigterm")
    with pytest.raises(Preempted):
        reranker.run(cfg)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    monkeypatch.delenv(faults.ENV)
    manifest = reranker.run(cfg)
    assert manifest["extra"]["final"]["resumed_from"] == 3
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")}
    assert losses == {r["step"]: r["loss"] for r in read_metrics(ref_dir / "out" / "metrics.jsonl")}


ROUND_TRIP = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from sentence_transformers import CrossEncoder
from pipelines.embedding import load_reranker
queries = ["All about bees", "What should I know about comets?", "tea"]
docs = ["This article explains bees: their history.", "Comets are icy bodies. " * 3, "Tea is a drink."]
out = {}
for d in sys.argv[1:]:
    remote = "auto_map" in json.load(open(d + "/config.json"))
    model = AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=remote).eval()
    tok = AutoTokenizer.from_pretrained(d, trust_remote_code=remote)
    with torch.no_grad():
        auto = model(**tok(queries, docs, padding=True, return_tensors="pt")).logits[:, 0].tolist()
    ce = CrossEncoder(d, trust_remote_code=remote, device="cpu").predict(list(zip(queries, docs))).tolist()
    ours = load_reranker(d, device="cpu").score(queries, docs, max_length=512)[0].tolist()
    out[d] = {"class": type(model).__name__, "auto": auto, "cross_encoder": ce, "ours": ours}
print(json.dumps(out))
"""


def test_exported_rerankers_score_alike_in_a_fresh_offline_process(finished_run, minilm_run):
    dirs = [str(finished_run[0] / "out" / "model"), str(minilm_run[0] / "out" / "model")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, *dirs], capture_output=True, text=True, env=env,
                          cwd=str(REPO), stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [got[d]["class"] for d in dirs] == ["MGTEForSequenceClassification", "BertForSequenceClassification"]
    for d in dirs:
        assert got[d]["auto"] == pytest.approx(got[d]["ours"], abs=1e-5)
        assert got[d]["cross_encoder"] == pytest.approx(got[d]["ours"], abs=1e-5)  # raw scores (Identity)
        assert len(set(round(s, 6) for s in got[d]["ours"])) == 3


def test_eval_reranks_with_trained_rerankers(finished_run, minilm_run, tmp_path):
    """`mgte eval --set reranker=DIR` on a subset of the bundled tiny-beir, ours and the MiniLM-based one."""
    from dags.cli import main

    beir = REPO / "data" / "eval" / "tiny-beir"
    queries = [json.loads(line) for line in (beir / "queries.jsonl").read_text().splitlines()][:8]
    qrels = [line.split("\t") for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = {q["_id"] for q in queries}
    relevant = {r[1] for r in qrels if r[0] in qids}
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    corpus = [d for d in corpus if d["_id"] in relevant] + [d for d in corpus if d["_id"] not in relevant][:24]
    small = tmp_path / "beir"
    (small / "qrels").mkdir(parents=True)
    (small / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (small / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (small / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        "\t".join(r) + "\n" for r in qrels if r[0] in qids))
    for name, run_dir in (("ours", finished_run[0] / "out"), ("minilm", minilm_run[0] / "out")):
        out = tmp_path / f"eval-{name}"
        assert main(["eval", "--config", str(REPO / "dags/configs/eval/tiny.yaml"), "--input", str(small),
                     "--output", str(out), "--set", f"cache_dir={tmp_path / 'cache'}", "--set", f"reranker={run_dir}",
                     "--set", "rerank.top_k=5"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert "rerank" in metrics["methods"] and metrics["final_method"] == "rerank", metrics.get("skipped")
        assert metrics["methods"]["rerank"]["recall@100"] == metrics["methods"]["dense"]["recall@100"]


@pytest.mark.slow
def test_ray_train_worker_runs_the_same_task(tmp_path, mined, init_dir, local_ray):
    """The tiny config's engine: one Ray Train worker (gloo) on a local Ray."""
    cfg = tiny_cfg(tmp_path, [mined], f"init={init_dir}", "engine=ray", "loop.max_steps=2", "loop.ckpt_every=1")
    manifest = reranker.run(cfg)
    assert manifest["extra"]["final"]["step"] == 2
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2]
