"""``mgte train reranker``: the cross-encoder reranker (mGTE 2.3, B.4).

Input ``[CLS] q [SEP] d`` (the tokenizer's pair encoding; the query cut first, then the document),
score = W h_[CLS], trained in one stage from the MLM-8192 encoder (no contrastive pre-training) with
group-wise InfoNCE (:mod:`training.reranker.loss`): each query's positive against 10 negatives, 6
mined hard + 4 random from the candidate pool, never a positive of the query
(:mod:`training.reranker.data`). Batches as the TRM's: each from one dataset (eq. 1) and one length
group of it (Table 12's reranker column: 512 / 384 / 256 / 160 / 80 queries), the group counting
every document a row can be given, random negatives included; ``epochs`` (10, as the TRM) sets
the steps. A batch is split into sub-batches of whole query groups (the group's sub-batch size in
pairs: 256 / 128 / 64 / 48 / 16 at paper scale) whose gradients the shared loop accumulates, with
gradient checkpointing in the encoder (``gradient_checkpointing``). ``init`` may also name any Hugging Face encoder (its
``AutoModelForSequenceClassification`` with one label).

Input: a finished ``mgte mine`` output directory or parquet files of the hard-negatives table.
Output::

    OUTPUT/model/         AutoModelForSequenceClassification + sentence-transformers CrossEncoder directory
    OUTPUT/checkpoints/   step-N/ verified checkpoints (training.checkpoint); a rerun resumes
    OUTPUT/metrics.jsonl  loss, accuracy (positive ranked first in its group), lr, grad norm
    OUTPUT/manifest.json  config, counts (input = kept + dropped), result

Runs on Ray Train (``engine: ray``) or in-process (``engine: local``) through the shared loop and
the model-stage contract (:mod:`training.stage`). Config in :mod:`training.reranker.config`, input
and groups in :mod:`training.reranker.data`, the model in :mod:`training.reranker.model`, the task
in :mod:`training.reranker.task`.
"""

from __future__ import annotations

from pathlib import Path

from training.reranker.config import Config
from training.reranker.data import RerankDataConfig, load_inputs, read_input
from training.reranker.task import RerankerTask
from training.stage import ModelStage, run_model_stage

__all__ = ["Config", "RerankDataConfig", "RerankerTask", "load_inputs", "read_input", "run", "STAGE"]


def family_extra(cfg: Config, family: str | None, output: Path) -> dict:
    """The manifest names the encoder family it was trained from (``mgte``: ours)."""
    return {"family": family or "mgte"}


STAGE = ModelStage("train-reranker", "reranker", Config, RerankerTask, read_input, extra=family_extra)


def run(cfg: Config) -> dict:
    return run_model_stage(STAGE, cfg)
