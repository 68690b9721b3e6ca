"""Matryoshka InfoNCE (mGTE 2.2): the InfoNCE of the first d dimensions, summed over the sizes d.

    L_MRL = sum_{d in D} w_d * InfoNCE(q[:, :d], docs[:, :d]; t),   D = {32k | k >= 1, 32k <= H}

Each term is :func:`training.contrastive.info_nce` on the truncated vectors (cosine of the first d
dimensions, t = 0.05 in the paper), so the math runs in fp32 whatever the autocast.
"""

from __future__ import annotations

from typing import Sequence

import torch

from training.contrastive import info_nce


def matryoshka_dims(hidden_size: int, step: int = 32) -> tuple[int, ...]:
    """D = {step * k | k >= 1, step * k <= hidden_size} (an H below ``step``: just H)."""
    dims = tuple(range(step, hidden_size + 1, step))
    return dims or (hidden_size,)


def dim_weights(dims: Sequence[int], weights: Sequence[float] | None = None) -> tuple[float, ...]:
    """w_d per size: the given ones (one per size, >= 0, not all zero), else equal weights 1."""
    if weights is None or len(weights) == 0:
        return tuple(1.0 for _ in dims)
    if len(weights) != len(dims) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"matryoshka weights {list(weights)} must be one non-negative weight per size {list(dims)}")
    return tuple(float(w) for w in weights)


def matryoshka_info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float, dims: Sequence[int],
                        weights: Sequence[float], *, labels: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum_d w_d * InfoNCE(q[:, :d], d[:, :d]); q (B, H), d (N, H), labels (B,), mask (B, N) bool."""
    total = q.new_zeros((), dtype=torch.float32)
    for size, w in zip(dims, weights):
        if w:
            total = total + w * info_nce(q[:, :size], d[:, :size], temperature, labels=labels, mask=mask)
    return total
