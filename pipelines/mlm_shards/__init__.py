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

One input file is one task (the unit of retry, with a marker), named by the file's content; the
input list is pinned at the first run (a changed upstream output refuses, naming the files, or
with ``on_input_change: redo`` redoes exactly what changed). The stage declares its one phase on
the stage contract (:mod:`pipelines.contract`), whose runner owns begin, skipping finished tasks,
the engine (``local`` with ``local.workers`` processes, ``beam``, ``ray``: each task one Ray task,
rerun at most ``ray.max_retries`` times), the error budget (``reader.error_budget``), reason
tallies and the manifest. Logic in :mod:`pipelines.mlm_shards.tokens`, tasks and inputs in
:mod:`pipelines.mlm_shards.tasks`.
"""

from __future__ import annotations

import functools

from pipelines.contract import Phase, Result, Stage, StageSpec, run_stage, task_outputs
from pipelines.mlm_shards.config import Config, ReaderConfig
from pipelines.mlm_shards.tasks import NEEDED, read_docs, resolve_inputs, run_task, shard_stats, task_name
from pipelines.mlm_shards.tokens import OUTCOME, Tokenize, chunk_tokens, decide, keep_score, split_outcomes, tokenize_batch
from storage_schemas.mlm import MLM_SHARD_STATS

__all__ = ["Config", "ReaderConfig", "run", "chunk_tokens", "decide", "keep_score", "task_name", "Tokenize",
           "tokenize_batch", "split_outcomes", "read_docs", "resolve_inputs", "shard_stats", "NEEDED", "OUTCOME"]
STAGE = "mlm-shards"


def phases(cfg: Config, stage: Stage) -> list[Phase]:
    """One phase: a task per input file, largest first."""
    return [Phase("shard", [(e, cfg, stage.out) for e in stage.entries], run_task,
                  names=[task_name(e) for e in stage.entries], sort_key=lambda item: -item[0]["size"])]


def finish(cfg: Config, lang_stats, stage: Stage, result: Result) -> tuple[dict, dict]:
    """The per-language table: docs, chunks, tokens and q (the corpus table's, or eq. 1)."""
    out = stage.out
    data_files = sorted(task_outputs(result.markers["shard"], "data"))
    stats = shard_stats(out.root, data_files, lang_stats, cfg.alpha)
    stats_rel = out.write_table("stats/shard_stats.parquet", stats, MLM_SHARD_STATS)
    extra = {"max_len": cfg.max_len, "lang_stats": str(lang_stats) if lang_stats else None,
             "chunks": int(sum(stats.column("chunks").to_pylist())),
             "tokens": int(sum(stats.column("tokens").to_pylist())), "languages": stats.num_rows}
    return {"data": data_files, "shard_stats": [stats_rel]}, extra


def run(cfg: Config) -> dict:
    files, lang_stats = resolve_inputs(cfg.input)
    spec = StageSpec(STAGE, phases=functools.partial(phases, cfg), per_input=lambda e: [task_name(e)],
                     finish=functools.partial(finish, cfg, lang_stats))
    return run_stage(spec, cfg, [str(p) for p in files])
