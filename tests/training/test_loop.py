"""The generic loop on a toy task: resume after kill, NaN skipping, SIGTERM, world-size changes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foundation import faults
from training.checkpoint import CheckpointError, load_checkpoint, resume_checkpoint
from training.distributed import World
from training.loop import LoopConfig, NonFiniteLoss, Preempted, train_loop
from training.metrics import read_metrics
from training.optim import OptimConfig

from tests.training.toy import ToyTask

REPO = Path(__file__).resolve().parents[2]
CFG = LoopConfig(max_steps=12, log_every=1, ckpt_every=4, progress=False, tensorboard=False,
                 optim=OptimConfig(lr=0.05, warmup_ratio=0.1))


def _run(tmp: Path, cfg=CFG, **kw):
    task = ToyTask()
    result = train_loop(task, cfg, ckpt_dir=tmp / "checkpoints", output_dir=tmp, config={"toy": 1}, **kw)
    return task, result


def _losses(tmp: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(tmp / "metrics.jsonl")}  # last row per step wins


def _params(tmp: Path):
    return torch.load(tmp / "model" / "model.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    task, result = _run(tmp)
    return tmp, task, result


def test_reference_learns(reference):
    tmp, task, result = reference
    losses = _losses(tmp)
    assert result.step == 12 and task.data.seen == list(range(12))
    assert losses[12] < 0.5 * losses[1]
    assert [s for s in sorted(losses)] == list(range(1, 13))
    assert resume_checkpoint(tmp / "checkpoints").name == "step-12"
    row = read_metrics(tmp / "metrics.jsonl")[-1]
    assert {"loss", "abs_err", "lr", "tokens_per_s", "grad_norm"} <= set(row)


def test_kill_and_resume_reproduces_reference(reference, tmp_path):
    ref_dir, _, _ = reference
    code = ("from pathlib import Path; from tests.training.test_loop import _run; "
            f"_run(Path({str(tmp_path)!r}))")
    env = {**os.environ, faults.ENV: "point=train_step,count=7,action=exit137"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env)
    assert proc.returncode == 137
    assert resume_checkpoint(tmp_path / "checkpoints").name == "step-4"
    task, result = _run(tmp_path)
    assert result.resumed_from == 4 and task.data.seen == list(range(4, 12))
    assert _losses(tmp_path) == _losses(ref_dir)
    for name, value in _params(ref_dir).items():
        assert torch.equal(value, _params(tmp_path)[name]), name


def test_nan_step_is_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=nan")
    _, result = _run(tmp_path)
    assert result.step == 12 and result.nonfinite_steps == 1
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[2]["loss"] == "nan" and rows[2]["nonfinite_skipped"] == 1
    state = load_checkpoint(resume_checkpoint(tmp_path / "checkpoints"))
    assert state["loop"]["nonfinite_total"] == 1


def test_k_nan_in_a_row_abort(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, ";".join(f"point=train_step,count={c},action=nan" for c in (6, 7, 8)))
    with pytest.raises(NonFiniteLoss, match="3 non-finite"):
        _run(tmp_path, LoopConfig(**{**_fields(CFG), "max_nonfinite_in_row": 3}))
    assert resume_checkpoint(tmp_path / "checkpoints").name == "step-4"


def test_sigterm_checkpoints_then_resume_matches(reference, tmp_path, monkeypatch, no_ray):
    ref_dir, _, _ = reference
    monkeypatch.setenv(faults.ENV, "point=train_step,count=6,action=sigterm")
    with pytest.raises(Preempted, match="preempted"):
        _run(tmp_path)
    assert resume_checkpoint(tmp_path / "checkpoints").name == "step-6"
    monkeypatch.delenv(faults.ENV)
    _, result = _run(tmp_path)
    assert result.resumed_from == 6
    assert _losses(tmp_path) == _losses(ref_dir)


def test_world_size_change_refused_unless_reshardable(tmp_path):
    cfg = LoopConfig(**{**_fields(CFG), "max_steps": 4})
    train_loop(ToyTask(reshardable=False), cfg, ckpt_dir=tmp_path / "c", output_dir=tmp_path)
    more = LoopConfig(**{**_fields(CFG), "max_steps": 6})
    with pytest.raises(CheckpointError, match="written by 1 workers but this run has 2"):
        train_loop(ToyTask(reshardable=False), more, ckpt_dir=tmp_path / "c", world=World(0, 2))
    task = ToyTask(reshardable=True)
    result = train_loop(task, more, ckpt_dir=tmp_path / "c", world=World(0, 2))
    assert result.resumed_from == 4 and task.data.seen == [4, 5]


def _fields(cfg):
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


# -- one copy of each checkpoint; refuse when none verifies; start over only when asked (rows 10, 28) --


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_every_checkpoint_damaged_refuses_then_fresh_starts_over(tmp_path):
    cfg = LoopConfig(**{**_fields(CFG), "max_steps": 8})
    _run(tmp_path, cfg)
    for name in ("step-4", "step-8"):
        _flip(tmp_path / "checkpoints" / name / "model.pt")
    before = {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError) as err:
        _run(tmp_path, cfg)
    message = str(err.value)
    assert "\n" not in message and "step-8/model.pt" in message and "sha256 mismatch" in message
    assert "loop.resume=fresh" in message
    assert {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()} == before  # evidence kept
    fresh = LoopConfig(**{**_fields(cfg), "resume": "fresh"})
    task, result = _run(tmp_path, fresh)
    assert result.resumed_from is None and result.step == 8 and task.data.seen == list(range(8))
    (discarded,) = tmp_path.glob("checkpoints.discarded-*")
    assert sorted(p.name for p in discarded.iterdir()) == ["step-4", "step-8"]
    assert resume_checkpoint(tmp_path / "checkpoints").name == "step-8"


def test_newer_damaged_checkpoint_resumes_from_the_older_verified_one(tmp_path, caplog):
    cfg = LoopConfig(**{**_fields(CFG), "max_steps": 8})
    _run(tmp_path, cfg)
    _flip(tmp_path / "checkpoints" / "step-8" / "model.pt")
    more = LoopConfig(**{**_fields(CFG), "max_steps": 10})
    with caplog.at_level("WARNING"):
        task, result = _run(tmp_path, more)
    assert result.resumed_from == 4 and task.data.seen == list(range(4, 10))
    assert any("step-8/model.pt" in r.getMessage() for r in caplog.records)


def _record_resume(config: dict) -> dict:
    config["seen_resume"].append(config["loop"]["resume"])
    return config


def test_run_training_applies_fresh_once_in_the_driver(tmp_path):
    """Workers (and a Ray Train restart) always get `auto`: only the driver moves checkpoints aside."""
    from foundation.config import RayConfig
    from training.ray_entry import ScalingConfig, run_training

    _run(tmp_path, LoopConfig(**{**_fields(CFG), "max_steps": 4}))
    seen: list = []
    run_training(_record_resume, {"loop": {"resume": "fresh", "max_steps": 4}, "seen_resume": seen}, engine="local",
                 ray_cfg=RayConfig(), scaling=ScalingConfig(), storage_path=tmp_path / "ray", name="t",
                 ckpt_dir=tmp_path / "checkpoints")
    assert seen == ["auto"] and not (tmp_path / "checkpoints").exists()
    assert len(list(tmp_path.glob("checkpoints.discarded-*"))) == 1


def test_run_training_refuses_when_every_checkpoint_is_damaged(tmp_path):
    """Checkpoints only under OUTPUT/checkpoints; when every one fails verification the driver refuses
    naming the newest damaged file, before any worker starts (the same call precedes Ray Train's
    launch; a Ray Train run keeping one copy of each checkpoint is held by test_cpt.py's Ray test)."""
    from foundation.config import RayConfig
    from tests.training.toy import toy_train_func
    from training.ray_entry import ScalingConfig, run_training

    def launch():
        return run_training(toy_train_func, {"max_steps": 4, "ckpt_every": 2, "out": str(tmp_path)}, engine="local",
                            ray_cfg=RayConfig(num_cpus=2), scaling=ScalingConfig(), storage_path=tmp_path / "ray",
                            name="toy", ckpt_dir=tmp_path / "checkpoints")

    launch()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    for name in ("step-2", "step-4"):
        _flip(tmp_path / "checkpoints" / name / "model.pt")
    with pytest.raises(CheckpointError, match="step-4/model.pt"):
        launch()
