"""The one way to embed texts (eval, mining) or score pairs with a cross-encoder, for any model.

- ``resolve``: where a model lives (directory, `mgte train` output, bundled all-MiniLM-L6-v2, HF
  cache), what kind it is (mgte / sentence-transformers / hf), its fingerprint, its tokenizer;
- ``vectors``: what comes back (:class:`Encoded`: L2-normalised dense vectors + :class:`SparseVectors`);
- ``embedders``: :func:`load_embedder` -> an :class:`Embedder` (``encode``, ``encode_chunks``);
- ``reranker``: :func:`load_reranker` -> a :class:`Reranker` (``score(queries, docs)``).
"""

from pipelines.embedding.embedders import (
    Embedder,
    HFEmbedder,
    MGTEEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
)
from pipelines.embedding.reranker import Reranker, load_reranker
from pipelines.embedding.resolve import (
    ModelLoadError,
    model_fingerprint,
    model_kind,
    pick_device,
    resolve_model_dir,
    tokenize_counted,
)
from pipelines.embedding.vectors import Encoded, SparseVectors

__all__ = [
    "Embedder",
    "Encoded",
    "HFEmbedder",
    "MGTEEmbedder",
    "ModelLoadError",
    "Reranker",
    "SentenceTransformerEmbedder",
    "SparseVectors",
    "load_embedder",
    "load_reranker",
    "model_fingerprint",
    "model_kind",
    "pick_device",
    "resolve_model_dir",
    "tokenize_counted",
]
