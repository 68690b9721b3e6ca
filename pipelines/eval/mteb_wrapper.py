"""Run ``mteb`` on our models, and on local BEIR directories, fully offline.

- :class:`MTEBEncoder` implements mteb's encoder protocol (``encode(DataLoader, *, task_metadata,
  hf_split, hf_subset, prompt_type)``) around :func:`pipelines.embedding.load_embedder`, so any
  model ``mgte eval`` takes (our TRM/encoder directories, sentence-transformers directories, HF
  encoders) runs on any mteb task. Queries get ``query_instruction``; ``dense_dim`` applies a
  Matryoshka cut.
- :func:`local_retrieval_task` turns a BEIR-format directory into an mteb retrieval task whose
  ``load_data`` reads the files (no Hugging Face download).

    import mteb
    from pipelines.eval.mteb_wrapper import MTEBEncoder, local_retrieval_task
    result = mteb.evaluate(MTEBEncoder("runs/full/trm/model"), local_retrieval_task("data/eval/tiny-beir"),
                           cache=None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from pipelines.embedding import load_embedder
from pipelines.eval.retrieval import truncate_dim


class MTEBEncoder(AbsEncoder):
    """mteb's encoder protocol over an mgte-loadable embedding model."""

    def __init__(self, model_name: str, revision: str | None = None, *, device: str = "auto",
                 dtype: str = "float32", pooling: str = "auto", query_instruction: str = "",
                 max_length: int = 8192, dense_dim: int | None = None, **kwargs: Any) -> None:
        self.embedder = load_embedder(model_name, device=device, dtype=dtype, pooling=pooling)
        self.query_instruction = query_instruction
        self.max_length = max_length
        self.dense_dim = dense_dim
        dim = min(dense_dim, self.embedder.dim) if dense_dim else self.embedder.dim
        self.mteb_model_meta = ModelMeta(
            loader=None, name=_meta_name(model_name), revision=revision or self.embedder.model_id.split(":")[-1],
            release_date=None, languages=None, n_parameters=None, memory_usage_mb=None,
            max_tokens=float(self.embedder.context_length), embed_dim=int(dim), license=None, open_weights=True,
            public_training_code=None, public_training_data=None, framework=["PyTorch"],
            similarity_fn_name="cosine", use_instructions=bool(query_instruction), training_datasets=None,
        )

    def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        encoded = self.embedder.encode(texts, max_length=self.max_length)
        return truncate_dim(encoded.dense, self.dense_dim)


def _meta_name(model_name: str) -> str:
    """mteb wants ``organisation/model``; a local directory becomes ``local/<directory name>``."""
    path = Path(model_name)
    if path.is_dir() or "/" not in model_name:
        return f"local/{path.name or model_name}"
    return model_name


def local_retrieval_task(beir_dir: str | Path, *, split: str = "test", name: str | None = None,
                         languages: list[str] | None = None) -> AbsTaskRetrieval:
    """An mteb retrieval task over a local BEIR directory (read with :func:`pipelines.eval.beir.read_beir`)."""
    from datasets import Dataset

    from pipelines.eval.beir import read_beir

    beir = read_beir([str(beir_dir)], split)
    task_name = name or f"LocalBEIR{Path(beir_dir).resolve().name.title().replace('-', '').replace('_', '')}"

    class LocalBEIRRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name, type="Retrieval", main_score="ndcg_at_10",
            description=f"Local BEIR-format retrieval set read from {Path(beir_dir).resolve()}.",
            reference=None, dataset={"path": str(Path(beir_dir).resolve()), "revision": "local"},
            category="t2t", modalities=["text"], eval_splits=[split], eval_langs=languages or ["eng-Latn"],
            date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
            dialect=None, sample_creation=None, bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            split_data = RetrievalSplitData(
                queries=Dataset.from_dict({"id": beir.queries.ids, "text": beir.queries.texts}),
                corpus=Dataset.from_dict({"id": beir.corpus.ids, "title": beir.corpus.titles,
                                          "text": beir.corpus.texts}),
                relevant_docs={q: dict(d) for q, d in beir.qrels.items()},
                top_ranked=None,
            )
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    return LocalBEIRRetrieval()
