"""Shared pieces of the `mgte mine` tests: a tiny deterministic embedder (installed in place of the
model loader, so most tests need no model), small pair / candidate files, config and output readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xxhash

from foundation.config import load_config
from pipelines import mine
from pipelines.embedding import Encoded
from pipelines.pairs.records import norm_key

REPO = Path(__file__).resolve().parents[3]
DIM = 16


def fake_vector(text: str) -> np.ndarray:
    """Texts sharing their first word share a direction (a 'topic'), plus a text-specific part."""
    words = norm_key(text).split() or [""]
    topic = np.random.default_rng(xxhash.xxh64_intdigest(words[0].lower())).normal(size=DIM)
    own = np.random.default_rng(xxhash.xxh64_intdigest(norm_key(text))).normal(size=DIM)
    v = topic + 0.6 * own
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakeEmbedder:
    calls = 0  # texts encoded, over every instance (the cache-reuse tests count them)
    kind, model_id, dim = "fake", "fake:0", DIM

    def encode(self, texts, *, max_length, max_tokens=16384, max_batch=64, sparse=False):
        FakeEmbedder.calls += len(texts)
        return Encoded(np.stack([fake_vector(t) for t in texts]), None, 0, max_length)


def install_fake(monkeypatch) -> None:
    import pipelines.mine.encode as encode

    FakeEmbedder.calls = 0
    monkeypatch.setattr(encode, "load_model", lambda *a, **k: FakeEmbedder())
    monkeypatch.setattr(encode, "model_identity",
                        lambda model: {"model": model, "dir": "-", "kind": "fake", "fingerprint": "0"})
    import pipelines.embedding.resolve as resolve

    monkeypatch.setattr(resolve, "check_models", lambda refs, verify=True: {})  # "fake" names no directory


@pytest.fixture()
def fake(monkeypatch):
    install_fake(monkeypatch)
    return FakeEmbedder


def write_jsonl(path: Path, rows, extra_lines=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TOPICS = ["cats", "dogs", "rivers", "mountains", "python", "rust", "paris", "berlin"]


def topic_pairs(n_per_topic: int = 6) -> list[dict]:
    """Queries with one or two positives each (siblings share a query_id); documents of one topic
    resemble each other, so the hard negatives of a query come from its own topic."""
    rows = []
    for t in TOPICS:
        for i in range(n_per_topic):
            qid = f"{t}-q{i}"
            rows.append({"query_id": qid, "query": f"{t} question number {i}?", "positive_id": f"{t}-d{i}",
                         "positive": f"{t} answer text {i} with details", "source": "topics", "lang": "en"})
            if i % 3 == 0:  # a sibling positive
                rows.append({"query_id": qid, "query": f"{t} question number {i}?", "positive_id": f"{t}-d{i}b",
                             "positive": f"{t} second answer {i}", "source": "topics", "lang": "en"})
    return rows


def config(tmp_path: Path, inputs, *sets, out: str = "out", **data):
    base = {"input": [str(p) for p in inputs], "output": str(tmp_path / out), "cache_dir": str(tmp_path / "cache"),
            "model": "fake", "rank_range": [1, 20], "num_negatives": 3, "max_score_ratio": None,
            "engine": "local", "progress": False}
    base.update(data)
    return load_config(mine.Config, None, list(sets), data=base)


def read_rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [r for f in manifest["outputs"]["data"] for r in pq.read_table(out / f).to_pylist()]
    return sorted(rows, key=lambda r: (r["query_id"], str(r["positive_id"]), r["positive"]))


def read_dropped(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for f in manifest["outputs"]["dropped"] for r in pq.read_table(out / f).to_pylist()]
