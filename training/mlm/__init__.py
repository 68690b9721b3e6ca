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
chunk of logits is alive at a time, forward or backward (:mod:`training.mlm.loss`).

The stage runs on the model-stage contract (:mod:`training.stage`): config in
:mod:`training.mlm.config`, shards, eq. 1 sampling and packing in :mod:`training.mlm.data`, masking in
:mod:`training.mlm.masking`, the task in :mod:`training.mlm.task`.
"""

from __future__ import annotations

from pathlib import Path

from training.metrics import read_metrics
from training.mlm.config import Config, DataConfig
from training.mlm.data import read_input, shards_input
from training.mlm.loss import MLMTrainModule, chunked_mlm_loss_sum
from training.mlm.task import MLMTask
from training.stage import ModelStage, run_model_stage

__all__ = ["Config", "DataConfig", "MLMTask", "MLMTrainModule", "chunked_mlm_loss_sum", "read_input",
           "shards_input", "run", "STAGE"]


def curve_extra(cfg: Config, family: str | None, output: Path) -> dict:
    """The manifest's training summary: RoPE base, steps, first and last loss, accuracy, tokens."""
    rows = read_metrics(output / "metrics.jsonl")
    last = rows[-1] if rows else {}
    return {"rope_theta": cfg.model.rope_theta, "steps": last.get("step"), "final_loss": last.get("loss"),
            "final_loss_avg": last.get("loss_avg"), "final_mlm_accuracy": last.get("mlm_accuracy"),
            "tokens": last.get("tokens"), "first_loss": rows[0].get("loss") if rows else None,
            "nonfinite_skipped": last.get("nonfinite_skipped")}


STAGE = ModelStage("train-mlm", "mlm", Config, MLMTask, read_input, extra=curve_extra,
                   final_keys=("mlm_accuracy", "lr"))


def run(cfg: Config) -> dict:
    return run_model_stage(STAGE, cfg)
