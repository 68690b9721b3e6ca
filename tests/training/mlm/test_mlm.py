"""MLM stage: chunked loss, kill + resume (row 6), Ray Train 2 workers with a restart vs 1 worker
(row 7), the MLM-8192 continuation (init + RoPE base), and the shipped configs (Table 8)."""

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from foundation.config import load_config
from foundation import faults
from training.metrics import read_metrics
from training.mlm import Config, MLMTask, chunked_mlm_loss_sum, run

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "dags" / "configs"
TEST_SETS = [
    "model.overrides={hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
    "model.hidden_dropout_prob=0.0",
    "data.max_sequences=4", "data.max_tokens=256", "data.micro_tokens=128", "data.loss_chunk=64",
    "loop.max_steps=6", "loop.log_every=1", "loop.ckpt_every=2", "loop.optim.lr=0.01",
    "loop.progress=false", "loop.tensorboard=false", "engine=local", "scaling.num_workers=1",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from pipelines.mlm_shards import Config as ShardConfig
    from pipelines.mlm_shards import run as run_shards
    from tests.pipelines.test_mlm_shards import clean_doc_rows, write_clean_docs

    os.environ["HF_HUB_OFFLINE"] = "1"
    tmp = tmp_path_factory.mktemp("shards")
    files = write_clean_docs(tmp / "docs", [clean_doc_rows(40, long_every=9), clean_doc_rows(40, start=40)])
    run_shards(load_config(ShardConfig, CONFIGS / "mlm-shards/tiny.yaml",
                           [f"input=[{', '.join(map(str, files))}]", f"output={tmp / 'out'}", "max_len=64",
                            "progress=false"]))
    return tmp / "out"


def mlm_cfg(shards, out, *sets):
    return load_config(Config, CONFIGS / "mlm/tiny.yaml", [f"input=[{shards}]", f"output={out}", *TEST_SETS, *sets])


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("ref")
    manifest = run(mlm_cfg(shards, out))
    return out, manifest


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}


def test_chunked_loss_equals_direct_cross_entropy():
    from model import MGTEConfig
    from model.heads import MLMHead

    torch.manual_seed(0)
    config = MGTEConfig.tiny(vocab_size=1000, hidden_size=16, num_attention_heads=2)
    head = MLMHead(config)
    emb = torch.nn.Parameter(torch.randn(config.padded_vocab_size, 16) * 0.1)
    hidden = torch.randn(37, 16, requires_grad=True)
    labels = torch.randint(0, 1000, (37,))
    grads = []
    for chunk in (0, 8):
        loss, correct = chunked_mlm_loss_sum(hidden, labels, head, emb, chunk)
        loss.backward()
        grads.append((loss.detach(), correct, hidden.grad.clone(), emb.grad.clone(), head.dense.weight.grad.clone()))
        hidden.grad = emb.grad = None
        head.zero_grad()
    logits = torch.nn.functional.linear(head.norm(head.act(head.dense(hidden))), emb[:1000], head.bias[:1000])
    direct = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    torch.testing.assert_close(grads[0][0], direct.detach())
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_reference_run_learns_and_writes_a_model(reference):
    out, manifest = reference
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert rows[0]["loss"] == pytest.approx(math.log(250002), abs=0.3)  # uniform at random init
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(0 <= r["mlm_accuracy"] <= 1 and r["tokens_per_s"] > 0 for r in rows)
    assert manifest["stage"] == "train-mlm" and manifest["extra"]["steps"] == 6
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "mgte" and config["rope_theta"] == 10000.0 and "auto_map" in config
    assert (out / "model" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4", "step-6"]


def test_kill_and_resume_reproduces_the_reference(shards, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "run"
    code = ("from tests.training.mlm.test_mlm import mlm_cfg; from training.mlm import run; "
            f"run(mlm_cfg({str(shards)!r}, {str(out)!r}))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", faults.ENV: "point=train_step,count=5,action=exit137"}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 137
    assert not (out / "_SUCCESS").exists()
    (out / "checkpoints" / "step-5.tmp").mkdir()  # as if the kill had hit a checkpoint save
    (out / "checkpoints" / "step-5.tmp" / "model.pt").write_bytes(b"partial")
    manifest = run(mlm_cfg(shards, out))
    assert not (out / "checkpoints" / "step-5.tmp").exists()
    assert manifest["extra"]["steps"] == 6
    assert losses(out) == losses(ref_out)  # exact on CPU
    a, b = load_file(out / "model" / "model.safetensors"), load_file(ref_out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_preempt_then_two_ray_workers_with_a_restart_equal_one_worker(shards, reference, tmp_path, monkeypatch,
                                                                     no_ray, request, caplog):
    """Rows 22, 23, 7 and data parallelism in one run: 1 local worker preempted (SIGTERM) at step 3;
    the same stage resumed on 2 Ray Train workers (gloo, re-sharded), rank 1 killed at step 5
    (max_failures=1) and restarted from the step-4 checkpoint; every loss equals the 1-worker run.
    The driver's log tells the retry: the rank that failed, its error, the step resumed from."""
    from training.loop import Preempted

    ref_out, _ = reference
    out = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=sigterm")
    with pytest.raises(Preempted, match="preempted"):
        run(mlm_cfg(shards, out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    request.getfixturevalue("local_ray")  # Ray only after the signal (see tests/conftest.py no_ray)
    once = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"point=train_step,count=2,action=exit137,once={once},rank=1")  # its 2nd step: 5
    faults._calls.clear()
    caplog.set_level(logging.INFO, logger="training.run_events")
    manifest = run(mlm_cfg(shards, out, "engine=ray", "scaling.num_workers=2", "scaling.max_failures=1",
                           "ray.num_cpus=2"))
    assert once.exists() and manifest["extra"]["num_workers"] == 2
    told = [r.getMessage() for r in caplog.records if r.name == "training.run_events"]
    assert told[0] == "Ray Train attempt 1: resumed from step 3", told
    # rank 0 may fail too, on the closed connection to rank 1: it is named after the lost rank
    assert re.match(r"Ray Train attempt 2: resumed from step 4 after rank 1 failed: ActorDiedError: ", told[-1]), told
    [retry] = manifest["extra"]["retries"]
    assert (retry["attempt"], retry["resumed_from"], retry["lost"]) == (2, 4, ["1"]) and "1" in retry["failed"]
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # never restarted from 0, nor from step-3 after the kill
    got, want = losses(out), losses(ref_out)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-4), step


def test_mlm8192_starts_from_the_2048_model_with_rope_160k(shards, reference, tmp_path):
    ref_out, _ = reference
    cfg = load_config(Config, CONFIGS / "mlm/tiny-8192.yaml",
                      [f"input=[{shards}]", f"output={tmp_path}", f"init={ref_out / 'model'}", *TEST_SETS[2:]])
    assert cfg.model.rope_theta == 160000.0
    module = MLMTask(cfg).build_model()
    assert module.mlm.config.rope_theta == 160000.0 and module.mlm.new.rotary.theta == 160000.0
    saved = load_file(ref_out / "model" / "model.safetensors")
    state = module.mlm.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_shipped_configs_carry_table8():
    """paper.yaml / paper-8192.yaml against Table 8 and 2.1 as the paper's text has them (tests/paper.py)."""
    from tests import paper

    t8 = paper.table8()
    two = load_config(Config, CONFIGS / "mlm/paper.yaml")
    eight = load_config(Config, CONFIGS / "mlm/paper-8192.yaml")
    for col, c in enumerate((two, eight)):
        o = c.loop.optim
        assert c.data.max_sequences == t8["Batch Size"][col] and o.lr == t8["Peak Learning Rate"][col]
        assert c.loop.max_steps == t8["Max Steps"][col] and c.model.rope_theta == t8["RoPE base"][col]
        assert (o.warmup_ratio, o.betas, o.eps) == (t8["Warm-up Ratio"][col], (t8["Adam β1"][col], t8["Adam β2"][col]),
                                                    t8["Adam ϵ"][col])
        assert (o.weight_decay, o.max_grad_norm) == (t8["Weight Decay"][col], t8["Gradient Clipping"][col])
        assert o.schedule == t8["Learning Rate Decay"][col].lower()
        assert t8["Precision"][col] == "PyTorch BF16 AMP" and c.loop.precision == "bf16"
        assert c.data.mlm_probability == int(paper.find(r"MLM probability is set to (\d+)%")[0]) / 100
        assert c.model.preset == "base" and t8["Hidden Size"][col] == 768 and t8["Number of Layers"][col] == 12
    for name in ("tiny", "tiny-8192"):
        load_config(Config, CONFIGS / f"mlm/{name}.yaml")
    from pipelines.mlm_shards import Config as ShardConfig

    assert load_config(ShardConfig, CONFIGS / "mlm-shards/paper.yaml").max_len == t8["Max Length"][0]
    s8 = load_config(ShardConfig, CONFIGS / "mlm-shards/paper-8192.yaml")
    assert (s8.max_len, s8.short_threshold) == (t8["Max Length"][1], t8["Max Length"][0])
    assert load_config(ShardConfig, CONFIGS / "mlm-shards/tiny-8192.yaml").max_len == 8192
