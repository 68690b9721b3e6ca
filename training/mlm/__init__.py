"""``mgte train mlm``: masked-language-model pre-training of the encoder (MLM-2048, MLM-8192).

The stage reads a finished ``mgte mlm-shards`` output, samples languages by eq. 1, packs
token-budget batches without padding, masks 30 % of the tokens and trains
``model.MGTEForMaskedLM`` with the generic :func:`training.loop.train_loop`, on Ray Train
(``engine: ray``) or in this process (``engine: local``). The curriculum is two runs of this
stage: MLM-8192 starts from MLM-2048's ``model/`` directory (``init``) with RoPE base 160,000
(mGTE Table 8; ``dags/configs/mlm/*-8192.yaml``).

The loss is computed at the masked positions only, and with the real 250k vocabulary the
(masked tokens x vocab) logits are the memory hot spot: :func:`chunked_mlm_loss_sum` evaluates the head
in chunks of ``data.loss_chunk`` masked positions under activation checkpointing, so only one
chunk of logits is alive at a time, forward or backward.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

from foundation.config import RayConfig, build, config_to_dict, frozen, replace
from model.heads import mlm_loss_sum
from model.hf import absolute_if_local
from foundation.ledger import RUN_ONLY_KEYS, StageOutput, read_manifest, read_output_table
from foundation.errors import BadInputError
from training.loop import LoopConfig, LoopResult, train_loop
from training.mlm.masking import IGNORE_INDEX, MaskingSpec
from training.model_builder import ModelConfig, build_encoder, check_init, is_hf_encoder, save_model
from training.metrics import read_metrics
from training.optim import OptimConfig
from training.ray_entry import (ScalingConfig, clear_stale_dirs, ray_reporter, run_training, stage_identity,
                                worker_world)
from training.task import MicroBatchTask
from training.mlm.data import PackedBatch, PackedMLMBatches, shard_files

log = logging.getLogger(__name__)

STAGE = "train-mlm"


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
class Config:
    input: tuple[str, ...] = ()  # one finished `mgte mlm-shards` output directory
    output: str | None = None
    init: str | None = None  # start model: a model dir or HF name; null = random init from `model`
    tokenizer: str = "FacebookAI/xlm-roberta-base"
    model: ModelConfig = ModelConfig(preset="tiny", rope_theta=10_000.0)  # MLM-8192: 160,000 (Table 8)
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig(optim=OptimConfig(lr=5e-4, weight_decay=1e-5, betas=(0.9, 0.98), eps=1e-6,
                                                    warmup_ratio=0.06, max_grad_norm=0.0))
    engine: Literal["ray", "local"] = "ray"
    ray: RayConfig = RayConfig()
    scaling: ScalingConfig = ScalingConfig()

    def validate(self) -> None:
        if len(self.input) > 1:
            raise ValueError(f"input: one mlm-shards directory expected, got {len(self.input)}")


# -- loss -------------------------------------------------------------------------------------------


def _chunk_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, embeddings: torch.Tensor):
    return mlm_loss_sum(head(hidden, embeddings), labels)  # logits (n, vocab) -> fp32 sum, correct


def chunked_mlm_loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, embeddings: torch.Tensor,
                         chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`model.heads.mlm_loss_sum` of the head's logits, the head run ``chunk`` rows at a time.

    hidden (n, H) and labels (n,) are the masked positions only. With ``chunk > 0`` the head runs
    on at most ``chunk`` rows at a time and its logits are recomputed in backward (activation
    checkpointing): peak memory ~ chunk x vocab instead of n x vocab; the result is the same.
    """
    if chunk <= 0 or hidden.shape[0] <= chunk:
        return _chunk_loss(hidden, labels, head, embeddings)
    loss = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        part_loss, part_correct = checkpoint(_chunk_loss, hidden[start:start + chunk], labels[start:start + chunk],
                                             head, embeddings, use_reentrant=False)
        loss = loss + part_loss
        correct = correct + part_correct
    return loss, correct


class MLMTrainModule(torch.nn.Module):
    """``MGTEForMaskedLM`` (or an HF MLM model behind :class:`model.hf_encoder.HFEncoder`) + the
    chunked masked-only loss; what DDP/DeepSpeed wrap."""

    def __init__(self, mlm: torch.nn.Module, loss_chunk: int):
        super().__init__()
        self.mlm = mlm
        self.loss_chunk = loss_chunk

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor,
                max_seqlen: int) -> tuple[torch.Tensor, torch.Tensor]:
        if is_hf_encoder(self.mlm):  # the HF head holds its tied decoder
            hidden = self.mlm(input_ids, cu_seqlens, max_seqlen)  # (total, H)
            head, embeddings = self.mlm.mlm_head, self.mlm.output_embeddings
        else:
            hidden = self.mlm.new.forward_packed(input_ids, cu_seqlens, max_seqlen)  # (total, H)
            head, embeddings = self.mlm.lm_head, self.mlm.new.embeddings.word_embeddings.weight
        masked = torch.nonzero(labels != IGNORE_INDEX).flatten()  # (n_masked,)
        return chunked_mlm_loss_sum(hidden.index_select(0, masked), labels.index_select(0, masked), head, embeddings,
                                    self.loss_chunk)


# -- the task -------------------------------------------------------------------------------------


def shards_input(cfg: Config) -> tuple[Path, dict]:
    if not cfg.input:
        raise BadInputError("train mlm: no input (give --input <mlm-shards output dir>)")
    root = Path(cfg.input[0])
    manifest = read_manifest(root)
    if manifest["stage"] != "mlm-shards":
        raise BadInputError(f"{root}: a '{manifest['stage']}' output, expected an mlm-shards output")
    return root, manifest


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

        mlm = build_encoder(self.cfg.model, self.cfg.init, MGTEForMaskedLM, with_tokenizer=False)
        if mlm.config.vocab_size < self.masking.vocab_size:
            raise BadInputError(f"model vocab_size {mlm.config.vocab_size} < tokenizer size {self.masking.vocab_size}")
        if is_hf_encoder(mlm) and mlm.max_tokens is not None and self.max_len > mlm.max_tokens:
            log.info("mlm: the shards' sequences of up to %d tokens are cut into windows of the %s model's %d "
                     "positions", self.max_len, mlm.model_type, mlm.max_tokens)
        return MLMTrainModule(mlm, self.cfg.data.loss_chunk)

    def build_data(self, rank: int, world_size: int) -> PackedMLMBatches:
        d = self.cfg.data
        stats = read_output_table(self.root, "shard_stats")
        q = dict(zip(stats.column("lang").to_pylist(), stats.column("q").to_pylist()))
        max_tokens = d.max_tokens or d.max_sequences * self.max_len
        if max_tokens < world_size * self.max_len or d.max_sequences < world_size:
            raise BadInputError(f"data.max_tokens={max_tokens} / max_sequences={d.max_sequences} cannot give each of "
                                f"{world_size} workers a sequence of up to {self.max_len} tokens")
        if d.micro_tokens and d.micro_tokens < self.max_len:
            raise BadInputError(f"data.micro_tokens={d.micro_tokens} < the shards' max_len {self.max_len}")
        files = shard_files([self.root / f for f in self.manifest["outputs"]["data"]])
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


# -- entry points ------------------------------------------------------------------------------------


def train_func(config: dict) -> LoopResult:
    """Runs on every Ray Train worker (and in-process for ``engine: local``)."""
    config = dict(config)
    local = bool(config.pop("_local", False))
    cfg = build(Config, config, source="train mlm")
    out = Path(cfg.output)
    return train_loop(MLMTask(cfg), cfg.loop, ckpt_dir=out / "checkpoints", output_dir=out, world=worker_world(),
                      config=config_to_dict(cfg), report=None if local else ray_reporter)


def run(cfg: Config) -> dict:
    cfg = replace(cfg, input=tuple(str(Path(p).resolve()) for p in cfg.input), output=str(Path(cfg.output).resolve()),
                  init=absolute_if_local(cfg.init))
    root, shards_manifest = shards_input(cfg)
    check_init(cfg.model, cfg.init)  # a bad init fails before the output or any worker starts
    out = StageOutput(cfg.output, STAGE, stage_identity(cfg), exclude=RUN_ONLY_KEYS + ("scaling",))
    clear_stale_dirs(Path(cfg.output))
    if out.begin():
        return read_manifest(cfg.output)
    storage = cfg.scaling.storage_path or str(Path(cfg.output) / "ray")
    run_training(train_func, config_to_dict(cfg), engine=cfg.engine, ray_cfg=cfg.ray, scaling=cfg.scaling,
                 storage_path=storage, name=f"mlm-{out.config_hash}", ckpt_dir=Path(cfg.output) / "checkpoints")
    rows = read_metrics(Path(cfg.output) / "metrics.jsonl")
    last = rows[-1] if rows else {}
    chunks = int(shards_manifest["extra"].get("chunks", shards_manifest["counts"]["kept"]))
    return out.finish(
        counts={"input": chunks, "kept": chunks, "dropped": 0, "quarantined": 0}, dropped_by_reason={},
        inputs=[{"path": str(root), "size": sum(f.stat().st_size for f in root.rglob("*.parquet"))}],
        outputs={"model": ["model/"], "checkpoints": ["checkpoints/"], "metrics": ["metrics.jsonl"]},
        extra={"engine": cfg.engine, "num_workers": cfg.scaling.num_workers, "init": cfg.init,
               "rope_theta": cfg.model.rope_theta, "steps": last.get("step"), "final_loss": last.get("loss"),
               "final_loss_avg": last.get("loss_avg"),
               "final_mlm_accuracy": last.get("mlm_accuracy"), "tokens": last.get("tokens"),
               "first_loss": rows[0].get("loss") if rows else None,
               "nonfinite_skipped": last.get("nonfinite_skipped")},
    )
