"""``mgte mlm-shards``: clean documents -> tokenised MLM chunks, sharded by language.

For each document of the corpus stage output (mGTE 2.1 / A.2):

- tokenise with the configured tokenizer (XLM-R, no special tokens);
- longer than ``max_len`` (special tokens included): split into consecutive chunks of
  ``max_len - 2`` tokens, each wrapped as ``<s> piece </s>``; shorter texts stay whole;
- for the 8192 phase, texts shorter than ``short_threshold`` tokens are down-sampled: kept when a
  hash of ``(seed, doc id)`` falls below ``short_keep_rate`` (deterministic, no RNG state);
- dropped with a reason: ``empty_after_tokenize`` (no token left), ``downsampled_short``;
  quarantined: a row without a usable ``id``/``text``/``lang``.

Output::

    DIR/data/lang=xx/part-<task>.parquet   MLM_CHUNK rows (storage_schemas.mlm)
    DIR/dropped/part-<task>.parquet        MLM_DROPPED rows
    DIR/quarantine/part-<task>.parquet     QUARANTINE rows
    DIR/stats/shard_stats.parquet          MLM_SHARD_STATS: chunks, tokens and eq. 1 q per language

One input file is one task (the unit of retry, with a marker). ``engine: local`` runs the
functions below in this process; ``engine: ray`` runs the same tokenising function as a Ray Data
``map_batches`` over each task's documents.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from foundation.config import RayConfig, frozen
from foundation.ledger import StageOutput, read_manifest, stage_output_files, sum_counts
from foundation.errors import BadInputError
from storage_schemas import CLEAN_DOC, QUARANTINE
from storage_schemas.mlm import MLM_CHUNK, MLM_DROPPED, MLM_SHARD_STATS

log = logging.getLogger(__name__)

STAGE = "mlm-shards"
NEEDED = ("id", "text", "lang")  # columns every input file must have (source is optional)


@frozen
class Config:
    input: tuple[str, ...] = ()  # a finished `mgte corpus` output dir, or clean-doc parquet files
    output: str | None = None
    tokenizer: str = "FacebookAI/xlm-roberta-base"
    max_len: int = 2048  # tokens per chunk, <s> and </s> included
    short_threshold: int = 0  # down-sample texts with fewer tokens than this (0 = off; 2048 for MLM-8192)
    short_keep_rate: float = 1.0  # fraction of those short texts kept
    seed: int = 0
    batch_size: int = 256  # documents per tokeniser call / Ray Data batch
    alpha: float = 0.5  # eq. 1, only used when the input has no corpus sampling table
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()
    progress: bool = True

    def validate(self) -> None:
        if self.max_len < 3:
            raise ValueError(f"max_len must be >= 3 (<s> + 1 token + </s>), got {self.max_len}")
        if not 0.0 <= self.short_keep_rate <= 1.0:
            raise ValueError(f"short_keep_rate must be in [0, 1], got {self.short_keep_rate}")
        if self.short_threshold < 0 or self.batch_size < 1:
            raise ValueError("short_threshold must be >= 0 and batch_size >= 1")


# -- the logic: plain functions over one batch of documents ----------------------------------------


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

    def __init__(self, cfg_dict: dict):
        from foundation.config import build
        from model.tokenizer import load_tokenizer

        self.cfg = build(Config, cfg_dict)
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


# -- inputs -----------------------------------------------------------------------------------------


def resolve_inputs(paths: tuple[str, ...]) -> tuple[list[Path], Path | None]:
    """Clean-doc parquet files, and the corpus sampling table when the input is a corpus output."""
    files: list[Path] = []
    lang_stats = None
    for item in paths:
        p = Path(item)
        if p.is_dir() and (p / "manifest.json").is_file():
            manifest = read_manifest(p)
            # one reader of upstream outputs: files of marked tasks only, schema checked per file
            files += stage_output_files(p, "data", CLEAN_DOC, fields=NEEDED)
            stats = manifest["outputs"].get("lang_stats", [])
            if stats and lang_stats is None:
                lang_stats = p / stats[0]
        elif p.is_dir():
            files += sorted(p.rglob("*.parquet"))
        elif any(ch in item for ch in "*?["):
            files += [Path(f) for f in sorted(glob.glob(item, recursive=True))]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"mlm-shards: input {item} does not exist")
    if not files:
        raise BadInputError(f"mlm-shards: no input parquet files in {list(paths)}")
    return sorted(set(files)), lang_stats


def read_docs(path: Path) -> pa.Table:
    """The needed columns of one input file, plus ``_row``; a wrong schema fails naming file and field."""
    schema = pq.read_schema(path)
    for name in NEEDED:
        if name not in schema.names:
            raise BadInputError(f"{path}: missing field '{name}' (expected a clean-doc table)")
        if not pa.types.is_string(schema.field(name).type) and not pa.types.is_large_string(schema.field(name).type):
            raise BadInputError(f"{path}: field '{name}' expected string, got {schema.field(name).type}")
    columns = [c for c in (*NEEDED, "source") if c in schema.names]
    table = pq.read_table(path, columns=columns)
    return table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))


def task_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', path.stem)}-{digest}"


# -- engines ----------------------------------------------------------------------------------------


def _slices(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)] or [table]


def outcomes_local(table: pa.Table, tok: Tokenize, cfg: Config) -> pa.Table:
    return pa.concat_tables([tokenize_batch(part, tok) for part in _slices(table, cfg.batch_size)])


def outcomes_ray(table: pa.Table, cfg_dict: dict, cfg: Config) -> pa.Table:
    import ray

    ds = ray.data.from_arrow(_slices(table, cfg.batch_size))
    # bounded retries (Ray's actor pools restart forever by default): a killed actor is replaced and
    # its batch rerun (tokenising is idempotent); a deterministic crash fails the task fast
    ds = ds.map_batches(Tokenize, fn_constructor_kwargs={"cfg_dict": cfg_dict}, batch_format="pyarrow",
                        batch_size=cfg.batch_size, concurrency=cfg.ray.parallelism or 2,
                        max_restarts=2, max_task_retries=2)
    parts = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
             for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    return pa.concat_tables(parts).cast(OUTCOME) if parts else OUTCOME.empty_table()


def run_task(out: StageOutput, path: Path, outcomes: pa.Table) -> dict:
    task = task_name(path)
    chunk_tables, dropped, quarantined = split_outcomes(outcomes, str(path))
    files = []
    for lang, table in chunk_tables.items():
        files.append(out.write_table(f"data/lang={lang}/part-{task}.parquet", table, MLM_CHUNK))
    if dropped.num_rows:
        files.append(out.write_table(f"dropped/part-{task}.parquet", dropped, MLM_DROPPED))
    if quarantined.num_rows:
        files.append(out.write_table(f"quarantine/part-{task}.parquet", quarantined, QUARANTINE))
    kept = sum(1 for o in outcomes.column("outcome").to_pylist() if o == "")
    counts = {"input": outcomes.num_rows, "kept": kept, "dropped": dropped.num_rows,
              "quarantined": quarantined.num_rows}
    return out.mark_task(task, counts, files)


def shard_stats(out_root: Path, data_files: list[str], lang_stats: Path | None, alpha: float) -> pa.Table:
    """Docs, chunks and tokens per language, and q_i (the corpus table's, renormalised)."""
    docs, chunks, tokens = Counter(), Counter(), Counter()
    for rel in data_files:
        t = pq.read_table(out_root / rel, columns=["lang", "chunk", "n_tokens"])
        lang = t.column("lang")[0].as_py() if t.num_rows else None
        if lang is None:
            continue
        chunks[lang] += t.num_rows
        docs[lang] += pc.sum(pc.equal(t.column("chunk"), 0)).as_py() or 0
        tokens[lang] += pc.sum(t.column("n_tokens")).as_py() or 0
    if lang_stats is not None:
        table = pq.read_table(lang_stats, columns=["lang", "q"])
        q_all = dict(zip(table.column("lang").to_pylist(), table.column("q").to_pylist()))
        q = {lang: q_all.get(lang, 0.0) for lang in chunks}
        if not sum(q.values()):
            raise BadInputError(f"{lang_stats}: no sampling weight for any language of the shards {sorted(chunks)}")
    else:
        from foundation.sampling import eq1_weights

        q = eq1_weights({lang: docs[lang] for lang in chunks}, alpha)
    norm = sum(q.values()) or 1.0
    rows = [{"lang": lang, "docs": docs[lang], "chunks": chunks[lang], "tokens": tokens[lang], "q": q[lang] / norm}
            for lang in sorted(chunks)]
    return MLM_SHARD_STATS.from_rows(rows)


def run(cfg: Config) -> dict:
    files, lang_stats = resolve_inputs(cfg.input)
    out = StageOutput(cfg.output, STAGE, cfg)
    if out.begin():
        return read_manifest(cfg.output)
    from foundation.config import config_to_dict
    from foundation.progress import Progress

    cfg_dict = config_to_dict(cfg)
    tok = None
    todo = [p for p in files if out.task_marker(task_name(p)) is None]
    log.info("mlm-shards: %d input files, %d to do (engine %s)", len(files), len(todo), cfg.engine)
    if todo and cfg.engine == "ray":
        from foundation.ray_init import init_ray

        init_ray(cfg.ray)
    progress = Progress(len(files), len(files) - len(todo), enabled=cfg.progress, desc="mlm-shards")
    try:
        for path in todo:
            table = read_docs(path)
            if cfg.engine == "ray":
                outcomes = outcomes_ray(table, cfg_dict, cfg)
            else:
                tok = tok or Tokenize(cfg_dict)
                outcomes = outcomes_local(table, tok, cfg)
            if outcomes.num_rows != table.num_rows:
                raise RuntimeError(f"{path}: {table.num_rows} documents in, {outcomes.num_rows} outcomes out")
            run_task(out, path, outcomes)
            progress.update(1)
    finally:
        progress.close()
    markers = [out.task_marker(task_name(p)) for p in files]
    counts = dict(sum_counts(markers))
    all_files = sorted(f for m in markers for f in m["files"])
    data_files = [f for f in all_files if f.startswith("data/")]
    reasons: Counter = Counter()
    for rel in (f for f in all_files if f.startswith("dropped/")):
        reasons.update(pq.read_table(out.root / rel, columns=["reason"]).column("reason").to_pylist())
    stats = shard_stats(out.root, data_files, lang_stats, cfg.alpha)
    out.write_table("stats/shard_stats.parquet", stats, MLM_SHARD_STATS)
    return out.finish(
        counts=counts, dropped_by_reason=dict(reasons),
        inputs=[{"path": str(p), "size": p.stat().st_size} for p in files],
        outputs={"data": data_files, "dropped": [f for f in all_files if f.startswith("dropped/")],
                 "quarantine": [f for f in all_files if f.startswith("quarantine/")],
                 "shard_stats": ["stats/shard_stats.parquet"]},
        extra={"engine": cfg.engine, "max_len": cfg.max_len, "lang_stats": str(lang_stats) if lang_stats else None,
               "chunks": int(sum(stats.column("chunks").to_pylist())),
               "tokens": int(sum(stats.column("tokens").to_pylist())),
               "languages": stats.num_rows},
    )
