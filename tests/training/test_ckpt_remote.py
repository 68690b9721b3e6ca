"""Checkpoints at an fsspec URL: the same save / verify / resume / refuse behaviour as a local
directory, through the upload path (manifest last) and the per-node fetch cache."""

from __future__ import annotations

import shutil

import pytest
import torch

from training import checkpoint as ckpt
from training import ckpt_remote as remote


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step}


def test_save_list_load_prune(tmp_path):
    url = (tmp_path / "store" / "checkpoints").as_uri()  # file:///...: the remote code path
    for step in (2, 4, 6):
        saved = ckpt.save_checkpoint(url, step, _state(step), config={"a": 1}, keep_last=2)
        assert saved == f"{url}/step-{step}"
    assert [s for s, _ in ckpt.list_checkpoints(url)] == [6, 4]
    assert not list((tmp_path / "store" / "checkpoints").glob("*.tmp"))
    where = ckpt.resume_checkpoint(url)
    assert where == f"{url}/step-6"
    state = ckpt.load_checkpoint(where)
    assert torch.equal(state["model"]["w"], torch.full((3,), 6.0)) and state["config"] == {"a": 1}
    assert state["step"] == 6


def test_unfinished_upload_is_skipped_and_damage_named(tmp_path):
    url = (tmp_path / "checkpoints").as_uri()
    ckpt.save_checkpoint(url, 1, _state(1), config={})
    ckpt.save_checkpoint(url, 2, _state(2), config={})
    (tmp_path / "checkpoints" / "step-2" / "manifest.json").unlink()  # killed before the manifest
    assert ckpt.resume_checkpoint(url) == f"{url}/step-1"
    victim = tmp_path / "checkpoints" / "step-1" / "model.pt"
    victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")  # byte-flipped in storage
    assert ckpt.resume_checkpoint(url) == f"{url}/step-1"  # this node's verified copy still serves
    shutil.rmtree(remote.fetch(f"{url}/step-1"))  # another node: nothing cached
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint in file://.* verifies \(2 damaged"):
        ckpt.resume_checkpoint(url)
    with pytest.raises(ckpt.CheckpointError, match=r"step-1 \(fetched to .*model.pt: sha256 mismatch"):
        ckpt.verify_checkpoint(f"{url}/step-1")
    moved = ckpt.prepare_resume(url, "fresh")
    assert moved is None and ckpt.list_checkpoints(url) == []
    assert list(tmp_path.glob("checkpoints.discarded-*"))


def test_fetch_cache_refetches_what_does_not_match(tmp_path):
    url = (tmp_path / "checkpoints").as_uri()
    ckpt.save_checkpoint(url, 3, _state(3), config={})
    local = remote.fetch(f"{url}/step-3")
    (local / "model.pt").write_bytes(b"\0" * (local / "model.pt").stat().st_size)  # same size, stale bytes
    ckpt.save_checkpoint(url, 3, _state(30), config={})  # the same step saved again (after a preemption)
    assert torch.equal(ckpt.load_checkpoint(f"{url}/step-3")["model"]["w"], torch.full((3,), 30.0))


def test_unknown_protocol_is_one_line(tmp_path):
    with pytest.raises(remote.RemoteCheckpointError, match="nosuchproto://x"):
        ckpt.list_checkpoints("nosuchproto://x")


def test_loop_killed_then_resumed_from_url_storage_matches_reference(tmp_path):
    """The loop with ``loop.checkpoint_dir`` at a URL: killed at step 7, rerun, resumes from the
    URL's step 4 and ends with the losses and parameters of an uninterrupted local run."""
    import dataclasses
    import os
    import subprocess
    import sys

    from foundation import faults
    from tests.training.test_loop import CFG, REPO, _losses, _params, _run

    ref = tmp_path / "ref"
    _run(ref)
    run = tmp_path / "run"
    url = (tmp_path / "shared" / "ckpts").as_uri()
    code = ("import dataclasses; from pathlib import Path; from tests.training.test_loop import _run, CFG; "
            f"_run(Path({str(run)!r}), dataclasses.replace(CFG, checkpoint_dir={url!r}))")
    env = {**os.environ, faults.ENV: "point=train_step,count=7,action=exit137"}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 137
    assert not (run / "checkpoints").exists()  # the one copy is at the URL
    assert [s for s, _ in ckpt.list_checkpoints(url)] == [4]
    task, result = _run(run, dataclasses.replace(CFG, checkpoint_dir=url))
    assert result.resumed_from == 4 and task.data.seen == list(range(4, 12))
    assert _losses(run) == _losses(ref)
    for name, value in _params(ref).items():
        assert torch.equal(value, _params(run)[name]), name
