"""The three task kinds of ``mgte pairs``, each the unit of retry with its own marker, each a plain
function ``fn(*item)`` that any engine of :mod:`pipelines.engines` runs (``Phase`` items).

- ``read-<file>-<content hash>`` (one per input file, :func:`read_file`): read, parse and check
  every record -> its candidates (the pairs that passed the checks) one file per source, their
  dedup keys spread over :data:`DEDUP_PARTS` parts by pair hash, its dropped and quarantine rows.
- ``dedup-NN`` (one per part of the pair-hash space, :func:`dedup_part`): the keys of every file
  in that part -> which pairs are exact duplicates of which survivor (:func:`split_survivor`).
  Every pair of one hash lands in the same part, so the parts decide independently; a part holds
  only five short columns per pair, so no task ever holds all pairs in memory, on any engine.
- ``source-NAME`` (one per source, :func:`write_source`): that source's candidates minus its
  duplicates -> ``data/source=NAME/part-*.parquet`` and its ``exact_duplicate`` rows.

Work files live under ``_work/`` (removed after success unless ``keep_candidates``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.ledger import EMPTY_COUNTS, StageOutput, input_task
from pipelines.pairs.checks import PairChecker
from pipelines.pairs.config import Config
from pipelines.pairs.records import (dropped_row, duplicate_row, read_pair_records, safe_name, split_survivor,
                                     survivor_key)
from pipelines.contract import Outcomes
from pipelines.decontam import REASON as EVAL_OVERLAP, DecontamIndex, load_index
from pipelines.readers import Quarantined
from storage_schemas.pairs import PAIR, PAIR_DROPPED

WORK = "_work"
DEDUP_PARTS = 8  # parts of the pair-hash space; any number gives the same output
KEY_SCHEMA = pa.schema([("pair_hash", pa.string()), ("path", pa.string()), ("line", pa.int64()),
                        ("pair_id", pa.string()), ("source", pa.string())])
DUP_SCHEMA = pa.schema([*KEY_SCHEMA, ("duplicate_of", pa.string())])


def read_task(entry: dict) -> str:
    return input_task("read", entry)


def dedup_task(part: int) -> str:
    return f"dedup-{part:02d}"


def source_task(safe: str) -> str:
    return "source-" + safe


def hash_part(pair_hash: str) -> int:
    return int(pair_hash[:8], 16) % DEDUP_PARTS  # the hash is uniform: so are the parts


# ---- read: one input file ------------------------------------------------------------------------
def read_file(entry: dict, cfg: Config, out: StageOutput) -> dict:
    """One input file -> candidates by source, dedup keys by part, dropped, quarantine + marker
    (rows sorted: the same bytes on every run and engine)."""
    task = read_task(entry)
    if (marker := out.task_marker(task)) is not None:
        return marker
    check = PairChecker(cfg)
    decontam = load_index(cfg.decontaminate)  # built once per worker process
    outcomes = Outcomes()  # kept: the candidates
    for item in read_pair_records(entry["path"], cfg.reader):
        if isinstance(item, Quarantined):
            outcomes.quarantine(item)
            continue
        if decontam is not None and (drop := overlap(item, decontam)) is not None:
            outcomes.drop(drop)
            continue
        row, drop = check(item)
        outcomes.keep(row) if row is not None else outcomes.drop(drop)
    files = []
    by_source: dict[str, list[dict]] = defaultdict(list)
    by_part: dict[int, list[dict]] = defaultdict(list)
    for row in sorted(outcomes.kept, key=survivor_key):
        by_source[safe_name(row["source"])].append(row)
        by_part[hash_part(row["pair_hash"])].append({k: row[k] for k in KEY_SCHEMA.names})
    for safe, rows in sorted(by_source.items()):
        files.append(out.write_rows(f"{WORK}/candidates/{task}/source={safe}.parquet", rows, PAIR))
    for part, rows in sorted(by_part.items()):
        files.append(out.write_table(f"{WORK}/keys/{task}/part-{part:02d}.parquet",
                                     pa.Table.from_pylist(rows, schema=KEY_SCHEMA)))
    outcomes.dropped.sort(key=survivor_key)
    outcomes.quarantined.sort(key=lambda r: (r["line"], r["field"]))
    files += outcomes.write(out, task, PAIR_DROPPED)
    return out.mark_task(task, outcomes.counts(), files, input=entry)


def overlap(pair: dict, index: DecontamIndex) -> dict | None:
    """The ``eval_overlap`` drop of a pair whose query (checked first) or positive is, or nearly is,
    an evaluation text; its ``scores`` say which side, exact or near, and the evaluation text.
    Checked before the other checks: an evaluation text is dropped for that, whatever else."""
    for side in ("query", "positive"):
        if pair[side] and (hit := index.match(pair[side])) is not None:
            return dropped_row(pair, EVAL_OVERLAP, {EVAL_OVERLAP: hit.detail(side)})
    return None


# ---- dedup: one part of the pair-hash space --------------------------------------------------------
def dedup_part(task: str, key_files: list[str], out: StageOutput, deps: str) -> dict:
    """The keys of one part, from every file -> its duplicate decisions (``_work/dups/``) + marker."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    groups: dict[str, list[dict]] = defaultdict(list)
    n = 0
    for f in key_files:
        for row in pq.read_table(out.root / f).to_pylist():
            groups[row["pair_hash"]].append(row)
            n += 1
    dups = []
    for members in groups.values():
        first, rest = split_survivor(members)
        dups += [dict(r, duplicate_of=first["pair_id"]) for r in rest]
    dups.sort(key=survivor_key)
    files = [out.write_table(f"{WORK}/dups/{task}.parquet", pa.Table.from_pylist(dups, schema=DUP_SCHEMA))] if dups else []
    # the part only decides: its pairs are counted by the source tasks (kept, or dropped as duplicates)
    return out.mark_task(task, EMPTY_COUNTS, files, deps=deps, extra={"candidates": n, "duplicates": len(dups)})


# ---- source: one output shard directory ------------------------------------------------------------
def write_source(task: str, candidate_files: list[str], dup_files: list[str], shard_rows: int,
                 out: StageOutput, deps: str) -> dict:
    """One source's candidates minus its duplicates -> its part files, dropped file + marker."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    rows = [r for f in candidate_files for r in pq.read_table(out.root / f).to_pylist()]
    source = rows[0]["source"]
    duplicate_of = {}
    for f in dup_files:
        for d in pq.read_table(out.root / f, filters=[("source", "==", source)]).to_pylist():
            duplicate_of[survivor_key(d)] = d["duplicate_of"]
    outcomes = Outcomes()
    for row in sorted(rows, key=survivor_key):
        survivor = duplicate_of.get(survivor_key(row))
        outcomes.keep(row) if survivor is None else outcomes.drop(duplicate_row(row, survivor))
    kept, files = outcomes.kept, []
    for part, start in enumerate(range(0, len(kept), shard_rows)):
        rel = f"data/source={safe_name(source)}/part-{part:05d}.parquet"
        files.append(out.write_rows(rel, kept[start:start + shard_rows], PAIR))
    files += outcomes.write(out, task, PAIR_DROPPED)
    return out.mark_task(task, outcomes.counts(), files, deps=deps)


def source_items(read_markers: list[dict]) -> dict[str, list[str]]:
    """{source task: its candidate files, in read-task order} from the read tasks' markers."""
    by_task: dict[str, list[str]] = defaultdict(list)
    for marker in read_markers:
        for f in marker["files"]:
            if f.startswith(f"{WORK}/candidates/"):
                by_task[source_task(Path(f).stem.removeprefix("source="))].append(f)
    return dict(sorted(by_task.items()))


def part_files(read_markers: list[dict]) -> dict[str, list[str]]:
    """{dedup task: the key files of its part} for every part (an empty part still runs)."""
    by_task: dict[str, list[str]] = {dedup_task(p): [] for p in range(DEDUP_PARTS)}
    for marker in read_markers:
        for f in marker["files"]:
            if f.startswith(f"{WORK}/keys/"):
                by_task[dedup_task(int(Path(f).stem.removeprefix("part-")))].append(f)
    return by_task
