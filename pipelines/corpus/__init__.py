"""``mgte corpus``: raw multilingual text -> clean, language-identified, de-duplicated documents.

Outputs (CONTRACT.md): ``data/`` (clean docs), ``dropped/`` (id, reason, scores),
``quarantine/`` (unreadable records with path and line), ``stats/lang_stats.parquet`` (per-language
counts and the eq. 1 sampling table), ``manifest.json``, ``_SUCCESS``. Steps in
:mod:`pipelines.corpus.steps`, engines in :mod:`pipelines.corpus.engines`.
"""

from __future__ import annotations

import logging
import os
import time

import pyarrow.parquet as pq

from pipelines.corpus.config import Config
from pipelines.corpus.engines import ENGINES
from pipelines.corpus.stats import language_stats, reason_counts
from pipelines.corpus.steps import (
    DEDUP_TASK,
    read_task,
    run_read_task,
    run_write_task,
    write_task,
)
from pipelines.readers import expand_inputs
from foundation.ledger import StageOutput, read_manifest, sum_counts
from foundation.errors import BadInputError
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


def run(cfg: Config) -> dict:
    out = StageOutput(cfg.output, "corpus", cfg)
    if out.begin():
        log.info("%s is complete for this config (hash %s): nothing to do", cfg.output, out.config_hash)
        return read_manifest(cfg.output)
    files = expand_inputs(cfg.input)
    inputs = [{"path": f, "size": os.path.getsize(f) if os.path.exists(f) else None} for f in files]
    engine = ENGINES[cfg.engine](cfg)
    with engine:
        todo = [(i, f, cfg, out) for i, f in enumerate(files) if out.task_marker(read_task(i)) is None]
        sizes = {row["path"]: row["size"] or 0 for row in inputs}
        todo.sort(key=lambda task: -sizes.get(task[1], 0))  # largest first: workers finish together
        log.info("corpus: %d input files, %d to read (engine %s)", len(files), len(todo), engine.name)
        t0 = time.perf_counter()
        engine.map(run_read_task, todo)
        log.info("corpus: read tasks done in %.1f s", time.perf_counter() - t0)
        read_markers = [out.task_marker(read_task(i)) for i in range(len(files))]
        missing = [read_task(i) for i, m in enumerate(read_markers) if m is None]
        if missing:
            raise RuntimeError(f"corpus: tasks {missing[:5]} did not finish")
        _check_error_budget(read_markers, out, cfg.reader.error_budget)
        if out.task_marker(DEDUP_TASK) is None:
            t0 = time.perf_counter()
            engine.dedup([str(p) for p in out.task_files("_work/candidates")], cfg.dedup, out)
            log.info("corpus: dedup done in %.1f s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.map(run_write_task, [(i, cfg, out) for i in range(len(files))
                                    if out.task_marker(write_task(i)) is None])
        log.info("corpus: write tasks done in %.1f s", time.perf_counter() - t0)
    write_markers = [out.task_marker(write_task(i)) for i in range(len(files))]
    data_files = [out.root / m["files"][0] for m in write_markers]
    docs = pq.read_table(data_files, columns=["lang", "n_chars", "n_bytes", "n_tokens"]) if data_files else None
    stats_rows = language_stats(docs, cfg.stats.alpha, with_tokens=cfg.stats.tokenizer is not None)
    stats_rel = out.write_rows("stats/lang_stats.parquet", stats_rows, LANG_STATS)

    read_total, write_total = sum_counts(read_markers), sum_counts(write_markers)
    counts = {"input": read_total["input"], "kept": write_total["kept"],
              "dropped": read_total["dropped"] + write_total["dropped"], "quarantined": read_total["quarantined"]}
    dropped_files = out.task_files("dropped")
    by_reason = reason_counts([pq.read_table(f, columns=["reason"]) for f in dropped_files])
    rel = lambda paths: [str(p.relative_to(out.root)) for p in paths]  # noqa: E731
    outputs = {"data": rel(data_files), "dropped": rel(dropped_files), "quarantine": rel(out.task_files("quarantine")),
               "lang_stats": [stats_rel]}
    extra = {"engine": engine.name, "files": len(files), "languages": len(stats_rows),
             "duplicates": {k: v for k, v in by_reason.items() if k.endswith("_duplicate")},
             "lang_stats": stats_rows}
    manifest = out.finish(counts=counts, dropped_by_reason=by_reason, inputs=inputs, outputs=outputs, extra=extra)
    log.info("corpus: %s", counts)
    return manifest
