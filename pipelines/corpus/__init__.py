"""``mgte corpus``: raw multilingual text -> clean, language-identified, de-duplicated documents.

Outputs (CONTRACT.md): ``data/`` (clean docs), ``dropped/`` (id, reason, scores),
``quarantine/`` (unreadable records with path and line), ``stats/lang_stats.parquet`` (per-language
counts and the eq. 1 sampling table), ``stats/lang_stats_cumulative.parquet`` (the same over this
build and its ``previous`` builds), ``index/`` (ids, text hashes, MinHash signatures of every
candidate: what a later incremental build de-duplicates against, see
:mod:`pipelines.corpus.incremental`), ``manifest.json``, ``_SUCCESS``.

The stage only declares its phases on the stage contract (:mod:`pipelines.contract`): read each
input, de-duplicate over all of them, write each input; the runner owns begin, input pinning,
skipping finished tasks, the engine, the error budget, reason tallies and the manifest. The
per-task functions are in :mod:`pipelines.corpus.steps`; the dedup step runs on each engine in
:mod:`pipelines.corpus.dedup_engines`.
"""

from __future__ import annotations

import functools

from foundation.ledger import deps_hash
from pipelines.contract import Phase, Result, Stage, StageSpec, run_stage, task_outputs
from pipelines.corpus.config import Config
from pipelines.corpus.dedup_engines import run_dedup
from pipelines.corpus.incremental import cumulative_stats, previous_index_items, resolve_previous
from pipelines.corpus.stats import files_language_stats
from pipelines.decontam import (REASON as EVAL_OVERLAP, check as check_decontam, load_index, pin as pin_decontam,
                                with_absolute_dirs)
from pipelines.corpus.steps import DEDUP_TASK, read_task, run_read_task, run_write_task, write_task
from pipelines.readers import expand_inputs
from storage_schemas import LANG_STATS

__all__ = ["Config", "run"]


def _dedup_items(stage: Stage, cfg: Config, deps: str, previous: list[dict],
                 earlier: dict[str, list[dict]]) -> list[tuple]:
    """This build's candidates (build number ``len(previous)``) and the previous builds' indexes."""
    build = len(previous)
    candidates = [(str(stage.out.root / f), build) for f in task_outputs(earlier["read"], "_work/candidates")]
    return [(previous_index_items(previous) + candidates, cfg.dedup, stage.out, deps, build)]


def phases(cfg: Config, stage: Stage) -> list[Phase]:
    """read (one task per input, largest first) -> dedup (one, over every candidate and the
    previous builds' indexes) -> write (one task per input); dedup and write are valid only for
    this set of read tasks (``deps``)."""
    entries, out = stage.entries, stage.out
    previous = resolve_previous(cfg)
    reads = [read_task(e) for e in entries]
    deps = deps_hash(reads)
    pin_decontam(out.root, load_index(cfg.decontaminate, cfg.dedup))
    return [
        Phase("read", [(e, cfg, out) for e in entries], run_read_task, names=reads,
              sort_key=lambda item: -item[0]["size"]),  # largest first: workers finish together
        Phase("dedup", functools.partial(_dedup_items, stage, cfg, deps, previous), run_dedup, names=[DEDUP_TASK],
              deps=deps, drives_engine=True),
        Phase("write", [(e, cfg, out, deps) for e in entries], run_write_task,
              names=[write_task(e) for e in entries], deps=deps),
    ]


def finish(cfg: Config, stage: Stage, result: Result) -> tuple[dict, dict]:
    """The per-language table (eq. 1) over the written documents, and over every build."""
    out = stage.out
    data_files = [out.root / f for f in task_outputs(result.markers["write"], "data")]
    stats_rows = files_language_stats(data_files, cfg.stats.alpha, with_tokens=cfg.stats.tokenizer is not None)
    stats_rel = out.write_rows("stats/lang_stats.parquet", stats_rows, LANG_STATS)
    previous = resolve_previous(cfg)
    cumulative = cumulative_stats(previous, stats_rows, cfg.stats.alpha)
    cumulative_rel = out.write_rows("stats/lang_stats_cumulative.parquet", cumulative, LANG_STATS)
    by_reason = result.dropped_by_reason
    tokens = None if cfg.stats.tokenizer is None else sum(r["tokens"] or 0 for r in stats_rows)
    extra = {"files": len(stage.entries), "languages": len(stats_rows),
             "tokens": {"tokenizer": cfg.stats.tokenizer, "kept": tokens},
             "duplicates": {k: v for k, v in by_reason.items() if k.endswith("_duplicate")},
             "lang_stats": stats_rows, "previous": previous,
             "cumulative": {"builds": len(previous) + 1, "kept": sum(r["docs"] for r in cumulative),
                            "languages": len(cumulative)}}
    if (index := load_index(cfg.decontaminate, cfg.dedup)) is not None:
        extra["decontaminate"] = {**index.summary(), "dropped": by_reason.get(EVAL_OVERLAP, 0)}
    return {"lang_stats": [stats_rel], "lang_stats_cumulative": [cumulative_rel],
            "dedup_index": sorted(task_outputs(result.markers["read"], "index"))}, extra


def run(cfg: Config) -> dict:
    check_decontam(cfg.decontaminate, cfg.output, cfg.dedup)  # a missing eval dir: one line, before any work
    spec = StageSpec(
        name="corpus",
        phases=functools.partial(phases, with_absolute_dirs(cfg)),
        per_input=lambda e: [read_task(e), write_task(e)],  # the tasks of a removed or changed file
        later=lambda entries: [DEDUP_TASK, *(write_task(e) for e in entries)],  # they read every file
        finish=functools.partial(finish, cfg),
    )
    return run_stage(spec, cfg, expand_inputs(cfg.input))
