"""Atomic, verified training checkpoints (docs/reliability.md rule 5).

A checkpoint is a directory ``step-N/`` under the run's checkpoint directory::

    step-N/
      model.pt  optimizer.pt  ...   # one torch file per top-level key of the saved state
      config.json                   # the resolved config of the run
      manifest.json                 # written LAST: step, sha256 and size of every other file

It is written as ``step-N.tmp/`` and renamed once every file is on disk, and the manifest goes in
last, so a directory without a manifest (or a ``.tmp`` one) is never used. Loading checks every
file's sha256 and names the first one that does not match. A state holding a non-finite float
tensor is refused (rule 6): a NaN can never be resumed from.

The state is a plain dict: ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``step``,
``sampler``, ``rng`` (one entry per rank) and whatever else the trainer wants back. Files are
read with ``torch.load(weights_only=True)``, so only tensors and plain Python containers go in
(:func:`rng_state` converts numpy's state accordingly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from foundation.faults import fault_point
from foundation.errors import MgteError
from training import ckpt_remote as remote
from training.ckpt_remote import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CONFIG = "config.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(MgteError):
    """A checkpoint that cannot be written or trusted; the message names the file."""


# -- saving ------------------------------------------------------------------------------------


def _nonfinite_path(obj: Any, path: str = "") -> str | None:
    """The key path of the first floating tensor with a NaN/inf in ``obj``, else None."""
    if isinstance(obj, torch.Tensor):
        # a NaN or inf makes the float32 sum non-finite (one pass, no mask tensor); a non-finite sum of
        # finite values (overflow) is told apart by the exact, slower check
        if obj.is_floating_point() and obj.numel() and not bool(torch.isfinite(obj.sum(dtype=torch.float32))) \
                and not bool(torch.isfinite(obj).all()):
            return path or "<tensor>"
        return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path or "<float>")
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _nonfinite_path(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def step_dir_name(step: int) -> str:
    return f"step-{step}"


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict, *, config: dict,
                    keep_last: int | None = None,
                    write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``state`` as ``ckpt_dir/step-<step>/`` atomically; return the final path.

    Every top-level key of ``state`` becomes ``<key>.pt``. ``write_extra(tmp_dir)`` may add files
    of its own (e.g. a DeepSpeed engine's shards) before the manifest; they are hashed too.
    ``keep_last`` prunes older verified-or-not ``step-*`` directories beyond the newest N.
    """
    bad = _nonfinite_path(state)
    if bad is not None:
        raise CheckpointError(f"refusing to save step {step}: non-finite values in '{bad}'")
    if remote.is_url(ckpt_dir):  # staged here, uploaded with the manifest last (training.ckpt_remote)
        stage = remote.staging_dir()
        try:
            local = save_checkpoint(stage, step, state, config=config, write_extra=write_extra)
            final_url = remote.join(ckpt_dir, step_dir_name(step))
            remote.upload(local, final_url)
        finally:
            remote.drop_staging(stage)
        log.info("checkpoint saved: %s", final_url)
        if keep_last:
            prune_checkpoints(ckpt_dir, keep_last)
        return final_url
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / step_dir_name(step)
    tmp = ckpt_dir / (step_dir_name(step) + ".tmp")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for key, value in state.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(key)):
                raise CheckpointError(f"state key {key!r} cannot be a file name")
            torch.save(value, tmp / f"{key}.pt")
            fault_point("ckpt_after_shard", str(tmp / f"{key}.pt"))
        _fsync_write(tmp / CONFIG, json.dumps(config, indent=2, sort_keys=True, default=str).encode())
        if write_extra is not None:
            write_extra(tmp)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest = {"step": int(step), "files": files, "keys": sorted(state), "created": time.time()}
        fault_point("ckpt_before_manifest", str(tmp))
        _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        if final.exists():  # the same step saved again (e.g. a preemption right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {tmp}: {exc.strerror or exc}") from exc
    log.info("checkpoint saved: %s", final)
    if keep_last:
        prune_checkpoints(ckpt_dir, keep_last)
    return final


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` directory (``.tmp`` excluded), newest first."""
    if remote.is_url(ckpt_dir):
        return remote.list_steps(ckpt_dir)
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> list[Path]:
    removed = []
    if remote.is_url(ckpt_dir):
        for _, url in list_checkpoints(ckpt_dir)[keep_last:]:
            remote.remove(url)
            removed.append(url)
        return removed
    for _, path in list_checkpoints(ckpt_dir)[keep_last:]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for stale in Path(ckpt_dir).glob("step-*.tmp"):  # a save killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    return removed


# -- verifying and loading ---------------------------------------------------------------------


def verify_checkpoint(path: str | Path) -> dict:
    """The manifest of a complete checkpoint; CheckpointError naming the first bad file."""
    if remote.is_url(path):
        local = remote.fetch(path)
        try:
            return verify_checkpoint(local)
        except CheckpointError as exc:
            raise CheckpointError(f"{path} (fetched to {local}): {exc}") from None
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST}: the save did not finish")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest: {exc}") from None
    for rel, meta in sorted(files.items()):
        file = path / rel
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in {manifest_path} but missing")
        size = file.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"{file}: size {size} != {meta['bytes']} in the manifest (truncated?)")
        if sha256_file(file) != meta["sha256"]:
            raise CheckpointError(f"{file}: sha256 mismatch with {manifest_path} (corrupted)")
    return manifest


def resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint a run resumes from (``loop.resume: auto``).

    The newest one that verifies; newer damaged ones are named in a warning and left in place.
    None when there is no ``step-N`` directory at all (a first run). When some exist but none
    verifies: CheckpointError naming the newest damaged file and how to start over, never a
    silent restart from step 0 over the evidence (docs/reliability.md rows 10, 28).
    """
    damaged: list[CheckpointError] = []
    for _, path in list_checkpoints(ckpt_dir):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
            damaged.append(exc)
            continue
        if damaged:
            log.warning("resuming from %s, the newest checkpoint that verifies (%d newer damaged)", path, len(damaged))
        return path
    if damaged:
        raise CheckpointError(
            f"no checkpoint in {ckpt_dir} verifies ({len(damaged)} damaged; newest: {damaged[0]}); restore it, "
            f"or start over at step 0 with --set loop.resume=fresh (moves them to "
            f"{Path(ckpt_dir).name}{DISCARDED}<time>/)")
    return None


DISCARDED = ".discarded-"


def discard_checkpoints(ckpt_dir: str | Path) -> Path | None:
    """Move ``ckpt_dir`` aside to ``<ckpt_dir>.discarded-<time>/`` (kept as evidence); its new path."""
    if remote.is_url(ckpt_dir):
        if not remote.has_any(ckpt_dir):
            return None
        target = remote.move_aside(ckpt_dir, DISCARDED)
        log.warning("loop.resume=fresh: moved the old checkpoints to %s; starting at step 0", target)
        return target
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = ckpt_dir.with_name(f"{ckpt_dir.name}{DISCARDED}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = ckpt_dir.with_name(f"{ckpt_dir.name}{DISCARDED}{stamp}-{n}")
    try:
        os.replace(ckpt_dir, target)
    except OSError as exc:
        raise CheckpointError(f"cannot move {ckpt_dir} aside to {target}: {exc.strerror or exc}") from exc
    log.warning("loop.resume=fresh: moved the old checkpoints to %s; starting at step 0", target)
    return target


RESUME_MODES = ("auto", "fresh")


def prepare_resume(ckpt_dir: str | Path | None, mode: str) -> Path | None:
    """Apply ``loop.resume``: ``fresh`` moves old checkpoints aside (None); ``auto`` -> :func:`resume_checkpoint`."""
    if mode not in RESUME_MODES:
        raise CheckpointError(f"loop.resume must be one of {RESUME_MODES}, got {mode!r}")
    if ckpt_dir is None:
        return None
    if mode == "fresh":
        discard_checkpoints(ckpt_dir)
        return None
    return resume_checkpoint(ckpt_dir)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu", verify: bool = True) -> dict:
    """The saved state dict (plus ``config`` and ``step``); verifies every sha256 first.

    A URL is fetched into this node's cache and always verified there."""
    if remote.is_url(path):
        verify_checkpoint(path)
        path, verify = remote.fetch(path), False
    path = Path(path)
    manifest = verify_checkpoint(path) if verify else json.loads((path / MANIFEST).read_text())
    state: dict[str, Any] = {}
    for key in manifest["keys"]:
        file = path / f"{key}.pt"
        try:
            state[key] = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as exc:  # a pickle/zip error: the file is not a checkpoint file we wrote
            raise CheckpointError(f"{file}: cannot be loaded: {exc}") from exc
    state["config"] = json.loads((path / CONFIG).read_text())
    state.setdefault("step", manifest["step"])
    return state


# -- RNG state -----------------------------------------------------------------------------------


def rng_state() -> dict:
    """Python, numpy (global) and torch (CPU, CUDA) RNG states as weights_only-loadable data."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": np_state["bit_generator"],
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
