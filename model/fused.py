"""The elementwise work of a layer, run eagerly or fused by ``torch.compile``.

A layer is four GEMMs (qkv, o, up+gate, down), attention, and three stretches of elementwise
work between them; eagerly each stretch is several kernels over (total_tokens, ...) tensors:

    rope_qkv   (total, 3 * hidden) -> q, k, v   split, RoPE on q and k (mul, mul, sub, add, cat)
    glu        (total, 2 * inner) -> (total, inner)   act(gate) * up, dropout
    add_norm   hidden + dropout(x) -> LayerNorm        residual, dropout, LayerNorm

Fused, each stretch is one generated kernel (forward and backward), compiled once per process
with the packed length dynamic (``maybe_mark_dynamic`` on dim 0), so new batch lengths do not
recompile; the GEMMs and attention stay what they are. `config.fused_layers`: ``"auto"``
fuses on CUDA when Triton (every CUDA build of torch ships it) and a C compiler (Triton builds
its launcher with it) are there, and runs eagerly
on CPU, where the compile costs more than a short job gains; ``"compile"`` fuses on any device
(CPU needs a C++ compiler); ``"off"`` never does. Both paths compute the same function
(tests/model/test_fused.py: forward and gradients, and no recompile across lengths).
"""
from __future__ import annotations

import functools
import importlib.util
import shutil
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .config import FUSED_LAYERS

_ACTIVATIONS = {  # the config's hidden_act -> a plain function (the same for every layer: one compile)
    "gelu": F.gelu,
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the last dim: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., head_dim/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # no-op when the tables are in x's dtype already
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, head_dim: int):
    """(total, 3 * hidden) -> q, k (rotated), v: (total, heads, head_dim) each."""
    qkv = qkv.view(-1, 3, num_heads, head_dim)
    # split/unbind rather than indexing: their backward is one cat/stack, not zero-fill + copy
    qk, v = qkv.split([2, 1], dim=1)  # (total, 2, heads, head_dim), (total, 1, heads, head_dim)
    q, k = apply_rope(qk, cos, sin).unbind(1)
    return q, k, v.squeeze(1)


def glu(up_gate: torch.Tensor, act: str, p: float, training: bool) -> torch.Tensor:
    """(total, 2 * inner) -> dropout(act(gate) * up), (total, inner)."""
    up, gate = up_gate.chunk(2, dim=-1)
    if torch.is_grad_enabled() and up_gate.requires_grad:
        return F.dropout(_ACTIVATIONS[act](gate) * up, p, training)
    return F.dropout(_ACTIVATIONS[act](gate).mul_(up), p, training)  # inference: no extra (total, inner) buffer


def add_norm(hidden, x, weight, bias, eps: float, p: float, training: bool) -> torch.Tensor:
    """LayerNorm(hidden + dropout(x)): the post-norm residual."""
    return F.layer_norm(hidden + F.dropout(x, p, training), (hidden.shape[-1],), weight, bias, eps)


@dataclass(frozen=True)
class LayerOps:
    """What a layer calls between its GEMMs: attention plus the three elementwise stretches."""

    attention: Callable
    rope_qkv: Callable = rope_qkv
    glu: Callable = glu
    add_norm: Callable = add_norm


def _packed_dynamic(fn: Callable) -> Callable:
    """`fn` compiled once; dim 0 (the packed length) of every tensor argument is symbolic."""
    compiled = torch.compile(fn, dynamic=False)

    @functools.wraps(fn)
    def call(*args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.dim() > 1:
                torch._dynamo.maybe_mark_dynamic(a, 0)
        return compiled(*args)

    return call


@functools.cache
def fused_ops() -> tuple[Callable, Callable, Callable]:
    """The three stretches compiled (once per process, shared by every layer and model)."""
    return _packed_dynamic(rope_qkv), _packed_dynamic(glu), _packed_dynamic(add_norm)


def layer_ops(attention: Callable, fuse: bool) -> LayerOps:
    if not fuse:
        return LayerOps(attention)
    return LayerOps(attention, *fused_ops())


def resolve_fused(setting: str, device: torch.device) -> bool:
    """Whether a forward on `device` runs the fused stretches (see the module doc)."""
    if setting == "off":
        return False
    if setting == "compile":
        return True
    return device.type == "cuda" and _triton_can_build()


def _triton_can_build() -> bool:
    """Triton is installed and a system C compiler is there (Triton builds its launcher with it);
    without them `auto` stays eager."""
    return importlib.util.find_spec("triton") is not None and any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))


def check_fused(setting: str) -> None:
    """Raise at construction when `fused_layers` cannot run here."""
    if setting not in FUSED_LAYERS:
        raise ValueError(f"unknown fused_layers {setting!r}; choose from {list(FUSED_LAYERS)}")
    if setting == "compile" and not torch.cuda.is_available() and not (shutil.which("c++") or shutil.which("g++")):
        raise RuntimeError("fused_layers='compile' on CPU needs a C++ compiler (torch.compile's CPU backend) and "
                           "none is on PATH: install g++ or use fused_layers='off'")
