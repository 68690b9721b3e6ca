"""One stage contract for data stages: what every ``run()`` used to repeat, in one place.

A data stage declares its config, its tasks and a per-task function; the runner owns the rest:
begin (config pinning), input pinning and input changes, skipping finished tasks, the engine, the
error budget, reason tallies and the manifest. Tasks are named by their input's content
(:func:`foundation.ledger.input_task`), so a task never reads another file than the one its
marker names.

Usage (``mgte corpus`` and ``mgte mlm-shards`` follow it; pairs and mining adopt it the same way)::

    from pipelines.contract import Phase, Stage, run_phases

    def read_one(entry, cfg, out):           # one task: writes its files, marks last, returns the marker
        task = input_task("read", entry)
        if (marker := out.task_marker(task)) is not None:
            return marker
        ...                                  # per record: kept / Dropped(reason, scores) / Quarantined(...)
        return out.mark_task(task, counts, files, input=entry)

    def run(cfg):
        stage = Stage.begin("my-stage", cfg, expand_inputs(cfg.input),
                            per_input=lambda e: [input_task("read", e)],    # tasks to forget when e changes
                            later=lambda entries: ["merge"])               # tasks that read every input
        if stage.done:
            return read_manifest(cfg.output)
        with make_engine(cfg) as engine:
            read = run_phases(stage, engine, [
                Phase("read", [(e, cfg, stage.out) for e in stage.entries], read_one,
                      names=[input_task("read", e) for e in stage.entries]),
            ])
        check_error_budget(read["read"], stage.out, cfg.reader.error_budget)
        ...                                  # a later phase: run after every task of the one before
        return stage.out.finish(counts=..., dropped_by_reason=reason_tallies(dropped_files), ...)

A later phase (corpus: dedup, then write) passes ``deps=deps_hash(names of the previous phase)``
to :meth:`StageOutput.task_marker` / ``mark_task``: over another input set its markers are stale
and it runs again. ``on_input_change: refuse | redo`` (a run-only config key) decides what a rerun
over a changed input set does: refuse naming the files, or forget the tasks of removed and changed
files and every later-phase task, then run what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow.parquet as pq

from foundation.errors import BadInputError, TaskFailed
from foundation.ledger import InputChange, StageOutput, describe_inputs, sum_counts

log = logging.getLogger("mgte.stage")


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A record a stage keeps out of its output on purpose: the reason and the scores behind it."""

    reason: str
    scores: dict | None = None


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A record a stage could not read or use: where it is and what was wrong with which field."""

    path: str
    line: int
    field: str
    error: str


@dataclasses.dataclass
class Stage:
    """A begun stage: its output ledger, its pinned inputs, and whether it is already complete."""

    out: StageOutput
    entries: list[dict]
    change: InputChange
    done: bool

    @classmethod
    def begin(cls, name: str, cfg: Any, files: Iterable[str], *, per_input: Callable[[dict], list[str]],
              later: Callable[[list[dict]], list[str]] = lambda entries: []) -> "Stage":
        """Pin the config and the input list. On a changed input set: refuse (one line naming the
        files) or, with ``on_input_change: redo``, forget the tasks ``per_input`` names for the
        removed and changed files and every task ``later`` names, then pin the new list."""
        out = StageOutput(cfg.output, name, cfg)
        done = out.begin()
        entries = describe_inputs(files)
        change = out.pin_inputs(entries, getattr(cfg, "on_input_change", "refuse"))
        if change:
            log.warning("%s: input set changed (%s): redoing it (on_input_change=redo)", name, change.summary())
            for entry in [*change.removed, *(old for old, _new in change.changed)]:
                for task in per_input(entry):
                    out.drop_task(task)
            for task in later(entries):
                out.drop_task(task)
            out.repin_inputs(entries)
            done = False
        return cls(out=out, entries=entries, change=change, done=done)


@dataclasses.dataclass(frozen=True)
class Phase:
    """Tasks that may run in any order, each ``fn(*item)``; ``names`` their task names (for the
    check that all finished); ``deps`` the identity of the previous phase they read."""

    name: str
    items: list[tuple]
    fn: Callable
    names: list[str]
    deps: str | None = None
    sort_key: Callable[[tuple], Any] | None = None  # e.g. largest input first


def finished(out: StageOutput, names: list[str], deps: str | None = None, *, stage: str = "stage") -> list[dict]:
    """The markers of ``names``; a missing one is a one-line :class:`TaskFailed`."""
    markers = [out.task_marker(t, deps) for t in names]
    missing = [t for t, m in zip(names, markers) if m is None]
    if missing:
        raise TaskFailed(f"{stage}: {len(missing)} task(s) did not finish, first {missing[0]}; rerun to resume")
    return markers


def run_phase(stage: Stage, engine, phase: Phase) -> list[dict]:
    """Run the unfinished tasks of one phase on ``engine``; return every task's marker."""
    out = stage.out
    todo = [item for item, name in zip(phase.items, phase.names) if out.task_marker(name, phase.deps) is None]
    if phase.sort_key is not None:
        todo.sort(key=phase.sort_key)
    log.info("%s: phase %s: %d tasks, %d to run (engine %s)", out.stage, phase.name, len(phase.items), len(todo),
             getattr(engine, "name", "?"))
    if todo:
        engine.map(phase.fn, todo)
    return finished(out, phase.names, phase.deps, stage=out.stage)


def run_phases(stage: Stage, engine, phases: list[Phase]) -> dict[str, list[dict]]:
    """Phases in order, each after every task of the one before; markers by phase name."""
    return {phase.name: run_phase(stage, engine, phase) for phase in phases}


def check_error_budget(markers: list[dict], out: StageOutput, budget: float, *, quarantine_of=None) -> None:
    """Fail (one line naming the worst file, its first bad record and field) when more than
    ``budget`` of the records were quarantined."""
    total = sum_counts(markers)
    if not total["input"] or total["quarantined"] <= budget * total["input"]:
        return
    worst = max(markers, key=lambda m: m["counts"]["quarantined"])
    qfiles = [f for f in worst["files"] if f.startswith("quarantine/")]
    first = pq.read_table(out.root / qfiles[0]).slice(0, 1).to_pylist()[0] if qfiles else None
    where = (f"worst file {first['path']}: {worst['counts']['quarantined']} bad records, first at line {first['line']} "
             f"(field {first['field']}: {first['error']})") if first else f"worst task {worst['task']}"
    raise BadInputError(f"{total['quarantined']} of {total['input']} records quarantined, over "
                        f"reader.error_budget={budget}; {where}; see {out.root / 'quarantine'}")


def reason_tallies(files: Iterable[Path]) -> dict[str, int]:
    """Dropped records per reason, over the ``dropped/`` files of finished tasks."""
    reasons: Counter = Counter()
    for f in files:
        reasons.update(pq.read_table(f, columns=["reason"]).column("reason").to_pylist())
    return dict(sorted(reasons.items()))


def task_outputs(markers: list[dict], subdir: str) -> list[str]:
    """Files under ``subdir`` of these tasks, relative to the stage output, in task order."""
    prefix = subdir.rstrip("/") + "/"
    return [f for m in markers for f in m["files"] if f.startswith(prefix)]
