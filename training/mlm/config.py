"""``mgte train mlm``'s config: the shared model-stage keys and the packed, masked batches."""

from __future__ import annotations

from foundation.config import frozen
from training.loop import LoopConfig
from training.model_builder import ModelConfig
from training.optim import OptimConfig
from training.stage import ModelStageConfig


@frozen
class DataConfig:
    max_sequences: int = 8192  # sequences per global batch (Table 8: 8192 for MLM-2048, 2048 for MLM-8192)
    max_tokens: int = 0  # tokens per global batch; 0 = max_sequences * the shards' max_len
    micro_tokens: int = 16384  # tokens per forward/backward on a worker (gradient accumulation); 0 = all
    mlm_probability: float = 0.30
    loss_chunk: int = 2048  # masked positions per chunk of the 250k-vocab MLM head; 0 = one chunk
    seed: int = 0

    def validate(self) -> None:
        if self.max_sequences < 1 or self.max_tokens < 0 or self.micro_tokens < 0 or self.loss_chunk < 0:
            raise ValueError("data.max_sequences must be >= 1; max_tokens, micro_tokens, loss_chunk >= 0")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"data.mlm_probability must be in (0, 1), got {self.mlm_probability}")


@frozen
class Config(ModelStageConfig):
    # input: one finished `mgte mlm-shards` output directory; init: a model dir or HF name (MLM-8192:
    # MLM-2048's model/); null = random init from `model`
    model: ModelConfig = ModelConfig(preset="tiny", rope_theta=10_000.0)  # MLM-8192: 160,000 (Table 8)
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig(optim=OptimConfig(lr=5e-4, weight_decay=1e-5, betas=(0.9, 0.98), eps=1e-6,
                                                    warmup_ratio=0.06, max_grad_norm=0.0))

    def validate(self) -> None:
        if len(self.input) > 1:
            raise ValueError(f"input: one mlm-shards directory expected, got {len(self.input)}")
