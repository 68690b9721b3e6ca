"""`mgte train trm`: a tiny run from the real all-MiniLM-L6-v2 on a hard-negatives table (plain
parquet and a finished stage output), the manifest's accounting, sparsity health every step,
exact resume after SIGTERM, sparse-collapse stop (docs/reliability.md row 31), the paper config's numbers,
and the export: AutoModel, SentenceTransformer (truncate_dim) and SparseEncoder equal to our own
encode API, in a fresh offline process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from foundation import faults
from foundation.config import load_config
from tests import paper
from storage_schemas.mine import HARD_NEGATIVES
from training import trm
from training.length_groups import PAPER_EMBEDDER_GROUPS, LengthGroup, LengthGroupBatchSampler
from training.loop import Preempted
from training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[3]
TOPICS = ["rivers", "volcanoes", "bread", "chess", "bicycles", "orchids", "glaciers", "violins", "comets", "bees",
          "tea", "lighthouses"]


def hard_negative_rows(n_neg: int = 3) -> list[dict]:
    rows = []
    for i, t in enumerate(TOPICS):
        others = [TOPICS[(i + k) % len(TOPICS)] for k in range(1, n_neg + 1)]
        long = " ".join(f"More on {t}, part {k}." for k in range(12)) if i % 3 == 0 else ""
        rows.append({"query_id": f"q{i}", "query": f"what do people know about {t}?", "positive_id": f"d{i}",
                     "positive": f"{t.capitalize()} are a favourite topic: the history of {t} and how {t} work. {long}",
                     "positive_score": 0.8, "negative_ids": [f"d{TOPICS.index(o)}" for o in others],
                     "negatives": [f"{o.capitalize()} are a favourite topic: the history of {o}." for o in others],
                     "negative_ranks": list(range(10, 10 + n_neg)), "negative_scores": [0.5] * n_neg,
                     "source": "title_body", "lang": "en", "miner": "test"})
    rows.append({**rows[0], "query_id": "short", "negatives": ["only one"], "negative_ids": ["x"],
                 "negative_ranks": [10], "negative_scores": [0.1]})  # too few negatives: dropped
    return rows


def write_table(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(HARD_NEGATIVES.from_rows(hard_negative_rows()), path)
    return path


def tiny_cfg(tmp_path, inputs, *sets, out="out"):
    return load_config(trm.Config, REPO / "dags/configs/trm/tiny.yaml", [
        "input=" + json.dumps([str(p) for p in inputs]), f"output={tmp_path / out}", "engine=local",
        "data.num_negatives=2", "data.query_max_tokens=16", "data.doc_max_tokens=48",
        "data.groups=[{max_length: 32, batch_size: 4, sub_batch: 5}, {max_length: 48, batch_size: 2, sub_batch: 5}]",
        "loop.max_steps=4", "loop.ckpt_every=2", "loop.progress=false", "loop.tensorboard=false", *sets])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trm")
    os.environ["HF_HUB_OFFLINE"] = "1"
    cfg = tiny_cfg(tmp, [write_table(tmp / "mined" / "part-0.parquet")])
    return tmp, cfg, trm.run(cfg)


def test_tiny_run_from_minilm_writes_model_health_and_an_accounted_manifest(finished_run):
    tmp, cfg, manifest = finished_run
    out = tmp / "out"
    assert manifest["counts"] == {"input": 13, "kept": 12, "dropped": 1, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"too_few_negatives": 1}
    assert (out / "_SUCCESS").is_file() and (out / "model" / "trm.json").is_file()
    health = [json.loads(line) for line in (out / "sparsity.jsonl").read_text().splitlines()]
    assert len(health) == 4  # every step
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # the logged loss is L_TRM = lambda * L_sparse + L_dense (mGTE eq. 3; no L1 term here)
        assert r["loss"] == pytest.approx(r["loss_dense"] + cfg.loss.sparse_weight * r["loss_sparse"], rel=1e-5)
        assert 0 <= r["sparse_zero_docs"] < 1 and r["sparse_mean_weight"] > 0  # learning: test_learning.py
    info = json.loads((out / "model" / "trm.json").read_text())
    assert info["pooling"] == "mean" and info["matryoshka_dims"] == list(range(32, 385, 32))


EXPORT_CHECK = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModel
from sentence_transformers import SentenceTransformer, SparseEncoder
from pipelines.embedding import load_embedder

path, texts = sys.argv[1], json.loads(sys.argv[2])
AutoModel.from_pretrained(path, trust_remote_code=True)
full = load_embedder(path, device="cpu").encode(texts, max_length=48)
ours = load_embedder(path, device="cpu", dim=32).encode(texts, max_length=48, sparse=True)
st = SentenceTransformer(path, device="cpu", trust_remote_code=True)
st.max_seq_length = 48
plain = st.encode(texts, convert_to_numpy=True)  # no argument: the directory's own modules normalise
cosine = (plain * full.dense).sum(1) / np.linalg.norm(plain, axis=1) / np.linalg.norm(full.dense, axis=1)
short = SentenceTransformer(path, device="cpu", trust_remote_code=True, truncate_dim=32)
short.max_seq_length = 48
dense = short.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
sp = SparseEncoder(path + "/sparse", device="cpu", trust_remote_code=True)
sp.max_seq_length = 48
vec = sp.encode(texts, convert_to_tensor=True)
vec = vec.to_dense() if vec.is_sparse else vec
worst, same_terms = 0.0, True
for i in range(len(texts)):
    terms, weights = ours.sparse.row(i)
    nz = torch.nonzero(vec[i]).flatten()
    same_terms &= nz.tolist() == terms.tolist()
    if len(terms):
        worst = max(worst, float((vec[i, torch.as_tensor(terms)] - torch.as_tensor(weights)).abs().max()))
print(json.dumps({"cosine": cosine.tolist(), "norms": np.linalg.norm(plain, axis=1).tolist(),
                  "dense_shape": list(dense.shape), "dense_diff": float(np.abs(dense - ours.dense).max()),
                  "sparse_dim": int(vec.shape[1]), "same_terms": same_terms, "sparse_diff": worst,
                  "nnz": [int(ours.sparse.indptr[i + 1] - ours.sparse.indptr[i]) for i in range(len(texts))]}))
"""
LOAD_NOISE = ("UNEXPECTED", "newly initialized", "newly initialised", "MISSING")


def check_export(model_dir: Path, vocab: int) -> dict:
    """In a fresh offline process: transformers' AutoModel, SentenceTransformer (full and truncated),
    SparseEncoder (``sparse/``) against mgte's own encode API; no load-report noise."""
    texts = ["what do people know about tea?", "Glaciers are rivers of ice and ice and ice.", "chess"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", EXPORT_CHECK, str(model_dir), json.dumps(texts)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [w for w in LOAD_NOISE if w in proc.stderr + proc.stdout], proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert min(got["cosine"]) >= 0.9999 and max(abs(n - 1) for n in got["norms"]) < 1e-5, got
    assert got["dense_shape"] == [3, 32] and got["dense_diff"] < 1e-4
    assert got["sparse_dim"] == vocab  # vocabulary-sized
    assert got["same_terms"] and got["sparse_diff"] < 1e-4 and min(got["nnz"]) > 0
    return got


def test_export_loads_in_transformers_and_sentence_transformers_offline(finished_run):
    """A TRM of an HF backbone (MiniLM, mean pooling): the ecosystem's loaders give mgte's vectors."""
    tmp, _, _ = finished_run
    check_export(tmp / "out" / "model", 30522)


def test_resume_after_sigterm_reproduces_the_losses(finished_run, tmp_path, monkeypatch, no_ray):
    ref_tmp, ref_cfg, _ = finished_run
    cfg = tiny_cfg(tmp_path, ref_cfg.input)
    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=sigterm")
    with pytest.raises(Preempted):
        trm.run(cfg)
    monkeypatch.delenv(faults.ENV)
    manifest = trm.run(cfg)
    assert manifest["extra"]["final"]["resumed_from"] == 3
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")}
    ref = {r["step"]: r["loss"] for r in read_metrics(ref_tmp / "out" / "metrics.jsonl")}
    assert losses == pytest.approx(ref, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """A tiny random encoder of ours with the XLM-R tokenizer (fast runs)."""
    import torch

    from model import MGTEConfig, MGTEModel, save_pretrained
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

    torch.manual_seed(0)
    init = tmp_path_factory.mktemp("tiny") / "init"
    save_pretrained(MGTEModel(MGTEConfig.tiny()), init, tokenizer=load_tokenizer(str(bundled_xlmr_tokenizer_json())))
    return init


def test_dead_sparse_head_stops_the_run_and_saves_nothing(tmp_path, monkeypatch, tiny_init):
    """docs/reliability.md row 31: a head whose weights are all zero (ReLU below 0 everywhere) is caught."""
    def dead_head(head, init_dir):
        head.weight.data.zero_()
        head.bias.data.fill_(-1e4)
        return True

    monkeypatch.setattr(trm.task, "init_sparse_head", dead_head)
    cfg = tiny_cfg(tmp_path, [write_table(tmp_path / "m.parquet")], "health.collapse_steps=2", "loop.max_steps=5",
                   "loop.ckpt_every=0", f"init={tiny_init}")
    with pytest.raises(trm.SparseCollapse, match="all-zero for 2 steps in a row"):
        trm.run(cfg)
    assert not (tmp_path / "out" / "model").exists() and not (tmp_path / "out" / "_SUCCESS").exists()
    health = [json.loads(line) for line in (tmp_path / "out" / "sparsity.jsonl").read_text().splitlines()]
    assert [h["sparse_zero_docs"] for h in health] == [1.0, 1.0]


def test_stage_output_input_and_bad_parquet(tmp_path):
    from foundation.errors import BadInputError
    from training.trm.data import read_hard_negatives

    table = HARD_NEGATIVES.from_rows(hard_negative_rows())
    pq.write_table(table.drop(["negatives"]), tmp_path / "bad.parquet")
    with pytest.raises(BadInputError, match="bad.parquet: missing field 'negatives'"):
        read_hard_negatives([str(tmp_path / "bad.parquet")])
    assert read_hard_negatives([str(write_table(tmp_path / "d" / "a.parquet").parent)]).num_rows == 13


def test_paper_config_carries_the_paper_numbers():
    """paper.yaml against the paper's text (tests/paper.py): 2.2's temperatures, B.3's negatives,
    epochs, GPUs and "other settings as contrastive pre-training", Table 12's BS(E) by length."""
    b3 = paper.section("B.3 TRM Training Setup", "B.4 Reranker Training Setup")
    cfg = load_config(trm.Config, REPO / "dags/configs/trm/paper.yaml")
    mrl_t, sparse_t = (float(paper.unrepeat(x)) for x in paper.find(r"of MRL and sparse is set to (\S+) and (\S+) "))
    assert (cfg.loss.mrl_temperature, cfg.loss.sparse_temperature) == (mrl_t, sparse_t)
    assert cfg.loss.dim_step == int(paper.find(r"D=\\{(\d+)k")[0]) and cfg.loss.dim_weights == ()
    assert cfg.data.num_negatives == int(paper.find(r"one positive passage and (\d+) hard negative", b3)[0])
    epochs, gpus = paper.find(r"with (\d+) epochs with (\d+) A100", b3)
    assert (cfg.epochs, cfg.scaling.num_workers) == (int(epochs), int(gpus))
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in cfg.data.groups] == \
        [(r["hi"], r["bs_e"], r["sbs_e"]) for r in paper.table12()]  # Table 12: BS(E), S-BS(E)
    assert cfg.data.groups == PAPER_EMBEDDER_GROUPS and cfg.data.alpha == 0.5
    o = cfg.loop.optim  # "All other hyper-parameters remain consistent with ... contrastive pre-training"
    paper.assert_b3_training_settings(cfg.loop, b3)
    assert cfg.data.gradient_checkpointing and cfg.data.doc_max_tokens == 8192  # "to fine-tune 8192-context data"
    assert cfg.loss.false_negative_margin is None  # ours, off at paper scale


def test_paper_batches_have_table_12_sizes_per_group_from_one_dataset():
    """The sampler built from paper.yaml on 8 workers: each global batch is one dataset and has its
    group's BS(E); each rank's share is encoded in sub-batches of the group's S-BS(E) texts."""
    cfg = load_config(trm.Config, REPO / "dags/configs/trm/paper.yaml")
    table = [(g.max_length, g.batch_size, g.sub_batch) for g in cfg.data.groups]
    assert table == [(500, 768, 256), (1000, 384, 128), (2000, 256, 64), (3000, 160, 48), (8000, 80, 16)]
    lengths = np.repeat([g.max_length for g in cfg.data.groups], 1600)  # every group fills its batches
    sources = np.array(["msmarco", "dureader"] * (len(lengths) // 2), dtype=object)
    s = LengthGroupBatchSampler(lengths, cfg.data.groups, sources=sources, alpha=cfg.data.alpha, seed=0,
                                world_size=cfg.scaling.num_workers)
    sizes = {}
    for _ in range(300):
        b = s.next_global()
        assert len(set(sources[b.indices])) == 1
        sizes[b.group] = len(b.indices)
    assert [sizes[g] for g in range(len(table))] == [bs for _, bs, _ in table]


def test_each_group_encodes_in_its_own_sub_batch_size():
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer
    from training.trm.data import HardNegativeBatches

    keys = ("query_id", "query", "positive", "negatives", "source")
    rows = {k: [r[k] for r in hard_negative_rows(2)[:12]] for k in keys}
    groups = (LengthGroup(max_length=10, batch_size=4, sub_batch=3),
              LengthGroup(max_length=99, batch_size=4, sub_batch=7))
    tokenizer = load_tokenizer(str(bundled_xlmr_tokenizer_json()))
    data = HardNegativeBatches(rows, np.array([5] * 6 + [50] * 6), tokenizer, groups, query_max_tokens=16,
                               doc_max_tokens=32, seed=0, rank=0, world_size=1)
    for _ in range(6):
        (mb,) = next(data)
        size = groups[mb["group"]].sub_batch
        assert [int(c["cu_seqlens"].numel()) - 1 for c in mb["queries"]] == \
            [min(size, 4 - i) for i in range(0, 4, size)]
        assert [int(c["cu_seqlens"].numel()) - 1 for c in mb["documents"]] == \
            [min(size, 12 - i) for i in range(0, 12, size)]  # 4 rows x (positive + 2 negatives)


def beir_subset(out: Path, n_queries: int = 12, n_docs: int = 60) -> Path:
    """The first queries of data/eval/tiny-beir with their judged documents and some others."""
    src = REPO / "data/eval/tiny-beir"
    queries = [json.loads(x) for x in (src / "queries.jsonl").read_text().splitlines()][:n_queries]
    keep_q = {q["_id"] for q in queries}
    lines = (src / "qrels/test.tsv").read_text().splitlines()
    qrels = [line for line in lines[1:] if line.split("\t")[0] in keep_q]
    judged = {line.split("\t")[1] for line in qrels}
    corpus = [json.loads(x) for x in (src / "corpus.jsonl").read_text().splitlines()]
    docs = [d for d in corpus if d["_id"] in judged] + [d for d in corpus if d["_id"] not in judged][:n_docs]
    (out / "qrels").mkdir(parents=True)
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (out / "qrels/test.tsv").write_text("\n".join([lines[0], *qrels]) + "\n")
    return out


def test_eval_of_the_trm_runs_dense_sparse_and_hybrid(finished_run, tmp_path):
    from pipelines import eval as mgte_eval

    tmp, _, _ = finished_run
    cfg = load_config(mgte_eval.Config, REPO / "dags/configs/eval/tiny.yaml", [
        f"input=[{beir_subset(tmp_path / 'beir')}]", f"output={tmp_path / 'eval'}", f"model={tmp / 'out'}",
        "cache=false", "report=false", "format.doc_max_length=128"])
    mgte_eval.run(cfg)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"dense", "sparse", "hybrid"} <= set(metrics["methods"])
    # the stage's sparse retrieval = the TRM's term weights scored by hand over every document
    # (whether it learned is tests/training/trm/test_learning.py's question)
    from pipelines.embedding import load_embedder
    from pipelines.eval import metrics as M

    beir = tmp_path / "beir"
    queries = [json.loads(x) for x in (beir / "queries.jsonl").read_text().splitlines()]
    docs = [json.loads(x) for x in (beir / "corpus.jsonl").read_text().splitlines()]
    qrels: dict = {}
    for line in (beir / "qrels/test.tsv").read_text().splitlines()[1:]:
        qid, did, rel = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(rel)
    emb = load_embedder(str(tmp / "out" / "model"), device="cpu")
    qv = emb.encode([q["text"] for q in queries], max_length=cfg.format.query_max_length, sparse=True).sparse
    dv = emb.encode([(d.get("title", "") + "\n" + d["text"]) if d.get("title") else d["text"] for d in docs],
                    max_length=cfg.format.doc_max_length, sparse=True).sparse
    rows = ([], [], [])
    for i, q in enumerate(queries):
        weights = dict(zip(*map(np.ndarray.tolist, qv.row(i))))
        for j, d in enumerate(docs):
            score = sum(weights.get(t, 0.0) * w for t, w in zip(*map(np.ndarray.tolist, dv.row(j))))
            if score > 0:
                rows[0].append(q["_id"]), rows[1].append(d["_id"]), rows[2].append(score)
    by_hand = M.mean(M.evaluate_arrays(*rows, qrels, ["ndcg@10"]), ["ndcg@10"])["ndcg@10"]
    assert metrics["methods"]["sparse"]["ndcg@10"] == pytest.approx(by_hand, abs=1e-6)


def test_trm_from_our_encoder_saves_mgte_for_embedding_with_the_head(tmp_path, tiny_init):
    """init = one of our models: [CLS] pooling, the head saved as `classifier`; our encode API and
    SparseEncoder agree on the sparse vectors; a second TRM continues the trained head."""
    import torch
    from safetensors import safe_open
    from sentence_transformers import SparseEncoder

    from pipelines.embedding import load_embedder

    cfg = tiny_cfg(tmp_path, [write_table(tmp_path / "m.parquet")], f"init={tiny_init}", "loop.max_steps=2",
                   "loop.ckpt_every=0")
    trm.run(cfg)
    model_dir = tmp_path / "out" / "model"
    assert json.loads((model_dir / "trm.json").read_text())["pooling"] == "cls"
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as fh:
        assert "classifier.weight" in fh.keys()
    texts = ["what do people know about tea?", "Glaciers are rivers of ice and ice."]
    ours = load_embedder(str(model_dir), device="cpu", dim=32).encode(texts, max_length=48, sparse=True)
    assert ours.dense.shape == (2, 32) and ours.sparse is not None
    vec = SparseEncoder(str(model_dir / "sparse"), device="cpu", trust_remote_code=True).encode(
        texts, convert_to_tensor=True)
    vec = vec.to_dense() if vec.is_sparse else vec
    for i in range(2):
        terms, weights = ours.sparse.row(i)
        assert torch.nonzero(vec[i]).flatten().tolist() == terms.tolist()
        torch.testing.assert_close(vec[i, torch.as_tensor(terms)], torch.as_tensor(weights), rtol=1e-4, atol=1e-5)
    check_export(model_dir, json.loads((model_dir / "sparse" / "1_SparseTerms" / "config.json").read_text())["vocab_size"])
    again = tiny_cfg(tmp_path, cfg.input, f"init={model_dir}", "loop.max_steps=1", out="again")
    task = trm.TRMTask(again)
    head = task.build_model().sparse_head
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as fh:
        torch.testing.assert_close(head.weight.data, fh.get_tensor("classifier.weight"))
