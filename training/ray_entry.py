"""Run a training stage on Ray Train (``TorchTrainer``), or in this process (``engine: local``).

The Ray Train quick-start shape: ``launch`` starts (or joins) Ray and a ``TorchTrainer``; every
worker runs the stage's ``train_func(config)`` (:func:`training.stage.worker_main` bound to the
stage), which builds its task and calls :func:`training.loop.train_loop` with :func:`worker_world`
and :func:`ray_reporter`. Every worker calls ``ray.train.report`` equally often (after each
checkpoint and at the end), with metrics only: the checkpoints are ours,
``OUTPUT/checkpoints/step-N`` written by rank 0, the one copy (docs/reliability.md rule 5), and the loop
resumes from them with or without Ray, also when Ray Train's ``FailureConfig`` restarts the
workers. ``loop.resume`` is applied here, once, in the driver
(:func:`run_training`): ``fresh`` moves old checkpoints aside before any worker starts (a restart
must not discard the checkpoints of this run), ``auto`` refuses early when none verifies.

- CPU workers: torch backend gloo, gradients averaged by DDP.
- GPU workers: nccl; ``loop.deepspeed.enabled`` switches DDP for DeepSpeed ZeRO (stage from config).
- ``ray.address: null`` starts a local Ray (``ray.num_cpus`` caps it); an address joins a cluster
  (``--set ray.address=auto`` or ``HOST:6379``). ``FailureConfig(max_failures)`` restarts failed
  workers, which resume from the newest verified checkpoint in ``OUTPUT/checkpoints``.
- Retries are told here, on the driver's log, not only in Ray's worker logs: a controller callback
  (:func:`_failure_recorder`, Ray Train V2) records each failed rank's error, rank 0 each
  attempt's step resumed from, in the run's events file (``OUTPUT/_events.jsonl``), which
  :func:`launch` reads while ``fit()`` runs: ``Ray Train attempt 2: resumed from step 4 after rank
  1 failed: ActorDiedError: ...`` (:mod:`training.run_events`; a death with no recorded error:
  "after a worker was lost").
- Multi-node: checkpoints are written by rank 0 and read by every rank on resume, so they must be
  on storage every node reaches: ``loop.checkpoint_dir`` (a shared file system path or an fsspec
  URL such as ``s3://bucket/run/checkpoints``; default ``OUTPUT/checkpoints``). The final model
  goes to ``OUTPUT/model`` from rank 0. Ray's ``scaling.storage_path`` holds only Ray's small run
  state (results, progress), no model weights; on a cluster it too must be shared.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from foundation.config import RayConfig, frozen
from foundation.errors import MgteError
from foundation.ray_init import apply_env, driver_env, init_ray
from training.checkpoint import prepare_resume
from training.distributed import World
from training.run_events import ERROR_CHARS, Tail, append_event, one_line

log = logging.getLogger(__name__)

@frozen
class ScalingConfig:
    """How many training workers, and what each one gets."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    max_failures: int = 0  # Ray Train FailureConfig: restarts resume from OUTPUT/checkpoints
    storage_path: str | None = None  # Ray's run state (no checkpoints); default OUTPUT/ray

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if self.max_failures < -1:
            raise ValueError("scaling.max_failures must be >= -1 (-1 = retry forever)")


class TrainingFailed(MgteError):
    """The Ray Train run failed; the message carries the worker's error."""


def launch(train_func: Callable[[dict], None], train_loop_config: dict, *, ray_cfg: RayConfig,
           scaling: ScalingConfig, storage_path: str | Path, name: str, events: str | Path | None = None):
    """Fit ``train_func`` on ``scaling.num_workers`` Ray Train workers; returns the ``Result``.

    ``train_loop_config`` must be plain data (it is pickled to every worker): pass the stage
    config through ``foundation.config.config_to_dict`` and rebuild it in ``train_func``.
    ``events``: the run's events file (:mod:`training.run_events`, on the driver's file system):
    the controller appends worker failures to it, ``train_func`` its starts (rank 0), and this
    process logs them while ``fit()`` runs.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    init_ray(ray_cfg)
    # Ray may already be running (started by an earlier stage in this process or by a cluster)
    # with another environment: each worker takes the driver's values as its run starts.
    env = driver_env()
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    recorder = _failure_recorder(events) if events is not None else None
    trainer = TorchTrainer(
        functools.partial(_with_driver_env, train_func, env),
        train_loop_config=train_loop_config,
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()) if "://" not in str(storage_path) else str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            callbacks=[recorder] if recorder is not None else None,
        ),
    )
    if events is not None:
        tail = Tail(events)
        append_event(events, "launch", run=name, max_failures=scaling.max_failures)
    else:
        tail = contextlib.nullcontext()
    with tail:
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray wraps the worker's exception; keep its message on one line
            raise TrainingFailed(f"Ray Train run '{name}' failed: {one_line(exc)}") from exc
    if getattr(result, "error", None) is not None:
        raise TrainingFailed(f"Ray Train run '{name}' failed: {one_line(result.error)}")
    return result


def _failure_recorder(events: str | Path):
    """A Ray Train callback that appends every worker failure to ``events``, rank -> error on one
    line. It runs in Ray Train's controller actor, which Ray places on the driver's node. Ray Train
    V2 only (``ray.train.UserCallback``; with ``RAY_TRAIN_V2_ENABLED=0``: no callback, and a retry
    is told as "a worker was lost")."""
    import ray.train

    base = getattr(ray.train, "UserCallback", None)
    if base is None:
        return None
    # Ray Train's own errors for a worker (a health check failed: its process died, or it hangs);
    # an exception raised by the training code reaches the callback unwrapped, as itself.
    from ray.train.v2._internal.exceptions import RayTrainError

    class RecordFailures(base):
        def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
            append_event(events, "failed",
                         errors={str(rank): one_line(exc, ERROR_CHARS) for rank, exc in worker_exceptions.items()},
                         lost=[str(rank) for rank, exc in worker_exceptions.items() if isinstance(exc, RayTrainError)])

    return RecordFailures()


def _with_driver_env(train_func: Callable[[dict], None], env: dict[str, str | None], config: dict) -> None:
    apply_env(env)
    train_func(config)


def worker_world() -> World:
    """Rank, world size and local rank of this process: Ray Train's context, else torch env vars."""
    env_world = World(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                      local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if "ray" not in sys.modules:  # not a Ray worker (engine=local, torchrun): importing Ray costs ~1 s
        return env_world
    try:
        import ray.train

        ctx = ray.train.get_context()
        return World(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), local_rank=ctx.get_local_rank())
    except (ImportError, RuntimeError, AttributeError, ValueError):
        return env_world


def ray_reporter(metrics: dict) -> None:
    """``ray.train.report`` of the numeric metrics from every worker, with no checkpoint.

    Our ``checkpoints/`` directory is the one copy of each checkpoint (docs/reliability.md rule 5): handing
    it to Ray as well would copy every checkpoint into Ray's storage, and a rerun could resume from
    that copy after ours was found damaged.
    """
    import ray.train

    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def run_training(train_func: Callable[[dict], Any], train_loop_config: dict, *, engine: str, ray_cfg: RayConfig,
                 scaling: ScalingConfig, storage_path: str | Path, name: str, ckpt_dir: str | Path,
                 events: str | Path | None = None):
    """``engine: local`` calls ``train_func`` here (one worker, no Ray); ``ray`` launches Ray Train
    (``events``: see :func:`launch`).

    ``train_loop_config`` is the stage config as a dict with a ``loop`` section: its
    ``loop.resume`` is applied here (see the module docstring) and the workers get ``auto``.
    """
    from training.loop import checkpoint_location

    loop = dict(train_loop_config.get("loop") or {})
    prepare_resume(checkpoint_location(loop, ckpt_dir), loop.get("resume", "auto"))
    train_loop_config = dict(train_loop_config, loop=dict(loop, resume="auto"))
    if engine == "local":
        if scaling.num_workers != 1:
            raise MgteError(f"engine=local runs one worker; scaling.num_workers is {scaling.num_workers} "
                            "(use engine=ray)")
        return train_func(dict(train_loop_config, _local=True))
    return launch(train_func, train_loop_config, ray_cfg=ray_cfg, scaling=scaling, storage_path=storage_path,
                  name=name, events=events)


def stage_identity(cfg):
    """The stage config as pinned in the output's identity: ``loop.resume`` and
    ``loop.checkpoint_dir`` are how to run, not what to compute, so changing them on a rerun is not
    refused as a config change."""
    from foundation.config import replace

    return replace(cfg, loop=replace(cfg.loop, resume="auto", checkpoint_dir=None))


def clear_stale_dirs(root: Path) -> None:
    """Directories a killed run left half-written (a checkpoint or model save): never used, removed."""
    import shutil

    for stale in [*root.glob("checkpoints/*.tmp"), root / "model.tmp"]:
        if stale.is_dir():
            shutil.rmtree(stale)
