"""How every stage starts or joins Ray: a local ``ray.init()`` or the cluster at ``ray.address``."""

from __future__ import annotations

import logging
import os
from typing import Any

from foundation.config import RayConfig

# Environment variables the workers need from the driver (fault hook, offline hub, thread count).
PROPAGATE_ENV = ("MGTE_FAULT", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE")

# Ray Train's placement-group cleaner asks the state API (served by the dashboard) about the
# controller every second and warns each time it cannot; a local Ray without the dashboard
# packages (`ray[default]`) has no state API, so every run printed that warning once a second.
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_worker_logs() -> None:
    """Ray worker setup hook: silence the known-noisy Ray loggers (errors still show)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def driver_env() -> dict[str, str | None]:
    """This process's values of :data:`PROPAGATE_ENV` (None = unset), for :func:`apply_env` in a worker."""
    return {k: os.environ.get(k) for k in PROPAGATE_ENV}


def apply_env(env: dict[str, str | None]) -> None:
    """Give a Ray worker the driver's environment as a task starts: Ray may already be running
    (started by an earlier stage or a cluster) with another one, so ``ray.init(runtime_env=...)``
    alone does not reach it."""
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def init_ray(cfg: RayConfig) -> bool:
    """``ray.init()`` locally (``num_cpus`` caps it) or join ``cfg.address``; idempotent.

    Returns True when this call started Ray (the caller may then shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PROPAGATE_ENV if k in os.environ}
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": quiet_worker_logs}
    if env:
        runtime_env["env_vars"] = env
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": False}
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
    return True
