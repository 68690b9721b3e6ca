"""InfoNCE with in-batch negatives (mGTE 2.2), its duplicate mask, and the cross-rank gather.

    L = -log( exp(s(q, d+)/t) / sum_j exp(s(q, d_j)/t) ),  s = cosine,  t = 0.01 in CPT

The loss math is tensor-only and runs in fp32 whatever the input dtype or autocast state: at
t = 0.01 the logits reach +-100, which fp16 cannot exponentiate. Documents are gathered from
every rank (:func:`gather_with_grad`; a no-op without a process group), so each query sees the
whole global batch as negatives. A document whose text equals the query's positive, or whose
pair has the same query text, is a false negative: :func:`duplicate_mask` finds them by text
hash and :func:`info_nce` drops them from the denominator.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float, *, labels: torch.Tensor | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE of queries ``q`` (B, H) against documents ``d`` (N, H), computed in fp32.

    ``labels`` (B,): index in ``d`` of each query's positive (default ``arange(B)``).
    ``mask`` (B, N) bool: True = leave out of the denominator (never set it on a positive).
    """
    if labels is None:
        labels = torch.arange(q.shape[0], device=q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q32 = F.normalize(q.float(), dim=-1)  # (B, H)
        d32 = F.normalize(d.float(), dim=-1)  # (N, H)
        logits = q32 @ d32.T / temperature  # (B, N) cosine / t
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        return F.cross_entropy(logits, labels)


def duplicate_mask(query_hash: torch.Tensor, doc_hash: torch.Tensor, doc_query_hash: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: in-batch false negatives of each query, by text hash.

    ``query_hash`` (B,): hash of each query; ``doc_hash`` (N,) / ``doc_query_hash`` (N,): hash of
    each document and of the query it was paired with; ``labels`` (B,): the positive's index.
    Document j is masked for query i when j is not i's positive and either its text equals i's
    positive or its pair's query equals i's query (a second positive of the same query).
    """
    positive_hash = doc_hash[labels]  # (B,)
    same_doc = doc_hash[None, :] == positive_hash[:, None]  # (B, N)
    same_query = doc_query_hash[None, :] == query_hash[:, None]  # (B, N)
    not_positive = torch.ones_like(same_doc)
    not_positive[torch.arange(labels.shape[0], device=labels.device), labels] = False
    return (same_doc | same_query) & not_positive


# ---------------------------------------------------------------------------------------------
# Cross-rank gather


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if _world() > 1 else 0


class _AllGather(torch.autograd.Function):
    """all_gather with gradient: backward sums each slice's gradient over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        return torch.cat(parts)  # (world * B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every slice
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order, keeping the gradient path.

    Without an initialised process group (or with one rank) it returns ``x`` itself. Every
    rank must pass the same shape.
    """
    if _world() == 1:
        return x
    return _AllGather.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors without a gradient (hashes, ids)."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def in_batch_loss(q: torch.Tensor, d: torch.Tensor, temperature: float, *, query_hash: torch.Tensor | None = None,
                  doc_hash: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of this rank's queries against the documents of all ranks (duplicates masked).

    ``q``, ``d``: (B, H) embeddings of this rank's pairs, row i of ``d`` the positive of row i of
    ``q``; the hashes (B,) int64 are optional (no mask without them).
    """
    d_all = gather_with_grad(d)  # (world * B, H)
    labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
    mask = None
    if query_hash is not None and doc_hash is not None:
        mask = duplicate_mask(query_hash, gather_no_grad(doc_hash), gather_no_grad(query_hash), labels)
    return info_nce(q, d_all, temperature, labels=labels, mask=mask)
