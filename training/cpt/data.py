"""CPT's input and batches: pairs by source, one source per global batch (eq. 1 over the sources).

Input: one or more finished ``mgte pairs`` outputs, or raw pair files (JSONL/parquet with ``query``
and ``positive``/``document``; cleaned on the fly by the same functions as ``mgte pairs``: empty
and identical pairs dropped, exact duplicates removed), read by :func:`pipelines.pairs.load_pair_inputs`.
Batches: :class:`training.pair_sampler.SourceBatchSampler` picks each global batch's source and
rows; a rank's share is tokenised into chunks for the cached-gradient step.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from foundation.errors import MgteError
from training.embedder import tokenize_chunks
from training.pair_sampler import PairBatch, SourceBatchSampler, take_batch
from training.stage import ModelInput

log = logging.getLogger(__name__)


def load_pairs(inputs: tuple[str, ...]) -> tuple[dict[str, pa.Table], dict]:
    """``--input``: one or more `mgte pairs` outputs, or raw pair files/directories (not mixed)."""
    from pipelines.pairs import load_pair_inputs

    return load_pair_inputs(inputs, who="train cpt")


def read_input(cfg) -> ModelInput:
    """The stage's reader: the pairs by source and their accounting (no usable pair refuses)."""
    tables, data = load_pairs(cfg.input)
    sizes = {s: t.num_rows for s, t in tables.items()}
    log.info("cpt: %d pairs in %d sources %s", sum(sizes.values()), len(sizes), sizes)
    if not tables:
        raise MgteError(f"train cpt: no usable pairs in {list(cfg.input)}")
    return ModelInput(data["counts"], data["dropped_by_reason"], {"sources": sizes})


class PairBatches:
    """The loop's data source: next() -> [this rank's share of one global single-source batch]."""

    reshardable = True  # the sampler re-splits the same global batches over another world size

    def __init__(self, tables: dict[str, pa.Table], tokenizer, data, rank: int, world_size: int):
        self.tables, self.tokenizer, self.cfg = tables, tokenizer, data
        self.sampler = SourceBatchSampler({s: t.num_rows for s, t in tables.items()}, data.batch_size,
                                          seed=data.seed, alpha=data.alpha, rank=rank, world_size=world_size)

    def batch(self, pairs: PairBatch) -> dict:
        queries, q_tokens = tokenize_chunks(self.tokenizer, pairs.queries, self.cfg.query_max_tokens,
                                            self.cfg.chunk_size)
        docs, d_tokens = tokenize_chunks(self.tokenizer, pairs.documents, self.cfg.doc_max_tokens, self.cfg.chunk_size)
        return {"queries": queries, "documents": docs, "query_hash": pairs.query_hash, "doc_hash": pairs.doc_hash,
                "tokens": q_tokens + d_tokens, "source": pairs.source}

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        return [self.batch(take_batch(self.tables, next(self.sampler)))]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
