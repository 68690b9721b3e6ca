"""Unpadding: turn a padded batch into one packed sequence of real tokens and back.

The encoder only ever sees the packed form: `tokens` (total_tokens, ...) plus
`cu_seqlens` (batch + 1,), the cumulative document lengths, so document `i` is
`tokens[cu_seqlens[i]:cu_seqlens[i + 1]]`. No computation is spent on pad tokens.

Example (batch 2, seqlen 4):
    attention_mask = [[1, 1, 1, 0],
                      [1, 1, 0, 0]]
    indices        = [0, 1, 2, 4, 5]     # positions in the flattened (8,) batch
    cu_seqlens     = [0, 3, 5]
    max_seqlen     = 3
    position_ids   = [0, 1, 2, 0, 1]     # restart at every document
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def unpad_input(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Pack the real tokens of a padded batch.

    input_ids: (batch, seqlen, ...) — token ids or any per-token tensor (e.g. hidden states).
    attention_mask: (batch, seqlen), 1/True for real tokens. Every row needs one real token.
    Returns tokens (total_tokens, ...), indices (total_tokens,) into the flattened batch,
    cu_seqlens (batch + 1,) int32, and max_seqlen (a Python int).
    """
    if attention_mask.shape != input_ids.shape[:2]:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match input {tuple(input_ids.shape)}")
    mask = attention_mask.bool()
    seqlens = mask.sum(dim=1, dtype=torch.int32)  # (batch,)
    if bool((seqlens == 0).any()):
        empty = torch.nonzero(seqlens == 0).flatten().tolist()
        raise ValueError(f"attention_mask rows {empty} have no real token")
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()  # (total_tokens,)
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))  # (batch + 1,)
    tokens = input_ids.flatten(0, 1).index_select(0, indices)  # (total_tokens, ...)
    return tokens, indices, cu_seqlens, int(seqlens.max())


def pad_input(packed: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of `unpad_input`: scatter (total_tokens, ...) back to (batch, seqlen, ...), zeros at pads.

    Differentiable with respect to `packed`.
    """
    out = packed.new_zeros((batch * seqlen, *packed.shape[1:]))
    out = out.index_copy(0, indices, packed)  # (batch * seqlen, ...)
    return out.view(batch, seqlen, *packed.shape[1:])


def position_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Position of every packed token inside its own document: 0, 1, ... restarting per document.

    cu_seqlens: (batch + 1,). Returns (total_tokens,) int64.
    """
    cu = cu_seqlens.long()
    total = int(cu[-1]) if total is None else total
    starts = torch.repeat_interleave(cu[:-1], cu[1:] - cu[:-1], output_size=total)  # (total_tokens,)
    return torch.arange(total, device=cu.device) - starts


def cu_seqlens_from_lengths(lengths, device=None) -> torch.Tensor:
    """Document lengths (list or tensor) -> cu_seqlens (batch + 1,) int32."""
    lengths = torch.as_tensor(lengths, dtype=torch.int32, device=device)
    return F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))


def pack_sequences(sequences: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token-id lists -> (packed ids (total_tokens,), cu_seqlens (batch + 1,), max_seqlen)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pack_sequences needs at least one sequence and no empty sequence")
    ids = torch.tensor([t for s in sequences for t in s], dtype=torch.long, device=device)
    lengths = [len(s) for s in sequences]
    return ids, cu_seqlens_from_lengths(lengths, device=device), max(lengths)
