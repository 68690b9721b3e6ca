"""How one optimizer step is taken: plain torch (DDP when distributed) or DeepSpeed ZeRO.

The loop sees one interface: ``wrap``, ``no_sync``, ``backward``, ``step`` -> (applied, grad
norm), ``skip``, ``lr``, ``state_dict``/``load_state_dict`` and ``write_extra``/``load_extra``
(files of the stepper's own, e.g. DeepSpeed's partitioned optimizer state). Everything
DeepSpeed-specific stays in :class:`DeepSpeedStepper`; it is imported only when enabled.
``cfg`` is the loop's :class:`training.loop.LoopConfig` (optim, max_steps, deepspeed, ...).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from foundation.config import frozen
from foundation.errors import MgteError
from training.distributed import World, dist_ready
from training.optim import build_optimizer, build_scheduler, clip_gradients


@frozen
class DeepSpeedConfig:
    """DeepSpeed ZeRO on the workers instead of DDP (GPU; ZeRO 0-2 also run on CPU with gloo)."""

    enabled: bool = False
    zero_stage: int = 1

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"deepspeed.zero_stage must be 0, 1 or 2 (ZeRO-3 partitions the weights, which "
                             f"this loop's checkpoints keep whole), got {self.zero_stage}")


class TorchStepper:
    """AdamW + schedule + optional GradScaler over a (DDP-wrapped when distributed) model."""

    def __init__(self, module: torch.nn.Module, cfg: LoopConfig, device: torch.device, precision: str):
        self.module = module
        self.cfg = cfg
        self.optimizer = build_optimizer(module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.max_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.model = module
        self.device = device

    def wrap(self) -> None:
        if dist_ready() and dist.get_world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids,
                                                 find_unused_parameters=self.cfg.find_unused_parameters)

    def no_sync(self, sync: bool):
        if sync or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> tuple[bool, float]:
        """Clip (when configured), check, update. Returns (applied, grad_norm)."""
        self.scaler.unscale_(self.optimizer)
        norm = clip_gradients(self.module.parameters(), self.cfg.optim.max_grad_norm)
        if not math.isfinite(norm) and not self.scaler.is_enabled():
            self.skip()
            return False, norm
        self.scaler.step(self.optimizer)  # with fp16 the scaler itself skips inf/nan gradients
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True, norm

    def skip(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()  # the schedule follows the step count, skipped or not
        if self.scaler.is_enabled():
            self.scaler.update()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    write_extra = None  # torch state goes entirely into state_dict()

    def load_extra(self, path: Path) -> None:
        return None


class DeepSpeedStepper:
    """DeepSpeed ZeRO engine; its partitioned optimizer state is saved by the engine itself.

    Gradient accumulation is left to us (``managed_gradient_accumulation: false``): every
    ``backward`` accumulates, ``step`` is the boundary, whatever the number of micro-batches.
    Checkpoints need a file system every rank can write (the engine writes one shard per rank).
    """

    def __init__(self, module: torch.nn.Module, cfg: LoopConfig, device: torch.device, precision: str):
        try:
            import deepspeed
        except ImportError as exc:
            raise MgteError("loop.deepspeed.enabled needs the `deepspeed` package (pip install mgte[gpu])") from exc
        optimizer = build_optimizer(module, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, cfg.max_steps)
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
            "gradient_clipping": cfg.optim.max_grad_norm,
            "bf16": {"enabled": precision == "bf16"},
            "fp16": {"enabled": precision == "fp16"},
            "steps_per_print": 1 << 30,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
            dist_init_required=not dist_ready())
        self.module = self.engine.module
        self.model = self.engine
        self.cfg = cfg

    def wrap(self) -> None:
        return None

    def no_sync(self, sync: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> tuple[bool, float]:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return True, float(norm) if norm is not None else 0.0

    def skip(self) -> None:
        self.engine.zero_grad()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict:
        # weights are kept here too (rank 0's full copy under ZeRO <= 2) so model/ can be rebuilt
        # from any checkpoint; the optimizer state lives in the engine's own files
        return {"model": self.module.state_dict(), "scheduler": self.scheduler.state_dict()}

    def write_extra(self, path: Path) -> None:
        self.engine.save_checkpoint(str(path / "deepspeed"), tag="engine", save_latest=False)

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.scheduler.load_state_dict(state["scheduler"])

    def load_extra(self, path: Path) -> None:
        self.engine.load_checkpoint(str(path / "deepspeed"), tag="engine", load_module_strict=True,
                                    load_optimizer_states=True, load_lr_scheduler_states=False)


def make_stepper(module: torch.nn.Module, cfg: Any, device: torch.device, precision: str):
    """DeepSpeed ZeRO when ``cfg.deepspeed.enabled``, else the torch stepper."""
    return (DeepSpeedStepper if cfg.deepspeed.enabled else TorchStepper)(module, cfg, device, precision)


@dataclass
class StepContext:
    """What a custom ``task.train_step`` gets: backward (scaler-aware), no_sync, autocast, world."""

    stepper: Any
    device: torch.device
    precision: str
    world: World
    global_units: float = 0.0
    poison: bool = False  # set by the `train_step` fault hook (action nan): this step's loss becomes NaN

    def autocast(self):
        if self.precision in ("bf16", "fp16") and not isinstance(self.stepper, DeepSpeedStepper):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.stepper.backward(loss)

    def no_sync(self, sync: bool):
        """Skip the DDP gradient all-reduce unless ``sync`` (use sync=True on the last backward)."""
        return self.stepper.no_sync(sync)
