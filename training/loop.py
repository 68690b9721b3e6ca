"""The generic training loop every model stage runs (MLM, CPT, TRM, reranker).

``train_loop(task, cfg, ckpt_dir=..., output_dir=...)`` is plain single-process PyTorch: under
Ray Train each worker runs it (``training.ray_entry``), in tests it runs as is. A *task* supplies
the model, the data and the loss; the loop owns everything else:

- resume first: the newest verified checkpoint in ``ckpt_dir`` (our checkpoints are the only
  copy, with or without Ray, also after a Ray Train restart) restores model, optimizer, scheduler,
  scaler, step, sampler position and RNG, so the batch sequence and losses continue exactly
  (docs/reliability.md rule 5); when some exist but none verifies the run refuses (``loop.resume``);
- precision: BF16 autocast on GPU, fp32 on CPU (``precision: auto``), FP16 + GradScaler on request;
- gradient averaging across ranks (DDP) or DeepSpeed ZeRO (``deepspeed.enabled``, GPU workers),
  both behind one stepper interface (:mod:`training.steppers`; cross-rank helpers in
  :mod:`training.distributed`);
- a non-finite loss or gradient skips the update and is counted; K in a row abort (rule 6);
- metrics every ``log_every`` steps, a checkpoint every ``ckpt_every`` steps, SIGTERM -> checkpoint
  and :class:`Preempted`; at the end the final model goes to ``output_dir/model``.

The run reads as its phases: :func:`set_up` (device, precision, seed, model in its stepper, data),
:func:`resume`, then per step :func:`one_step` and :func:`save_checkpoint` (every ``ckpt_every``
steps, on SIGTERM, at the end); the parts and counters of a run travel in one :class:`Run`.

The task is typed: :class:`training.task.MicroBatchTask` (``step`` per micro-batch; the loop does
the backward) or :class:`training.task.CustomStepTask` (``train_step`` over the global batch, e.g.
CPT's cached-gradient step), both :class:`training.task.TrainTask` (``build_model``,
``build_data``, ``save_model``).

The default step divides every micro-batch's ``loss_sum`` by the units of the whole global batch
(summed over micro-batches and ranks), so the gradient is that of the global mean whatever the
number of workers or micro-batches: 2 workers give the same update as 1 at the same global batch.
``metric_sums`` are summed the same way and logged divided by the global units (e.g. correct
predictions / masked tokens = accuracy).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from foundation.config import frozen
from foundation.errors import MgteError
from foundation.faults import fault_point
from foundation.progress import Progress
from training import checkpoint as ckpt
from training.distributed import World, all_gather_objects, all_reduce_sum, broadcast_object, dist_ready
from training.metrics import MetricsWriter, Throughput
from training.optim import OptimConfig
from training.steppers import DeepSpeedConfig, StepContext, make_stepper
from training.task import CustomStepTask, MicroBatchTask, Task, check_task

log = logging.getLogger(__name__)


class Preempted(MgteError):
    """SIGTERM: the trainer saved a checkpoint and stopped; rerun the same command to resume."""


class NonFiniteLoss(MgteError):
    """Too many non-finite losses in a row (docs/reliability.md rule 6)."""


@frozen
class LoopConfig:
    """What every training stage shares: steps, precision, logging, checkpoints, optimizer."""

    max_steps: int = 100
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 10
    ckpt_every: int = 100  # 0: only at the end and on SIGTERM
    keep_checkpoints: int = 3
    max_nonfinite_in_row: int = 5  # K non-finite losses in a row abort the run
    # auto: resume from the newest verified checkpoint in OUTPUT/checkpoints, refuse (naming the
    # damaged file) when some exist but none verifies; fresh: move them aside to
    # checkpoints.discarded-<time>/ and start at step 0 (give it once: --set loop.resume=fresh)
    resume: Literal["auto", "fresh"] = "auto"
    # where the checkpoints live: null = OUTPUT/checkpoints; on a cluster a path every node mounts
    # or an fsspec URL (s3://bucket/run/checkpoints, gs://...): the one copy, resumed from by any node
    checkpoint_dir: str | None = None
    find_unused_parameters: bool = False  # DDP option
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True  # a bar on a TTY; false: the progress log lines there too (foundation/progress.py)
    optim: OptimConfig = OptimConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"loop.max_steps must be >= 1, got {self.max_steps}")
        if self.log_every < 1:
            raise ValueError("loop.log_every must be >= 1")
        if self.ckpt_every < 0 or self.keep_checkpoints < 1 or self.max_nonfinite_in_row < 1:
            raise ValueError("loop.ckpt_every must be >= 0, keep_checkpoints and max_nonfinite_in_row >= 1")
        if self.deepspeed.enabled and self.checkpoint_dir and "://" in self.checkpoint_dir:
            raise ValueError("loop.checkpoint_dir: DeepSpeed writes a shard per rank, so its checkpoints need a "
                             "path every node mounts, not a URL")


def checkpoint_location(cfg: LoopConfig | dict, default: str | Path | None) -> str | Path | None:
    """``loop.checkpoint_dir`` (a path or an fsspec URL) or the stage's ``OUTPUT/checkpoints``."""
    chosen = cfg.get("checkpoint_dir") if isinstance(cfg, dict) else cfg.checkpoint_dir
    chosen = chosen if chosen is not None else default
    if chosen is None or ckpt.remote.is_url(chosen):
        return chosen
    return Path(chosen)


def resolve_device(cfg: LoopConfig, world: World) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise MgteError("loop.device=cuda but no CUDA GPU is visible")
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(cfg: LoopConfig, device: torch.device) -> str:
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


# -- the loop ---------------------------------------------------------------------------------------


class _Signals:
    """SIGTERM -> a flag checked after every step (only installable in the main thread)."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint after this step, then stopping")
        self.flag = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_device(v, device) for v in obj)
    if hasattr(obj, "to") and callable(obj.to) and not isinstance(obj, torch.nn.Module):
        return obj.to(device)
    return obj


@dataclass
class LoopResult:
    step: int
    loss: float | None
    metrics: dict = field(default_factory=dict)
    tokens: int = 0
    nonfinite_steps: int = 0
    resumed_from: int | None = None
    seconds: float = 0.0


def _default_train_step(task: MicroBatchTask, ctx: StepContext, model, micro_batches: list) -> tuple[float, float, dict, int]:
    """Forward/backward every micro-batch; gradient of the global mean over units."""
    units = [float(task.units(mb)) for mb in micro_batches]
    total = all_reduce_sum(torch.tensor([sum(units)], dtype=torch.float64, device=ctx.device))
    ctx.global_units = float(total.item())
    scale = ctx.world.world_size / max(ctx.global_units, 1.0)  # DDP averages over ranks
    loss_sum, sums, tokens = 0.0, {}, 0
    for i, mb in enumerate(micro_batches):
        with ctx.no_sync(i == len(micro_batches) - 1):
            with ctx.autocast():
                loss, metrics = task.step(model, mb)
            loss = loss.float()
            if ctx.poison:
                loss = loss * float("nan")
            ctx.backward(loss * scale)
        loss_sum += float(loss.detach())
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        tokens += int(task.tokens(mb))
    return loss_sum, sum(units), sums, tokens


def train_loop(task: Task, cfg: LoopConfig, *, ckpt_dir: str | Path | None, output_dir: str | Path | None = None,
               world: World | None = None, config: dict | None = None, report=None, on_start=None) -> LoopResult:
    """Train ``task`` for ``cfg.max_steps`` optimizer steps, resuming from the newest checkpoint.

    ``config`` (the resolved stage config) is stored in every checkpoint. ``report(metrics)`` is
    called on EVERY rank, equally often, after each checkpoint and at the end: the hook
    ``training.ray_entry`` uses for ``ray.train.report`` (metrics only: the checkpoint stays in
    ``ckpt_dir``, the one copy). ``on_start(resumed_from)`` is called on rank 0 once the run has
    resumed, with the step it resumed from (None: from step 0): how ``training.ray_entry`` tells the
    driver where each Ray Train attempt started (:mod:`training.run_events`).

    The phases: :func:`set_up` (device, precision, model, stepper, data), :func:`resume` (the
    newest verified checkpoint), then per step :func:`one_step`, and :func:`save_checkpoint` every
    ``ckpt_every`` steps, on SIGTERM and at the end.
    """
    run = set_up(task, cfg, world or World(), checkpoint_location(cfg, ckpt_dir),
                 Path(output_dir) if output_dir is not None else None, config or {})
    resume(run)
    if on_start is not None and run.is_main:
        on_start(run.resumed_from)
    run.stepper.wrap()
    return _train(run, report)


@dataclass
class Run:
    """One training run's parts and counters (the counters go into every checkpoint)."""

    task: Task
    cfg: LoopConfig
    world: World
    ckpt_dir: str | Path | None
    output_dir: Path | None
    config: dict
    device: torch.device
    precision: str
    stepper: Any
    data: Any
    step: int = 0
    resumed_from: int | None = None
    nonfinite_total: int = 0
    tokens_total: int = 0

    @property
    def is_main(self) -> bool:
        return self.world.rank == 0


@dataclass
class StepResult:
    """One optimizer step's global numbers (summed over ranks)."""

    loss: float  # global mean over units
    units: float
    tokens: int
    applied: bool  # False: a non-finite loss or gradient, the update skipped
    grad_norm: float
    metrics: dict  # metric sums / units
    stop: bool  # some rank got SIGTERM


def set_up(task: Task, cfg: LoopConfig, world: World, ckpt_dir, output_dir: Path | None, config: dict) -> Run:
    """Device and precision, the seed, the task's model in a stepper, and its data for this rank."""
    check_task(task)
    device = resolve_device(cfg, world)
    precision = resolve_precision(cfg, device)
    if precision == "bf16" and device.type == "cpu":
        log.info("bf16 autocast on CPU was asked for explicitly")
    ckpt.seed_everything(cfg.seed)
    module = task.build_model().to(device)
    stepper = make_stepper(module, cfg, device, precision)
    data = task.build_data(world.rank, world.world_size)
    return Run(task=task, cfg=cfg, world=world, ckpt_dir=ckpt_dir, output_dir=output_dir, config=config,
               device=device, precision=precision, stepper=stepper, data=data)


def resume(run: Run) -> None:
    """Restore the newest verified checkpoint, if any: model, optimizer, counters, data position, RNG.

    Rank 0 decides; a CheckpointError there (some exist, none verifies) stops every rank, not hangs them."""
    choice = None
    if run.is_main:
        try:
            choice = ("ok", ckpt.prepare_resume(run.ckpt_dir, run.cfg.resume))
        except ckpt.CheckpointError as exc:
            choice = ("error", str(exc))
    outcome, where = broadcast_object(choice)
    if outcome == "error":
        raise ckpt.CheckpointError(where)
    if where is None:
        return
    try:
        state = ckpt.load_checkpoint(where, verify=not run.is_main)  # rank 0 verified it just now
    except FileNotFoundError as exc:
        raise ckpt.CheckpointError(f"rank {run.world.rank}: cannot read checkpoint {where}: {exc} "
                                   "(put the output on storage every worker can read)") from exc
    run.stepper.load_state_dict(state)
    if run.cfg.deepspeed.enabled:
        run.stepper.load_extra(where)
    run.step = int(state["step"])
    loop_state = state.get("loop", {})
    run.nonfinite_total = int(loop_state.get("nonfinite_total", 0))
    run.tokens_total = int(loop_state.get("tokens_total", 0))
    _restore_data_position(run, state, int(loop_state.get("world_size", 1)))
    run.resumed_from = run.step
    if run.is_main:
        log.info("resumed from step %d (%s)", run.step, where)


def _restore_data_position(run: Run, state: dict, saved_world: int) -> None:
    """This rank's sampler position and RNG; over another world size, a re-shardable source
    re-splits the same global batches (per-rank RNG reseeded), any other refuses."""
    world, samplers, rngs = run.world, state["sampler"], state["rng"]
    if saved_world == world.world_size:
        run.data.load_state_dict(samplers[world.rank])
        ckpt.set_rng_state(rngs[world.rank])
    elif getattr(run.data, "reshardable", False):
        log.warning("checkpoint written by %d workers, resuming on %d: the data source re-shards the "
                    "same global batches; per-rank RNG (dropout) is reseeded", saved_world, world.world_size)
        run.data.load_state_dict(samplers[0])
        ckpt.seed_everything(run.cfg.seed + 1_000_003 * run.step + world.rank)
    else:
        raise ckpt.CheckpointError(
            f"checkpoint at step {run.step} was written by {saved_world} workers but this run has "
            f"{world.world_size}, and this data source cannot re-shard: rerun with {saved_world} workers")


def one_step(run: Run, ctx: StepContext, signals: _Signals) -> StepResult:
    """One optimizer step: the task's forward/backward over this rank's micro-batches, the global
    loss, units, tokens, metric sums and SIGTERM flag (set during this step too; one all-reduce),
    then the update, or its skip when the global loss is not finite. Advances ``run.step`` and the
    token count."""
    micro_batches = _to_device(next(run.data), run.device)
    run.stepper.model.train()
    ctx.poison = fault_point("train_step")  # exit137 / sigterm / nan for the fault tests
    if isinstance(run.task, CustomStepTask):
        loss_sum, units, sums, tokens = run.task.train_step(ctx, run.stepper.model, micro_batches)
    else:
        loss_sum, units, sums, tokens = _default_train_step(run.task, ctx, run.stepper.model, micro_batches)
    if ctx.poison:
        loss_sum = float("nan")
    keys = sorted(sums)
    packed = torch.tensor([loss_sum, units, tokens, float(signals.flag)] + [sums[k] for k in keys],
                          dtype=torch.float64, device=run.device)
    packed = all_reduce_sum(packed).tolist()
    g_loss_sum, g_units, g_tokens, g_stop = packed[:4]
    g_loss = g_loss_sum / max(g_units, 1.0)
    if math.isfinite(g_loss):
        applied, grad_norm = run.stepper.step()
    else:
        run.stepper.skip()
        applied, grad_norm = False, float("nan")
    run.step += 1
    run.tokens_total += int(g_tokens)
    return StepResult(loss=g_loss, units=g_units, tokens=int(g_tokens), applied=applied, grad_norm=grad_norm,
                      metrics={k: v / max(g_units, 1.0) for k, v in zip(keys, packed[4:])}, stop=g_stop > 0)


def save_checkpoint(run: Run) -> Path | None:
    """Every rank gathers its sampler + RNG state (and, with DeepSpeed, writes its engine shard);
    rank 0 writes the verified checkpoint of ``run.step``."""
    cfg, ckpt_dir, step = run.cfg, run.ckpt_dir, run.step
    samplers = all_gather_objects(run.data.state_dict())
    rngs = all_gather_objects(ckpt.rng_state())
    state = run.stepper.state_dict()
    if cfg.deepspeed.enabled:  # collective: every rank writes its engine shard
        run.stepper.write_extra(ckpt_dir / f"step-{step}.engine")
    if not run.is_main or ckpt_dir is None:
        if dist_ready():
            dist.barrier()
        return None
    state.update(step=step, sampler=samplers, rng=rngs,
                 loop={"nonfinite_total": run.nonfinite_total, "tokens_total": run.tokens_total,
                       "world_size": run.world.world_size})

    def move_engine(tmp: Path) -> None:
        os.replace(ckpt_dir / f"step-{step}.engine" / "deepspeed", tmp / "deepspeed")
        (ckpt_dir / f"step-{step}.engine").rmdir()

    saved = ckpt.save_checkpoint(ckpt_dir, step, state, config=run.config, keep_last=cfg.keep_checkpoints,
                                 write_extra=move_engine if cfg.deepspeed.enabled else None)
    if dist_ready():
        dist.barrier()
    return saved


def _count_nonfinite(run: Run, r: StepResult, in_a_row: int) -> int:
    """Non-finite steps in a row after this one (0 when it was applied); K in a row abort the run."""
    if r.applied:
        return 0
    in_a_row += 1
    run.nonfinite_total += 1
    log.warning("step %d: non-finite loss/gradient (%s), update skipped (%d in a row)", run.step, r.loss, in_a_row)
    if in_a_row >= run.cfg.max_nonfinite_in_row:
        raise NonFiniteLoss(f"{in_a_row} non-finite losses in a row at step {run.step}; "
                            f"last checkpoint is kept in {run.ckpt_dir}")
    return in_a_row


def _train(run: Run, report) -> LoopResult:
    """Steps until ``max_steps``: metrics every ``log_every``, a checkpoint every ``ckpt_every`` and on
    SIGTERM (then :class:`Preempted`), K non-finite steps in a row abort; at the end the last
    checkpoint and the model."""
    cfg, out = run.cfg, run.output_dir
    writer = MetricsWriter(out / "metrics.jsonl" if out else None,
                           tensorboard_dir=(out / "tensorboard") if (out and cfg.tensorboard) else None,
                           enabled=run.is_main)
    progress = Progress(cfg.max_steps, run.step, enabled=run.is_main, bar=cfg.progress, desc="train", unit="steps")
    ctx = StepContext(run.stepper, run.device, run.precision, run.world)
    throughput = Throughput()
    in_a_row, last_loss, last_metrics = 0, None, {}
    last_saved = run.step if run.resumed_from is not None else -1
    window: list[float] = []  # losses of the applied steps since the last log line
    started = time.perf_counter()

    def call_report(metrics: dict) -> None:
        if report is not None:
            report(dict(metrics, step=run.step))

    try:
        with _Signals() as signals:
            while run.step < cfg.max_steps:
                r = one_step(run, ctx, signals)
                throughput.add(r.tokens)
                in_a_row = _count_nonfinite(run, r, in_a_row)
                if r.applied:
                    last_loss, last_metrics = r.loss, r.metrics
                    window.append(r.loss)
                progress.update(1, loss=r.loss)
                if run.step % cfg.log_every == 0 or run.step == cfg.max_steps:
                    loss_avg = sum(window) / len(window) if window else float("nan")
                    window.clear()
                    writer.log(run.step, {"loss": r.loss, "loss_avg": loss_avg, **last_metrics, "lr": run.stepper.lr,
                                          "grad_norm": r.grad_norm, "tokens_per_s": throughput.rate(),
                                          "tokens": run.tokens_total, "units": r.units,
                                          "nonfinite_skipped": run.nonfinite_total})
                if (cfg.ckpt_every and run.step % cfg.ckpt_every == 0) or r.stop:
                    save_checkpoint(run)
                    last_saved = run.step
                    call_report({"loss": r.loss, **last_metrics})
                if r.stop:
                    raise Preempted(f"preempted (SIGTERM) at step {run.step}; checkpoint saved in {run.ckpt_dir}")
        if last_saved != run.step:
            save_checkpoint(run)
        if run.is_main and out is not None:
            run.task.save_model(run.stepper.module, out / "model")
        call_report({"loss": last_loss if last_loss is not None else float("nan"), **last_metrics, "final": 1})
    finally:
        progress.close()
        writer.close()
    return LoopResult(step=run.step, loss=last_loss, metrics=last_metrics, tokens=run.tokens_total,
                      nonfinite_steps=run.nonfinite_total, resumed_from=run.resumed_from,
                      seconds=time.perf_counter() - started)
