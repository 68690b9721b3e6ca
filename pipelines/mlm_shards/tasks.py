"""The mlm-shards tasks: its inputs (one reader of upstream outputs), the per-file task, and the
per-language table. One input file is one task, named by the file's content
(:func:`foundation.ledger.input_task`); it writes its files and its marker last."""

from __future__ import annotations

import functools
import glob
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foundation.errors import BadInputError
from foundation.ledger import StageOutput, input_task, stage_output, stage_output_files
from pipelines.mlm_shards.config import Config
from pipelines.mlm_shards.tokens import Tokenize, split_outcomes, tokenize_batch
from pipelines.contract import Outcomes
from storage_schemas import CLEAN_DOC
from storage_schemas.mlm import MLM_CHUNK, MLM_DROPPED, MLM_SHARD_STATS

NEEDED = ("id", "text", "lang")  # columns every input file must have (source is optional)


def resolve_inputs(paths: tuple[str, ...]) -> tuple[list[Path], Path | None]:
    """Clean-doc parquet files, and the corpus sampling table when the input is a corpus output."""
    files: list[Path] = []
    lang_stats = None
    for item in paths:
        p = Path(item)
        if (manifest := stage_output(p, who="mlm-shards")) is not None:
            files += stage_output_files(p, "data", CLEAN_DOC, fields=NEEDED, manifest=manifest)
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


def task_name(entry: dict) -> str:
    """The task over one input (``entry``: its ``{path, size, fingerprint}``)."""
    return input_task("shard", entry)


def _slices(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)] or [table]


@functools.lru_cache(maxsize=2)
def _tokenizer(cfg: Config) -> Tokenize:
    """One tokenizer per worker process and config (loaded once, reused by its tasks)."""
    return Tokenize(cfg)


def outcomes_local(table: pa.Table, tok: Tokenize, cfg: Config) -> pa.Table:
    return pa.concat_tables([tokenize_batch(part, tok) for part in _slices(table, cfg.batch_size)])


def run_task(entry: dict, cfg: Config, out: StageOutput) -> dict:
    """The task over one input file: tokenise its documents in batches, write its chunks by
    language, its dropped and quarantined documents, then its marker; returns the marker."""
    task = task_name(entry)
    marker = out.task_marker(task)
    if marker is not None:
        return marker
    path = entry["path"]
    table = read_docs(Path(path))
    outcomes = outcomes_local(table, _tokenizer(cfg), cfg)
    if outcomes.num_rows != table.num_rows:
        raise RuntimeError(f"{path}: {table.num_rows} documents in, {outcomes.num_rows} outcomes out")
    chunk_tables, dropped, quarantined = split_outcomes(outcomes, path)
    files = []
    for lang, chunks in chunk_tables.items():
        files.append(out.write_table(f"data/lang={lang}/part-{task}.parquet", chunks, MLM_CHUNK))
    kept_docs = [row for row, o in enumerate(outcomes.column("outcome").to_pylist()) if o == ""]
    accounts = Outcomes(kept=kept_docs, dropped=dropped, quarantined=quarantined)
    files += accounts.write(out, f"part-{task}", MLM_DROPPED)
    if accounts.counts()["input"] != outcomes.num_rows:
        raise RuntimeError(f"{path}: {outcomes.num_rows} documents, {accounts.counts()} outcomes")
    return out.mark_task(task, accounts.counts(), files, input=entry)


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
