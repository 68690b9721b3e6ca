"""MLM's task for the shared loop: packed, masked batches through ``MGTEForMaskedLM`` and the chunked loss."""

from __future__ import annotations

import logging
from pathlib import Path

from foundation.errors import BadInputError
from foundation.ledger import read_stage_output, stage_output_files
from storage_schemas.mlm import MLM_CHUNK, MLM_SHARD_STATS
from training.mlm.config import Config
from training.mlm.data import PackedBatch, PackedMLMBatches, shard_files, shards_input
from training.mlm.loss import MLMTrainModule
from training.mlm.masking import MaskingSpec
from training.model_builder import build_encoder, is_hf_encoder, save_model
from training.task import MicroBatchTask

log = logging.getLogger(__name__)


class MLMTask(MicroBatchTask):
    """The MLM stage for :func:`training.loop.train_loop`."""

    def __init__(self, cfg: Config):
        from model.tokenizer import load_tokenizer

        self.cfg = cfg
        self.root, self.manifest = shards_input(cfg)
        self.max_len = int(self.manifest["extra"].get("max_len", 0)) or int(self.manifest["config"]["max_len"])
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.masking = MaskingSpec.from_tokenizer(self.tokenizer, cfg.data.mlm_probability)

    def build_model(self) -> MLMTrainModule:
        from model import MGTEForMaskedLM

        mlm = build_encoder(self.cfg.model, self.cfg.init, MGTEForMaskedLM, with_tokenizer=False,
                            verify=self.cfg.verify_model)
        if mlm.config.vocab_size < self.masking.vocab_size:
            raise BadInputError(f"model vocab_size {mlm.config.vocab_size} < tokenizer size {self.masking.vocab_size}")
        if is_hf_encoder(mlm) and mlm.max_tokens is not None and self.max_len > mlm.max_tokens:
            log.info("mlm: the shards' sequences of up to %d tokens are cut into windows of the %s model's %d "
                     "positions", self.max_len, mlm.model_type, mlm.max_tokens)
        return MLMTrainModule(mlm, self.cfg.data.loss_chunk)

    def build_data(self, rank: int, world_size: int) -> PackedMLMBatches:
        d = self.cfg.data
        stats = read_stage_output(self.root, "stats/shard_stats.parquet", MLM_SHARD_STATS, columns=["lang", "q"])
        q = dict(zip(stats.column("lang").to_pylist(), stats.column("q").to_pylist()))
        max_tokens = d.max_tokens or d.max_sequences * self.max_len
        if max_tokens < world_size * self.max_len or d.max_sequences < world_size:
            raise BadInputError(f"data.max_tokens={max_tokens} / max_sequences={d.max_sequences} cannot give each of "
                                f"{world_size} workers a sequence of up to {self.max_len} tokens")
        if d.micro_tokens and d.micro_tokens < self.max_len:
            raise BadInputError(f"data.micro_tokens={d.micro_tokens} < the shards' max_len {self.max_len}")
        files = shard_files(stage_output_files(self.root, "data", MLM_CHUNK, manifest=self.manifest))
        return PackedMLMBatches(files, q, seed=d.seed, max_sequences=d.max_sequences, max_tokens=max_tokens,
                                micro_tokens=d.micro_tokens, masking=self.masking, rank=rank, world_size=world_size)

    def units(self, mb: PackedBatch) -> int:
        return mb.n_masked

    def tokens(self, mb: PackedBatch) -> int:
        return mb.n_tokens

    def step(self, model, mb: PackedBatch):
        loss, correct = model(mb.input_ids, mb.labels, mb.cu_seqlens, mb.max_seqlen)
        return loss, {"mlm_accuracy": correct}

    def save_model(self, module: MLMTrainModule, out_dir: Path) -> None:
        save_model(module.mlm, out_dir, tokenizer=self.tokenizer)
