"""``mgte pairs`` run on the stage contract (:func:`pipelines.contract.run_stage`): three phases of
tasks on the config's engine (``engine: beam | ray | local``), then per-source stats (eq. 1).

1. ``read`` per input file, named by its content: read + parse + check -> candidates, keys,
   dropped, quarantine; then the error budget over all of them;
2. ``dedup`` per part of the pair-hash space, ``ceil(candidates / dedup_part_rows)`` parts (so a
   part's memory follows the config, not the input): exact duplicates across every file
   (survivor: the earliest record by (path, line), the same on every run and engine);
3. ``source`` per source: its shard files.

The dedup is a phase of ordinary tasks rather than an engine-specific shuffle (as corpus's
MinHash is): pairs dedup only groups by one hash, so cutting the hash space into parts lets each
part decide alone, and the same task functions run on every engine. The later phases carry the
identity of the read tasks they read (``deps``), so a changed input set reruns them.
"""

from __future__ import annotations

import functools
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import MgteError
from foundation.ledger import StageOutput, deps_hash, sum_counts
from foundation.sampling import eq1
from pipelines.contract import Phase, Result, Stage, StageSpec, later_tasks, run_stage, task_outputs
from pipelines.pairs.config import Config
from pipelines.pairs.tasks import (
    WORK, candidate_count, dedup_part, dedup_parts, dedup_task, key_files, read_file, read_task, source_items,
    write_source,
)
from pipelines.decontam import (REASON as EVAL_OVERLAP, check as check_decontam, load_index, pin as pin_decontam,
                                with_absolute_dirs)
from pipelines.readers import expand_inputs
from storage_schemas.pairs import PAIR_SOURCE_STATS

STAGE = "pairs"
LATER = ("dedup-", "source-")  # they read every file


def source_stats(cfg: Config, data_files: list[Path]) -> pa.Table:
    """Per-source pair and truncation counts and the eq. 1 batch-sampling weights (p, q)."""
    pairs: Counter = Counter()
    q_trunc: Counter = Counter()
    p_trunc: Counter = Counter()
    for f in data_files:  # counted in Arrow, a row group at a time (a whole 50k-row file: ~80 MB of RSS)
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            _count_sources(pf.read_row_group(g, columns=["source", "query_truncated", "positive_truncated"]),
                           pairs, q_trunc, p_trunc)
    table = eq1(dict(pairs), cfg.alpha)
    return PAIR_SOURCE_STATS.from_rows([
        {"source": s, "pairs": pairs[s], "query_truncated": q_trunc[s], "positive_truncated": p_trunc[s],
         "p": table[s][0], "q": table[s][1], "alpha": cfg.alpha} for s in sorted(pairs)])


def _count_sources(t: pa.Table, pairs: Counter, q_trunc: Counter, p_trunc: Counter) -> None:
    """Add one table's pairs and truncations (booleans: their sum counts the true ones) per source."""
    for r in t.group_by("source").aggregate([("source", "count"), ("query_truncated", "sum"),
                                             ("positive_truncated", "sum")]).to_pylist():
        pairs[r["source"]] += r["source_count"]
        q_trunc[r["source"]] += r["query_truncated_sum"]
        p_trunc[r["source"]] += r["positive_truncated_sum"]


def _forget_cleaned(out: StageOutput, names: list[str]) -> None:
    """Read tasks whose work files are gone (a finished run removes ``_work/``): redo them when a
    changed input set makes the later phases run again."""
    for name in names:
        marker = out.task_marker(name)
        if marker is not None and not all((out.root / f).is_file() for f in marker["files"]):
            out.drop_task(name)


def phases(cfg: Config, stage: Stage) -> list[Phase]:
    """read (one task per input, largest first) -> dedup (one per hash part, as many parts as the
    read tasks' candidates need) -> source (one per source); dedup and source are valid only for
    the read tasks they read (``deps``; the part count is a function of those and the config)."""
    out, entries = stage.out, stage.entries
    reads = [read_task(e) for e in entries]
    _forget_cleaned(out, reads)
    deps = deps_hash(reads)
    pin_decontam(out.root, load_index(cfg.decontaminate))

    source_deps = deps_hash([*reads, "dedup"])

    def n_parts(m) -> int:
        return dedup_parts(candidate_count(m["read"]), cfg.dedup_part_rows)

    def dedup_names(m):
        return [dedup_task(p) for p in range(n_parts(m))]  # an empty part still runs

    def dedup_items(m):
        files, parts = key_files(m["read"]), n_parts(m)
        return [(dedup_task(p), p, parts, files, out, deps) for p in range(parts)]

    def source_items_of(m):
        dups = task_outputs(m["dedup"], f"{WORK}/dups")
        return [(t, files, dups, cfg.shard_rows, out, source_deps) for t, files in source_items(m["read"]).items()]

    return [Phase("read", [(e, cfg, out) for e in entries], read_file, names=reads,
                  sort_key=lambda item: -item[0]["size"]),
            Phase("dedup", dedup_items, dedup_part, names=dedup_names, deps=deps),
            Phase("source", source_items_of, write_source, names=lambda m: list(source_items(m["read"])),
                  deps=source_deps)]


def finish(cfg: Config, stage: Stage, result: Result) -> tuple[dict, dict]:
    """Per-source stats (eq. 1) over the written pairs; ``_work/`` removed unless ``keep_candidates``."""
    out, m = stage.out, result.markers
    candidates = sum(mk["candidates"] for mk in m["dedup"])
    if sum_counts(m["source"])["input"] != candidates:
        raise MgteError(f"pairs: source tasks account for {sum_counts(m['source'])['input']} "
                        f"of {candidates} candidate pairs")
    data = sorted(task_outputs(m["source"], "data"))
    stats = source_stats(cfg, [out.root / f for f in data])
    out.write_table("stats/source_stats.parquet", stats, PAIR_SOURCE_STATS)
    rows = stats.to_pylist()
    extra = {"sources": {r["source"]: {k: r[k] for k in ("pairs", "query_truncated", "positive_truncated", "q")}
                         for r in rows},
             "query_truncated": sum(r["query_truncated"] for r in rows),
             "positive_truncated": sum(r["positive_truncated"] for r in rows)}
    if result.engine == "beam":
        extra["beam_options"] = cfg.beam.options
    if (index := load_index(cfg.decontaminate)) is not None:
        extra["decontaminate"] = {**index.summary(), "dropped": result.dropped_by_reason.get(EVAL_OVERLAP, 0)}
    if not cfg.keep_candidates:
        shutil.rmtree(out.root / WORK, ignore_errors=True)
    return {"data": data, "source_stats": ["stats/source_stats.parquet"]}, extra


def run(cfg: Config) -> dict:
    if not cfg.input:
        raise MgteError("pairs: no input (give --input or set `input` in the config)")
    check_decontam(cfg.decontaminate, cfg.output)  # a missing eval dir: one line, before any work
    spec = StageSpec(STAGE, phases=functools.partial(phases, with_absolute_dirs(cfg)),
                     per_input=lambda e: [read_task(e)],
                     later=lambda entries: later_tasks(cfg.output, LATER), finish=functools.partial(finish, cfg))
    return run_stage(spec, cfg, expand_inputs(cfg.input))
