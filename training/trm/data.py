"""The TRM's input and batches: mined hard negatives (``mgte mine``) in length-grouped global batches.

Input: finished ``mgte mine`` output directories (their marked ``data/`` files, through
:func:`foundation.ledger.read_stage_output`) or plain parquet files / directories of the
HARD_NEGATIVES table. A row gives its query, its positive and its first ``num_negatives`` mined
negatives (best-ranked first); a row with fewer negatives is dropped (``too_few_negatives``), one
with an empty query or positive too (``empty_text``).

Batches: every row's length is its longest text in tokens (after truncation); a global batch
holds rows of one source (drawn by eq. 1, ``data.alpha``) and one length group of it
(:class:`training.length_groups.LengthGroupBatchSampler`, seed shared by all workers). A rank's
share is tokenised into sub-batches of the group's ``sub_batch`` texts (queries, then each row's
``[positive, negative_1 .. negative_k]``) for the cached-gradient step.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from foundation.errors import BadInputError
from foundation.ledger import read_stage_output, stage_output
from foundation.text import text_id
from storage_schemas.mine import HARD_NEGATIVES
from training.embedder import tokenize_chunks
from training.length_groups import LengthGroup, LengthGroupBatchSampler
from training.stage import ModelInput, epochs_to_steps

log = logging.getLogger(__name__)

COLUMNS = ["query_id", "query", "positive", "negatives", "source"]


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.parquet"))


def _read_plain(path: Path) -> pa.Table:
    files = _files(path)
    if not files:
        raise BadInputError(f"{path}: no parquet files of the hard-negatives table")
    tables = []
    for f in files:
        try:
            have = pq.read_schema(f)
        except (OSError, pa.ArrowInvalid) as exc:
            raise BadInputError(f"{f}: not a readable parquet file ({exc})") from None
        for name in COLUMNS:
            if name not in have.names:
                raise BadInputError(f"{f}: missing field '{name}' ({HARD_NEGATIVES.schema.field(name).type}, "
                                    f"table {HARD_NEGATIVES.name})")
        tables.append(pq.read_table(f, columns=COLUMNS))
    return pa.concat_tables(tables, promote_options="default")


def read_hard_negatives(inputs: tuple[str, ...] | list[str]) -> pa.Table:
    """The rows of every input (stage outputs and plain parquet), COLUMNS only."""
    if not inputs:
        raise BadInputError("train trm: no --input (a finished `mgte mine` output or hard-negative parquet files)")
    tables = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise BadInputError(f"{path}: input does not exist")
        if stage_output(path, "mine", who="train trm") is not None:
            tables.append(read_stage_output(path, "data", HARD_NEGATIVES, columns=COLUMNS))
        else:
            tables.append(_read_plain(path))
    return pa.concat_tables(tables, promote_options="default")


def clean_rows(table: pa.Table, num_negatives: int) -> tuple[dict[str, list], dict]:
    """Kept rows as columns (negatives cut to ``num_negatives``) and the counts
    ``{counts: {input, kept, dropped, quarantined}, dropped_by_reason}``."""
    cols = table.to_pydict()
    kept: dict[str, list] = {"query_id": [], "query": [], "positive": [], "negatives": [], "source": []}
    reasons: Counter = Counter()
    for qid, query, positive, negatives, source in zip(*(cols[c] for c in COLUMNS)):
        if not (query or "").strip() or not (positive or "").strip():
            reasons["empty_text"] += 1
            continue
        negatives = [n for n in (negatives or []) if n]
        if len(negatives) < num_negatives:
            reasons["too_few_negatives"] += 1
            continue
        for key, value in zip(kept, (qid, query, positive, negatives[:num_negatives], source)):
            kept[key].append(value)
    n = table.num_rows
    counts = {"input": n, "kept": n - sum(reasons.values()), "dropped": sum(reasons.values()), "quarantined": 0}
    return kept, {"counts": counts, "dropped_by_reason": dict(reasons)}


def read_input(cfg) -> ModelInput:
    """The stage's reader: usable rows and their accounting; ``epochs`` sets ``loop.max_steps``."""
    rows, data = clean_rows(read_hard_negatives(cfg.input), cfg.data.num_negatives)
    if not rows["query"]:
        raise BadInputError(f"train trm: no usable rows in {list(cfg.input)} ({data['dropped_by_reason']})")
    log.info("trm: %d queries with %d negatives each", len(rows["query"]), cfg.data.num_negatives)
    extra = {"queries": len(rows["query"]), "sources": dict(sorted(Counter(s or "" for s in rows["source"]).items()))}
    if cfg.epochs:
        cfg, extra["steps"] = epochs_to_steps(cfg, batches_per_epoch(cfg, rows))
    return ModelInput(data["counts"], data["dropped_by_reason"], extra, cfg)


def batches_per_epoch(cfg, rows: dict) -> int:
    """The global batches of one epoch over ``rows``; lengths in tokens of the init's tokenizer when
    it has one (as training sees them), else ``tokenizer``."""
    from training.model_builder import training_tokenizer

    d = cfg.data
    lengths = row_lengths(training_tokenizer(cfg.init, cfg.tokenizer), rows, d.query_max_tokens, d.doc_max_tokens)
    sampler = LengthGroupBatchSampler(lengths, d.groups, sources=rows["source"], alpha=d.alpha, seed=d.seed,
                                      world_size=cfg.scaling.num_workers)
    return sampler.batches_per_epoch()


def row_lengths(tokenizer, rows: dict[str, list], query_max: int, doc_max: int) -> np.ndarray:
    """Each row's longest text in tokens (truncated as in training): the length its group is chosen by."""
    def lengths(texts: list[str], limit: int) -> np.ndarray:
        ids = tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    longest = lengths(rows["query"], query_max)
    longest = np.maximum(longest, lengths(rows["positive"], doc_max))
    k = len(rows["negatives"][0]) if rows["negatives"] else 0
    flat = [n for negs in rows["negatives"] for n in negs]
    if flat:
        longest = np.maximum(longest, lengths(flat, doc_max).reshape(-1, k).max(axis=1))
    return longest


class HardNegativeBatches:
    """The loop's data source: next() -> [this rank's share of one global batch (one source, one length group)]."""

    reshardable = LengthGroupBatchSampler.reshardable

    def __init__(self, rows: dict[str, list], lengths: np.ndarray, tokenizer, groups: tuple[LengthGroup, ...], *,
                 query_max_tokens: int, doc_max_tokens: int, seed: int, rank: int, world_size: int,
                 alpha: float = 0.5):
        self._tokenize = tokenize_chunks
        self.rows, self.tokenizer = rows, tokenizer
        self.query_max, self.doc_max = query_max_tokens, doc_max_tokens
        self.sampler = LengthGroupBatchSampler(lengths, groups, sources=rows["source"], alpha=alpha, seed=seed,
                                               rank=rank, world_size=world_size)

    def batch(self, indices: list[int], group: int) -> dict:
        """This rank's ``indices`` of a batch of length group ``group`` (its sub-batch size)."""
        sub_batch = self.sampler.group(group).sub_batch
        queries = [self.rows["query"][i] for i in indices]
        docs, doc_query, positive = [], [], []
        for i in indices:
            for j, text in enumerate([self.rows["positive"][i], *self.rows["negatives"][i]]):
                docs.append(text)
                doc_query.append(self.rows["query"][i])
                positive.append(j == 0)
        q_chunks, q_tokens = self._tokenize(self.tokenizer, queries, self.query_max, sub_batch)
        d_chunks, d_tokens = self._tokenize(self.tokenizer, docs, self.doc_max, sub_batch)
        return {"queries": q_chunks, "documents": d_chunks,
                "query_hash": torch.tensor([text_id(t) for t in queries], dtype=torch.int64),
                "doc_hash": torch.tensor([text_id(t) for t in docs], dtype=torch.int64),
                "doc_query_hash": torch.tensor([text_id(t) for t in doc_query], dtype=torch.int64),
                "doc_is_positive": torch.tensor(positive, dtype=torch.bool),
                "tokens": q_tokens + d_tokens, "group": group, "sub_batch": sub_batch, "rows": list(indices)}

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        indices = next(self.sampler)
        return [self.batch(indices, self.sampler.last_group)]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
