"""The model-stage contract: what every ``mgte train X`` does around its training loop, in one place.

A model stage declares its config (derived from :class:`ModelStageConfig`, the keys every model
stage shares), its task (:mod:`training.task`) and its input reader, as a :class:`ModelStage`;
its ``run(cfg)`` is :func:`run_model_stage`, which owns the rest, in this order:

1. resolve paths: ``input``, ``output`` and a local ``init`` made absolute (every worker and the
   saved config name the same files);
2. check ``init`` before anything is written (:func:`training.model_builder.check_init`: ``random``
   or null, or an encoder that resolves, whose ``config.json`` reads and whose files match its
   ``checksums.json`` unless ``verify_model: false``; an empty ``init`` is refused);
3. begin the output (:class:`foundation.ledger.StageOutput`): a changed config refuses, a killed
   run's half-written checkpoint or model directory is removed;
4. pin the input by content, as the data stages do (:func:`foundation.ledger.describe_inputs` of
   the files the input names, see :func:`input_files`): a rerun over a changed upstream output
   refuses in one line naming the files (:class:`foundation.errors.StageConflict`, exit 2), a
   finished run or an interrupted one alike. ``--set on_input_change=redo`` instead moves the old
   run aside (checkpoints, metrics, model -> ``OUTPUT/discarded-<time>/``, nothing deleted) and
   trains from step 0 on the new input. A finished run over the pinned input is a no-op;
5. read the input with its accounting (``read(cfg)`` -> :class:`ModelInput`);
6. train on Ray Train or in this process (:func:`training.ray_entry.run_training`); every worker
   runs :func:`worker_main`: the task on the shared loop, checkpoints in ``OUTPUT/checkpoints``;
   a Ray Train retry (a worker failed, the workers resumed from a checkpoint) is logged here, in
   the driver, from ``OUTPUT/_events.jsonl`` (:mod:`training.run_events`);
7. write the manifest: counts (input = kept + dropped + quarantined), dropped reasons, inputs with
   sizes, outputs, the last metrics, Ray Train's retries of this launch (``extra.retries``: attempt,
   step resumed from, failed rank -> error; :mod:`training.run_events`) and the stage's extras.

A new model stage is a config, a task and a reader::

    @frozen
    class Config(ModelStageConfig):
        temperature: float = 0.01
        data: DataConfig = DataConfig()

    STAGE = ModelStage("train-x", "x", Config, XTask, read_input)

    def run(cfg: Config) -> dict:
        return run_model_stage(STAGE, cfg)
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal

from foundation.config import RayConfig, build, config_to_dict, frozen, replace
from foundation.errors import MgteError, StageConflict
from foundation.ledger import RUN_ONLY_KEYS, StageOutput, describe_inputs, output_lock, read_manifest
from training.checkpoint import discard_checkpoints
from training.loop import LoopConfig, checkpoint_location, train_loop
from training.model_builder import RANDOM_INIT, ModelConfig, check_init
from training.ray_entry import (ScalingConfig, clear_stale_dirs, ray_reporter, run_training, stage_identity,
                                worker_world)
from training.run_events import EVENTS, read_retries, record_start

log = logging.getLogger(__name__)


@frozen
class ModelStageConfig:
    """The keys every model stage shares. A stage's ``Config`` derives from it, adds its own
    sections and may give a field another default (its ``model`` preset, its ``loop``)."""

    input: tuple[str, ...] = ()  # the upstream stage output(s) or files the stage reads
    output: str | None = None
    # model directory or HF encoder name to start from; `random` (or null) = random init from `model`
    init: str | None = None
    verify_model: bool = True  # check init's files against its checksums.json (mgte-written models) on load
    tokenizer: str = "FacebookAI/xlm-roberta-base"  # used when `init` has no tokenizer files
    model: ModelConfig = ModelConfig()
    loop: LoopConfig = LoopConfig()
    engine: Literal["ray", "local"] = "ray"  # Ray Train, or this process (one worker)
    ray: RayConfig = RayConfig()
    scaling: ScalingConfig = ScalingConfig()
    # a rerun over a changed input: refuse naming the files, or move the old run aside and start over
    on_input_change: Literal["refuse", "redo"] = "refuse"


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """What a stage's reader returns: the input accounting, manifest extras, and the config to
    train with (``None``: as given; the TRM sets ``loop.max_steps`` from ``epochs``)."""

    counts: dict
    dropped_by_reason: dict
    extra: dict = dataclasses.field(default_factory=dict)
    cfg: Any = None


def epochs_to_steps(cfg, batches_per_epoch: int) -> tuple[Any, dict]:
    """``cfg`` with ``loop.max_steps`` = ``epochs`` x ``batches_per_epoch`` (at least 1) and the
    manifest's record of it (the TRM and the reranker: "10 epochs")."""
    steps = max(1, math.ceil(cfg.epochs * batches_per_epoch))
    return replace(cfg, loop=replace(cfg.loop, max_steps=steps)), {"epochs": cfg.epochs, "max_steps": steps,
                                                                    "batches_per_epoch": int(batches_per_epoch)}


@dataclasses.dataclass(frozen=True)
class ModelStage:
    """A model stage as the contract runs it.

    ``name``: the stage in manifests (``train-cpt``); ``short``: its Ray Train run name; ``config``:
    its config class (the workers rebuild the config from a dict); ``task(cfg)``: the task the loop
    trains; ``read(cfg)``: the input read with accounting (fail fast, before any worker starts);
    ``extra(cfg, family, output)``: manifest extras known after training; ``final_keys``: the
    metrics of the last step kept in ``extra.final``."""

    name: str
    short: str
    config: type
    task: Callable[[Any], Any]
    read: Callable[[Any], ModelInput]
    extra: Callable[[Any, str | None, Path], dict] | None = None
    final_keys: tuple[str, ...] = ("accuracy", "lr")

    @property
    def train_func(self) -> Callable[[dict], Any]:
        """What every Ray Train worker (or this process, ``engine: local``) runs."""
        return functools.partial(worker_main, self)


MODEL_OUTPUTS = {"model": ["model/"], "checkpoints": ["checkpoints/"], "metrics": ["metrics.jsonl"]}
RUN_PRODUCTS = ("model", "metrics.jsonl", "sparsity.jsonl", "tensorboard", EVENTS)  # set aside on a redo


def run_model_stage(spec: ModelStage, cfg) -> dict:
    """Steps 1-7 of the module docstring; returns the manifest."""
    cfg = resolve_paths(cfg)
    family = check_init(cfg.model, cfg.init, verify=cfg.verify_model)  # before the output or any worker starts
    with output_lock(cfg.output):  # one writer per output, before anything is touched
        return _run_locked(spec, cfg, family)


def _run_locked(spec: ModelStage, cfg, family: str | None) -> dict:
    out = StageOutput(cfg.output, spec.name, stage_identity(cfg), exclude=RUN_ONLY_KEYS + ("scaling",))
    root = Path(cfg.output)
    clear_stale_dirs(root)
    done = out.begin()
    entries = describe_inputs(input_files(cfg.input))
    if check_inputs(out, entries, cfg):
        done = False
    if done:
        return read_manifest(root)
    data = spec.read(cfg)  # fail fast on bad input, before the input is pinned or a worker starts
    cfg = data.cfg if data.cfg is not None else cfg
    out.repin_inputs(entries)
    result = run_training(spec.train_func, config_to_dict(cfg), engine=cfg.engine, ray_cfg=cfg.ray,
                          scaling=cfg.scaling, storage_path=cfg.scaling.storage_path or str(root / "ray"),
                          name=f"{spec.short}-{out.config_hash}", ckpt_dir=root / "checkpoints", events=root / EVENTS)
    extra = spec.extra(cfg, family, root) if spec.extra is not None else {}
    final = final_metrics(root, result, spec.final_keys)
    write_model_card(spec, cfg, out, data, final)
    return out.finish(
        counts=data.counts, dropped_by_reason=data.dropped_by_reason, inputs=input_sizes(cfg.input),
        outputs=MODEL_OUTPUTS,
        extra={"engine": cfg.engine, "num_workers": cfg.scaling.num_workers, "init": cfg.init, **data.extra,
               **extra, "final": final,
               "retries": read_retries(root / EVENTS) if cfg.engine == "ray" else []})


def write_model_card(spec: ModelStage, cfg, out: StageOutput, data: ModelInput, final: dict) -> None:
    """``OUTPUT/model/README.md`` (:mod:`model.card`): how to load it, and what it was built from."""
    from foundation.ledger import code_version, stage_output
    from model.card import write_card

    model_dir = Path(cfg.output) / "model"
    if not (model_dir / "config.json").is_file():
        return
    inputs = []
    for path in cfg.input:
        try:
            manifest = stage_output(path) if Path(path).is_dir() else None
        except (MgteError, OSError, ValueError):  # refused earlier if it mattered; the card only describes
            manifest = None
        inputs.append({"path": path, **({"stage": manifest["stage"], "config_hash": manifest["config_hash"]}
                                        if manifest else {})})
    write_card(model_dir, {"name": f"{Path(cfg.output).name} ({spec.name})", "stage": spec.name,
                           "config_hash": out.config_hash, "code_version": code_version(),
                           "init": cfg.init or "random", "inputs": inputs, "counts": data.counts,
                           "final": {k: v for k, v in final.items() if isinstance(v, (int, float))}})


def worker_main(spec: ModelStage, config: dict):
    """The body of every worker: the stage's task on the shared loop (rank 0 saves the model)."""
    config = dict(config)
    local = bool(config.pop("_local", False))
    cfg = build(spec.config, config, source=f"{spec.name} worker config")
    out = Path(cfg.output)
    result = train_loop(spec.task(cfg), cfg.loop, ckpt_dir=out / "checkpoints", output_dir=out,
                        world=worker_world(), config=config_to_dict(cfg), report=None if local else ray_reporter,
                        on_start=None if local else functools.partial(record_start, out / EVENTS))
    return result if local else None


# ---- paths and inputs -----------------------------------------------------------------------------
def resolve_paths(cfg):
    """``input`` (local paths), ``output`` and ``init`` (a local directory) made absolute; ``init: random``
    becomes null (one spelling in the config hash and for the workers)."""
    from model.hf import absolute_if_local

    init = None if cfg.init == RANDOM_INIT else absolute_if_local(cfg.init)
    return replace(cfg, input=tuple(p if "://" in p else str(Path(p).resolve()) for p in cfg.input),
                   output=str(Path(cfg.output).resolve()), init=init)


def input_files(inputs) -> list[str]:
    """The files ``input`` names, to pin by content: a finished stage output's files (those its
    manifest lists under ``outputs``), every file under a plain directory, a glob's matches, a file
    or a URL as given. A missing path or an unfinished stage output adds nothing here: the stage's
    reader refuses it, naming it."""
    files: list[str] = []
    for item in inputs:
        if "://" in item:
            files.append(item)
            continue
        for match in sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]:
            path = Path(match)
            if (path / "manifest.json").is_file() and (path / "_SUCCESS").is_file():
                listed = json.loads((path / "manifest.json").read_text()).get("outputs", {})
                for rel in sorted({f for group in listed.values() for f in group}):
                    files += _files_under(path / rel)
            elif path.is_dir() and not (path / "_config.json").is_file():
                files += _files_under(path)
            elif path.is_file():
                files.append(str(path))
    return list(dict.fromkeys(files))


def _files_under(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)]
    return sorted(str(f) for f in path.rglob("*") if f.is_file() and not f.name.endswith(".tmp"))


def check_inputs(out: StageOutput, entries: list[dict], cfg) -> bool:
    """Compare the input with the one pinned when training began; True when it changed and
    ``on_input_change: redo`` moved the old run aside (the caller then trains from step 0)."""
    change = out.input_change(entries)
    if not change:
        return False
    if cfg.on_input_change != "redo":
        raise StageConflict(
            f"{out.root}: {out.stage} was trained on another input: {change.summary()}. Use another --output, or "
            "--set on_input_change=redo to start over on the new input (the old checkpoints are moved aside)")
    for name in ("_SUCCESS", "manifest.json"):
        (out.root / name).unlink(missing_ok=True)
    aside = set_aside_run(out.root, checkpoint_location(cfg.loop, out.root / "checkpoints"))
    log.warning("%s: input changed (%s): the old run moved to %s, training from step 0 (on_input_change=redo)",
                out.stage, change.summary(), aside)
    return True


def set_aside_run(root: Path, ckpt_dir) -> Path:
    """Move the old run's checkpoints, metrics and model to ``root/discarded-<time>/`` (checkpoints
    kept elsewhere, a shared path or a URL, go to ``<dir>.discarded-<time>`` beside them)."""
    aside = root / f"discarded-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{aside.name.split('.')[0]}.{n}")
    aside.mkdir(parents=True)
    local = root / "checkpoints"
    if ckpt_dir is not None and Path(str(ckpt_dir)) != local:
        discard_checkpoints(ckpt_dir)
    for name in ("checkpoints", *RUN_PRODUCTS):
        if (root / name).exists():
            os.replace(root / name, aside / name)
    return aside


def input_sizes(paths) -> list[dict]:
    """``[{path, size}]`` of the inputs (a directory: its files' total; a URL or a glob: null)."""
    def size(p: Path) -> int | None:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return None

    return [{"path": p, "size": size(Path(p))} for p in paths]


# ---- the manifest's last numbers ------------------------------------------------------------------
def final_metrics(out: Path, result, keys: tuple[str, ...] = ("accuracy", "lr")) -> dict:
    """The last step's numbers: from the loop result (``engine: local``) and ``metrics.jsonl``."""
    from training.metrics import read_metrics

    rows = read_metrics(Path(out) / "metrics.jsonl")
    last = rows[-1] if rows else {}
    if hasattr(result, "step"):
        return {"step": result.step, "loss": result.loss, "nonfinite_steps": result.nonfinite_steps,
                "resumed_from": result.resumed_from, **{k: last.get(k) for k in keys}}
    return {k: last.get(k) for k in ("step", "loss", *keys, "nonfinite_skipped")}
