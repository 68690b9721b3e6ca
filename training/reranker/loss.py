"""The reranker's loss (mGTE 2.3): group-wise InfoNCE over cross-encoder scores.

Each query comes with a group of documents, its positive first and then its negatives (6 mined
hard + 4 random at paper scale); the cross-encoder scores every ``[CLS] q [SEP] d`` pair and

    L_i = -log( exp(s(q_i, d_i0)/t) / sum_j exp(s(q_i, d_ij)/t) )

is a softmax cross-entropy over the group, in fp32 whatever the autocast dtype. The loss of a
query depends only on its own group, so a batch split into sub-batches of whole groups
accumulates exactly the gradient of one pass over the batch (the loop sums the sub-batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_info_nce(scores: torch.Tensor, temperature: float = 1.0, *, reduction: str = "sum") -> torch.Tensor:
    """InfoNCE of ``scores`` (queries, group): column 0 is each query's positive.

    ``reduction``: ``sum`` (over queries; the training loop divides by the global query count),
    ``mean`` or ``none`` (one loss per query).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"group_info_nce: scores must be (queries, group >= 2), got {tuple(scores.shape)}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.float() / temperature  # (queries, group)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # the positive is column 0
        return F.cross_entropy(logits, labels, reduction=reduction)


def positive_ranked_first(scores: torch.Tensor) -> torch.Tensor:
    """How many groups score their positive above every negative (ties count as a miss)."""
    with torch.no_grad():
        return (scores[:, 0:1] > scores[:, 1:]).all(dim=1).sum()
