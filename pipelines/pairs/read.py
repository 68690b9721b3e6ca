"""Readers of pairs for the stages downstream (CPT, eval, benchmarks): a finished ``mgte pairs``
output, or raw pair files read in process with the stage's own record functions.

:func:`read_raw_pairs` gives the rows the stage would keep run with the same config: the same
:func:`~pipelines.pairs.records.read_pair_records`, :class:`~pipelines.pairs.checks.PairChecker`
and :func:`~pipelines.pairs.records.pick_survivor` (dedup over all the files, as the stage's).
What it does not do: write dropped / quarantine rows (it only counts them) and apply
``reader.error_budget`` (the caller sees the counts). By default it reads with
:func:`~pipelines.pairs.config.raw_config`: no tokenizer and no language identification, so no
token counts, no token-length drops, and languages only as declared; run ``mgte pairs`` for those.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from foundation.errors import MgteError
from foundation.ledger import is_stage_output, read_stage_output, stage_output, stage_output_files
from pipelines.pairs.checks import PairChecker
from pipelines.pairs.config import Config, raw_config
from pipelines.pairs.records import pick_survivor, read_pair_records, survivor_key
from pipelines.readers import Quarantined, expand_inputs
from storage_schemas.pairs import PAIR


def read_pairs(root: str | Path) -> dict[str, pa.Table]:
    """A finished ``mgte pairs`` output -> {source: PAIR table}, through the one reader of stage
    outputs (:func:`foundation.ledger.read_stage_output`: files of marked tasks only, schema
    checked naming file and field). Rows of a source in the order of its part files."""
    if not stage_output_files(root, "data"):
        return {}
    table = PAIR.validate(read_stage_output(root, "data", PAIR), where=str(Path(root) / "data"))
    sources = table.column("source")
    return {s: table.filter(pc.equal(sources, s)) for s in sorted(set(sources.to_pylist()))}


def is_pairs_output(path: Path) -> bool:
    """A stage output (refused later unless it is a finished pairs one), not raw pair files."""
    return is_stage_output(path)


def read_raw_pairs(inputs: list[str], cfg: Config | None = None) -> tuple[dict[str, pa.Table], dict]:
    """Raw pair files -> ({source: PAIR table}, {counts, dropped_by_reason}), as ``mgte pairs`` with
    ``cfg`` (default :func:`raw_config`) would keep them; see the module docstring for the differences."""
    cfg = cfg or raw_config()
    check = PairChecker(cfg)
    counts: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    reasons: Counter = Counter()
    groups: dict[str, list[dict]] = {}
    for path in expand_inputs(inputs):
        for item in read_pair_records(path, cfg.reader):
            counts["input"] += 1
            if isinstance(item, Quarantined):
                counts["quarantined"] += 1
                continue
            kept, dropped = check(item)
            if dropped is not None:
                counts["dropped"] += 1
                reasons[dropped["reason"]] += 1
            else:
                groups.setdefault(kept["pair_hash"], []).append(kept)
    by_source: dict[str, list[dict]] = {}
    for rows in groups.values():
        first, dups = pick_survivor(rows)
        by_source.setdefault(first["source"], []).append(first)
        counts["dropped"] += len(dups)
        reasons["exact_duplicate"] += len(dups)
    tables = {s: PAIR.from_rows(sorted(rows, key=survivor_key)) for s, rows in sorted(by_source.items())}
    counts["kept"] = sum(t.num_rows for t in tables.values())
    return tables, {"counts": dict(counts), "dropped_by_reason": dict(reasons)}


def load_pair_inputs(inputs: tuple[str, ...] | list[str], who: str) -> tuple[dict[str, pa.Table], dict]:
    """One or more `mgte pairs` outputs, or raw pair files/directories (not mixed) -> (tables, counts)."""
    inputs = tuple(inputs)
    if not inputs:
        raise MgteError(f"{who}: no input (give --input: a `mgte pairs` output or pair files)")
    outputs = [Path(p) for p in inputs if is_pairs_output(Path(p))]
    if outputs and len(outputs) != len(inputs):
        raise MgteError(f"{who}: --input mixes `mgte pairs` outputs and raw files; give one kind")
    if not outputs:
        return read_raw_pairs(list(inputs))
    merged: dict[str, list[pa.Table]] = {}
    total: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    reasons: Counter = Counter()
    for out in outputs:
        manifest = stage_output(out, "pairs", who=who)
        total.update(manifest["counts"])
        reasons.update(manifest["dropped_by_reason"])
        for source, table in read_pairs(out).items():
            merged.setdefault(source, []).append(table)
    tables = {s: pa.concat_tables(ts) for s, ts in sorted(merged.items())}
    return tables, {"counts": dict(total), "dropped_by_reason": dict(reasons)}
