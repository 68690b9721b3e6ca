"""The two task kinds of ``mgte pairs``, each the unit of retry with its own marker.

- ``file-*`` (one per input file): its candidates (the pairs that passed the checks), its
  dropped and quarantine rows -> ``candidates/``, ``dropped/``, ``quarantine/`` + marker.
- ``source-*`` (one per source): the dedup survivors of the source -> its shard
  ``data/source=NAME/part-*.parquet`` and its ``exact_duplicate`` rows + marker.

Plain functions over rows: the Beam DoFns around them only call them.
"""

from __future__ import annotations

import xxhash

from foundation.ledger import StageOutput
from pipelines.pairs.records import safe_name, survivor_key
from storage_schemas.corpus import QUARANTINE
from storage_schemas.pairs import PAIR, PAIR_DROPPED


def file_task(path: str) -> str:
    return "file-" + xxhash.xxh64_hexdigest(path.encode())


def source_task(source: str) -> str:
    return "source-" + safe_name(source)


def counts(input_: int, kept: int, dropped: int, quarantined: int) -> dict:
    return {"input": input_, "kept": kept, "dropped": dropped, "quarantined": quarantined}


def write_file_task(out: StageOutput, path: str, kept: list[dict], dropped: list[dict],
                    quarantine: list[dict]) -> dict:
    """One input file's outcome -> its files and marker (rows sorted: the same bytes on every run)."""
    task = file_task(path)
    kept = sorted(kept, key=survivor_key)
    dropped = sorted(dropped, key=survivor_key)
    quarantine = sorted(quarantine, key=lambda r: (r["line"], r["field"]))
    files = []
    if kept:
        files.append(out.write_rows(f"candidates/{task}.parquet", kept, PAIR))
    if dropped:
        files.append(out.write_rows(f"dropped/{task}.parquet", dropped, PAIR_DROPPED))
    if quarantine:
        files.append(out.write_rows(f"quarantine/{task}.parquet", quarantine, QUARANTINE))
    n = len(kept) + len(dropped) + len(quarantine)
    return out.mark_task(task, counts(n, len(kept), len(dropped), len(quarantine)), files)


def write_source_task(out: StageOutput, shard_rows: int, source: str, kept: list[dict],
                      dropped: list[dict]) -> dict | None:
    """One source's survivors and duplicates -> its shard, dropped file and marker; None when done."""
    task = source_task(source)
    if out.task_marker(task) is not None:
        return None
    kept = sorted(kept, key=survivor_key)
    dropped = sorted(dropped, key=survivor_key)
    files = []
    for part, start in enumerate(range(0, len(kept), shard_rows)):
        rel = f"data/source={safe_name(source)}/part-{part:05d}.parquet"
        files.append(out.write_rows(rel, kept[start:start + shard_rows], PAIR))
    if dropped:
        files.append(out.write_rows(f"dropped/{task}.parquet", dropped, PAIR_DROPPED))
    return out.mark_task(task, counts(len(kept) + len(dropped), len(kept), len(dropped), 0), files)
