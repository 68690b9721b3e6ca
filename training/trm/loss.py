"""One TRM training step: the joint loss over mined + in-batch (+ cross-worker) candidates, encoded
in sub-batches by the cached-gradient step (:func:`training.gradcache.cached_step`).

    L_TRM = lambda * L_sparse + sum_{d in D} w_d * L_{:d}        (mGTE 2.2, PAPER_FACTS)

Candidates of a query: every document of the global batch, i.e. its positive, its own mined
negatives and every other row's positive and negatives (gathered from all workers). Left out of
the denominator (:func:`candidate_mask`): a candidate whose text equals the query's positive, a
positive of another row with the same query text (both found by text hash, as in CPT) and,
optionally, Qwen3-Embedding's false negatives: another row's candidate whose dense score is above
the positive's + margin (:func:`false_negative_mask`).

Each text is encoded once per pass into one row ``[dense (H) | term weights over the batch's
query tokens (V_q) | L1 norm | non-zero terms]`` (:func:`encode_row`), so the cached-gradient
step handles dense and sparse together and no (batch x length x vocabulary) tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from model.heads import batch_vocab, sparse_term_matrix
from training.distributed import all_gather_objects
from training.trm.matryoshka import matryoshka_info_nce
from training.trm.sparse import l1_penalty, sparse_info_nce


@dataclass(frozen=True)
class LossSettings:
    dims: tuple[int, ...]
    dim_weights: tuple[float, ...]
    mrl_temperature: float = 0.05
    sparse_temperature: float = 0.01
    sparse_weight: float = 0.1  # lambda
    sparse_l1: float = 0.0  # weight of the optional L1 regulariser (0 = off)
    false_negative_margin: float | None = None  # Qwen3-Embedding's mask; None = off


def candidate_mask(query_hash: torch.Tensor, doc_hash: torch.Tensor, doc_query_hash: torch.Tensor,
                   doc_is_positive: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = not a negative of that query: the same text as its positive, or another
    positive of the same query text. ``query_hash`` (B,), ``doc_*`` (N,), ``labels`` (B,)."""
    same_text = doc_hash[None, :] == doc_hash[labels][:, None]  # (B, N)
    same_query = (doc_query_hash[None, :] == query_hash[:, None]) & doc_is_positive[None, :]  # (B, N)
    mask = same_text | same_query
    mask[torch.arange(labels.shape[0], device=labels.device), labels] = False
    return mask


def false_negative_mask(q: torch.Tensor, d: torch.Tensor, labels: torch.Tensor, own: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """(B, N) bool: in-batch candidates (not ``own``: the query's positive and mined negatives)
    whose cosine with the query is above the positive's + ``margin`` (Qwen3-Embedding)."""
    with torch.no_grad():
        sims = F.normalize(q.float(), dim=-1) @ F.normalize(d.float(), dim=-1).T  # (B, N)
        positive = sims.gather(1, labels[:, None])  # (B, 1)
        return (sims > positive + margin) & ~own


def own_candidates(batch: int, group: int, offset: int, total: int, device) -> torch.Tensor:
    """(B, total) bool: query i's own ``group`` documents start at ``offset + i * group``."""
    cols = torch.arange(total, device=device)[None, :]
    start = offset + torch.arange(batch, device=device)[:, None] * group
    return (cols >= start) & (cols < start + group)


def query_vocab(query_chunks: Sequence[dict]) -> torch.Tensor:
    """Sorted token ids of every worker's queries: the only columns a query-document score uses."""
    local = batch_vocab(*[c["input_ids"] for c in query_chunks])
    ids = sorted({i for part in all_gather_objects(local.tolist()) for i in part})
    return torch.tensor(ids, dtype=local.dtype, device=local.device)


def encode_row(dense: torch.Tensor, weights: torch.Tensor, input_ids: torch.Tensor, cu_seqlens: torch.Tensor,
               vocab: torch.Tensor, special_token_ids) -> torch.Tensor:
    """(n, H + V_q + 2): dense | max-pooled term weights over ``vocab`` | L1 norm | non-zero terms.

    The last two are over the text's own tokens (all of them, not only ``vocab``'s); the count
    carries no gradient.
    """
    w = weights.float()
    terms = sparse_term_matrix(input_ids, w, cu_seqlens, vocab, special_token_ids, drop_outside=True)  # (n, V_q)
    own = sparse_term_matrix(input_ids, w, cu_seqlens, batch_vocab(input_ids), special_token_ids)  # (n, V_own)
    l1 = own.sum(dim=1, keepdim=True)  # (n, 1)
    nonzero = (own.detach() > 0).sum(dim=1, keepdim=True).float()  # (n, 1)
    return torch.cat([dense.float(), terms, l1, nonzero], dim=1)


def split_row(x: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode_row`: dense (n, H), terms (n, V_q), L1 (n,), non-zero (n,)."""
    return x[:, :hidden], x[:, hidden:-2], x[:, -2], x[:, -1]


def trm_loss(q: torch.Tensor, d: torch.Tensor, q_terms: torch.Tensor, d_terms: torch.Tensor, s: LossSettings, *,
             labels: torch.Tensor, mask: torch.Tensor | None,
             l1: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The parts and the total: ``{"dense", "sparse", "l1", "loss"}`` (scalars, fp32).

    q (B, H), d (N, H) dense; q_terms (B, V), d_terms (N, V) term weights; labels (B,) positives;
    mask (B, N) True = left out; l1 (n,) the L1 norms the regulariser is over (when on).
    """
    dense = matryoshka_info_nce(q, d, s.mrl_temperature, s.dims, s.dim_weights, labels=labels, mask=mask)
    sparse = sparse_info_nce(q_terms, d_terms, s.sparse_temperature, labels=labels, mask=mask)
    reg = l1_penalty(l1) if (s.sparse_l1 and l1 is not None) else dense.new_zeros(())
    return {"dense": dense, "sparse": sparse, "l1": reg,
            "loss": s.sparse_weight * sparse + dense + s.sparse_l1 * reg}
