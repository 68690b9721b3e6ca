"""The reranker's task for the shared loop: group-wise InfoNCE over [CLS] scores, a sub-batch of whole
query groups per micro-batch."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import torch

from training.reranker.config import Config
from training.reranker.data import CandidatePool, RerankBatches, group_scores, load_inputs
from training.reranker.loss import group_info_nce, positive_ranked_first
from training.reranker.model import (build_reranker, enable_gradient_checkpointing, max_pair_tokens, pair_logits,
                                     save_reranker)
from training.task import MicroBatchTask

log = logging.getLogger(__name__)


class RerankerTask(MicroBatchTask):
    """A sub-batch of whole query groups per micro-batch; the loop accumulates their gradients."""

    def __init__(self, cfg: Config, inputs: tuple[pa.Table, CandidatePool] | None = None):
        self.cfg = cfg
        self._inputs = inputs
        self._tokenizer = None
        self._max_tokens: int | None = None  # another HF family's position limit

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from model.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.cfg.tokenizer)
        return self._tokenizer

    def build_model(self):
        model = build_reranker(self.cfg.model, self.cfg.init, verify=self.cfg.verify_model)
        if getattr(model, "tokenizer", None) is not None:
            self._tokenizer = model.tokenizer
        self._max_tokens = max_pair_tokens(model)
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    @property
    def max_length(self) -> int:
        if self._max_tokens is not None and self._max_tokens < self.cfg.data.max_length:
            log.info("reranker: pairs cut to the model's %d positions (data.max_length %d)", self._max_tokens,
                     self.cfg.data.max_length)
            return self._max_tokens
        return self.cfg.data.max_length

    def build_data(self, rank: int, world_size: int) -> RerankBatches:
        table, pool = self._inputs if self._inputs is not None else load_inputs(self.cfg.input,
                                                                                self.cfg.data.hard_negatives)[:2]
        return RerankBatches(table, pool, self.tokenizer, self.cfg.data, max_length=self.max_length, rank=rank,
                             world_size=world_size)

    def step(self, model, micro_batch: dict) -> tuple[torch.Tensor, dict]:
        scores = group_scores(pair_logits(model, micro_batch), micro_batch["queries"], micro_batch["group_size"])
        loss = group_info_nce(scores, self.cfg.temperature, reduction="sum")  # fp32, summed over queries
        return loss, {"accuracy": float(positive_ranked_first(scores))}

    def units(self, micro_batch: dict) -> int:
        return int(micro_batch["queries"])

    def tokens(self, micro_batch: dict) -> int:
        return int(micro_batch["tokens"])

    def save_model(self, model, out_dir: Path) -> None:
        save_reranker(model, out_dir, self.tokenizer)
