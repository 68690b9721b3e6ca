"""``mgte train cpt``'s config: the shared model-stage keys, the temperature, reversed NTK and the batches."""

from __future__ import annotations

from foundation.config import frozen
from training.loop import LoopConfig
from training.optim import CONTRASTIVE_OPTIM
from training.stage import ModelStageConfig


@frozen
class DataConfig:
    batch_size: int = 16384  # global pairs per step, all from one source (split over the workers)
    chunk_size: int = 128  # texts per cached-gradient chunk: memory is one chunk's activations
    query_max_tokens: int = 512
    doc_max_tokens: int = 1024
    alpha: float = 0.5  # eq. 1 over the pair counts of the sources
    seed: int = 0
    mask_duplicates: bool = True  # in-batch texts with the same hash are not negatives

    def validate(self) -> None:
        if self.batch_size < 2 or self.chunk_size < 1:
            raise ValueError("data.batch_size must be >= 2 and data.chunk_size >= 1")
        if self.query_max_tokens < 2 or self.doc_max_tokens < 2:
            raise ValueError("data.query_max_tokens and data.doc_max_tokens must be >= 2")


@frozen
class Config(ModelStageConfig):
    # init: the MLM-8192 encoder (or any HF encoder); null = random
    temperature: float = 0.01
    reversed_ntk: float = 8.0  # train with RoPE base / this (160,000 -> 20,000); 1 = off; the saved config keeps it
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig(max_steps=240_000, ckpt_every=1000, log_every=50,  # paper.yaml adds fp16 +
                                  optim=CONTRASTIVE_OPTIM)                          # DeepSpeed ZeRO-1 on GPUs

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.reversed_ntk <= 0:
            raise ValueError("reversed_ntk must be > 0 (1 = keep the RoPE base)")
        if self.data.batch_size % self.scaling.num_workers:
            raise ValueError(f"data.batch_size {self.data.batch_size} must be a multiple of scaling.num_workers "
                             f"{self.scaling.num_workers}")
