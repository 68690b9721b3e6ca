"""Sparse InfoNCE of the TRM (mGTE 2.2) and what keeps the sparse head honest.

    s_sparse(q, d) = sum over shared tokens t of w_t^q * w_t^d     (w_t = ReLU(W h_t), max over repeats)
    L_sparse = -log( exp(s(q, d+)/t) / sum_j exp(s(q, d_j)/t) ),    t = 0.01 in the paper

Term vectors come as (texts, V) rows over a column set shared by queries and documents (see
:func:`model.heads.sparse_term_matrix`; the TRM uses the tokens of the batch's queries, the only
columns a score can use), so no (batch x length x vocabulary) tensor is ever built. The score is
a plain dot product of non-negative weights (not a cosine). Math in fp32 whatever the autocast.

Health: :func:`sparsity_health` sums what the trainer logs every step (all-zero vectors, non-zero
terms, mean weight); :func:`l1_penalty` is the optional regulariser (mean L1 norm of the term
vectors, i.e. the FLOPS-style pressure towards fewer, smaller weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse_scores(q_terms: torch.Tensor, d_terms: torch.Tensor) -> torch.Tensor:
    """(B, V) x (N, V) -> (B, N) dot products of term weights, in fp32."""
    with torch.autocast(device_type=q_terms.device.type, enabled=False):
        return q_terms.float() @ d_terms.float().T


def sparse_info_nce(q_terms: torch.Tensor, d_terms: torch.Tensor, temperature: float, *,
                    labels: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE over s_sparse; ``labels`` (B,) index of each positive in ``d_terms``, ``mask``
    (B, N) bool True = left out of the denominator (never on a positive)."""
    if labels is None:
        labels = torch.arange(q_terms.shape[0], device=q_terms.device)
    with torch.autocast(device_type=q_terms.device.type, enabled=False):
        logits = sparse_scores(q_terms, d_terms) / temperature  # (B, N)
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        return F.cross_entropy(logits, labels)


def l1_penalty(l1_norms: torch.Tensor) -> torch.Tensor:
    """Mean L1 norm of term vectors; ``l1_norms`` (n,) = sum of each text's (max-pooled) weights."""
    return l1_norms.float().mean()


def sparsity_health(nonzero_terms: torch.Tensor, l1_norms: torch.Tensor) -> dict[str, float]:
    """Sums over texts (divide by the count to log): all-zero vectors, non-zero terms, weight mass.

    ``nonzero_terms`` (n,): terms with weight > 0 per text; ``l1_norms`` (n,): their weight sum.
    """
    nz = nonzero_terms.detach().float()
    return {"zero": float((nz == 0).sum()), "terms": float(nz.sum()), "mass": float(l1_norms.detach().float().sum()),
            "count": float(nz.numel())}
