"""``mgte train reranker``'s config: the shared model-stage keys, temperature, gradient checkpointing,
epochs and the query groups and batches (:class:`training.reranker.data.RerankDataConfig`)."""

from __future__ import annotations

from foundation.config import frozen
from training.loop import LoopConfig
from training.optim import CONTRASTIVE_OPTIM
from training.reranker.data import RerankDataConfig
from training.stage import ModelStageConfig


@frozen
class Config(ModelStageConfig):
    # init: the MLM-8192 model directory (paper), or any HF encoder; null = random
    temperature: float = 1.0  # the scores are free logits: softmax over the group as they are
    gradient_checkpointing: bool = True  # recompute encoder layers in the backward of each sub-batch
    epochs: float | None = None  # set: loop.max_steps = epochs x the global batches of one epoch (as the TRM)
    data: RerankDataConfig = RerankDataConfig()
    loop: LoopConfig = LoopConfig(max_steps=10_000, ckpt_every=1000, log_every=50,  # "other settings as CPT"
                                  optim=CONTRASTIVE_OPTIM)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError("epochs must be > 0 (or null: loop.max_steps)")
        for g in self.data.groups:
            if g.batch_size % self.scaling.num_workers:
                raise ValueError(f"data.groups (<= {g.max_length} tokens): batch_size {g.batch_size} must be a "
                                 f"multiple of scaling.num_workers {self.scaling.num_workers}")
