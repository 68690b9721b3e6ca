"""The three task kinds of ``mgte pairs``, each the unit of retry with its own marker, each a plain
function ``fn(*item)`` that any engine of :mod:`pipelines.engines` runs (``Phase`` items).

- ``read-<file>-<content hash>`` (one per input file, :func:`read_file`): read, parse and check
  every record -> its candidates (the pairs that passed the checks) one file per source, their
  dedup keys in one file sorted by pair hash, its dropped and quarantine rows.
- ``dedup-NN`` (one per part of the pair-hash space, :func:`dedup_part`): the keys of every file
  in that part's hash range -> which pairs are exact duplicates of which survivor
  (:func:`split_survivor`). The number of parts follows the input: ``ceil(candidates /
  dedup_part_rows)`` (:func:`dedup_parts`), so a part holds about ``dedup_part_rows`` keys of five
  short columns whatever the input size, and no task ever holds all pairs in memory, on any
  engine. Every pair of one hash lands in the same part, so the parts decide independently and
  any number of parts gives the same output.
- ``source-NAME`` (one per source, :func:`write_source`): that source's candidates minus its
  duplicates -> ``data/source=NAME/part-*.parquet`` and its ``exact_duplicate`` rows.

Work files live under ``_work/`` (removed after success unless ``keep_candidates``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import MgteError
from foundation.ledger import EMPTY_COUNTS, StageOutput, input_task
from foundation.ledger.atomic import AtomicParquetWriter
from foundation.tables import repeated_groups
from pipelines.pairs.checks import PairChecker
from pipelines.pairs.config import Config
from pipelines.pairs.records import (dropped_row, duplicate_row, read_pair_records, safe_name, split_survivor,
                                     survivor_key)
from pipelines.contract import Outcomes
from pipelines.decontam import REASON as EVAL_OVERLAP, DecontamIndex, load_index
from pipelines.readers import Quarantined
from storage_schemas.pairs import PAIR, PAIR_DROPPED

WORK = "_work"
KEY_ROW_GROUP = 8192  # rows per row group of a read task's keys file
KEY_SCHEMA = pa.schema([("pair_hash", pa.string()), ("path", pa.string()), ("line", pa.int64()),
                        ("pair_id", pa.string()), ("source", pa.string())])
DUP_SCHEMA = pa.schema([*KEY_SCHEMA, ("duplicate_of", pa.string())])


def read_task(entry: dict) -> str:
    return input_task("read", entry)


def dedup_task(part: int) -> str:
    return f"dedup-{part:02d}"


def source_task(safe: str) -> str:
    return "source-" + safe


def dedup_parts(candidates: int, part_rows: int) -> int:
    """Parts of the pair-hash space for ``candidates`` keys, about ``part_rows`` keys each."""
    return max(1, -(-candidates // part_rows))


def hash_range(part: int, parts: int) -> tuple[str, str | None]:
    """The pair hashes of ``part`` of ``parts``: ``lo <= hash < hi`` (``hi`` None: no upper end),
    cut at 8-hex-digit prefixes (the hash is uniform: so are the parts). A 32-digit hash compares
    with an 8-digit bound as its first 8 digits do."""
    bound = lambda p: f"{p * 2**32 // parts:08x}"  # noqa: E731
    return bound(part), (bound(part + 1) if part + 1 < parts else None)


# ---- read: one input file ------------------------------------------------------------------------
def read_file(entry: dict, cfg: Config, out: StageOutput) -> dict:
    """One input file -> candidates by source, dedup keys sorted by pair hash, dropped, quarantine +
    marker (rows sorted: the same bytes on every run and engine)."""
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
    for row in sorted(outcomes.kept, key=survivor_key):
        by_source[safe_name(row["source"])].append(row)
    for safe, rows in sorted(by_source.items()):
        files.append(out.write_rows(f"{WORK}/candidates/{task}/source={safe}.parquet", rows, PAIR))
    if outcomes.kept:  # sorted by hash, small row groups: a dedup part reads only its range's groups
        keys = sorted(({k: row[k] for k in KEY_SCHEMA.names} for row in outcomes.kept),
                      key=lambda r: (r["pair_hash"], survivor_key(r)))
        files.append(out.write_table(f"{WORK}/keys/{task}.parquet", pa.Table.from_pylist(keys, schema=KEY_SCHEMA),
                                     row_group_size=KEY_ROW_GROUP))
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
def dedup_part(task: str, part: int, parts: int, key_files: list[str], out: StageOutput, deps: str) -> dict:
    """The keys of ``part`` of ``parts`` (its :func:`hash_range`), from every file -> its duplicate
    decisions (``_work/dups/``) + marker. The part's keys stay Arrow (~the data's bytes); only the
    rows of hashes seen twice or more (the duplicates and their survivors) become Python rows."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    lo, hi = hash_range(part, parts)
    in_range = [("pair_hash", ">=", lo)] + ([("pair_hash", "<", hi)] if hi is not None else [])
    keys = pa.concat_tables([pq.read_table(out.root / f, filters=in_range, schema=KEY_SCHEMA) for f in key_files]
                            or [KEY_SCHEMA.empty_table()])
    n = keys.num_rows
    dups = []
    for members in repeated_groups(keys, "pair_hash").values():
        first, rest = split_survivor(members)
        dups += [dict(r, duplicate_of=first["pair_id"]) for r in rest]
    dups.sort(key=survivor_key)
    files = [out.write_table(f"{WORK}/dups/{task}.parquet", pa.Table.from_pylist(dups, schema=DUP_SCHEMA))] if dups else []
    # the part only decides: its pairs are counted by the source tasks (kept, or dropped as duplicates)
    return out.mark_task(task, EMPTY_COUNTS, files, deps=deps,
                         extra={"candidates": n, "duplicates": len(dups), "part": part, "parts": parts})


# ---- source: one output shard directory ------------------------------------------------------------
def write_source(task: str, candidate_files: list[str], dup_files: list[str], shard_rows: int,
                 out: StageOutput, deps: str) -> dict:
    """One source's candidates minus its duplicates -> its part files, dropped file + marker.

    Streamed: each read task's candidate file is sorted by :func:`survivor_key` and covers its own
    input file's records, so the files taken in the order of their first key are one sorted run;
    the task holds one candidate file at a time, not the source nor a part (each part file is
    written as the candidate files come, :class:`_Parts`); only its duplicates become Python rows."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    ordered = sorted(candidate_files, key=lambda f: _first_key(out.root / f))
    duplicate_of: dict | None = None
    outcomes, parts, last = Outcomes(), None, None
    try:
        for f in ordered:
            table = pq.read_table(out.root / f)  # a read task writes a source's file only when it has pairs
            keys = list(zip(*(table.column(c).to_pylist() for c in ("path", "line", "pair_id"))))
            if duplicate_of is None:
                source, duplicate_of = table.column("source")[0].as_py(), {}
                parts = _Parts(out, source, shard_rows)
                for d in (r for df in dup_files for r in pq.read_table(out.root / df, filters=[("source", "==", source)])
                          .to_pylist()):
                    duplicate_of[survivor_key(d)] = d["duplicate_of"]
            for key in keys:
                if last is not None and key <= last:
                    raise MgteError(f"pairs: {task}: candidate file {f} is not in key order after the files before it "
                                    f"(record {key} after {last})")
                last = key
            keep = [key not in duplicate_of for key in keys]
            if not all(keep):
                for row in table.filter(pa.array([not k for k in keep])).to_pylist():
                    outcomes.drop(duplicate_row(row, duplicate_of[survivor_key(row)]))
            parts.add(table.filter(pa.array(keep)))
    except BaseException:  # no part file half written: the open one's tmp file goes
        if parts is not None:
            parts.abort()
        raise
    files = parts.close() + outcomes.write(out, task, PAIR_DROPPED)
    counts = {"input": parts.kept + len(outcomes.dropped), "kept": parts.kept, "dropped": len(outcomes.dropped),
              "quarantined": 0}
    return out.mark_task(task, counts, files, deps=deps)


class _Parts:
    """A source's kept pairs, in order -> ``data/source=NAME/part-NNNNN.parquet`` files of
    ``shard_rows`` rows (the last one fewer), each written table by table as they come."""

    def __init__(self, out: StageOutput, source: str, shard_rows: int):
        self.out, self.source, self.shard_rows = out, source, shard_rows
        self.kept, self.files, self.writer, self.rel = 0, [], None, ""

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                self.rel = f"data/source={safe_name(self.source)}/part-{self.kept // self.shard_rows:05d}.parquet"
                self.writer = AtomicParquetWriter(self.out.root / self.rel, PAIR.schema)
            take = min(table.num_rows, self.shard_rows - self.kept % self.shard_rows)
            self.writer.write(PAIR.validate(table.slice(0, take), where=str(self.out.root / self.rel)))
            self.kept, table = self.kept + take, table.slice(take)
            if self.kept % self.shard_rows == 0:
                self._finish()

    def _finish(self) -> None:
        self.writer.close()
        self.files.append(self.rel)
        self.writer = None

    def close(self) -> list[str]:
        if self.writer is not None:
            self._finish()
        return self.files

    def abort(self) -> None:
        """The open part's temporary file removed (the task failed; the finished parts stay, a rerun
        rewrites them)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _first_key(path: Path) -> tuple:
    first = pq.ParquetFile(path).read_row_group(0, columns=["path", "line", "pair_id"]).slice(0, 1).to_pylist()[0]
    return survivor_key(first)


def source_items(read_markers: list[dict]) -> dict[str, list[str]]:
    """{source task: its candidate files, in read-task order} from the read tasks' markers."""
    by_task: dict[str, list[str]] = defaultdict(list)
    for marker in read_markers:
        for f in marker["files"]:
            if f.startswith(f"{WORK}/candidates/"):
                by_task[source_task(Path(f).stem.removeprefix("source="))].append(f)
    return dict(sorted(by_task.items()))


def key_files(read_markers: list[dict]) -> list[str]:
    """The read tasks' key files (every dedup part reads its hash range of each), in read-task order."""
    return [f for marker in read_markers for f in marker["files"] if f.startswith(f"{WORK}/keys/")]


def candidate_count(read_markers: list[dict]) -> int:
    return sum(marker["counts"]["kept"] for marker in read_markers)
