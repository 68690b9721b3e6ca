"""``mgte pairs`` run on the stage contract (:mod:`pipelines.contract`): three phases of tasks on
the config's engine (``engine: beam | ray | local``), then per-source stats (eq. 1) and manifest.

1. ``read`` per input file, named by its content: read + parse + check -> candidates, keys,
   dropped, quarantine; then the error budget over all of them;
2. ``dedup`` per part of the pair-hash space: exact duplicates across every file (survivor: the
   earliest record by (path, line), the same on every run and engine);
3. ``source`` per source: its shard files.

The dedup is a phase of ordinary tasks rather than an engine-specific shuffle (as corpus's
MinHash is): pairs dedup only groups by one hash, so cutting the hash space into parts lets each
part decide alone, and the same task functions run on every engine. The later phases carry the
identity of the read tasks they read (``deps``), so a changed input set reruns them;
``Stage.begin`` pins the config and the input list and refuses or redoes what changed.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import MgteError
from foundation.ledger import StageOutput, deps_hash, read_manifest, sum_counts
from foundation.sampling import eq1
from pipelines.contract import Phase, Stage, check_error_budget, reason_tallies, run_phase, task_outputs
from pipelines.engines import make_engine
from pipelines.pairs.config import Config
from pipelines.pairs.tasks import (
    WORK, counts as task_counts, dedup_part, part_files, read_file, read_task, source_items, write_source,
)
from pipelines.readers import expand_inputs
from storage_schemas.pairs import PAIR_SOURCE_STATS

log = logging.getLogger(__name__)

STAGE = "pairs"


def source_stats(cfg: Config, data_files: list[Path]) -> pa.Table:
    """Per-source pair and truncation counts and the eq. 1 batch-sampling weights (p, q)."""
    pairs: Counter = Counter()
    q_trunc: Counter = Counter()
    p_trunc: Counter = Counter()
    for f in data_files:
        t = pq.read_table(f, columns=["source", "query_truncated", "positive_truncated"]).to_pydict()
        for s, qt, pt in zip(t["source"], t["query_truncated"], t["positive_truncated"]):
            pairs[s] += 1
            q_trunc[s] += int(qt)
            p_trunc[s] += int(pt)
    table = eq1(dict(pairs), cfg.alpha)
    return PAIR_SOURCE_STATS.from_rows([
        {"source": s, "pairs": pairs[s], "query_truncated": q_trunc[s], "positive_truncated": p_trunc[s],
         "p": table[s][0], "q": table[s][1], "alpha": cfg.alpha} for s in sorted(pairs)])


def _later_tasks(root: Path) -> list[str]:
    """The dedup and source tasks on disk: they read every file, so a changed input set forgets them."""
    return sorted(p.stem for prefix in ("dedup-", "source-") for p in (root / "_tasks").glob(f"{prefix}*.json"))


def _forget_cleaned(out: StageOutput, names: list[str]) -> None:
    """Read tasks whose work files are gone (a finished run removes ``_work/``): redo them when a
    changed input set makes the later phases run again."""
    for name in names:
        marker = out.task_marker(name)
        if marker is not None and not all((out.root / f).is_file() for f in marker["files"]):
            out.drop_task(name)


def run(cfg: Config) -> dict:
    if not cfg.input:
        raise MgteError("pairs: no input (give --input or set `input` in the config)")
    root = Path(cfg.output)
    stage = Stage.begin(STAGE, cfg, expand_inputs(cfg.input), per_input=lambda e: [read_task(e)],
                        later=lambda entries: _later_tasks(root))
    if stage.done:
        return read_manifest(cfg.output)
    out, entries = stage.out, stage.entries
    reads = [read_task(e) for e in entries]
    _forget_cleaned(out, reads)
    with make_engine(cfg) as engine:
        read_markers = run_phase(stage, engine, Phase(
            "read", [(e, cfg, out) for e in entries], read_file, names=reads, sort_key=lambda item: -item[0]["size"]))
        check_error_budget(read_markers, out, cfg.reader.error_budget)
        deps = deps_hash(reads)
        parts = part_files(read_markers)
        dedup_markers = run_phase(stage, engine, Phase(
            "dedup", [(t, files, out, deps) for t, files in parts.items()], dedup_part, names=list(parts), deps=deps))
        dups = task_outputs(dedup_markers, f"{WORK}/dups")
        sources = source_items(read_markers)
        source_deps = deps_hash([*reads, *parts])
        source_markers = run_phase(stage, engine, Phase(
            "source", [(t, files, dups, cfg.shard_rows, out, source_deps) for t, files in sources.items()],
            write_source, names=list(sources), deps=source_deps))
    candidates = sum_counts(dedup_markers)["input"]
    if sum_counts(source_markers)["input"] != candidates:
        raise MgteError(f"pairs: source tasks account for {sum_counts(source_markers)['input']} "
                        f"of {candidates} candidate pairs")
    return _finish(cfg, out, entries, engine.name, read_markers, source_markers)


def _finish(cfg: Config, out: StageOutput, entries: list[dict], engine: str, read_markers: list[dict],
            source_markers: list[dict]) -> dict:
    data = sorted(task_outputs(source_markers, "data"))
    dropped = sorted(task_outputs(read_markers, "dropped") + task_outputs(source_markers, "dropped"))
    quarantine = sorted(task_outputs(read_markers, "quarantine"))
    stats = source_stats(cfg, [out.root / f for f in data])
    out.write_table("stats/source_stats.parquet", stats, PAIR_SOURCE_STATS)
    read, written = sum_counts(read_markers), sum_counts(source_markers)
    counts = task_counts(read["input"], written["kept"], read["dropped"] + written["dropped"], read["quarantined"])
    stats_rows = stats.to_pylist()
    extra = {"engine": engine,
             "sources": {r["source"]: {k: r[k] for k in ("pairs", "query_truncated", "positive_truncated", "q")}
                         for r in stats_rows},
             "query_truncated": sum(r["query_truncated"] for r in stats_rows),
             "positive_truncated": sum(r["positive_truncated"] for r in stats_rows)}
    if engine == "beam":
        extra["beam_options"] = cfg.beam.options
    manifest = out.finish(
        counts=counts, dropped_by_reason=reason_tallies(out.root / f for f in dropped), inputs=entries,
        outputs={"data": data, "dropped": dropped, "quarantine": quarantine,
                 "source_stats": ["stats/source_stats.parquet"]},
        extra=extra)
    if not cfg.keep_candidates:
        shutil.rmtree(out.root / WORK, ignore_errors=True)
    log.info("pairs: %s", counts)
    return manifest
