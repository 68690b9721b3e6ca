"""Decoupled AdamW, the linear warm-up/decay schedule and optional gradient clipping.

Shared by every training stage; the numbers differ per stage (mGTE Table 8 and B.3):

=====================  ==========  ============  =====  ============  ==========
stage                  peak lr     betas         eps    weight decay  clip norm
=====================  ==========  ============  =====  ============  ==========
MLM-2048 / MLM-8192    5e-4/5e-5   (0.9, 0.98)   1e-6   1e-5          none (0)
CPT                    2e-4        (0.9, 0.999)  1e-7   (AdamW)       1.0
=====================  ==========  ============  =====  ============  ==========

Weight decay is decoupled (``torch.optim.AdamW``: ``p -= lr * wd * p``, separate from the Adam
update) and is NOT applied to biases and normalisation weights: every parameter with fewer than
two dimensions (LayerNorm/RMSNorm scales and shifts, biases) goes to a group with
``weight_decay=0``. Matrices and embedding tables are decayed.
"""

from __future__ import annotations

import math

import torch

from foundation.config import frozen


@frozen
class OptimConfig:
    """AdamW + schedule. Defaults are the MLM numbers of mGTE Table 8."""

    lr: float = 5e-4
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_ratio: float = 0.06  # fraction of max_steps spent warming up linearly from 0
    schedule: str = "linear"  # linear decay to 0 after warm-up; "constant" keeps the peak
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of the peak
    max_grad_norm: float = 0.0  # 0 = no clipping (the MLM setting)
    # peak lr of the task head (the parameters outside the model's base encoder, e.g. a fresh
    # reranker scoring head on a pretrained encoder); null = lr for every parameter
    head_lr: float | None = None

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ValueError(f"optim.head_lr must be > 0 (or null = lr), got {self.head_lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be in [0, 1), got {self.betas}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"optim.schedule must be linear or constant, got {self.schedule!r}")
        if self.max_grad_norm < 0:
            raise ValueError("optim.max_grad_norm must be >= 0 (0 = no clipping)")


# The contrastive stages' optimiser (mGTE B.3 CPT); the TRM and the reranker keep it ("other
# settings as CPT"), the TRM with its own peak lr.
CONTRASTIVE_OPTIM = OptimConfig(lr=2e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-7, warmup_ratio=0.05,
                                max_grad_norm=1.0)


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters outside the model's base encoder (``base_model_prefix``, the Hugging
    Face convention): the task head. Empty when the model has no base encoder attribute."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), torch.nn.Module):
        return set()
    return {name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")}


def param_groups(model: torch.nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Decayed (>= 2-D weights) and not decayed (biases, norm weights: < 2-D) parameters; with
    ``head_lr`` the head's (:func:`head_parameter_names`) in groups of their own at that lr."""
    model = getattr(model, "module", model)  # DDP: the wrapped model's names
    head = head_parameter_names(model) if head_lr is not None else set()
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in head, param.ndim >= 2), []).append(param)
    out = [{"params": groups.get((False, True), []), "weight_decay": weight_decay}]
    for is_head, decayed in ((False, False), (True, True), (True, False)):
        if groups.get((is_head, decayed)):
            group = {"params": groups[(is_head, decayed)], "weight_decay": weight_decay if decayed else 0.0}
            out.append({**group, "lr": head_lr} if is_head else group)
    return out


FUSED_DEVICES = ("cuda", "cpu")  # torch's fused AdamW kernels (CPU since torch 2.4)
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused (one kernel per parameter) where torch has the kernel:
    on CPU torch's default is a Python loop of ~10 ops per parameter tensor, measured 7-10x slower
    than the fused step for MiniLM's parameters (`benchmarks/RESULTS.md`, "mgte vs
    sentence-transformers trainers")."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params) \
        and len({p.device.type for p in params}) == 1
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.head_lr), lr=cfg.lr,
                             betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    warmup = int(math.ceil(cfg.warmup_ratio * total_steps))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    remaining = max(total_steps - warmup, 1)
    frac = min(max(step - warmup, 0) / remaining, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * (1.0 - frac)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio * total_steps`` steps, then linear decay to ``min_lr_ratio``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))


def clip_gradients(parameters, max_norm: float) -> float:
    """Clip to ``max_norm`` when > 0; returns the total gradient norm before clipping either way."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norms = torch.stack([p.grad.detach().float().norm(2) for p in params])
    return float(norms.norm(2))
