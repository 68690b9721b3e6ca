"""Decontamination: training texts that are, or nearly are, an evaluation query or document.

``decontaminate: [EVAL_DIR, ...]`` on the stages that feed training (``corpus``, ``pairs``,
``mine``) builds one :class:`DecontamIndex` from the evaluation sets and drops every training text
that matches it with the reason ``eval_overlap`` (counted in the manifest's ``dropped_by_reason``
like any other drop, so ``input = kept + dropped + quarantined`` still holds).

An ``EVAL_DIR`` is a BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, the
layout ``mgte eval`` reads, gzipped files too) or a directory holding BEIR directories (each one a
set, as ``data/finetune/``). The evaluation texts of a set:

* a set without ``qrels/train.tsv`` (its corpus exists only for evaluation, as ``data/eval/tiny-beir``):
  every query and every document;
* a set with a train split (train and held-out queries share one corpus, as BEIR's MS MARCO or the
  bundled fine-tuning sets): the queries judged by a held-out qrels file (any file but ``train``)
  and the documents they judge relevant (grade > 0); the rest of the corpus is training material.

A document is indexed as its text and, when it has a title, as ``title + text`` (how ``mgte eval``
and ``mgte mine`` join them).

A training text matches when

* **exact**: its :func:`foundation.text.text_key` (the one text identity: controls removed, NFC,
  whitespace runs collapsed) hashes like an evaluation text's; or
* **near**: its MinHash shares an LSH band with an evaluation text's and the estimated Jaccard of
  the two signatures is >= the threshold: the corpus de-duplication's shingles, hash family, bands,
  rows and threshold (:mod:`pipelines.corpus.dedup`, the stage's ``dedup`` section for ``corpus``,
  its defaults elsewhere). A text without a word (punctuation only) has no near match.

The index is built where it is used (each worker of the local pool, Beam or Ray builds it once from
the directories, cached per process): on the bundled sets it takes well under a second. Its
``fingerprint`` (the files' content fingerprints) is pinned in the stage output
(``_decontaminate.json``) and recorded in the manifest (``decontaminate``), so a rerun against
changed evaluation files is refused instead of mixing two decontaminations; a DAG records the
directories' identity in its lineage and rebuilds the step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from foundation.errors import BadInputError, StageConflict
from foundation.ledger import atomic_write_json, describe_input
from foundation.text import text_hash

REASON = "eval_overlap"
PIN = "_decontaminate.json"
_EMPTY = 0xFFFFFFFF  # every slot of the signature of a text without shingles


def _first(root: Path, stem: str) -> Path | None:
    return next((root / n for n in (f"{stem}.jsonl", f"{stem}.jsonl.gz") if (root / n).is_file()), None)


def is_eval_set(path: Path) -> bool:
    return path.is_dir() and (path / "qrels").is_dir() and _first(path, "corpus") is not None


def eval_sets(dirs: tuple[str, ...] | list[str]) -> list[Path]:
    """The BEIR sets the ``decontaminate`` directories name (a set, or a directory of sets);
    a missing or unusable one is refused in one line."""
    sets: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise BadInputError(f"decontaminate: {d} does not exist")
        if is_eval_set(root):
            found = [root]
        else:
            found = sorted({p.parent for p in root.glob("**/qrels") if is_eval_set(p.parent)}) if root.is_dir() else []
        if not found:
            raise BadInputError(f"decontaminate: {d} is not an evaluation set (a BEIR directory with corpus.jsonl, "
                                f"queries.jsonl and qrels/<split>.tsv) nor a directory holding some")
        for s in found:
            if _first(s, "queries") is None:
                raise BadInputError(f"decontaminate: BEIR directory {s} has no queries.jsonl")
            sets.append(s.resolve())
    return sorted(dict.fromkeys(sets))


def _set_files(root: Path) -> list[Path]:
    """corpus, queries, then every qrels file of one set."""
    qrels = sorted(p for p in (root / "qrels").iterdir() if p.is_file() and p.name.endswith((".tsv", ".tsv.gz")))
    return [_first(root, "corpus"), _first(root, "queries"), *qrels]


def _fingerprint(files: list[dict]) -> str:
    return xxhash.xxh64("|".join(f"{Path(f['path']).name}:{f['fingerprint']}" for f in files).encode()).hexdigest()


def fingerprint(dirs: tuple[str, ...] | list[str]) -> str:
    """The content fingerprint of the sets ``dirs`` name (:func:`foundation.ledger.describe_input`
    of each file: cheap, without reading the texts); equals :attr:`DecontamIndex.fingerprint`."""
    sets = eval_sets(dirs)
    return _combine((s.name, _fingerprint([describe_input(str(p)) for p in _set_files(s)])) for s in sets)


def _combine(parts) -> str:
    return xxhash.xxh64("|".join(f"{name}:{fp}" for name, fp in parts).encode()).hexdigest()


@dataclass
class EvalSet:
    """The evaluation texts of one set: (ref, text) with ref ``<set>/query/<id>`` or ``<set>/doc/<id>``."""

    root: Path
    queries: list[tuple[str, str]] = field(default_factory=list)
    docs: list[tuple[str, str]] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)

    def fingerprint(self) -> str:
        return _fingerprint(self.files)


def read_eval_set(root: Path) -> EvalSet:
    """One BEIR set's evaluation queries and documents (module docstring); unreadable lines are
    skipped here (``mgte eval`` accounts for them)."""
    from pipelines.eval.beir import iter_qrels, read_texts

    corpus_path, queries_path, *qrels = _set_files(root)
    held_out = [p for p in qrels if p.name.split(".")[0] != "train"]
    has_train = len(held_out) < len(qrels)
    queries_wanted = docs_wanted = None  # None: all
    if has_train:
        queries_wanted, docs_wanted = set(), set()
        for path in held_out:
            for item in iter_qrels(path):
                if isinstance(item, tuple):
                    _, qid, did, grade = item
                    queries_wanted.add(qid)
                    if grade > 0:
                        docs_wanted.add(did)
    corpus, *_ = read_texts(corpus_path, "doc", with_title=True, max_record_bytes=64_000_000)
    queries, *_ = read_texts(queries_path, "query", with_title=False, max_record_bytes=64_000_000)
    out = EvalSet(root, files=[describe_input(str(p)) for p in (corpus_path, queries_path, *qrels)])
    for qid, text in zip(queries.ids, queries.texts):
        if queries_wanted is None or qid in queries_wanted:
            out.queries.append((f"{root.name}/query/{qid}", text))
    for did, title, text in zip(corpus.ids, corpus.titles, corpus.texts):
        if docs_wanted is None or did in docs_wanted:
            ref = f"{root.name}/doc/{did}"
            out.docs.append((ref, text))
            if title.strip():
                out.docs.append((ref, f"{title}\n{text}"))
    return out


@dataclass(frozen=True)
class Match:
    """An evaluation text a training text overlaps: ``exact`` or ``near``, the estimated Jaccard
    (1.0 for exact) and the evaluation text's ref."""

    match: str
    similarity: float
    ref: str

    def detail(self, side: str | None = None) -> dict:
        d = {"match": self.match, "similarity": round(self.similarity, 4), "eval": self.ref}
        return {"side": side, **d} if side else d


class DecontamIndex:
    """Exact (normalised-text hash) and near (MinHash LSH, verified by estimated Jaccard) lookup
    of evaluation texts. ``dedup``: the MinHash settings (the corpus stage's ``dedup`` section;
    None: its defaults)."""

    def __init__(self, dirs: tuple[str, ...] | list[str], dedup=None):
        # imported here: the corpus package imports this module (no import cycle at load time)
        from pipelines.corpus.config import DedupConfig
        from pipelines.corpus.dedup import band_keys, jaccard_estimate, make_hasher

        self._band_keys, self._jaccard = band_keys, jaccard_estimate
        t0 = time.perf_counter()
        dedup = dedup if dedup is not None else DedupConfig()
        self.dedup = dedup
        self.hasher = make_hasher(dedup.minhash, dedup.bands * dedup.rows, dedup.seed)
        self.sets = [read_eval_set(s) for s in eval_sets(dirs)]
        self.refs: list[str] = []
        self.exact: dict[str, int] = {}
        self.buckets: dict[str, list[int]] = {}
        sigs = []
        for s in self.sets:
            for ref, text in (*s.queries, *s.docs):
                i = len(self.refs)
                self.refs.append(ref)
                self.exact.setdefault(text_hash(text), i)
                sig = self.signature(text)
                sigs.append(sig)
                if not np.all(sig == _EMPTY):
                    for key in self._band_keys(sig, dedup.bands, dedup.rows):
                        self.buckets.setdefault(key, []).append(i)
        self.sigs = np.stack(sigs) if sigs else np.zeros((0, dedup.bands * dedup.rows), np.uint32)
        self.fingerprint = _combine((s.root.name, s.fingerprint()) for s in self.sets)
        self.build_s = time.perf_counter() - t0

    def signature(self, text: str) -> np.ndarray:
        return np.asarray(self.hasher.signature_of(text, self.dedup.ngram), dtype=np.uint32)

    def match(self, text: str, signature: np.ndarray | None = None) -> Match | None:
        """The evaluation text ``text`` overlaps, else None. ``signature``: its MinHash with the
        same settings when the caller has it already (the corpus read task)."""
        hit = self.exact.get(text_hash(text))
        if hit is not None:
            return Match("exact", 1.0, self.refs[hit])
        sig = self.signature(text) if signature is None or len(signature) == 0 else np.asarray(signature, np.uint32)
        if np.all(sig == _EMPTY):
            return None
        best: tuple[float, int] | None = None
        seen: set[int] = set()
        for key in self._band_keys(sig, self.dedup.bands, self.dedup.rows):
            for i in self.buckets.get(key, ()):
                if i in seen:
                    continue
                seen.add(i)
                sim = self._jaccard(sig, self.sigs[i])
                if sim >= self.dedup.threshold and (best is None or (sim, -i) > (best[0], -best[1])):
                    best = (sim, i)
        return Match("near", best[0], self.refs[best[1]]) if best is not None else None

    def summary(self) -> dict:
        """What the manifest records (``decontaminate``)."""
        return {"fingerprint": self.fingerprint, "texts": len(self.refs),
                "sets": [{"dir": str(s.root), "name": s.root.name, "queries": len(s.queries),
                          "documents": len({ref for ref, _ in s.docs}), "fingerprint": s.fingerprint()}
                         for s in self.sets],
                "settings": {k: getattr(self.dedup, k) for k in ("ngram", "bands", "rows", "threshold", "seed",
                                                                 "minhash")}}


@functools.lru_cache(maxsize=4)
def _cached(dirs: tuple[str, ...], dedup, content: str) -> DecontamIndex:
    return DecontamIndex(dirs, dedup)


def load_index(dirs: tuple[str, ...] | list[str], dedup=None) -> DecontamIndex | None:
    """The index of ``dirs`` (None when empty), built once per process (each engine worker) and
    per content of the sets (their :func:`fingerprint`)."""
    if not dirs:
        return None
    dirs = tuple(os.path.abspath(d) for d in dirs)
    return _cached(dirs, dedup, fingerprint(dirs))


def check(dirs: tuple[str, ...] | list[str], output: str | None, dedup=None) -> DecontamIndex | None:
    """Before a stage does any work: the index (a missing or unusable directory refused in one
    line), and a refusal when ``output`` was decontaminated against other evaluation files."""
    index = load_index(dirs, dedup)
    if index is None or output is None:
        return index
    pinned = Path(output) / PIN
    if pinned.is_file():
        old = json.loads(pinned.read_text())
        if old.get("fingerprint") != index.fingerprint:
            raise StageConflict(
                f"{output} was decontaminated against other evaluation files (fingerprint {old.get('fingerprint')}, "
                f"now {index.fingerprint}: {', '.join(s['name'] for s in index.summary()['sets'])}). Use another "
                f"--output, or delete the directory to rebuild.")
    return index


def with_absolute_dirs(cfg):
    """``cfg`` with its ``decontaminate`` directories absolute, for the tasks: a worker (Ray, Beam)
    may run in another working directory. The stage's identity keeps the paths as written."""
    if not cfg.decontaminate:
        return cfg
    return dataclasses.replace(cfg, decontaminate=tuple(os.path.abspath(d) for d in cfg.decontaminate))


def pin(root: str | Path, index: DecontamIndex | None) -> None:
    """Record the index's fingerprint in the stage output (first run; :func:`check` compares)."""
    if index is not None and not (Path(root) / PIN).is_file():
        atomic_write_json(Path(root) / PIN, index.summary())
