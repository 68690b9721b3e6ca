"""The reranker's training data: query groups of 1 positive + hard + random negatives (mGTE 2.3).

Input is the hard-negatives table (:data:`storage_schemas.mine.HARD_NEGATIVES`): a finished ``mgte
mine`` output directory (only files of marked tasks, :func:`foundation.ledger.read_stage_output`) or
plain parquet files of that schema. A row with fewer mined negatives than ``hard_negatives`` is
dropped as ``too_few_negatives``.

Each query's group is its positive, then ``hard_negatives`` of its mined negatives (the best
ranked, or a seeded sample: ``hard_select``), then ``random_negatives`` drawn from the candidate
pool: every distinct positive and negative text of the input (distinct by :func:`foundation.text.text_id`,
the one "same text" of every stage). A random negative is never a positive of that query (by id or
by text hash, over every row of the same query), never a mined negative the row can get as a hard
negative and never the query itself. Random negatives are drawn ONCE per row (seed, row), when
the data is built, so that the row's length group can count them (the paper does not say whether
they are redrawn); a ``sample``d hard negative set is drawn per (seed, step, row). Either way a
resumed run sees the same groups.

Rows are batched as the TRM's (:class:`training.length_groups.LengthGroupBatchSampler`): every
global batch holds queries of one source (drawn by eq. 1, ``data.alpha``) and one length group of
it. A row's length is its longest pair over EVERY document it can be given: its positive, the mined
negatives it can get (the first ``hard_negatives``, or all of them with ``hard_select: sample``) and
its random negatives, so a batch's cut to its group's bound never shortens a document of that batch
(beyond ``max_length``). A batch is split into sub-batches of at most the group's ``sub_batch``
pairs (whole query groups: the loss of a query depends on its own group only, so the loop's
gradient accumulation over sub-batches is exact).
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from foundation.config import frozen
from foundation.errors import BadInputError
from foundation.text import text_id
from storage_schemas.base import SchemaError
from storage_schemas.mine import HARD_NEGATIVES
from training.length_groups import PAPER_RERANKER_GROUPS, LengthGroup, LengthGroupBatchSampler, check_groups
from training.stage import ModelInput, epochs_to_steps

log = logging.getLogger(__name__)

_SALT_RANDOM = 0x524E4547  # "RNEG"
_SALT_HARD = 0x484E4547  # "HNEG"


@frozen
class RerankDataConfig:
    hard_negatives: int = 6
    random_negatives: int = 4
    hard_select: Literal["first", "sample"] = "first"  # the best-ranked mined negatives, or a seeded sample
    query_max_tokens: int = 512  # queries are cut first (to at most half the pair); then the document
    max_length: int = 8192  # pair tokens, special tokens included (clipped to the model's positions)
    # per length group (pair tokens): queries per global batch and (query, document) pairs per
    # sub-batch on a rank; Table 12's BS(R) / S-BS(R)
    groups: tuple[LengthGroup, ...] = PAPER_RERANKER_GROUPS
    alpha: float = 0.5  # eq. 1 over the sources (datasets): each global batch from one source
    seed: int = 0

    def validate(self) -> None:
        if self.hard_negatives < 0 or self.random_negatives < 0 or self.hard_negatives + self.random_negatives < 1:
            raise ValueError("data.hard_negatives and data.random_negatives must be >= 0, at least one negative")
        if self.query_max_tokens < 1 or self.max_length < 8:
            raise ValueError("data.query_max_tokens must be >= 1 and data.max_length >= 8")
        check_groups(self.groups)
        if not 0 < self.alpha <= 1:
            raise ValueError("data.alpha (eq. 1) must be in (0, 1]")

    @property
    def group_size(self) -> int:
        """Documents per query: 1 positive + the negatives."""
        return 1 + self.hard_negatives + self.random_negatives


# ---------------------------------------------------------------------------------------------
# Input


def _parquet_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        return sorted(path.rglob("*.parquet"))
    return [Path(p) for p in sorted(glob.glob(spec))] if any(c in spec for c in "*?[") else [path]


def read_hard_negatives(inputs: Sequence[str], who: str = "train reranker") -> pa.Table:
    """Every input's rows (mine outputs and/or parquet files of the HARD_NEGATIVES schema)."""
    from foundation.ledger import read_stage_output, stage_output

    tables = []
    for spec in inputs:
        if stage_output(spec, "mine", who=who) is not None:
            tables.append(HARD_NEGATIVES.validate(read_stage_output(spec, "data", HARD_NEGATIVES), where=spec))
            continue
        files = _parquet_files(spec)
        if not files:
            raise BadInputError(f"{who}: input {spec} has no parquet files")
        for f in files:
            if not f.is_file():
                raise BadInputError(f"{who}: input {f} does not exist")
            try:
                tables.append(HARD_NEGATIVES.validate(pq.read_table(f), where=str(f)))
            except SchemaError as exc:
                raise BadInputError(f"{who}: {exc}") from None
            except (pa.ArrowInvalid, OSError) as exc:
                raise BadInputError(f"{who}: {f}: not a readable parquet file ({exc})") from None
    if not tables:
        raise BadInputError(f"{who}: no input given (--input MINED)")
    return pa.concat_tables(tables)


def split_usable(table: pa.Table, hard_negatives: int) -> tuple[pa.Table, dict]:
    """(rows with enough mined negatives, counts: input = kept + dropped, dropped_by_reason)."""
    lengths = pc.list_value_length(table["negatives"]).fill_null(0).to_numpy(zero_copy_only=False)
    keep = lengths >= hard_negatives
    dropped = int((~keep).sum())
    kept = table.filter(pa.array(keep))
    return kept, {"counts": {"input": table.num_rows, "kept": kept.num_rows, "dropped": dropped, "quarantined": 0},
                  "dropped_by_reason": {"too_few_negatives": dropped} if dropped else {}}


# ---------------------------------------------------------------------------------------------
# The candidate pool and the groups


class CandidatePool:
    """Distinct positive and negative texts of a table, and what each query must never get."""

    def __init__(self, table: pa.Table):
        cols = table.select(["query_id", "query", "positive_id", "positive", "negative_ids", "negatives"]).to_pydict()
        index: dict[int, int] = {}
        self.texts: list[str] = []
        self.ids: list[set[str]] = []  # every id seen with the text

        def add(text: str, id_: str | None) -> int:
            h = text_id(text)
            i = index.get(h)
            if i is None:
                i = index[h] = len(self.texts)
                self.texts.append(text)
                self.ids.append(set())
            if id_ is not None:
                self.ids[i].add(id_)
            return h

        self.hashes_of: dict[str, set[int]] = {}  # query key -> positive text hashes (+ the query's own)
        self.ids_of: dict[str, set[str]] = {}  # query key -> positive ids
        for r in range(len(cols["query"])):
            key = self.query_key(cols["query_id"][r], cols["query"][r])
            self.hashes_of.setdefault(key, {text_id(cols["query"][r])}).add(add(cols["positive"][r],
                                                                                  cols["positive_id"][r]))
            if cols["positive_id"][r] is not None:
                self.ids_of.setdefault(key, set()).add(cols["positive_id"][r])
            for text, id_ in zip(cols["negatives"][r] or [], cols["negative_ids"][r] or []):
                add(text, id_)
        self.hashes = np.array(list(index), dtype=np.int64)  # (pool,) in pool order (dict keeps insertion order)

    @staticmethod
    def query_key(query_id: str | None, query: str) -> str:
        return query_id if query_id else f"text:{text_id(query)}"

    def __len__(self) -> int:
        return len(self.texts)

    def forbidden(self, key: str, extra_hashes: Sequence[int] = ()) -> tuple[set[int], set[str]]:
        """Text hashes and ids query ``key`` must never get as a negative: its positives (and itself)."""
        return self.hashes_of.get(key, set()) | set(extra_hashes), self.ids_of.get(key, set())

    def sample(self, key: str, k: int, rng: np.random.Generator, exclude_hashes: Sequence[int] = ()) -> list[str]:
        """``k`` distinct pool texts that are not a positive of query ``key`` (by hash or id) and not
        in ``exclude_hashes``: seeded rejection sampling, then (a crowded pool) a seeded scan."""
        if k == 0:
            return []
        bad_hashes, bad_ids = self.forbidden(key, exclude_hashes)
        chosen: list[int] = []
        seen: set[int] = set()

        def consider(i: int) -> bool:
            if i not in seen:
                seen.add(i)
                if int(self.hashes[i]) not in bad_hashes and not (bad_ids and self.ids[i] & bad_ids):
                    chosen.append(i)
            return len(chosen) == k

        for _ in range(8):
            if any(consider(int(i)) for i in rng.integers(0, len(self.texts), size=2 * k + 8)):
                return [self.texts[j] for j in chosen]
        if any(consider(int(i)) for i in rng.permutation(len(self.texts))):
            return [self.texts[j] for j in chosen]
        raise BadInputError(f"train reranker: query {key!r}: only {len(chosen)} candidate texts "
                            f"are not its positives or hard negatives, {k} random negatives needed")


@dataclass
class QueryGroups:
    queries: list[str]
    documents: list[list[str]]  # per query: positive, hard negatives, random negatives


def hard_candidates(negatives: Sequence[str], cfg: RerankDataConfig) -> list[str]:
    """The mined negatives a row can be given: the first ``hard_negatives``, or (``sample``) all."""
    return list(negatives[:cfg.hard_negatives]) if cfg.hard_select == "first" else list(negatives)


def draw_random_negatives(table: pa.Table, pool: CandidatePool, cfg: RerankDataConfig) -> list[list[str]]:
    """Each row's ``random_negatives`` pool texts, drawn once (seed, row): never a positive of its
    query, the query itself or a mined negative the row can get as a hard negative."""
    cols = table.select(["query_id", "query", "negatives"]).to_pydict()
    out = []
    for r, (query_id, query, negatives) in enumerate(zip(*cols.values())):
        rng = np.random.default_rng([cfg.seed, _SALT_RANDOM, r])
        out.append(pool.sample(pool.query_key(query_id, query), cfg.random_negatives, rng,
                               exclude_hashes=[text_id(t) for t in hard_candidates(negatives or [], cfg)]))
    return out


def build_groups(table: pa.Table, randoms: Sequence[Sequence[str]], rows: Sequence[int], step: int,
                 cfg: RerankDataConfig) -> QueryGroups:
    """The groups of ``rows`` at global step ``step`` (deterministic in seed, step and row):
    positive, hard negatives, then the row's random negatives (``randoms[row]``)."""
    picked = table.take(pa.array(list(rows), type=pa.int64())).select(["query", "positive", "negatives"]).to_pydict()
    queries, documents = [], []
    for r, query, positive, negatives in zip(rows, *picked.values()):
        if cfg.hard_select == "first":
            hard = list(negatives[:cfg.hard_negatives])
        else:
            rng = np.random.default_rng([cfg.seed, _SALT_HARD, step, int(r)])
            hard = [negatives[i] for i in sorted(rng.choice(len(negatives), cfg.hard_negatives, replace=False))]
        queries.append(query)
        documents.append([positive, *hard, *randoms[int(r)]])
    return QueryGroups(queries, documents)


# ---------------------------------------------------------------------------------------------
# Tokens


def cut_to_tokens(tokenizer, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Each text cut to its first ``max_tokens`` tokens' worth of characters (no special tokens)."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [t[: offsets[max_tokens - 1][1]] if len(ids) > max_tokens else t
            for t, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"])]


def encode_pairs(tokenizer, queries: Sequence[str], docs: Sequence[str], max_length: int,
                 query_max_tokens: int) -> dict:
    """``[CLS] q [SEP] d`` in the tokenizer's pair encoding, padded: the query cut first to
    ``min(query_max_tokens, max_length // 2)`` tokens, then the document to what is left."""
    budget = max(1, min(query_max_tokens, max_length // 2))
    return tokenizer(cut_to_tokens(tokenizer, queries, budget), list(docs), truncation="only_second",
                     max_length=max_length, padding=True, return_tensors="pt", verbose=False)


def row_lengths(tokenizer, table: pa.Table, randoms: Sequence[Sequence[str]], cfg: RerankDataConfig,
                max_length: int) -> np.ndarray:
    """Pair tokens of each row's longest pair over every document it can be given (its positive, the
    mined negatives it can get, its random negatives), capped at ``max_length``."""
    cols = table.select(["query", "positive", "negatives"]).to_pydict()
    docs = [[pos, *hard_candidates(negs or [], cfg), *rand]
            for pos, negs, rand in zip(cols["positive"], cols["negatives"], randoms)]
    texts = list(dict.fromkeys([*cols["query"], *(t for d in docs for t in d)]))
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    n_tokens = {t: len(i) for t, i in zip(texts, ids)}
    extra = tokenizer.num_special_tokens_to_add(pair=True)
    query_budget = max(1, min(cfg.query_max_tokens, max_length // 2))  # >= what encode_pairs keeps of it
    out = np.empty(table.num_rows, dtype=np.int64)
    for r, (q, d) in enumerate(zip(cols["query"], docs)):
        out[r] = min(max_length, min(n_tokens[q], query_budget) + max(n_tokens[t] for t in d) + extra)
    return out


def batch_sampler(table: pa.Table, lengths: np.ndarray, cfg: RerankDataConfig, *, rank: int = 0,
                  world_size: int = 1) -> LengthGroupBatchSampler:
    """Batches of one source (the table's ``source``) and one length group, as the TRM's."""
    return LengthGroupBatchSampler(lengths, cfg.groups, sources=table["source"].to_pylist(), alpha=cfg.alpha,
                                   seed=cfg.seed, rank=rank, world_size=world_size)


class RerankBatches:
    """The loop's data source: next() -> this rank's sub-batches (micro-batches) of one global batch."""

    reshardable = False  # the length-group sampler refuses another world size

    def __init__(self, table: pa.Table, pool: CandidatePool, tokenizer, cfg: RerankDataConfig, *, max_length: int,
                 rank: int, world_size: int):
        self.table, self.pool, self.tokenizer, self.cfg = table, pool, tokenizer, cfg
        self.max_length = max_length  # data.max_length clipped to the model's positions
        self.randoms = draw_random_negatives(table, pool, cfg)
        self.sampler = batch_sampler(table, row_lengths(tokenizer, table, self.randoms, cfg, max_length), cfg,
                                     rank=rank, world_size=world_size)

    def cut_length(self, group: int) -> int:
        """Pair tokens of a batch of ``group``: its bound (the last group: ``max_length``)."""
        last = group == len(self.cfg.groups) - 1
        return self.max_length if last else min(self.max_length, self.cfg.groups[group].max_length)

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        step = self.sampler.step
        rows = next(self.sampler)
        group = self.sampler.last_group
        groups = build_groups(self.table, self.randoms, rows, step, self.cfg)
        per_sub = max(1, self.cfg.groups[group].sub_batch // self.cfg.group_size)  # whole query groups
        out = []
        for start in range(0, len(rows), per_sub):
            queries = groups.queries[start:start + per_sub]
            docs = groups.documents[start:start + per_sub]
            enc = encode_pairs(self.tokenizer, [q for q, d in zip(queries, docs) for _ in d],
                               [t for d in docs for t in d], self.cut_length(group), self.cfg.query_max_tokens)
            out.append({**dict(enc), "queries": len(queries), "group_size": self.cfg.group_size,
                        "tokens": int(enc["attention_mask"].sum())})
        return out

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def group_scores(logits: torch.Tensor, queries: int, group_size: int) -> torch.Tensor:
    """(queries * group_size, labels) cross-encoder logits -> (queries, group_size) scores."""
    return logits[:, 0].reshape(queries, group_size)


def load_inputs(inputs: tuple[str, ...], hard_negatives: int) -> tuple[pa.Table, CandidatePool, dict]:
    """Usable rows, the candidate pool (every input row's texts) and the input accounting."""
    table = read_hard_negatives(inputs)
    kept, info = split_usable(table, hard_negatives)
    return kept, CandidatePool(table), info


def read_input(cfg) -> ModelInput:
    """The stage's reader: the accounting of the usable queries (none usable refuses); ``epochs``
    sets ``loop.max_steps`` (lengths by the init's tokenizer, pairs up to ``data.max_length``)."""
    table, pool, data = load_inputs(cfg.input, cfg.data.hard_negatives)
    if not table.num_rows:
        raise BadInputError(f"train reranker: no query in {list(cfg.input)} has {cfg.data.hard_negatives} mined "
                            "negatives (data.hard_negatives)")
    log.info("reranker: %d queries, %s", table.num_rows, data["counts"])
    extra = {"group": f"1 positive + {cfg.data.hard_negatives} hard + {cfg.data.random_negatives} random",
             "sources": dict(sorted(Counter(s or "" for s in table["source"].to_pylist()).items()))}
    if cfg.epochs:
        from training.model_builder import training_tokenizer

        randoms = draw_random_negatives(table, pool, cfg.data)
        lengths = row_lengths(training_tokenizer(cfg.init, cfg.tokenizer), table, randoms, cfg.data,
                              cfg.data.max_length)
        sampler = batch_sampler(table, lengths, cfg.data, world_size=cfg.scaling.num_workers)
        cfg, extra["steps"] = epochs_to_steps(cfg, sampler.batches_per_epoch())
    return ModelInput(data["counts"], data["dropped_by_reason"], extra, cfg)
