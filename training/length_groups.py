"""Fine-tuning batches (mGTE B.2-B.4, Table 12): every global batch holds rows of ONE source
(dataset) and ONE length group of it; the TRM and the reranker both batch this way.

Step ``k`` draws with ``default_rng([seed, salt, k])``: first the source, by eq. 1 over the
sources' row counts (:func:`foundation.sampling.eq1_weights`, ``alpha`` from the config), then
one length group of that source, in proportion to the rows the group still has in the source's
current epoch. The batch size and sub-batch size are the group's row of the model's table
(:class:`LengthGroup`: Table 12's BS and S-BS). All ranks share the seed, so all draw the same
source and group; each rank takes its contiguous slice of the global batch.

Groups: a row's group is the first whose ``max_length`` >= its length (a row longer than the
last bound joins the last group). Per source, a group with fewer rows than its batch size is
merged into its neighbour: the next longer group (the last group: the previous one), repeatedly,
shortest bound first, until every group of the source fills a batch or the source has one group
left. A merged group uses the table row of its LONGEST member group (its bound, batch size and
sub-batch size), so a batch never holds more rows than the table allows for its longest text and
no row is cut below its own group's bound. A source whose single group still has fewer rows than
the batch size gives batches of all its rows, rounded down to the world size (as CPT's sampler);
a source with fewer rows than the world size is not used.

Epochs are per source: a source's epoch permutes each group's rows
(``default_rng([seed, salt, crc32(source), group, epoch])``) and cuts them into full batches; the
remainder that does not fill a batch is skipped for this epoch only (the next permutation skips
other rows). When the drawn source has no batch left, its next epoch starts.

The state is the step and, per source, the epoch and the batches taken from each group
(:meth:`state_dict`): a resume gives the same next batches. A batch's size can depend on the world
size (a small source), so a resume on another world size is refused rather than re-split.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

from foundation.config import frozen
from foundation.sampling import eq1_weights

_SALT = 0x4C454E47  # "LENG"


@frozen
class LengthGroup:
    """Rows of up to ``max_length`` tokens (and longer than the previous group's bound): global
    batches of ``batch_size`` queries, encoded on each rank in sub-batches of ``sub_batch`` encoder
    inputs (texts for the TRM, (query, document) pairs for the reranker)."""

    max_length: int
    batch_size: int
    sub_batch: int

    def validate(self) -> None:
        if min(self.max_length, self.batch_size, self.sub_batch) < 1:
            raise ValueError(f"length group needs max_length, batch_size and sub_batch >= 1, got {self}")


def _table(rows: tuple[tuple[int, int, int], ...]) -> tuple[LengthGroup, ...]:
    return tuple(LengthGroup(max_length=m, batch_size=b, sub_batch=s) for m, b, s in rows)


# mGTE Table 12 (PAPER_FACTS "Hard negatives and TRM fine-tuning"): length bound, BS, S-BS
PAPER_EMBEDDER_GROUPS = _table(((500, 768, 256), (1000, 384, 128), (2000, 256, 64), (3000, 160, 48), (8000, 80, 16)))
PAPER_RERANKER_GROUPS = _table(((500, 512, 256), (1000, 384, 128), (2000, 256, 64), (3000, 160, 48), (8000, 80, 16)))


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


@dataclass(frozen=True)
class Bucket:
    """One source's rows of table groups ``first..group`` (merged) batched by ``groups[group]``."""

    source: str
    first: int  # the shortest table group merged in
    group: int  # the longest: its table row gives the bound, batch and sub-batch size
    rows: np.ndarray  # row indices, (n,)
    batch_size: int  # the table's, or (a source smaller than one batch) all its rows rounded to the world size

    @property
    def batches(self) -> int:
        """Full batches per epoch."""
        return len(self.rows) // self.batch_size if self.batch_size else 0


def source_buckets(source: str, rows: np.ndarray, which: np.ndarray, groups: Sequence[LengthGroup],
                   world_size: int) -> list[Bucket]:
    """A source's rows (``which``: their table groups) as buckets, small groups merged (module doc)."""
    segs = [[g, g, rows[which == g]] for g in range(len(groups)) if (which == g).any()]
    while len(segs) > 1:
        small = [k for k, (_, last, members) in enumerate(segs) if len(members) < groups[last].batch_size]
        if not small:
            break
        k = small[0]
        a, b = (k, k + 1) if k + 1 < len(segs) else (k - 1, k)
        segs[a:b + 1] = [[segs[a][0], segs[b][1], np.concatenate([segs[a][2], segs[b][2]])]]
    out = []
    for first, last, members in segs:
        n = len(members)
        size = min(groups[last].batch_size, n - n % world_size)
        out.append(Bucket(source, first, last, np.sort(members), size))
    return out


@dataclass(frozen=True)
class GlobalBatch:
    step: int
    source: str
    group: int  # the table row its batch and sub-batch size come from
    indices: np.ndarray  # the global batch's row indices, (batch_size,)


class LengthGroupBatchSampler:
    """Endless, seeded, resumable batches of one source and one length group (see the module docstring)."""

    reshardable = False  # a small source's batch is rounded to the world size

    def __init__(self, lengths: Sequence[int] | np.ndarray, groups: Sequence[LengthGroup], *, seed: int,
                 sources: Sequence[str | None] | None = None, alpha: float = 0.5, rank: int = 0,
                 world_size: int = 1):
        groups = tuple(groups)
        for g in groups:
            if g.batch_size % world_size:
                raise ValueError(f"length group <= {g.max_length} tokens: batch_size {g.batch_size} "
                                 f"does not divide by the world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.groups, self.seed, self.alpha = groups, int(seed), float(alpha)
        self.rank, self.world_size = rank, world_size
        which = assign_groups(lengths, groups)
        sources = sources if sources is not None else [""] * len(which)
        labels = np.array(["" if s is None else str(s) for s in sources], dtype=object)  # (rows,)
        if len(labels) != len(which):
            raise ValueError(f"length groups: {len(labels)} sources for {len(which)} rows")
        self.buckets: dict[str, list[Bucket]] = {}
        for s in sorted(set(labels)):
            rows = np.flatnonzero(labels == s)
            usable = [b for b in source_buckets(s, rows, which[rows], groups, world_size) if b.batches]
            if usable:
                self.buckets[s] = usable
        if not self.buckets:
            raise ValueError(f"length groups: no source has {world_size} or more rows")
        self.sources = sorted(self.buckets)
        q = eq1_weights({s: sum(len(b.rows) for b in self.buckets[s]) for s in self.sources}, self.alpha)
        self.probs = np.array([q[s] for s in self.sources])  # (sources,)
        self.step = 0
        self.epoch = {s: 0 for s in self.sources}
        self.taken = {s: [0] * len(self.buckets[s]) for s in self.sources}  # batches taken per bucket this epoch
        self._perms: dict[tuple[str, int], tuple[int, np.ndarray]] = {}
        self.last_group, self.last_source = -1, ""  # of the batch returned last

    def batches_per_epoch(self) -> int:
        """Full batches of one pass over every source (the unit ``epochs`` counts)."""
        return int(sum(b.batches for buckets in self.buckets.values() for b in buckets))

    def group(self, index: int) -> LengthGroup:
        return self.groups[index]

    def _permutation(self, source: str, k: int) -> np.ndarray:
        epoch, cached = self.epoch[source], self._perms.get((source, k))
        if cached is None or cached[0] != epoch:
            b = self.buckets[source][k]
            rng = np.random.default_rng([self.seed, _SALT, zlib.crc32(source.encode()), b.first, epoch])
            self._perms[(source, k)] = cached = (epoch, b.rows[rng.permutation(len(b.rows))])
        return cached[1]

    def next_global(self) -> GlobalBatch:
        """The next global batch; advances the position."""
        rng = np.random.default_rng([self.seed, _SALT, self.step])
        source = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
        buckets, taken = self.buckets[source], self.taken[source]
        remaining = np.array([(b.batches - t) * b.batch_size for b, t in zip(buckets, taken)], dtype=np.int64)
        if not remaining.sum():
            self.epoch[source] += 1
            taken[:] = [0] * len(taken)
            remaining = np.array([b.batches * b.batch_size for b in buckets], dtype=np.int64)
        k = int(np.searchsorted(np.cumsum(remaining) / remaining.sum(), rng.random(), side="right"))
        k = min(k, len(buckets) - 1)
        while not remaining[k]:  # a draw at a boundary of float rounding: the previous bucket with rows
            k -= 1
        b = buckets[k]
        start = taken[k] * b.batch_size
        indices = self._permutation(source, k)[start:start + b.batch_size]
        taken[k] += 1
        out = GlobalBatch(self.step, source, b.group, indices)
        self.step += 1
        self.last_group, self.last_source = b.group, source
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        indices = self.next_global().indices
        per_rank = len(indices) // self.world_size
        return [int(i) for i in indices[self.rank * per_rank:(self.rank + 1) * per_rank]]

    def _identity(self) -> dict:
        return {"seed": self.seed, "alpha": self.alpha, "world_size": self.world_size,
                "groups": [[g.max_length, g.batch_size, g.sub_batch] for g in self.groups],
                "buckets": {s: [[b.first, b.group, len(b.rows), b.batch_size] for b in bs]
                            for s, bs in self.buckets.items()}}

    def state_dict(self) -> dict:
        return {**self._identity(), "step": self.step, "epoch": dict(self.epoch),
                "taken": {s: list(t) for s, t in self.taken.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue a saved sequence; refuses a state of other data, groups, seed, alpha or world size."""
        for key, mine in self._identity().items():
            theirs = state.get(key)
            if _plain(theirs) != _plain(mine):
                raise ValueError(f"length-group sampler state has {key}={theirs!r}, this run has {mine!r}: "
                                 "resuming would not continue the same batch sequence")
        self.step = int(state["step"])
        self.epoch = {s: int(state["epoch"][s]) for s in self.sources}
        self.taken = {s: [int(t) for t in state["taken"][s]] for s in self.sources}


def _plain(value):
    """Lists for tuples, recursively (a state read back from JSON or pickle compares equal)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
