"""How every stage starts or joins Ray: a local ``ray.init()`` or the cluster at ``ray.address``."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from foundation import faults
from foundation.config import RayConfig
from foundation.errors import MgteError

# Environment variables the workers need from the driver (fault hook, progress interval, offline hub,
# thread count).
PROPAGATE_ENV = ("MGTE_FAULT", "MGTE_PROGRESS_INTERVAL_S", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "HF_HOME",
                 "TRANSFORMERS_OFFLINE", "DS_ACCELERATOR")

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
    alone does not reach it. A worker kept from an earlier stage whose fault plan differs counts
    the new plan's points from zero, as a fresh process would."""
    if env.get(faults.ENV) != os.environ.get(faults.ENV):
        faults.reset()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class RayConnectError(MgteError):
    """The cluster at ``ray.address`` cannot be reached or refused this client (exit 1)."""


def token_source() -> str | None:
    """Where Ray would read this client's auth token from, in Ray's documented order; None = nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _gcs_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that must accept a TCP connection for ``address``; None for ``auto``."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:  # no port given: Ray's defaults
        return hostport, 10001 if client else 6379
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RayConnectError(f"ray.address {address!r}: expected HOST:PORT or ray://HOST:PORT") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at the address."""
    endpoint = _gcs_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        raise RayConnectError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start its head with "
            f"`ray start --head --port={endpoint[1]}` or fix ray.address") from None


def _connect_error(address: str, exc: BaseException) -> RayConnectError:
    chain, seen = [], exc
    while seen is not None:
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    text = " ".join(" ".join(chain).split())
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        source = token_source()
        have = f"this client's token from {source} was refused" if source else "this client has no token"
        return RayConnectError(
            f"the Ray cluster at {address} uses token authentication and {have}: set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH to the cluster's token (`ray get-auth-token` on the head) and "
            "RAY_AUTH_MODE=token (docs/distributed.md)")
    return RayConnectError(f"cannot connect to the Ray cluster at {address}: {text[:300]}")


def _send_token() -> None:
    """Token mode for this client (Ray reads ``RAY_AUTH_MODE`` once, when its config is built, so
    the config is rebuilt as Ray itself does when it turns token mode on for a local cluster)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # another Ray version: the variable alone must do
        pass


def init_ray(cfg: RayConfig) -> bool:
    """``ray.init()`` locally (``num_cpus`` caps it) or join ``cfg.address``; idempotent.

    Joining a cluster: the address is checked first (a one-line error in seconds when nothing
    listens). Ray 2.60's ``ray start`` turns token authentication on, but a client joining by
    address does not: a client given a token explicitly (``RAY_AUTH_TOKEN`` or
    ``RAY_AUTH_TOKEN_PATH``) without ``RAY_AUTH_MODE`` sends it (harmless to a cluster without
    authentication). The default ``~/.ray/auth_token`` is never sent to an address on our own
    initiative (it may belong to another cluster); a refused or missing token is a one-line error
    naming the address and what to set.

    Returns True when this call started Ray (the caller may then shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PROPAGATE_ENV if k in os.environ}
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": quiet_worker_logs}
    if env:
        runtime_env["env_vars"] = env
    # workers' stdout/stderr reach the driver's (Ray's default): rank 0's training progress lines and a
    # worker's errors must be in the log of a run under cron or `> log`; `quiet_worker_logs` keeps known noise out
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": True}
    if cfg.address:
        _check_reachable(cfg.address)
        if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or
                                                  os.environ.get("RAY_AUTH_TOKEN_PATH")):
            _send_token()
        try:
            ray.init(address=cfg.address, **kwargs)
        except (ConnectionError, RuntimeError) as exc:
            raise _connect_error(cfg.address, exc) from exc
    else:  # "local": a Ray of our own, never the cluster a past `ray start` recorded in /tmp/ray
        if cfg.object_store_mb is not None:
            kwargs["object_store_memory"] = cfg.object_store_mb * 2**20
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
    return True
