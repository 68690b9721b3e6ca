"""Run a training stage on Ray Train (``TorchTrainer``), or in this process (``engine: local``).

The Ray Train quick-start shape: ``launch`` starts (or joins) Ray and a ``TorchTrainer``; every
worker runs the stage's ``train_func(config)``, which builds its task and calls
:func:`training.loop.train_loop` with :func:`worker_world` and :func:`ray_reporter`. The loop loads
``ray.train.get_checkpoint()`` first, and every worker calls ``ray.train.report`` equally often
(after each checkpoint and at the end), with the checkpoint from rank 0 only.

- CPU workers: torch backend gloo, gradients averaged by DDP.
- GPU workers: nccl; ``loop.deepspeed.enabled`` switches DDP for DeepSpeed ZeRO (stage from config).
- ``ray.address: null`` starts a local Ray (``ray.num_cpus`` caps it); an address joins a cluster
  (``--set ray.address=auto`` or ``HOST:6379``). ``FailureConfig(max_failures)`` restarts failed
  workers from the last reported checkpoint.
- Multi-node: the stage output (checkpoints, final model) is written by rank 0, and Ray's
  ``storage_path`` must be storage every node reaches (a shared file system or a bucket URI).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable

from foundation.config import RayConfig, frozen
from foundation.errors import MgteError
from foundation.ray_init import PROPAGATE_ENV, init_ray
from training.loop import World

log = logging.getLogger(__name__)

@frozen
class ScalingConfig:
    """How many training workers, and what each one gets."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    max_failures: int = 0  # Ray Train FailureConfig: restarts from the last reported checkpoint
    storage_path: str | None = None  # Ray's run storage; default OUTPUT/ray (must be shared across nodes)

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if self.max_failures < -1:
            raise ValueError("scaling.max_failures must be >= -1 (-1 = retry forever)")


class TrainingFailed(MgteError):
    """The Ray Train run failed; the message carries the worker's error."""


def launch(train_func: Callable[[dict], None], train_loop_config: dict, *, ray_cfg: RayConfig,
           scaling: ScalingConfig, storage_path: str | Path, name: str, keep_checkpoints: int = 3):
    """Fit ``train_func`` on ``scaling.num_workers`` Ray Train workers; returns the ``Result``.

    ``train_loop_config`` must be plain data (it is pickled to every worker): pass the stage
    config through ``foundation.config.config_to_dict`` and rebuild it in ``train_func``.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    init_ray(ray_cfg)
    # Ray may already be running (started by an earlier stage in this process or by a cluster)
    # with another environment: each worker takes the driver's values as its run starts.
    driver_env = {k: os.environ.get(k) for k in PROPAGATE_ENV}
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    trainer = TorchTrainer(
        functools.partial(_with_driver_env, train_func, driver_env),
        train_loop_config=train_loop_config,
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()) if "://" not in str(storage_path) else str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps the worker's exception; keep its message on one line
        raise TrainingFailed(f"Ray Train run '{name}' failed: {_root_message(exc)}") from exc
    if getattr(result, "error", None) is not None:
        raise TrainingFailed(f"Ray Train run '{name}' failed: {_root_message(result.error)}")
    return result


def _with_driver_env(train_func: Callable[[dict], None], env: dict[str, str | None], config: dict) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    train_func(config)


def _root_message(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return f"{type(seen).__name__}: {text[-1] if text else ''}"


def worker_world() -> World:
    """Rank, world size and local rank of this process: Ray Train's context, else torch env vars."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return World(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), local_rank=ctx.get_local_rank())
    except (ImportError, RuntimeError, AttributeError, ValueError):
        return World(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def ray_reporter(metrics: dict, ckpt_path: Path | None) -> None:
    """``ray.train.report`` from every worker; rank 0 attaches its checkpoint directory."""
    import ray.train

    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if ckpt_path is not None:
        checkpoint = ray.train.Checkpoint.from_directory(str(ckpt_path))
        ray.train.report(clean, checkpoint=checkpoint, checkpoint_dir_name=Path(ckpt_path).name)
    else:
        ray.train.report(clean, checkpoint=None)


def run_training(train_func: Callable[[dict], Any], train_loop_config: dict, *, engine: str, ray_cfg: RayConfig,
                 scaling: ScalingConfig, storage_path: str | Path, name: str, keep_checkpoints: int = 3):
    """``engine: local`` calls ``train_func`` here (one worker, no Ray); ``ray`` launches Ray Train."""
    if engine == "local":
        if scaling.num_workers != 1:
            raise MgteError(f"engine=local runs one worker; scaling.num_workers is {scaling.num_workers} "
                            "(use engine=ray)")
        return train_func(dict(train_loop_config, _local=True))
    return launch(train_func, train_loop_config, ray_cfg=ray_cfg, scaling=scaling, storage_path=storage_path,
                  name=name, keep_checkpoints=keep_checkpoints)
