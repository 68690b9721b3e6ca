"""Length-grouped batches (mGTE B.2 / BGE-M3 "efficient batching"): every global batch holds rows
of ONE length group, so short texts train in big batches and long texts in small ones.

A group covers lengths ``(previous max_length, max_length]`` (the first starts at 0; a row longer
than the last bound joins the last group). In each epoch every group's rows are permuted with
``default_rng([seed, salt, group, epoch])`` and cut into batches of the group's ``batch_size``;
a group's last batch takes what is left, rounded down to a multiple of the world size (the few
rows left over are skipped this epoch only, since the next epoch has another permutation).
Step ``k`` draws its group with ``default_rng([seed, salt, k])`` in proportion to the rows each
group still has in this epoch, so all ranks (same seed) pick the same group; when no group has
rows left the next epoch starts. Each rank takes its contiguous slice of the global batch.

The state is the step, the epoch and each group's offset (:meth:`state_dict`): a resume gives the
same next batches, across epoch boundaries. A batch's size depends on the world size (the last
batch of a group), so a resume on another world size is refused rather than re-split.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from foundation.config import frozen

_SALT = 0x4C454E47  # "LENG"


@frozen
class LengthGroup:
    """Rows of up to ``max_length`` tokens (and longer than the previous group's bound), in
    global batches of ``batch_size`` (or, for the reranker, sub-batches of that size)."""

    max_length: int
    batch_size: int

    def validate(self) -> None:
        if self.max_length < 1 or self.batch_size < 1:
            raise ValueError(f"length group needs max_length >= 1 and batch_size >= 1, got {self}")


def _table(rows: tuple[tuple[int, int], ...]) -> tuple[LengthGroup, ...]:
    return tuple(LengthGroup(max_length=m, batch_size=b) for m, b in rows)


# PAPER_FACTS "Hard negatives and TRM fine-tuning": batch size (embedder) / sub-batch (reranker)
PAPER_EMBEDDER_GROUPS = _table(((500, 768), (1000, 384), (2000, 256), (3000, 160), (8000, 80)))
PAPER_RERANKER_SUB_BATCH = _table(((500, 256), (1000, 128), (2000, 64), (3000, 48), (8000, 16)))


def check_groups(groups: Sequence[LengthGroup]) -> None:
    """Groups must be non-empty with strictly increasing bounds."""
    if not groups:
        raise ValueError("length groups: none given")
    bounds = [g.max_length for g in groups]
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"length groups: max_length must increase strictly, got {bounds}")


def assign_groups(lengths: Sequence[int] | np.ndarray, groups: Sequence[LengthGroup]) -> np.ndarray:
    """The index of each row's group: the first whose ``max_length`` >= the row's length; rows
    longer than the last bound go to the last group."""
    check_groups(groups)
    bounds = np.array([g.max_length for g in groups], dtype=np.int64)
    index = np.searchsorted(bounds, np.asarray(lengths, dtype=np.int64), side="left")  # (rows,)
    return np.minimum(index, len(groups) - 1).astype(np.int64)


class LengthGroupBatchSampler:
    """Endless, seeded, resumable single-group batches (see the module docstring)."""

    reshardable = False  # a group's last batch is rounded to the world size

    def __init__(self, lengths: Sequence[int] | np.ndarray, groups: Sequence[LengthGroup], *, seed: int,
                 rank: int = 0, world_size: int = 1):
        groups = tuple(groups)
        for g in groups:
            if g.batch_size % world_size:
                raise ValueError(f"length group <= {g.max_length} tokens: batch_size {g.batch_size} "
                                 f"does not divide by the world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.groups, self.seed, self.rank, self.world_size = groups, int(seed), rank, world_size
        which = assign_groups(lengths, groups)
        self.members = [np.flatnonzero(which == g) for g in range(len(groups))]  # row indices per group
        # rows each group uses per epoch: all, less the remainder that does not divide by the world size
        self.usable = np.array([len(m) - len(m) % world_size for m in self.members], dtype=np.int64)
        if not self.usable.sum():
            raise ValueError(f"length groups: no group has {world_size} or more rows "
                             f"(rows per group: {[len(m) for m in self.members]})")
        self.step, self.epoch = 0, 0
        self.offset = np.zeros(len(groups), dtype=np.int64)
        self._perms: tuple[int, list[np.ndarray]] | None = None
        self.last_group = -1  # the group of the batch returned last

    def batches_per_epoch(self) -> int:
        """Global batches in one epoch: every group's rows cut into its batch size."""
        return int(sum(-(-int(u) // g.batch_size) for u, g in zip(self.usable, self.groups)))

    def _permutations(self) -> list[np.ndarray]:
        if self._perms is None or self._perms[0] != self.epoch:
            perms = [m[np.random.default_rng([self.seed, _SALT, g, self.epoch]).permutation(len(m))]
                     for g, m in enumerate(self.members)]
            self._perms = (self.epoch, perms)
        return self._perms[1]

    def next_global(self) -> tuple[int, int, np.ndarray]:
        """``(step, group, the global batch's row indices)``; advances the position."""
        remaining = self.usable - self.offset  # (groups,)
        if not remaining.sum():
            self.epoch += 1
            self.offset[:] = 0
            remaining = self.usable.copy()
        u = np.random.default_rng([self.seed, _SALT, self.step]).random()
        group = int(np.searchsorted(np.cumsum(remaining) / remaining.sum(), u, side="right"))
        group = min(group, len(self.groups) - 1)
        while not remaining[group]:  # u at a boundary of float rounding: the previous group with rows
            group -= 1
        start = int(self.offset[group])
        size = min(self.groups[group].batch_size, int(remaining[group]))
        indices = self._permutations()[group][start:start + size]
        self.offset[group] = start + size
        step, self.step = self.step, self.step + 1
        self.last_group = group
        return step, group, indices

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        _, _, indices = self.next_global()
        per_rank = len(indices) // self.world_size
        return [int(i) for i in indices[self.rank * per_rank:(self.rank + 1) * per_rank]]

    def _identity(self) -> dict:
        return {"seed": self.seed, "world_size": self.world_size,
                "groups": [[g.max_length, g.batch_size] for g in self.groups],
                "rows_per_group": [len(m) for m in self.members]}

    def state_dict(self) -> dict:
        return {**self._identity(), "step": self.step, "epoch": self.epoch,
                "offset": [int(o) for o in self.offset]}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue a saved sequence; refuses a state of other data, groups, seed or world size."""
        for key, mine in self._identity().items():
            theirs = state[key]
            if (list(map(list, theirs)) if key == "groups" else theirs) != mine:
                raise ValueError(f"length-group sampler state has {key}={theirs!r}, this run has {mine!r}: "
                                 "resuming would not continue the same batch sequence")
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.offset = np.array(state["offset"], dtype=np.int64)
