"""``mgte pairs`` run: which tasks are left, the error budget, per-source stats (eq. 1), manifest.

Two passes, each one Beam pipeline (:mod:`pipelines.pairs.transforms`): the file tasks read and
check every input file without a marker; then dedup is decided over all candidates (it only
reads hashes; survivor: the earliest record by (path, line), the same on every run) and every
source without a marker is written as its shard. A rerun skips the tasks that have a marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import BadInputError, MgteError
from foundation.ledger import StageOutput
from foundation.sampling import eq1
from pipelines.pairs.config import Config
from pipelines.pairs.tasks import counts as task_counts
from pipelines.pairs.tasks import file_task
from pipelines.pairs.transforms import run_file_tasks, run_source_tasks
from pipelines.readers import expand_inputs
from storage_schemas.pairs import PAIR_SOURCE_STATS

log = logging.getLogger(__name__)

STAGE = "pairs"


def _markers(out: StageOutput, prefix: str) -> list[dict]:
    return [m for m in (out.task_marker(p.stem) for p in sorted((out.root / "_tasks").glob(f"{prefix}*.json")))
            if m is not None]


def _check_budget(cfg: Config, out: StageOutput, file_markers: list[dict]) -> None:
    total = sum(m["counts"]["input"] for m in file_markers)
    bad = sum(m["counts"]["quarantined"] for m in file_markers)
    if total and bad / total > cfg.reader.error_budget:
        first = pq.read_table(out.task_files("quarantine")[0]).slice(0, 1).to_pylist()[0]
        raise BadInputError(
            f"{bad} of {total} records quarantined ({bad / total:.1%} > reader.error_budget "
            f"{cfg.reader.error_budget:.1%}); first: {first['path']} line {first['line']} field "
            f"'{first['field']}': {first['error']}")


def _column_counts(files: list[Path], column: str) -> Counter:
    out: Counter = Counter()
    for f in files:
        out.update(pq.read_table(f, columns=[column]).column(column).to_pylist())
    return out


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


def _listed(markers: list[dict], prefix: str) -> list[str]:
    return sorted(f for m in markers for f in m["files"] if f.startswith(prefix))


def run(cfg: Config) -> dict:
    out = StageOutput(cfg.output, STAGE, cfg)
    if out.begin():
        return json.loads((out.root / "manifest.json").read_text())
    if not cfg.input:
        raise MgteError("pairs: no input (give --input or set `input` in the config)")
    files = expand_inputs(cfg.input)

    pending = [f for f in files if out.task_marker(file_task(f)) is None]
    log.info("pairs: %d input files, %d to read", len(files), len(pending))
    run_file_tasks(cfg, out, pending)
    file_markers = [out.task_marker(file_task(f)) for f in files]
    if any(m is None for m in file_markers):
        raise MgteError(f"pairs: {sum(m is None for m in file_markers)} file tasks did not finish")
    _check_budget(cfg, out, file_markers)

    candidates = sorted(out.root / f for f in _listed(file_markers, "candidates/"))
    run_source_tasks(cfg, out, candidates)
    source_markers = _markers(out, "source-")
    n_candidates = sum(m["counts"]["kept"] for m in file_markers)
    if sum(m["counts"]["input"] for m in source_markers) != n_candidates:
        raise MgteError(f"pairs: source tasks account for {sum(m['counts']['input'] for m in source_markers)} "
                        f"of {n_candidates} candidate pairs")

    data = _listed(source_markers, "data/")
    dropped = _listed(file_markers, "dropped/") + _listed(source_markers, "dropped/")
    quarantine = _listed(file_markers, "quarantine/")
    stats = source_stats(cfg, [out.root / f for f in data])
    out.write_table("stats/source_stats.parquet", stats, PAIR_SOURCE_STATS)
    counts = task_counts(sum(m["counts"]["input"] for m in file_markers),
                         sum(m["counts"]["kept"] for m in source_markers),
                         sum(m["counts"]["dropped"] for m in file_markers + source_markers),
                         sum(m["counts"]["quarantined"] for m in file_markers))
    by_reason = dict(_column_counts([out.root / f for f in dropped], "reason"))
    stats_rows = stats.to_pylist()
    manifest = out.finish(
        counts=counts, dropped_by_reason=by_reason,
        inputs=[{"path": f, "size": os.path.getsize(f) if "://" not in f else None} for f in files],
        outputs={"data": data, "dropped": dropped, "quarantine": quarantine,
                 "source_stats": ["stats/source_stats.parquet"]},
        extra={"engine": "beam", "beam_options": cfg.beam.options,
               "sources": {r["source"]: {k: r[k] for k in ("pairs", "query_truncated", "positive_truncated", "q")}
                           for r in stats_rows},
               "query_truncated": sum(r["query_truncated"] for r in stats_rows),
               "positive_truncated": sum(r["positive_truncated"] for r in stats_rows)})
    if not cfg.keep_candidates:
        shutil.rmtree(out.root / "candidates", ignore_errors=True)
    return manifest
