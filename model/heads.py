"""Heads on top of the packed encoder output (hidden (total_tokens, H) + cu_seqlens).

- dense embedding: the [CLS] hidden state (`cls_pool`), mGTE 2.2;
- sparse term weights: w_t = ReLU(W h_t), W in R^{H x 1}; a token seen several times keeps
  its max weight; special tokens get none (`SparseHead`, `sparse_term_weights`,
  `sparse_term_matrix`), mGTE 2.2 / PAPER_FACTS;
- MLM: dense + act + LayerNorm + decoder tied to the word embeddings, evaluated only at the
  positions it is given (`MLMHead`);
- reranker: score = W h_CLS (`RerankerHead`), mGTE 2.3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

XLMR_SPECIAL_TOKEN_IDS = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk>; <mask> never reaches a sparse head


def cls_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The [CLS] (first real) token of every document -> (batch, H); the one CLS pooling of mgte.

    Packed: hidden (total, H) with cu_seqlens (batch + 1,). Padded: hidden (batch, seqlen, H);
    with an attention_mask the first unmasked position is taken, so left padding works too.
    """
    if cu_seqlens is not None:
        return hidden.index_select(0, cu_seqlens[:-1].long())
    if hidden.dim() != 3:
        raise ValueError(f"cls_pool: packed hidden states {tuple(hidden.shape)} need cu_seqlens")
    if attention_mask is None:
        return hidden[:, 0]
    first = attention_mask.ne(0).int().argmax(dim=1)  # (batch,) first real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def mean_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """The mean of every document's token states (packed hidden (total, H)) -> (batch, H)."""
    cu = cu_seqlens.long()
    docs = _document_ids(cu, hidden.shape[0])  # (total,)
    sums = hidden.new_zeros(cu.numel() - 1, hidden.shape[1]).index_add(0, docs, hidden)  # (batch, H)
    return sums / (cu[1:] - cu[:-1]).clamp_min(1).to(hidden.dtype)[:, None]


class SparseHead(nn.Linear):
    """Per-token term weight ReLU(W h_t + b): (total, H) -> (total,).

    A Linear(H, 1) subclass so its parameters are `<name>.weight` / `<name>.bias`, like the
    released gte-multilingual-base `classifier`.
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(hidden)).squeeze(-1)


def _document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    cu = cu_seqlens.long()
    return torch.repeat_interleave(torch.arange(cu.numel() - 1, device=cu.device), cu[1:] - cu[:-1], output_size=total)


def _keep_terms(token_ids: torch.Tensor, special_token_ids) -> torch.Tensor:
    special = torch.as_tensor(tuple(special_token_ids), dtype=token_ids.dtype, device=token_ids.device)
    return ~torch.isin(token_ids, special)


def sparse_term_weights(
    token_ids: torch.Tensor,
    weights: torch.Tensor,
    cu_seqlens: torch.Tensor,
    special_token_ids=XLMR_SPECIAL_TOKEN_IDS,
) -> list[dict[int, float]]:
    """Per document {token_id: max weight}, zero weights and special tokens left out.

    token_ids, weights: packed (total,); cu_seqlens (batch + 1,). For indexing and scoring.
    """
    docs = _document_ids(cu_seqlens, token_ids.numel())
    keep = _keep_terms(token_ids, special_token_ids) & (weights > 0)
    out: list[dict[int, float]] = [{} for _ in range(cu_seqlens.numel() - 1)]
    for doc, tok, w in zip(docs[keep].tolist(), token_ids[keep].tolist(), weights[keep].detach().float().tolist()):
        if w > out[doc].get(tok, 0.0):
            out[doc][tok] = w
    return out


def batch_vocab(*token_id_tensors: torch.Tensor) -> torch.Tensor:
    """Sorted unique token ids over several packed batches: the columns of `sparse_term_matrix`."""
    return torch.unique(torch.cat([t.flatten() for t in token_id_tensors]))


def sparse_term_matrix(
    token_ids: torch.Tensor,
    weights: torch.Tensor,
    cu_seqlens: torch.Tensor,
    vocab: torch.Tensor,
    special_token_ids=XLMR_SPECIAL_TOKEN_IDS,
    *,
    drop_outside: bool = False,
) -> torch.Tensor:
    """Differentiable (batch, len(vocab)) max-pooled term weights, the batched form for losses.

    `vocab` is a sorted tensor of token ids holding every id in `token_ids` (see `batch_vocab`):
    s_sparse(q, d) = sparse_term_matrix(q...) @ sparse_term_matrix(d...).T over a shared vocab.
    With `drop_outside`, tokens missing from `vocab` are left out instead (e.g. `vocab` = the
    queries' tokens: the only columns a query-document score can use).
    """
    batch = cu_seqlens.numel() - 1
    columns = torch.searchsorted(vocab, token_ids).clamp_max(max(vocab.numel() - 1, 0))  # (total,)
    inside = vocab[columns] == token_ids if vocab.numel() else torch.zeros_like(token_ids, dtype=torch.bool)
    if not drop_outside and not bool(inside.all()):
        raise ValueError("vocab must contain every id of token_ids (build it with batch_vocab)")
    flat = _document_ids(cu_seqlens, token_ids.numel()) * vocab.numel() + columns  # (total,)
    keep = _keep_terms(token_ids, special_token_ids) & inside
    w = weights * keep.to(weights.dtype)  # weights are >= 0 (ReLU); left-out tokens add 0 to a max
    out = weights.new_zeros(batch * vocab.numel())
    out = out.scatter_reduce(0, flat, w, reduce="amax", include_self=True)  # max over repeated tokens
    return out.view(batch, vocab.numel())


def mlm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLM loss, the one place it is computed: summed cross-entropy in fp32 whatever the
    autocast dtype, and the number of correct argmax predictions.

    logits (n_masked, vocab) and labels (n_masked,) are the masked positions only. Callers divide
    by the number of masked tokens (the model's mean) or all-reduce the sums first (training).
    """
    logits = logits.float()  # (n_masked, vocab)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.detach().argmax(-1) == labels).sum()
    return loss, correct


class MLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder tied to the word embeddings (+ own bias).

    Call it on the hidden states of the masked positions only: logits are (n, vocab_size), the
    padding rows of the embedding matrix (vocab padded to a multiple of 64) are never scored.
    """

    def __init__(self, config):
        super().__init__()
        self.vocab_size = config.vocab_size
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(hidden)))  # (n, H)
        return F.linear(h, word_embeddings[: self.vocab_size], self.bias[: self.vocab_size])  # (n, vocab)


class RerankerHead(nn.Linear):
    """score = W h_CLS + b: (batch, H) -> (batch, num_labels). Named `classifier` in checkpoints."""

    def __init__(self, hidden_size: int, num_labels: int = 1):
        super().__init__(hidden_size, num_labels)
