"""``mgte corpus``: raw multilingual text -> clean, language-identified, de-duplicated documents.

Outputs (CONTRACT.md): ``data/`` (clean docs), ``dropped/`` (id, reason, scores),
``quarantine/`` (unreadable records with path and line), ``stats/lang_stats.parquet`` (per-language
counts and the eq. 1 sampling table), ``manifest.json``, ``_SUCCESS``. Steps in
:mod:`pipelines.corpus.steps`; they run on the shared engines of :mod:`pipelines.engines`, the
dedup step on each engine in :mod:`pipelines.corpus.dedup_engines`.
"""

from __future__ import annotations

import logging
import os
import time

import pyarrow.parquet as pq

from pipelines.corpus.config import Config
from pipelines.corpus.dedup_engines import run_dedup
from pipelines.engines import make_engine
from pipelines.corpus.stats import language_stats, reason_counts
from pipelines.corpus.steps import (
    DEDUP_TASK,
    read_task,
    run_read_task,
    run_write_task,
    write_task,
)
from pipelines.readers import expand_inputs
from foundation.ledger import StageOutput, deps_hash, describe_inputs, read_manifest, sum_counts
from foundation.errors import BadInputError, TaskFailed
from storage_schemas import LANG_STATS

__all__ = ["Config", "run"]
log = logging.getLogger("mgte.corpus")


def _check_error_budget(markers: list[dict], out: StageOutput, budget: float) -> None:
    total = sum_counts(markers)
    if total["input"] and total["quarantined"] > budget * total["input"]:
        worst = max(markers, key=lambda m: m["counts"]["quarantined"])
        qfile = out.root / f"quarantine/{worst['task']}.parquet"
        first = pq.read_table(qfile).slice(0, 1).to_pylist()[0]
        raise BadInputError(
            f"{total['quarantined']} of {total['input']} records quarantined, over reader.error_budget={budget}; "
            f"worst file {first['path']}: {worst['counts']['quarantined']} bad records, first at line {first['line']} "
            f"(field {first['field']}: {first['error']}); see {out.root / 'quarantine'}")


def _redo_changed(out: StageOutput, change, entries: list[dict]) -> None:
    """Forget the tasks of removed and changed files and everything after the read phase (dedup
    and write tasks read every file's candidates), then pin the new input list."""
    log.warning("corpus: input set changed (%s): redoing it (on_input_change=redo)", change.summary())
    for entry in [*change.removed, *(old for old, _new in change.changed)]:
        out.drop_task(read_task(entry))
        out.drop_task(write_task(entry))
    out.drop_task(DEDUP_TASK)
    for entry in entries:
        out.drop_task(write_task(entry))
    out.repin_inputs(entries)


def _markers(out: StageOutput, tasks: list[str], deps: str | None = None) -> list[dict]:
    markers = [out.task_marker(t, deps) for t in tasks]
    missing = [t for t, m in zip(tasks, markers) if m is None]
    if missing:
        raise TaskFailed(f"corpus: {len(missing)} task(s) did not finish, first {missing[0]}; rerun to resume")
    return markers


def run(cfg: Config) -> dict:
    out = StageOutput(cfg.output, "corpus", cfg)
    done = out.begin()
    files = expand_inputs(cfg.input)
    entries = describe_inputs(files)
    change = out.pin_inputs(entries, cfg.on_input_change)
    if change:
        _redo_changed(out, change, entries)
    elif done:
        log.info("%s is complete for this config (hash %s): nothing to do", cfg.output, out.config_hash)
        return read_manifest(cfg.output)
    inputs = entries
    read_tasks = [read_task(e) for e in entries]
    deps = deps_hash(read_tasks)
    engine = make_engine(cfg)
    with engine:
        todo = [(e, cfg, out) for e in entries if out.task_marker(read_task(e)) is None]
        todo.sort(key=lambda task: -task[0]["size"])  # largest first: workers finish together
        log.info("corpus: %d input files, %d to read (engine %s)", len(files), len(todo), engine.name)
        t0 = time.perf_counter()
        engine.map(run_read_task, todo)
        log.info("corpus: read tasks done in %.1f s", time.perf_counter() - t0)
        read_markers = _markers(out, read_tasks)
        _check_error_budget(read_markers, out, cfg.reader.error_budget)
        if out.task_marker(DEDUP_TASK, deps) is None:
            t0 = time.perf_counter()
            candidates = [str(out.root / f) for m in read_markers for f in m["files"] if f.startswith("_work/candidates/")]
            run_dedup(engine, candidates, cfg.dedup, out, deps)
            log.info("corpus: dedup done in %.1f s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.map(run_write_task, [(e, cfg, out, deps) for e in entries if out.task_marker(write_task(e), deps) is None])
        log.info("corpus: write tasks done in %.1f s", time.perf_counter() - t0)
    write_markers = _markers(out, [write_task(e) for e in entries], deps)
    data_files = [out.root / m["files"][0] for m in write_markers]
    docs = pq.read_table(data_files, columns=["lang", "n_chars", "n_bytes", "n_tokens"]) if data_files else None
    stats_rows = language_stats(docs, cfg.stats.alpha, with_tokens=cfg.stats.tokenizer is not None)
    stats_rel = out.write_rows("stats/lang_stats.parquet", stats_rows, LANG_STATS)

    read_total, write_total = sum_counts(read_markers), sum_counts(write_markers)
    counts = {"input": read_total["input"], "kept": write_total["kept"],
              "dropped": read_total["dropped"] + write_total["dropped"], "quarantined": read_total["quarantined"]}
    dropped_files = sorted(out.root / f for m in read_markers + write_markers for f in m["files"]
                           if f.startswith("dropped/"))
    by_reason = reason_counts([pq.read_table(f, columns=["reason"]) for f in dropped_files])
    rel = lambda paths: [str(p.relative_to(out.root)) for p in paths]  # noqa: E731
    outputs = {"data": rel(data_files), "dropped": rel(dropped_files), "quarantine": rel(sorted(out.root / f for m in read_markers for f in m["files"] if f.startswith("quarantine/"))),
               "lang_stats": [stats_rel]}
    extra = {"engine": engine.name, "files": len(files), "languages": len(stats_rows),
             "duplicates": {k: v for k, v in by_reason.items() if k.endswith("_duplicate")},
             "lang_stats": stats_rows}
    manifest = out.finish(counts=counts, dropped_by_reason=by_reason, inputs=inputs, outputs=outputs, extra=extra)
    log.info("corpus: %s", counts)
    return manifest
