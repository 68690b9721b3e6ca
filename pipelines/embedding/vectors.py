"""What encoding gives back: L2-normalised dense vectors and sparse term weights in CSR form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


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


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)

