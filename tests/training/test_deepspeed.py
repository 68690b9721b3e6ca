"""DeepSpeed ZeRO-2 through the generic loop on CPU (gloo): kill + resume reproduces the run."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="needs the optional deepspeed package")

CODE = """
import os, sys
from pathlib import Path
import torch.distributed as dist
from training.loop import LoopConfig, DeepSpeedConfig, train_loop
from training.optim import OptimConfig
from tests.training.toy import ToyTask
dist.init_process_group("gloo", rank=0, world_size=1)
cfg = LoopConfig(max_steps=6, log_every=1, ckpt_every=2, progress=False, tensorboard=False,
                 optim=OptimConfig(lr=0.05, warmup_ratio=0.1), deepspeed=DeepSpeedConfig(enabled=True, zero_stage=2))
out = Path(sys.argv[1])
train_loop(ToyTask(), cfg, ckpt_dir=out / "checkpoints", output_dir=out)
"""


def _run(out: Path, port: int, fault: str | None = None) -> int:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "DS_ACCELERATOR": "cpu"}
    env.pop("MGTE_FAULT", None)
    if fault:
        env["MGTE_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", CODE, str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900).returncode


def test_zero2_kill_and_resume(tmp_path):
    assert _run(tmp_path / "ref", 29611) == 0
    ckpt = tmp_path / "ref" / "checkpoints" / "step-6"
    assert (ckpt / "deepspeed").is_dir() and (ckpt / "manifest.json").is_file()
    assert _run(tmp_path / "run", 29612, "point=train_step,count=5,action=exit137") == 137
    assert _run(tmp_path / "run", 29613) == 0
    ref = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")}
    got = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert got == ref
