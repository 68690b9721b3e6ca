"""DeepSpeed ZeRO-2 through the generic loop on CPU (gloo): kill + resume reproduces the run."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="needs the optional deepspeed package")

CODE = """
import os, sys
from pathlib import Path
import torch.distributed as dist
from training.loop import LoopConfig, train_loop
from training.steppers import DeepSpeedConfig
from training.optim import OptimConfig
from tests.training.toy import ToyTask
stage, backend, precision = int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group(backend, rank=0, world_size=1)
cfg = LoopConfig(max_steps=6, log_every=1, ckpt_every=2, progress=False, tensorboard=False, precision=precision,
                 optim=OptimConfig(lr=0.05, warmup_ratio=0.1), deepspeed=DeepSpeedConfig(enabled=True, zero_stage=stage))
out = Path(sys.argv[1])
train_loop(ToyTask(), cfg, ckpt_dir=out / "checkpoints", output_dir=out)
"""


def _run(out: Path, port: int, fault: str | None = None, stage: int = 2, gpu: bool = False) -> int:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    if not gpu:
        env["DS_ACCELERATOR"] = "cpu"
    env.pop("MGTE_FAULT", None)
    if fault:
        env["MGTE_FAULT"] = fault
    args = [str(out), str(stage), "nccl" if gpu else "gloo", "bf16" if gpu else "fp32"]
    return subprocess.run([sys.executable, "-c", CODE, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900).returncode


def _kill_and_resume(tmp_path: Path, port: int, **kw) -> tuple[dict, dict]:
    assert _run(tmp_path / "ref", port, **kw) == 0
    ckpt = tmp_path / "ref" / "checkpoints" / "step-6"
    assert (ckpt / "deepspeed").is_dir() and (ckpt / "manifest.json").is_file()
    assert _run(tmp_path / "run", port + 1, "point=train_step,count=5,action=exit137", **kw) == 137
    assert _run(tmp_path / "run", port + 2, **kw) == 0
    ref = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")}
    got = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    return got, ref


def test_zero2_kill_and_resume(tmp_path):
    got, ref = _kill_and_resume(tmp_path, 29611)
    assert got == ref


@pytest.mark.skipif(not torch.cuda.is_available(), reason="docs/reliability.md row 25: needs a CUDA GPU (nccl, bf16)")
@pytest.mark.parametrize("stage", [1, 2])
def test_zero_on_gpu_kill_and_resume_reproduces_the_loss_curve(tmp_path, stage):
    got, ref = _kill_and_resume(tmp_path, 29621 + 3 * stage, stage=stage, gpu=True)
    assert got.keys() == ref.keys() == set(range(1, 7))
    assert got == pytest.approx(ref, rel=1e-5)


CPT_CODE = """
import json, sys
import torch
import torch.distributed as dist
from tests.training.cpt.test_cpt import tiny_cfg, write_pairs
from training import cpt
from model import MGTEConfig, MGTEModel, save_pretrained
tmp, deepspeed = __import__("pathlib").Path(sys.argv[1]), sys.argv[2] == "1"
if deepspeed:
    dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(0)
save_pretrained(MGTEModel(MGTEConfig.tiny(rope_theta=160_000.0)), tmp / "init")
sets = ["loop.deepspeed.enabled=true", "loop.deepspeed.zero_stage=1"] if deepspeed else []
cpt.run(tiny_cfg(tmp, [write_pairs(tmp / "pairs")], *sets, init=tmp / "init"))
"""


def test_cpt_cached_step_under_zero1_gives_the_losses_of_the_plain_run(tmp_path):
    """The cached-gradient step (several engine.backward calls per engine.step) under DeepSpeed
    ZeRO-1 on CPU: every step's loss equals the run without DeepSpeed."""
    losses = {}
    for name, ds in (("plain", "0"), ("zero1", "1")):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29621", "RANK": "0", "WORLD_SIZE": "1",
               "LOCAL_RANK": "0", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}
        env.pop("MGTE_FAULT", None)
        done = subprocess.run([sys.executable, "-c", CPT_CODE, str(tmp_path / name), ds], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        losses[name] = {r["step"]: r["loss"] for r in read_metrics(tmp_path / name / "out" / "metrics.jsonl")}
    assert sorted(losses["zero1"]) == [1, 2, 3, 4]
    for step, loss in losses["plain"].items():
        assert losses["zero1"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    assert (tmp_path / "zero1" / "out" / "checkpoints" / "step-4" / "deepspeed").is_dir()
