"""Exact and near-duplicate removal: the plain functions both engines call.

Exact: documents with the same hash of the normalised text form a group; the survivor is the
earliest record in input order (path, line). Near: MinHash over word n-gram shingles (grapheme
n-grams for scripts without spaces), LSH with ``bands x rows``; every bucket links its members to
its earliest one, each candidate link is verified by the estimated Jaccard of the two signatures,
and verified links are merged with union-find. Each cluster keeps its earliest document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import regex
import xxhash

from foundation.errors import MgteError

_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
# one token per character of a script without spaces (its combining marks attached), one per word
# elsewhere; a word stops where an unspaced script starts ("Linux系统" -> "linux", "系", "统"), so
# technical text that mixes Latin names into Chinese, Japanese or Thai is still shingled by characters
_SHINGLE_TOKEN = regex.compile(rf"[{_UNSPACED}]\p{{M}}*|(?:(?![{_UNSPACED}])[\p{{L}}\p{{N}}\p{{M}}])+")
_MERSENNE = np.uint64((1 << 61) - 1)
_CHUNK = 8192  # shingles per block: bounds memory at num_perm x 8192 x 8 bytes


def text_hash(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the distinct word n-grams of ``text`` (lower-cased, punctuation ignored)."""
    tokens = _SHINGLE_TOKEN.findall(text.lower())
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    tok = np.fromiter((xxhash.xxh32_intdigest(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    if len(tok) < n:
        return np.array([xxhash.xxh32_intdigest(" ".join(tokens))], dtype=np.uint64)
    # polynomial combination of n consecutive token hashes (wrapping uint64 arithmetic)
    acc = np.zeros(len(tok) - n + 1, dtype=np.uint64)
    mult = np.uint64(1_000_003)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * mult + tok[k:len(tok) - n + 1 + k]
        acc ^= acc >> np.uint64(29)
        acc *= np.uint64(0xBF58476D1CE4E5B9)
        acc ^= acc >> np.uint64(32)
    return np.unique(acc & np.uint64(0xFFFFFFFF))


def shingle_strings(text: str, n: int) -> list[str]:
    """The same shingles as :func:`shingle_hashes`, as strings (for hashers that take strings)."""
    tokens = _SHINGLE_TOKEN.findall(text.lower())
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


class MinHasher:
    """``num_perm`` universal hash functions h(x) = (a x + b) mod (2^61 - 1), seeded (numpy)."""

    def __init__(self, num_perm: int, seed: int):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)[:, None]
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)[:, None]
        self.num_perm = num_perm

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        sig = np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint64)
        for start in range(0, len(shingles), _CHUNK):
            block = shingles[None, start:start + _CHUNK]
            with np.errstate(over="ignore"):
                values = ((self.a * block + self.b) % _MERSENNE) & np.uint64(0xFFFFFFFF)
            np.minimum(sig, values.min(axis=1), out=sig)
        return sig.astype(np.uint32)

    def signature_of(self, text: str, n: int) -> np.ndarray:
        return self.signature(shingle_hashes(text, n))


class RensaHasher:
    """rensa's Rust MinHash (``RMinHash``) over the same shingles: ~1.7x the signatures per core
    of :class:`MinHasher` at the same near-duplicate recall and precision (benchmarks/corpus_build.py
    --minhash). Its hash family differs, so ``dedup.minhash`` is part of the dedup settings."""

    def __init__(self, num_perm: int, seed: int):
        try:
            import rensa
        except ImportError:
            raise MgteError("dedup.minhash=rensa needs the rensa package (pip install rensa)") from None
        self._new = lambda: rensa.RMinHash(num_perm=num_perm, seed=seed)
        self.num_perm = num_perm

    def signature_of(self, text: str, n: int) -> np.ndarray:
        shingles = shingle_strings(text, n)
        if not shingles:
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        m = self._new()
        m.update(shingles)
        return np.asarray(m.digest(), dtype=np.uint64).astype(np.uint32)


def make_hasher(kind: str, num_perm: int, seed: int):
    """``numpy`` (:class:`MinHasher`) or ``rensa`` (:class:`RensaHasher`)."""
    return RensaHasher(num_perm, seed) if kind == "rensa" else MinHasher(num_perm, seed)


def band_key(sig: np.ndarray, b: int, rows: int) -> str:
    """The LSH bucket of band ``b`` of a uint32 signature."""
    return f"{b}:{xxhash.xxh64_hexdigest(sig[b * rows:(b + 1) * rows].tobytes())}"


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[str]:
    sig = np.asarray(signature, dtype=np.uint32)
    return [band_key(sig, b, rows) for b in range(bands)]


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


# ---- decisions -------------------------------------------------------------------------------
# A "key" is the record's build, its position in the input and its id: (build, path, line, id);
# ``build`` is 0.. for the previous builds of an incremental build (oldest first) and the highest
# number for the build running now, and may be left out (path, line, id) in a single build. Keys
# order records the same way on every engine and are unique, so they decide survivors (an earlier
# build's copy always wins; inside a build the earliest record) and join decisions back.
Key = tuple


def _build_of(key: Key) -> int:
    return key[0] if len(key) == 4 else 0


@dataclass(frozen=True, slots=True)
class Decision:
    path: str
    line: int
    reason: str  # exact_duplicate | near_duplicate
    duplicate_of: str  # id of the survivor
    similarity: float
    build: int = 0  # the build of the removed record

    @classmethod
    def of(cls, key: Key, reason: str, survivor: Key, similarity: float) -> "Decision":
        return cls(key[-3], key[-2], reason, survivor[-1], similarity, _build_of(key))

    def row(self) -> dict:
        return {"path": self.path, "line": self.line, "reason": self.reason, "duplicate_of": self.duplicate_of,
                "similarity": self.similarity, "build": self.build}


def exact_group_decisions(members: Iterable[Key]) -> tuple[Key, list[Decision]]:
    """One text-hash group of keys -> (survivor, decisions for the others)."""
    ordered = sorted(members)
    survivor = ordered[0]
    return survivor, [Decision.of(k, "exact_duplicate", survivor, 1.0) for k in ordered[1:]]


def bucket_links(members: Iterable[tuple[Key, np.ndarray]], threshold: float) -> list[tuple[Key, Key, float]]:
    """One LSH bucket -> verified links (earliest member, other member, estimated Jaccard)."""
    ordered = sorted(members, key=lambda m: m[0])
    head_key, head_sig = ordered[0]
    links = []
    for key, sig in ordered[1:]:
        sim = jaccard_estimate(head_sig, sig)
        if sim >= threshold:
            links.append((head_key, key, sim))
    return links


class UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller key becomes the root: the root is the cluster's earliest record
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


def near_duplicate_decisions(links: Iterable[tuple[Key, Key, float]]) -> list[Decision]:
    """Verified links -> one decision per non-survivor; survivor = the cluster's earliest record."""
    uf = UnionFind()
    best: dict[Key, float] = {}
    for a, b, sim in links:
        uf.union(a, b)
        for k in (a, b):
            best[k] = max(best.get(k, 0.0), sim)
    out = []
    for key in sorted(uf.parent):
        root = uf.find(key)
        if root != key:
            out.append(Decision.of(key, "near_duplicate", root, best.get(key, 0.0)))
    return out
