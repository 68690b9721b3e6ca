"""The mlm-shards logic as plain functions over one batch of documents: tokenise, chunk,
down-sample, and split the outcomes into chunk / dropped / quarantine tables."""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import xxhash

from pipelines.mlm_shards.config import Config
from storage_schemas import QUARANTINE
from storage_schemas.mlm import MLM_CHUNK, MLM_DROPPED


def keep_score(doc_id: str, seed: int) -> float:
    """Deterministic uniform score in [0, 1) of a document: xxh64 of ``seed:id``."""
    return xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode()) / 2.0**64


def chunk_tokens(ids: list[int], max_len: int, bos: int, eos: int) -> list[list[int]]:
    """``<s> piece </s>`` chunks of at most ``max_len`` tokens; a short text is one chunk."""
    step = max_len - 2
    return [[bos, *ids[i:i + step], eos] for i in range(0, len(ids), step)]


def decide(doc_id: str, n_tokens: int, cfg: Config) -> tuple[str, float | None]:
    """('' = keep | drop reason, the down-sampling score when it was computed)."""
    if n_tokens == 0:
        return "empty_after_tokenize", None
    if cfg.short_threshold and n_tokens < cfg.short_threshold:
        score = keep_score(doc_id, cfg.seed)
        return ("" if score < cfg.short_keep_rate else "downsampled_short"), score
    return "", None


OUTCOME = pa.schema([
    ("row", pa.int64()), ("id", pa.string()), ("lang", pa.string()), ("source", pa.string()),
    ("outcome", pa.string()), ("doc_tokens", pa.int64()), ("keep_score", pa.float64()),
    ("chunks", pa.list_(pa.list_(pa.int32()))), ("error_field", pa.string()), ("error", pa.string()),
    ("raw", pa.string()),
])
"""Per-document result of :func:`tokenize_batch`: outcome '' (kept), a drop reason, or 'quarantine'."""


class Tokenize:
    """Callable over a batch of clean docs (pyarrow) -> OUTCOME rows; loads the tokenizer once."""

    def __init__(self, cfg_dict: "dict | Config"):
        from foundation.config import build
        from model.tokenizer import load_tokenizer

        self.cfg = cfg_dict if isinstance(cfg_dict, Config) else build(Config, cfg_dict)
        tok = load_tokenizer(self.cfg.tokenizer)
        self.encode = tok.backend_tokenizer.encode_batch if hasattr(tok, "backend_tokenizer") else None
        self.tok = tok
        self.bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id

    def ids(self, texts: list[str]) -> list[list[int]]:
        if self.encode is not None:
            return [e.ids for e in self.encode(texts, add_special_tokens=False)]
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, batch: pa.Table) -> pa.Table:
        return tokenize_batch(batch, self)


def tokenize_batch(batch: pa.Table, tok: Tokenize) -> pa.Table:
    cfg = tok.cfg
    rows = batch.column("_row").to_pylist()
    ids = batch.column("id").to_pylist()
    texts = batch.column("text").to_pylist()
    langs = batch.column("lang").to_pylist()
    sources = batch.column("source").to_pylist() if "source" in batch.column_names else [None] * len(rows)
    out = {name: [] for name in OUTCOME.names}

    def add(i, outcome, doc_tokens=0, score=None, chunks=(), field=None, error=None, raw=None):
        for key, value in (("row", rows[i]), ("id", ids[i]), ("lang", langs[i]), ("source", sources[i] or ""),
                           ("outcome", outcome), ("doc_tokens", doc_tokens), ("keep_score", score),
                           ("chunks", list(chunks)), ("error_field", field), ("error", error), ("raw", raw)):
            out[key].append(value)

    good = []
    for i in range(len(rows)):
        for name, value in (("id", ids[i]), ("text", texts[i]), ("lang", langs[i])):
            if not isinstance(value, str) or (name != "text" and not value):
                add(i, "quarantine", field=name, error=f"missing_{name}: got {value!r}"[:200],
                    raw=(texts[i] if isinstance(texts[i], str) else str(texts[i]))[:1000])
                break
        else:
            good.append(i)
    for i, token_ids in zip(good, tok.ids([texts[i] for i in good]) if good else []):
        reason, score = decide(ids[i], len(token_ids), cfg)
        chunks = chunk_tokens(token_ids, cfg.max_len, tok.bos, tok.eos) if not reason else []
        add(i, reason, len(token_ids), score, chunks)
    return pa.Table.from_pydict(out, schema=OUTCOME)


def split_outcomes(outcomes: pa.Table, path: str) -> tuple[dict[str, pa.Table], pa.Table, pa.Table]:
    """OUTCOME rows -> ({lang: MLM_CHUNK table}, MLM_DROPPED table, QUARANTINE table)."""
    outcomes = outcomes.sort_by("row")
    chunks: dict[str, list[dict]] = defaultdict(list)
    dropped, quarantined = [], []
    for r in outcomes.to_pylist():
        if r["outcome"] == "":
            n = len(r["chunks"])
            for c, ids in enumerate(r["chunks"]):
                chunks[r["lang"]].append({"id": f"{r['id']}#{c}", "doc_id": r["id"], "lang": r["lang"], "chunk": c,
                                          "n_chunks": n, "n_tokens": len(ids), "doc_tokens": r["doc_tokens"],
                                          "input_ids": ids, "source": r["source"]})
        elif r["outcome"] == "quarantine":
            quarantined.append({"path": path, "line": r["row"], "field": r["error_field"], "error": r["error"],
                                "raw": r["raw"]})
        else:
            dropped.append({"id": r["id"], "reason": r["outcome"], "lang": r["lang"], "doc_tokens": r["doc_tokens"],
                            "keep_score": r["keep_score"]})
    return ({lang: MLM_CHUNK.from_rows(rows) for lang, rows in sorted(chunks.items())},
            MLM_DROPPED.from_rows(dropped), QUARANTINE.from_rows(quarantined))
