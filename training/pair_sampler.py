"""Contrastive batches: every global batch from ONE source, sources drawn by mGTE eq. 1.

    q_i = p_i^alpha / sum_j p_j^alpha,   p_i = n_i / sum_j n_j,   n_i = pairs of source i, alpha = 0.5

The global batch sequence depends only on the seed and the step: step k draws its source with
``default_rng([seed, k])`` and takes the next ``batch_size`` pairs of that source's current
permutation (permutation e of source s is ``default_rng([seed, crc32(s), e])``; a source whose
remainder is shorter than a batch starts its next permutation). Each rank takes its contiguous
slice of the global batch, so every rank trains on the same source at the same step, and a
resume with another world size continues the same global sequence, re-split. The state is the
step and each source's (permutation, offset): :meth:`state_dict` / :meth:`load_state_dict`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import torch

from foundation.sampling import eq1_weights
from foundation.text import hash_to_int64  # noqa: F401  (re-exported: the stored hashes as int64)


@dataclass(frozen=True)
class BatchIndices:
    step: int  # global step this batch belongs to (0-based)
    source: str
    indices: np.ndarray  # this rank's rows of the source, (batch_size // world_size,)


class SourceBatchSampler:
    """Infinite, deterministic, resumable single-source batches (see the module doc)."""

    def __init__(self, sizes: Mapping[str, int], batch_size: int, *, seed: int = 0, alpha: float = 0.5,
                 rank: int = 0, world_size: int = 1):
        if batch_size < world_size or batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of world_size {world_size}")
        self.sizes = {s: int(n) for s, n in sorted(sizes.items())}
        self.batch_size, self.seed, self.alpha = batch_size, seed, alpha
        self.rank, self.world_size = rank, world_size
        # a source smaller than the batch gives batches of all its pairs (rounded to the world size)
        self.source_batch = {s: min(batch_size, n - n % world_size) for s, n in self.sizes.items()}
        usable = {s: n for s, n in self.sizes.items() if self.source_batch[s] > 0}
        if not usable:
            raise ValueError(f"no source has {world_size} or more pairs: {self.sizes}")
        probs = eq1_weights(usable, alpha)
        self.sources = sorted(probs)
        self.probs = np.array([probs[s] for s in self.sources])
        self.step = 0
        self.epoch = {s: 0 for s in self.sources}
        self.offset = {s: 0 for s in self.sources}
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    def _permutation(self, source: str) -> np.ndarray:
        epoch = self.epoch[source]
        cached = self._perm.get(source)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(source.encode()), epoch])
            self._perm[source] = (epoch, rng.permutation(self.sizes[source]))
        return self._perm[source][1]

    def next_global(self) -> tuple[int, str, np.ndarray]:
        """(step, source, the global batch's row indices) and advance."""
        step = self.step
        choice = np.random.default_rng([self.seed, step]).choice(len(self.sources), p=self.probs)
        source = self.sources[int(choice)]
        size = self.source_batch[source]
        if self.offset[source] + size > self.sizes[source]:
            self.epoch[source] += 1
            self.offset[source] = 0
        start = self.offset[source]
        indices = self._permutation(source)[start:start + size]
        self.offset[source] = start + size
        self.step += 1
        return step, source, indices

    def __iter__(self) -> Iterator[BatchIndices]:
        return self

    def __next__(self) -> BatchIndices:
        step, source, indices = self.next_global()
        per_rank = len(indices) // self.world_size
        return BatchIndices(step, source, indices[self.rank * per_rank:(self.rank + 1) * per_rank])

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "batch_size": self.batch_size, "alpha": self.alpha,
                "sizes": dict(self.sizes), "source_batch": dict(self.source_batch), "world_size": self.world_size,
                "epoch": dict(self.epoch), "offset": dict(self.offset)}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue a saved sequence; refuses a state of other data or another global batch.

        Another world size is fine (the same global batches are re-split) unless a source smaller
        than the batch would get another batch size (its batches are rounded to the world size).
        """
        for key in ("seed", "batch_size", "alpha", "sizes", "source_batch"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r}, this run has {getattr(self, key)!r}: "
                                 "resuming would not continue the same batch sequence")
        self.step = int(state["step"])
        self.epoch = {s: int(state["epoch"][s]) for s in self.sources}
        self.offset = {s: int(state["offset"][s]) for s in self.sources}


# ---------------------------------------------------------------------------------------------
# Batch contents


@dataclass
class PairBatch:
    step: int
    source: str
    queries: list[str]
    documents: list[str]
    query_hash: torch.Tensor  # (B,) int64
    doc_hash: torch.Tensor  # (B,) int64
    pair_ids: list[str]


def take_batch(tables: Mapping[str, pa.Table], item: BatchIndices) -> PairBatch:
    """The rows ``item`` names from ``tables[source]`` (PAIR columns) as texts and int64 hashes."""
    rows = tables[item.source].take(pa.array(item.indices, type=pa.int64()))
    cols = rows.select(["query", "positive", "query_hash", "positive_hash", "pair_id"]).to_pydict()
    return PairBatch(
        step=item.step, source=item.source, queries=cols["query"], documents=cols["positive"],
        query_hash=torch.tensor([hash_to_int64(h) for h in cols["query_hash"]], dtype=torch.int64),
        doc_hash=torch.tensor([hash_to_int64(h) for h in cols["positive_hash"]], dtype=torch.int64),
        pair_ids=cols["pair_id"])
