"""The ``mgte mlm-shards`` config (its own module: the tokenising workers build it from a dict)."""

from __future__ import annotations

from typing import Literal

from foundation.config import DataStageConfig, frozen


@frozen
class ReaderConfig:
    error_budget: float = 0.25  # fail when more than this fraction of documents is quarantined (run-only)


@frozen
class Config(DataStageConfig):
    # input: a finished `mgte corpus` output dir, or clean-doc parquet files
    tokenizer: str = "FacebookAI/xlm-roberta-base"
    max_len: int = 2048  # tokens per chunk, <s> and </s> included
    short_threshold: int = 0  # down-sample texts with fewer tokens than this (0 = off; 2048 for MLM-8192)
    short_keep_rate: float = 1.0  # fraction of those short texts kept
    seed: int = 0
    batch_size: int = 256  # documents per tokeniser call / Ray Data batch
    alpha: float = 0.5  # eq. 1, only used when the input has no corpus sampling table
    engine: Literal["local", "beam", "ray"] = "local"  # where the per-file tasks run (pipelines.engines)
    reader: ReaderConfig = ReaderConfig()

    def validate(self) -> None:
        if self.max_len < 3:
            raise ValueError(f"max_len must be >= 3 (<s> + 1 token + </s>), got {self.max_len}")
        if not 0.0 <= self.short_keep_rate <= 1.0:
            raise ValueError(f"short_keep_rate must be in [0, 1], got {self.short_keep_rate}")
        if not 0.0 <= self.reader.error_budget <= 1.0:
            raise ValueError(f"reader.error_budget must be in [0, 1], got {self.reader.error_budget}")
        if self.short_threshold < 0 or self.batch_size < 1:
            raise ValueError("short_threshold must be >= 0 and batch_size >= 1")
