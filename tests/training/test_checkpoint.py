import json
import random

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt


def _state(step=1):
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    return {"model": model.state_dict(), "step": step, "sampler": [{"pos": step}], "rng": [ckpt.rng_state()]}


def test_round_trip_and_manifest_last(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 3, _state(3), config={"a": 1})
    assert path.name == "step-3" and not (tmp_path / "step-3.tmp").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.pt", "step.pt", "sampler.pt", "rng.pt", "config.json"}
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 3 and state["config"] == {"a": 1} and state["sampler"] == [{"pos": 3}]
    torch.testing.assert_close(state["model"]["weight"], _state(3)["model"]["weight"])


def test_latest_ignores_tmp_and_unfinished(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _state(1), config={})
    ckpt.save_checkpoint(tmp_path, 2, _state(2), config={})
    (tmp_path / "step-9.tmp").mkdir()  # a save killed before its rename
    (tmp_path / "step-5").mkdir()  # renamed by hand, no manifest
    torch.save({}, tmp_path / "step-5" / "model.pt")
    assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "step-2"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = ckpt.save_checkpoint(tmp_path, 4, _state(4), config={})
    target = path / "model.pt"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    target.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="model.pt"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError, match="model.pt"):
        ckpt.resume_checkpoint(tmp_path)


def test_refuses_non_finite(tmp_path):
    state = _state(1)
    state["model"]["bias"][0] = float("nan")
    with pytest.raises(ckpt.CheckpointError, match="model.bias"):
        ckpt.save_checkpoint(tmp_path, 1, state, config={})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_non_finite_check_finds_inf_and_nan_and_passes_huge_finite_values(dtype):
    big = torch.finfo(dtype).max
    huge = torch.full((4,), big, dtype=dtype)  # finite, but their sum overflows
    assert ckpt._nonfinite_path({"m": {"w": huge, "b": -huge}}) is None
    for bad in (float("inf"), float("-inf"), float("nan")):
        t = torch.zeros(1000, dtype=dtype)
        t[777] = bad
        assert ckpt._nonfinite_path({"m": {"w": huge, "b": t}}) == "m.b"
    mixed = torch.tensor([float("inf"), float("-inf")], dtype=dtype)  # opposite infinities: the sum is NaN
    assert ckpt._nonfinite_path([mixed]) == "0"


def test_keep_last_prunes_oldest(tmp_path):
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, step, _state(step), config={}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 4]


def test_kill_during_save_keeps_previous(tmp_path):
    import subprocess
    import sys

    ckpt.save_checkpoint(tmp_path, 1, _state(1), config={})
    code = ("import torch; from training import checkpoint as c; "
            f"c.save_checkpoint({str(tmp_path)!r}, 2, {{'model': torch.nn.Linear(3, 2).state_dict(), 'step': 2}}, config={{}})")
    env = {"MGTE_FAULT": "point=ckpt_after_shard,count=1,action=exit137"}
    import os

    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=str(_repo()))
    assert proc.returncode == 137
    assert (tmp_path / "step-2.tmp").is_dir() and not (tmp_path / "step-2").exists()
    assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "step-1"


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = ckpt.save_checkpoint(tmp_path, 1, {"rng": ckpt.rng_state()}, config={})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.seed_everything(99)
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
