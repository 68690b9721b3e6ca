"""``mgte train trm``'s config: the shared model-stage keys, pooling, the loss (Matryoshka + sparse),
the sparse head's health check and the length-grouped batches."""

from __future__ import annotations

from typing import Literal

from foundation.config import frozen, replace
from training.length_groups import PAPER_EMBEDDER_GROUPS, LengthGroup
from training.loop import LoopConfig
from training.optim import CONTRASTIVE_OPTIM
from training.stage import ModelStageConfig


@frozen
class LossConfig:
    mrl_temperature: float = 0.05
    sparse_temperature: float = 0.01
    sparse_weight: float = 0.1  # lambda
    dim_step: int = 32  # D = {dim_step * k <= H}
    dim_weights: tuple[float, ...] = ()  # w_d, one per size; empty = equal weights
    sparse_l1: float = 0.0  # optional L1 regulariser on the term vectors; 0 = off
    false_negative_margin: float | None = None  # Qwen3-Embedding mask (0.1); null = off
    mask_duplicates: bool = True

    def validate(self) -> None:
        if min(self.mrl_temperature, self.sparse_temperature) <= 0 or self.sparse_weight < 0 or self.sparse_l1 < 0:
            raise ValueError("loss: temperatures must be > 0, sparse_weight and sparse_l1 >= 0")
        if self.dim_step < 1:
            raise ValueError("loss.dim_step must be >= 1")


@frozen
class HealthConfig:
    collapse_steps: int = 100  # K: all-zero sparse vectors for K steps in a row stop the run

    def validate(self) -> None:
        if self.collapse_steps < 1:
            raise ValueError("health.collapse_steps must be >= 1")


@frozen
class DataConfig:
    num_negatives: int = 8
    groups: tuple[LengthGroup, ...] = PAPER_EMBEDDER_GROUPS  # global batch (queries) per length group
    # texts per cached-gradient sub-batch: memory is one sub-batch's activations; a rank's batch of at
    # most sub_batch texts (queries + documents) runs as one graph instead (no second forward)
    sub_batch: int = 64
    gradient_checkpointing: bool = True  # inside a sub-batch, recompute layer activations in backward
    query_max_tokens: int = 512
    doc_max_tokens: int = 8192
    seed: int = 0

    def validate(self) -> None:
        if self.num_negatives < 0 or self.sub_batch < 1:
            raise ValueError("data.num_negatives must be >= 0 and data.sub_batch >= 1")
        if self.query_max_tokens < 2 or self.doc_max_tokens < 2:
            raise ValueError("data.query_max_tokens and data.doc_max_tokens must be >= 2")


@frozen
class Config(ModelStageConfig):
    # init: our CPT model (DAG default), a TRM, or any HF encoder; null = random
    pooling: Literal["auto", "cls", "mean"] = "auto"
    reversed_ntk: float = 1.0  # RoPE base divisor while training (CPT's trick); 1 = off
    epochs: float | None = None  # set: loop.max_steps = epochs x the global batches of one epoch
    loss: LossConfig = LossConfig()
    health: HealthConfig = HealthConfig()
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig(max_steps=10_000, ckpt_every=500, log_every=10,
                                  optim=replace(CONTRASTIVE_OPTIM, lr=2e-5))

    def validate(self) -> None:
        if self.reversed_ntk <= 0:
            raise ValueError("reversed_ntk must be > 0 (1 = keep the RoPE base)")
        for g in self.data.groups:
            if g.batch_size % self.scaling.num_workers:
                raise ValueError(f"data.groups: batch_size {g.batch_size} (<= {g.max_length} tokens) must be a "
                                 f"multiple of scaling.num_workers {self.scaling.num_workers}")
