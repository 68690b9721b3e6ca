"""The MLM data order: eq. 1 language sampling, per-language shuffled streams, token-budget packing.

Every piece is deterministic given the seed and carries an exact, resumable position:

- :class:`LanguageSampler` draws the language of each next sequence with probability ``q_i``
  (mGTE eq. 1, ``q_i = p_i^a / sum_j p_j^a``, read from the corpus stage's sampling table).
- :class:`LanguageStream` walks one language's shard files: file order and row order within a
  file are permutations seeded by ``(seed, language, epoch)``; at the end it starts the next
  epoch with a new order. Only the current file of each language is held in memory.
- :class:`PackedMLMBatches` (the training data source) fills each GLOBAL batch with sequences
  until ``max_sequences`` or ``max_tokens`` would be exceeded (the sequence that does not fit
  opens the next batch), deals the sequences to ranks (longest first to the least-loaded rank),
  packs each rank's share into micro-batches of at most ``micro_tokens`` tokens and masks every
  sequence with its own ``(seed, draw index)`` generator. The global batch is the same whatever
  the number of workers, so a resume on another world size re-shards deterministically
  (``reshardable = True``) and 1 worker equals N workers at the same global batch.

Batches are packed, never padded: ``input_ids`` (total,), ``cu_seqlens`` (n + 1,).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from foundation.errors import BadInputError
from foundation.ledger import read_manifest
from model.batching import token_budget_batches
from training.mlm.masking import IGNORE_INDEX, MaskingSpec, mask_tokens, sequence_rng
from training.stage import ModelInput

_LANG_SALT = 0x4C414E47
_STREAM_SALT = 0x5354524D


def _lang_key(lang: str) -> int:
    return zlib.crc32(lang.encode())


# -- language sampling ------------------------------------------------------------------------


class LanguageSampler:
    """Draw a language with probability ``q``; the state is the generator's exact state."""

    def __init__(self, q: dict[str, float], seed: int):
        if not q:
            raise ValueError("language sampler: no languages")
        self.langs = sorted(q)
        weights = np.array([q[lang] for lang in self.langs], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"language sampler: bad weights {q}")
        self.cum = np.cumsum(weights / weights.sum())
        self.cum[-1] = 1.0
        self.rng = np.random.Generator(np.random.PCG64([int(seed), _LANG_SALT]))
        self.draws = 0

    def draw(self) -> str:
        self.draws += 1
        return self.langs[int(np.searchsorted(self.cum, self.rng.random(), side="right"))]

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state, "draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.draws = int(state["draws"])


# -- shards ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardFile:
    path: str
    rows: int


class _CachedFile:
    """Token ids and ids of one parquet shard, as flat numpy arrays."""

    def __init__(self, path: str):
        table = pq.read_table(path, columns=["id", "input_ids"])
        ids = table.column("input_ids").combine_chunks()
        self.offsets = ids.offsets.to_numpy()
        self.values = ids.values.to_numpy()
        self.names = table.column("id").to_pylist()

    def length(self, row: int) -> int:
        return int(self.offsets[row + 1] - self.offsets[row])

    def tokens(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row]:self.offsets[row + 1]]


class LanguageStream:
    """One language's sequences in a seeded shuffled order, epoch after epoch."""

    def __init__(self, lang: str, files: list[ShardFile], seed: int):
        if not files or not any(f.rows for f in files):
            raise ValueError(f"language {lang}: no rows in its shards")
        self.lang, self.files, self.seed = lang, [f for f in files if f.rows], seed
        self.epoch, self.file_pos, self.row_pos = 0, 0, 0
        self._cache: tuple[int, _CachedFile] | None = None
        self._orders: dict[str, tuple] = {}  # the current permutations, recomputed from the seed

    def _file_order(self, epoch: int) -> np.ndarray:
        if self._orders.get("files", (None,))[0] != epoch:
            rng = np.random.default_rng([self.seed, _STREAM_SALT, _lang_key(self.lang), epoch])
            self._orders["files"] = (epoch, rng.permutation(len(self.files)))
        return self._orders["files"][1]

    def _row_order(self, epoch: int, file_index: int) -> np.ndarray:
        if self._orders.get("rows", (None,))[0] != (epoch, file_index):
            rng = np.random.default_rng([self.seed, _STREAM_SALT, _lang_key(self.lang), epoch, file_index + 1])
            self._orders["rows"] = ((epoch, file_index), rng.permutation(self.files[file_index].rows))
        return self._orders["rows"][1]

    def file(self, index: int) -> _CachedFile:
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, _CachedFile(self.files[index].path))
        return self._cache[1]

    def next(self) -> tuple[int, int]:
        """``(file index, row)`` of the next sequence; advances the position."""
        file_index = int(self._file_order(self.epoch)[self.file_pos])
        row = int(self._row_order(self.epoch, file_index)[self.row_pos])
        self.row_pos += 1
        if self.row_pos >= self.files[file_index].rows:
            self.row_pos = 0
            self.file_pos += 1
            if self.file_pos >= len(self.files):
                self.file_pos = 0
                self.epoch += 1
        return file_index, row

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "file_pos": self.file_pos, "row_pos": self.row_pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.file_pos, self.row_pos = int(state["epoch"]), int(state["file_pos"]), int(state["row_pos"])


# -- packed batches -------------------------------------------------------------------------------


@dataclass
class PackedBatch:
    """One micro-batch: packed tokens, MLM labels (-100 = not predicted), document boundaries."""

    input_ids: torch.Tensor  # (total,) int64
    labels: torch.Tensor  # (total,) int64
    cu_seqlens: torch.Tensor  # (n + 1,) int32
    max_seqlen: int
    ids: list[str] = field(default_factory=list)  # sequence (chunk) ids, for tests and audits
    draws: list[int] = field(default_factory=list)  # global draw index of each sequence

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def n_masked(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.labels.to(device), self.cu_seqlens.to(device),
                           self.max_seqlen, self.ids, self.draws)


@dataclass(frozen=True)
class _Item:
    draw: int
    lang: str
    file: int
    row: int
    length: int


def deal_to_ranks(lengths: list[int], world_size: int) -> list[list[int]]:
    """Indices per rank: longest first to the rank with the fewest tokens (ties: fewer sequences,
    lower rank); each rank's indices kept in batch order."""
    loads = [(0, 0, r) for r in range(world_size)]
    out: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        tokens, count, rank = min(loads)
        out[rank].append(i)
        loads[rank] = (tokens + lengths[i], count + 1, rank)
    return [sorted(ix) for ix in out]


class PackedMLMBatches:
    """The MLM data source of :func:`training.loop.train_loop` (see the module docstring)."""

    reshardable = True

    def __init__(self, shards: dict[str, list[ShardFile]], q: dict[str, float], *, seed: int, max_sequences: int,
                 max_tokens: int, micro_tokens: int, masking: MaskingSpec, rank: int = 0, world_size: int = 1):
        langs = {lang: w for lang, w in q.items() if lang in shards and w > 0}
        if not langs:
            raise ValueError(f"no language has both shards and a sampling weight (shards: {sorted(shards)})")
        self.sampler = LanguageSampler(langs, seed)
        self.streams = {lang: LanguageStream(lang, shards[lang], seed) for lang in sorted(langs)}
        self.seed, self.max_sequences, self.max_tokens = seed, max_sequences, max_tokens
        self.micro_tokens, self.masking = micro_tokens, masking
        self.rank, self.world_size = rank, world_size
        self.pending: _Item | None = None
        self.batches = 0

    def _draw(self) -> _Item:
        draw = self.sampler.draws
        lang = self.sampler.draw()
        file, row = self.streams[lang].next()
        return _Item(draw, lang, file, row, self.streams[lang].file(file).length(row))

    def global_batch(self) -> list[_Item]:
        items: list[_Item] = []
        used = 0
        while len(items) < self.max_sequences:
            item = self.pending if self.pending is not None else self._draw()
            self.pending = None
            if items and used + item.length > self.max_tokens:
                self.pending = item
                break
            items.append(item)
            used += item.length
        self.batches += 1
        return items

    def __iter__(self):
        return self

    def __next__(self) -> list[PackedBatch]:
        items = self.global_batch()
        mine = [items[i] for i in deal_to_ranks([it.length for it in items], self.world_size)[self.rank]]
        out = []
        for group in token_budget_batches([it.length for it in mine], self.micro_tokens or None):  # 0: one group
            out.append(self._pack([mine[i] for i in group]))
        return out

    def _pack(self, items: list[_Item]) -> PackedBatch:
        inputs, labels, lengths, names = [], [], [], []
        for it in items:
            cached = self.streams[it.lang].file(it.file)
            x, y = mask_tokens(cached.tokens(it.row), sequence_rng(self.seed, it.draw), self.masking)
            inputs.append(x)
            labels.append(y)
            lengths.append(len(x))
            names.append(cached.names[it.row])
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return PackedBatch(torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(np.concatenate(labels)),
                           torch.from_numpy(cu), max(lengths), names, [it.draw for it in items])

    def state_dict(self) -> dict:
        pending = None
        if self.pending is not None:
            p = self.pending
            pending = {"draw": p.draw, "lang": p.lang, "file": p.file, "row": p.row, "length": p.length}
        return {"sampler": self.sampler.state_dict(), "streams": {k: s.state_dict() for k, s in self.streams.items()},
                "pending": pending, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if set(state["streams"]) != set(self.streams):
            raise ValueError(f"sampler state is for languages {sorted(state['streams'])}, "
                             f"these shards have {sorted(self.streams)}")
        self.sampler.load_state_dict(state["sampler"])
        for lang, s in state["streams"].items():
            self.streams[lang].load_state_dict(s)
        self.pending = _Item(**state["pending"]) if state["pending"] else None
        self.batches = int(state["batches"])


def shard_files(paths: list[str | Path]) -> dict[str, list[ShardFile]]:
    """Group ``.../lang=xx/part-*.parquet`` files by language, with their row counts."""
    out: dict[str, list[ShardFile]] = {}
    for path in sorted(str(p) for p in paths):
        lang = next((part[5:] for part in Path(path).parts if part.startswith("lang=")), None)
        if lang is None:
            raise ValueError(f"{path}: not under a lang=xx directory")
        out.setdefault(lang, []).append(ShardFile(path, pq.ParquetFile(path).metadata.num_rows))
    return out


# -- the stage's input ----------------------------------------------------------------------------


def shards_input(cfg) -> tuple[Path, dict]:
    """The one ``mgte mlm-shards`` output of ``input`` and its manifest (anything else refuses)."""
    if not cfg.input:
        raise BadInputError("train mlm: no input (give --input <mlm-shards output dir>)")
    root = Path(cfg.input[0])
    return root, read_manifest(root, "mlm-shards", who="train mlm")


def read_input(cfg) -> ModelInput:
    """The stage's reader: every chunk of the shards is trained on (input = kept)."""
    _root, manifest = shards_input(cfg)
    chunks = int(manifest["extra"].get("chunks", manifest["counts"]["kept"]))
    return ModelInput({"input": chunks, "kept": chunks, "dropped": 0, "quarantined": 0}, {})
