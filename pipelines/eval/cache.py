"""Corpus embeddings cached on disk, keyed by model id + corpus hash + formatting protocol.

``<cache_dir>/<key>/`` holds ``dense.npy`` (float32, full dimension: Matryoshka cuts are applied
after loading), ``sparse.npz`` (CSR term weights, when the model has a sparse head) and
``meta.json``. The entry is written as ``<key>.tmp/`` and renamed, so a reader sees a complete
entry or none; ``meta.json`` is checked against the key on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from foundation.ledger import atomic_write, atomic_write_json, atomic_write_npy
from pipelines.embedding import Encoded, SparseVectors

log = logging.getLogger(__name__)
CACHE_ENV = "MGTE_CACHE"


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "mgte")
    return Path(root).expanduser() / "embeddings"


def corpus_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 of the formatted documents, in order (ids included: they name the rows)."""
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        digest.update(doc_id.encode())
        digest.update(b"\x00")
        digest.update(text.encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def cache_key(model_id: str, corpus: str, protocol: dict) -> str:
    blob = json.dumps({"model": model_id, "corpus": corpus, "protocol": protocol}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class EmbeddingCache:
    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def load(self, key: str) -> Encoded | None:
        entry = self.root / key
        meta_path = entry / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            log.warning("embedding cache %s: meta.json names key %s; ignoring the entry", entry, meta.get("key"))
            return None
        dense = np.load(entry / "dense.npy")
        sparse = None
        if meta["has_sparse"]:
            with np.load(entry / "sparse.npz") as z:
                sparse = SparseVectors(z["indptr"], z["terms"], z["weights"])
        log.info("embedding cache hit: %s (%d docs)", entry, dense.shape[0])
        return Encoded(dense, sparse, int(meta["n_truncated"]), int(meta["max_length"]))

    def save(self, key: str, encoded: Encoded, meta: dict) -> Path:
        entry = self.root / key
        tmp = self.root / f"{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        atomic_write_npy(tmp / "dense.npy", encoded.dense)  # each file synced; the entry renamed whole below
        if encoded.sparse is not None:
            sparse = encoded.sparse

            def write_sparse(path: Path) -> None:
                with open(path, "wb") as fh:
                    np.savez(fh, indptr=sparse.indptr, terms=sparse.terms, weights=sparse.weights)

            atomic_write(tmp / "sparse.npz", write_sparse)
        full = {**meta, "key": key, "n_docs": int(encoded.dense.shape[0]), "dim": int(encoded.dense.shape[1]),
                "has_sparse": encoded.sparse is not None, "n_truncated": encoded.n_truncated,
                "max_length": encoded.max_length}
        atomic_write_json(tmp / "meta.json", full)
        try:
            os.replace(tmp, entry)
        except OSError:  # another run stored the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (entry / "meta.json").is_file():
                raise
        return entry
