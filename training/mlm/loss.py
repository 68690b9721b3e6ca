"""The MLM loss at the masked positions only, its 250k-vocabulary head evaluated in chunks.

With the real vocabulary the (masked tokens x vocab) logits are the memory hot spot:
:func:`chunked_mlm_loss_sum` evaluates the head in chunks of ``data.loss_chunk`` masked positions
under activation checkpointing, so only one chunk of logits is alive at a time, forward or backward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from model.heads import mlm_loss_sum
from training.mlm.masking import IGNORE_INDEX
from training.model_builder import is_hf_encoder


def _chunk_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, embeddings: torch.Tensor):
    return mlm_loss_sum(head(hidden, embeddings), labels)  # logits (n, vocab) -> fp32 sum, correct


def chunked_mlm_loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, embeddings: torch.Tensor,
                         chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`model.heads.mlm_loss_sum` of the head's logits, the head run ``chunk`` rows at a time.

    hidden (n, H) and labels (n,) are the masked positions only. With ``chunk > 0`` the head runs
    on at most ``chunk`` rows at a time and its logits are recomputed in backward (activation
    checkpointing): peak memory ~ chunk x vocab instead of n x vocab; the result is the same.
    """
    if chunk <= 0 or hidden.shape[0] <= chunk:
        return _chunk_loss(hidden, labels, head, embeddings)
    loss = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        part_loss, part_correct = checkpoint(_chunk_loss, hidden[start:start + chunk], labels[start:start + chunk],
                                             head, embeddings, use_reentrant=False)
        loss = loss + part_loss
        correct = correct + part_correct
    return loss, correct


class MLMTrainModule(torch.nn.Module):
    """``MGTEForMaskedLM`` (or an HF MLM model behind :class:`model.hf_encoder.HFEncoder`) + the
    chunked masked-only loss; what DDP/DeepSpeed wrap."""

    def __init__(self, mlm: torch.nn.Module, loss_chunk: int):
        super().__init__()
        self.mlm = mlm
        self.loss_chunk = loss_chunk

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor,
                max_seqlen: int) -> tuple[torch.Tensor, torch.Tensor]:
        if is_hf_encoder(self.mlm):  # the HF head holds its tied decoder
            hidden = self.mlm(input_ids, cu_seqlens, max_seqlen)  # (total, H)
            head, embeddings = self.mlm.mlm_head, self.mlm.output_embeddings
        else:
            hidden = self.mlm.new.forward_packed(input_ids, cu_seqlens, max_seqlen)  # (total, H)
            head, embeddings = self.mlm.lm_head, self.mlm.new.embeddings.word_embeddings.weight
        masked = torch.nonzero(labels != IGNORE_INDEX).flatten()  # (n_masked,)
        return chunked_mlm_loss_sum(hidden.index_select(0, masked), labels.index_select(0, masked), head, embeddings,
                                    self.loss_chunk)
