"""DeepSpeed ZeRO with 2 ranks on CPU (Ray Train, gloo): CPT's cached-gradient step under ZeRO-2
(partitioned gradients accumulated over the step's chunks, reduced once) and MLM under ZeRO-1 give,
step by step, the losses of the same 2-rank run with DDP and no DeepSpeed. With 2 ranks ZeRO really
partitions: each rank holds and steps half of the optimizer state (ZeRO-1) and of the reduced
gradients (ZeRO-2). ZeRO-1 under the cached step (1 rank) is in test_deepspeed.py."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="needs the optional deepspeed package")

CODE = """
import json, sys
from pathlib import Path
import torch
from foundation.config import load_config
from model import MGTEConfig, MGTEModel, save_pretrained
from training import cpt, mlm
from training.metrics import read_metrics
from tests.training.cpt.test_cpt import tiny_cfg, write_pairs
from tests.training.mlm.test_mlm import CONFIGS, TEST_SETS
from tests.pipelines.test_mlm_shards import clean_doc_rows, write_clean_docs
from pipelines.mlm_shards import Config as ShardConfig, run as run_shards

tmp = Path(sys.argv[1])
torch.manual_seed(0)
save_pretrained(MGTEModel(MGTEConfig.tiny(rope_theta=160_000.0)), tmp / "init")
pairs = write_pairs(tmp / "pairs")
files = write_clean_docs(tmp / "docs", [clean_doc_rows(40, long_every=9), clean_doc_rows(40, start=40)])
run_shards(load_config(ShardConfig, CONFIGS / "mlm-shards/tiny.yaml",
                       [f"input=[{', '.join(map(str, files))}]", f"output={tmp / 'shards'}", "max_len=64",
                        "progress=false"]))
ranks = ["engine=ray", "scaling.num_workers=2", "scaling.cpus_per_worker=1", "ray.num_cpus=2"]
zero = {1: ["loop.deepspeed.enabled=true", "loop.deepspeed.zero_stage=1"],
        2: ["loop.deepspeed.enabled=true", "loop.deepspeed.zero_stage=2"]}
losses = {}
for name, sets in (("plain", []), ("zero2", zero[2])):
    cpt.run(tiny_cfg(tmp / ("cpt-" + name), [pairs], *ranks, *sets, init=tmp / "init"))
    losses["cpt-" + name] = {r["step"]: r["loss"] for r in read_metrics(tmp / ("cpt-" + name) / "out" / "metrics.jsonl")}
for name, sets in (("plain", []), ("zero1", zero[1])):
    out = tmp / ("mlm-" + name)
    mlm.run(load_config(mlm.Config, CONFIGS / "mlm/tiny.yaml",
                        [f"input=[{tmp / 'shards'}]", f"output={out}", *TEST_SETS, *ranks, *sets]))
    losses["mlm-" + name] = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}
print("LOSSES", json.dumps(losses))
"""


def test_zero_on_two_ranks_equals_ddp(tmp_path):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}
    env.pop("MGTE_FAULT", None)
    done = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    losses = {run: {int(step): loss for step, loss in by_step.items()}
              for run, by_step in json.loads(done.stdout.split("LOSSES ", 1)[1].splitlines()[0]).items()}
    for kind, stage, steps in (("cpt", "zero2", 4), ("mlm", "zero1", 6)):
        plain, got = losses[f"{kind}-plain"], losses[f"{kind}-{stage}"]
        assert sorted(plain) == list(range(1, steps + 1)), kind
        assert sorted(got) == sorted(plain), (kind, stage)
        for step, loss in plain.items():
            assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (kind, stage, step)
    # the engine's partitioned state is in the one checkpoint copy
    assert (tmp_path / "cpt-zero2" / "out" / "checkpoints" / "step-4" / "deepspeed").is_dir()
    assert any((tmp_path / "mlm-zero1" / "checkpoints").glob("step-*/deepspeed"))
