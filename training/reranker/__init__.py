"""``mgte train reranker``: the cross-encoder reranker (mGTE 2.3, B.4).

Input ``[CLS] q [SEP] d`` (the tokenizer's pair encoding; the query cut first, then the document),
score = W h_[CLS], trained in one stage from the MLM-8192 encoder (no contrastive pre-training) with
group-wise InfoNCE (:mod:`training.reranker.loss`): each query's positive against 10 negatives, 6
mined hard + 4 random from the candidate pool, never a positive of the query
(:mod:`training.reranker.data`). Batches come from one length group each; a batch is split into
sub-batches of whole query groups (the group's sub-batch size in pairs: 256 / 128 / 64 / 48 / 16
at paper scale) whose gradients the shared loop accumulates, with gradient checkpointing in the
encoder (``gradient_checkpointing``). ``init`` may also name any Hugging Face encoder (its
``AutoModelForSequenceClassification`` with one label).

Input: a finished ``mgte mine`` output directory or parquet files of the hard-negatives table.
Output::

    OUTPUT/model/         AutoModelForSequenceClassification + sentence-transformers CrossEncoder directory
    OUTPUT/checkpoints/   step-N/ verified checkpoints (training.checkpoint); a rerun resumes
    OUTPUT/metrics.jsonl  loss, accuracy (positive ranked first in its group), lr, grad norm
    OUTPUT/manifest.json  config, counts (input = kept + dropped), result

Runs on Ray Train (``engine: ray``) or in-process (``engine: local``) through the shared loop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import pyarrow as pa
import torch

from foundation.config import RayConfig, build, frozen, replace
from foundation.errors import MgteError
from training import stage as stage_io
from training.loop import LoopConfig
from training.cpt import Config as CPTConfig
from training.model_builder import ModelConfig, check_init
from training.ray_entry import ScalingConfig
from training.reranker.data import (CandidatePool, RerankBatches, RerankDataConfig, group_scores, read_hard_negatives,
                                  split_usable)
from training.reranker.loss import group_info_nce, positive_ranked_first
from training.reranker.model import (build_reranker, enable_gradient_checkpointing, max_pair_tokens, pair_logits,
                                     save_reranker)
from training.task import MicroBatchTask

log = logging.getLogger(__name__)

STAGE = "train-reranker"
CPT_DEFAULTS = CPTConfig()


@frozen
class Config:
    input: tuple[str, ...] = ()
    output: str | None = None
    init: str | None = None  # the MLM-8192 model directory (paper), or any HF encoder; null = random
    tokenizer: str = "FacebookAI/xlm-roberta-base"  # used when `init` has no tokenizer files
    model: ModelConfig = ModelConfig()
    temperature: float = 1.0  # the scores are free logits: softmax over the group as they are
    gradient_checkpointing: bool = True  # recompute encoder layers in the backward of each sub-batch
    data: RerankDataConfig = RerankDataConfig()
    loop: LoopConfig = replace(CPT_DEFAULTS.loop, max_steps=10_000)  # "other settings as CPT"
    engine: Literal["ray", "local"] = "ray"
    ray: RayConfig = RayConfig()
    scaling: ScalingConfig = ScalingConfig()

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        for g in self.data.groups:
            if g.batch_size % self.scaling.num_workers:
                raise ValueError(f"data.groups (<= {g.max_length} tokens): batch_size {g.batch_size} must be a "
                                 f"multiple of scaling.num_workers {self.scaling.num_workers}")


def load_inputs(inputs: tuple[str, ...], hard_negatives: int) -> tuple[pa.Table, CandidatePool, dict]:
    """Usable rows, the candidate pool (every input row's texts) and the input accounting."""
    table = read_hard_negatives(inputs)
    kept, info = split_usable(table, hard_negatives)
    return kept, CandidatePool(table), info


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
        model = build_reranker(self.cfg.model, self.cfg.init)
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


# ---------------------------------------------------------------------------------------------
# Entry points


def _config(config: dict) -> Config:
    return build(Config, config, source="train reranker worker config")


def train_func(config: dict):
    """What every Ray Train worker (or this process, ``engine: local``) runs."""
    return stage_io.worker_main(config, _config, RerankerTask)


def run(cfg: Config) -> dict:
    cfg = stage_io.resolve_paths(cfg)
    family = check_init(cfg.model, cfg.init)  # a bad init fails before the output or any worker starts
    out, finished = stage_io.open_output(cfg, STAGE)
    if finished is not None:
        return finished
    table, _, data = load_inputs(cfg.input, cfg.data.hard_negatives)  # fail fast on bad input
    if not table.num_rows:
        raise MgteError(f"train reranker: no query in {list(cfg.input)} has {cfg.data.hard_negatives} mined "
                        "negatives (data.hard_negatives)")
    log.info("reranker: %d queries, %s", table.num_rows, data["counts"])
    result = stage_io.train(train_func, cfg, out, "reranker")
    return out.finish(
        counts=data["counts"], dropped_by_reason=data["dropped_by_reason"], inputs=stage_io.input_sizes(cfg.input),
        outputs=stage_io.MODEL_OUTPUTS,
        extra={"engine": cfg.engine, "num_workers": cfg.scaling.num_workers, "init": cfg.init,
               "family": family or "mgte", "group": f"1 positive + {cfg.data.hard_negatives} hard + "
               f"{cfg.data.random_negatives} random", "final": stage_io.final_metrics(Path(cfg.output), result)})

