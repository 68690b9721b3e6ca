"""What a ``mgte train X`` stage does around its training loop, shared by the stages that use it.

A model stage's ``run(cfg)``: resolve its paths, check ``init`` before anything is written, open
its output (:class:`foundation.ledger.StageOutput`: a finished run is a no-op, a changed config
refuses), run :func:`training.ray_entry.run_training`, then write the manifest with the input
accounting and the last metrics. ``train_func(config)`` is what every Ray Train worker (or this
process, ``engine: local``) runs: the task on the shared loop, checkpoints in ``OUTPUT/checkpoints``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from foundation.config import config_to_dict, replace
from foundation.ledger import RUN_ONLY_KEYS, StageOutput, read_manifest
from training.loop import train_loop
from training.ray_entry import clear_stale_dirs, ray_reporter, run_training, stage_identity, worker_world


def resolve_paths(cfg):
    """``input`` (local paths), ``output`` and ``init`` (a local directory) made absolute, so every
    worker and the saved config name the same files."""
    from model.hf import absolute_if_local

    return replace(cfg, input=tuple(p if "://" in p else str(Path(p).resolve()) for p in cfg.input),
                   output=str(Path(cfg.output).resolve()), init=absolute_if_local(cfg.init))


def open_output(cfg, stage: str) -> tuple[StageOutput, dict | None]:
    """The stage output and, when this config already finished there, its manifest."""
    out = StageOutput(cfg.output, stage, stage_identity(cfg), exclude=RUN_ONLY_KEYS + ("scaling",))
    clear_stale_dirs(Path(cfg.output))
    return out, (read_manifest(cfg.output) if out.begin() else None)


def worker_main(config: dict, build_cfg: Callable[[dict], Any], make_task: Callable[[Any], Any]):
    """The body of a stage's ``train_func``: the task on the shared loop (rank 0 saves the model)."""
    local = bool(config.pop("_local", False))
    cfg = build_cfg(config)
    out = Path(cfg.output)
    result = train_loop(make_task(cfg), cfg.loop, ckpt_dir=out / "checkpoints", output_dir=out,
                        world=worker_world(), config=config_to_dict(cfg), report=None if local else ray_reporter)
    return result if local else None


def train(train_func: Callable[[dict], Any], cfg, out: StageOutput, name: str):
    """Ray Train (or this process) over ``train_func``; returns the local loop result or Ray's."""
    storage = cfg.scaling.storage_path or str(Path(cfg.output) / "ray")
    return run_training(train_func, config_to_dict(cfg), engine=cfg.engine, ray_cfg=cfg.ray, scaling=cfg.scaling,
                        storage_path=storage, name=f"{name}-{out.config_hash}",
                        ckpt_dir=Path(cfg.output) / "checkpoints")


def final_metrics(out: Path, result, keys: tuple[str, ...] = ("accuracy", "lr")) -> dict:
    """The last step's numbers: from the loop result (``engine: local``) and ``metrics.jsonl``."""
    from training.metrics import read_metrics

    rows = read_metrics(Path(out) / "metrics.jsonl")
    last = rows[-1] if rows else {}
    if hasattr(result, "step"):
        return {"step": result.step, "loss": result.loss, "nonfinite_steps": result.nonfinite_steps,
                "resumed_from": result.resumed_from, **{k: last.get(k) for k in keys}}
    return {k: last.get(k) for k in ("step", "loss", *keys, "nonfinite_skipped")}


def input_sizes(paths) -> list[dict]:
    """``[{path, size}]`` of the inputs (a directory: its files' total; a URL: null)."""
    def size(p: Path) -> int | None:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return None

    return [{"path": p, "size": size(Path(p))} for p in paths]


MODEL_OUTPUTS = {"model": ["model/"], "checkpoints": ["checkpoints/"], "metrics": ["metrics.jsonl"]}
