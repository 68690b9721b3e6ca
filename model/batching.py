"""The one token-budget batcher: group documents so that no batch costs more than a token budget.

Every path that cuts a list of documents into batches by size uses it: the packed MLM
micro-batches (documents in the order given, cost = tokens summed), `MGTEForEmbedding.encode`
(longest first, packed: tokens summed) and the padded Hugging Face embedders / cross-encoders
(longest first, padded: longest x batch size, at most `max_batch` documents). A document that
alone exceeds the budget still forms a batch of its own: nothing is ever dropped or split here
(truncation is the tokenizer's job).

It lives in `model/` because `modeling.py` uses it and is shipped with saved models
(`model.hf.SOURCE_FILES`): it imports nothing outside the standard library.
"""
from __future__ import annotations

from typing import Sequence


def token_budget_batches(
    lengths: Sequence[int],
    max_tokens: int | None = None,
    *,
    longest_first: bool = False,
    padded: bool = False,
    max_batch: int | None = None,
) -> list[list[int]]:
    """Indices of `lengths` in consecutive batches of at most `max_tokens` tokens (None: no limit).

    longest_first: walk the documents longest first (ties by index) instead of in the given order,
        so that each batch holds documents of similar length.
    padded: a batch costs `longest x count` (a padded tensor), else the sum of its lengths (packed).
    max_batch: at most this many documents per batch (None: no limit).
    A new batch starts when adding the next document would exceed either limit; the budget may
    be reached exactly. Every index appears exactly once.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"token budget must be >= 1 token or None (no limit), got {max_tokens}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None (no limit), got {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if longest_first else range(len(lengths))
    batches: list[list[int]] = []
    current: list[int] = []
    used = longest = 0
    for i in order:
        n = lengths[i]
        if current:
            cost = max(longest, n) * (len(current) + 1) if padded else used + n
            if (max_tokens is not None and cost > max_tokens) or (max_batch is not None and len(current) >= max_batch):
                batches.append(current)
                current, used, longest = [], 0, 0
        current.append(i)
        used += n
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches
