"""mGTE eq. 1: the multinomial re-weighting used for languages (MLM) and pair sources (CPT).

``p_i = n_i / sum_j n_j`` and ``q_i = p_i^alpha / sum_j p_j^alpha`` (alpha = 0.5 in the paper, as
in XLM). Groups with no items get no probability and no key.
"""

from __future__ import annotations

import math
from typing import Mapping


def eq1(counts: Mapping[str, int], alpha: float = 0.5) -> dict[str, tuple[float, float]]:
    """``{group: n_i}`` -> ``{group: (p_i, q_i)}``; empty when there are no items."""
    total = sum(n for n in counts.values() if n > 0)
    if total == 0:
        return {}
    p = {k: n / total for k, n in counts.items() if n > 0}
    z = math.fsum(v ** alpha for v in p.values())  # exactly rounded: the same q whatever the groups' order
    return {k: (v, v ** alpha / z) for k, v in p.items()}


def eq1_weights(counts: Mapping[str, int], alpha: float = 0.5) -> dict[str, float]:
    """``{group: n_i}`` -> ``{group: q_i}``, the sampling probabilities alone."""
    return {k: q for k, (_, q) in eq1(counts, alpha).items()}
