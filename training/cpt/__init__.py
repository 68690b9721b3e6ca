"""``mgte train cpt``: contrastive pre-training of the encoder into an embedder (mGTE 2.2, B.3).

The [CLS] hidden state is the embedding, the score is cosine similarity, the loss is InfoNCE
with in-batch negatives only (t = 0.01), gathered across workers, duplicates masked by text
hash. Every global batch comes from one pair source, sources drawn by eq. 1 (alpha 0.5).
Queries are truncated to 512 tokens, documents to 1024, and RoPE runs with its base divided
by 8 (reversed NTK: 160,000 -> 20,000); the saved model keeps the original base. The
contrastive batch is independent of memory: a cached-gradient step (:mod:`training.gradcache`)
embeds it in chunks.

Input: a finished ``mgte pairs`` output directory, or raw pair files (JSONL/parquet with
``query`` and ``positive``/``document``; cleaned on the fly by the same functions as ``mgte
pairs``: empty and identical pairs dropped, exact duplicates removed). Output::

    OUTPUT/model/         HF layout (model.hf.save_pretrained) + sentence-transformers files (CLS pooling)
    OUTPUT/checkpoints/   step-N/ verified checkpoints (training.checkpoint); a rerun resumes
    OUTPUT/metrics.jsonl  loss, in-batch accuracy, lr, grad norm, pairs/s
    OUTPUT/manifest.json  config, data counts (input = kept + dropped + quarantined), result

Runs on Ray Train (``engine: ray``; CPU workers with gloo + DDP, GPU workers with nccl and
optionally DeepSpeed ZeRO) or in-process (``engine: local``), through the shared loop and the
model-stage contract (:mod:`training.stage`). Config in :mod:`training.cpt.config`, input and
batches in :mod:`training.cpt.data`, the task in :mod:`training.cpt.task`; what it shares with the
TRM in :mod:`training.embedder`.
"""

from __future__ import annotations

from foundation.errors import MgteError
from training.cpt.config import Config, DataConfig
from training.cpt.data import PairBatches, load_pairs, read_input
from training.cpt.task import CPTTask
from training.embedder import rope_extra, tokenize_chunks, training_theta, write_sentence_transformers_files
from training.stage import ModelStage, run_model_stage

__all__ = ["Config", "DataConfig", "CPTTask", "PairBatches", "load_pairs", "read_input", "run", "STAGE",
           "tokenize_chunks", "training_theta", "write_sentence_transformers_files", "MgteError"]

STAGE = ModelStage("train-cpt", "cpt", Config, CPTTask, read_input, extra=rope_extra)


def run(cfg: Config) -> dict:
    return run_model_stage(STAGE, cfg)
