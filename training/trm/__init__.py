"""``mgte train trm``: TRM fine-tuning, Matryoshka dense + sparse term weights in one model
(mGTE 2.2, B.2, B.3; PAPER_FACTS "Hard negatives and TRM fine-tuning").

    L_TRM = lambda * L_sparse + sum_{d in D} w_d * L_{:d},   D = {32k | k >= 1, 32k <= H}

The loss (:mod:`training.trm.loss`; its parts in :mod:`training.trm.matryoshka` and
:mod:`training.trm.sparse`) sees each query's positive and mined hard negatives plus every
other document of the global batch, from every worker; duplicate texts are masked by their
:func:`foundation.text.text_id`. The global batch is one dataset (source, drawn by eq. 1) and one
length group of it (:mod:`training.length_groups`, Table 12: 768 / 384 / 256 / 160 / 80 queries by
length), encoded in sub-batches of the group's size (256 / 128 / 64 / 48 / 16 texts) by the
cached-gradient step (memory: one sub-batch, with gradient checkpointing inside it), and gathered. The sparse head's health is logged every step
(``OUTPUT/sparsity.jsonl`` and the metrics); vectors that stay all-zero for ``health.collapse_steps``
steps stop the run with :class:`SparseCollapse` and no model is saved.

``init``: our CPT model (the DAG's default), a TRM directory (continues its sparse head), or any
Hugging Face encoder (through :mod:`model.hf_encoder`; pooling ``auto`` = [CLS] for ours, the
sentence-transformers pooling of the init otherwise). Input: ``mgte mine`` outputs or parquet files
of the HARD_NEGATIVES table (:mod:`training.trm.data`). Output: ``OUTPUT/model`` (HF directory +
sentence-transformers dense and sparse files, :mod:`training.trm.model`), ``OUTPUT/checkpoints``,
``OUTPUT/metrics.jsonl``, ``OUTPUT/manifest.json``. Config in :mod:`training.trm.config`, the task in
:mod:`training.trm.task`; tokenizer, init and length clipping shared with CPT
(:mod:`training.embedder`); everything else (Ray Train, resume, precision, input pinning, the manifest)
is the model-stage contract (:mod:`training.stage`).
"""

from __future__ import annotations

from training.embedder import rope_extra
from training.stage import ModelStage, run_model_stage
from training.trm.config import Config, DataConfig, HealthConfig, LossConfig
from training.trm.data import batches_per_epoch, read_input
from training.trm.task import SparseCollapse, TRMTask, resolve_pooling

__all__ = ["Config", "DataConfig", "HealthConfig", "LossConfig", "TRMTask", "SparseCollapse", "resolve_pooling",
           "read_input", "batches_per_epoch", "run", "STAGE"]

STAGE = ModelStage("train-trm", "trm", Config, TRMTask, read_input, extra=rope_extra)


def run(cfg: Config) -> dict:
    return run_model_stage(STAGE, cfg)
