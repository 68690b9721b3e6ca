"""One stage contract for data stages: what every stage's ``run()`` would otherwise repeat.

A data stage declares its config, its tasks and a per-task function; the runner owns the rest:
begin (config pinning), input pinning and input changes, skipping finished tasks, the engine, the
error budget, reason tallies and the manifest. Tasks are named by their input's content
(:func:`foundation.ledger.input_task`), so a task never reads another file than the one its
marker names.

Usage: a stage declares a :class:`StageSpec` and calls :func:`run_stage` (every data stage does:
corpus, mlm-shards, pairs, mine, eval)::

    from pipelines.contract import Phase, StageSpec, run_stage

    def read_one(entry, cfg, out):           # one task: writes its files, marks last, returns the marker
        task = input_task("read", entry)
        outcomes = Outcomes()                # per record: .keep(row) / .drop(row with reason) / .quarantine(bad)
        files = [*kept_files, *outcomes.write(out, task, DROPPED)]
        return out.mark_task(task, outcomes.counts(), files, input=entry)

    def run(cfg):
        spec = StageSpec(
            "my-stage",
            phases=lambda stage: [Phase("read", [(e, cfg, stage.out) for e in stage.entries], read_one,
                                        names=[input_task("read", e) for e in stage.entries])],
            per_input=lambda e: [input_task("read", e)],      # tasks to forget when e changes
            later=lambda entries: [],                         # tasks that read every input
            finish=lambda stage, result: ({}, {}),            # summary tables -> (outputs, extra)
            error_budget=lambda cfg: cfg.reader.error_budget)
        return run_stage(spec, cfg, expand_inputs(cfg.input))

:func:`run_stage` begins (:meth:`Stage.begin`), returns the manifest of a complete stage, runs the
unfinished tasks of each phase on the engine (:func:`pipelines.engines.make_engine`, or
``spec.engine``), checks the error budget after each phase, then sums the counts
(:func:`stage_counts`: the first phase's input, the last phase's kept, every phase's dropped and
quarantined), tallies the dropped reasons and writes the manifest (the invariant is checked
there). A read task accounts for each record with :class:`Outcomes` (kept / dropped with a reason
/ quarantined), which also writes its ``dropped/`` and ``quarantine/`` files, only when they hold
rows. ``StageSpec.later`` names the later phases' tasks, usually :func:`later_tasks` by prefix.

A later phase (corpus: dedup, then write) passes ``deps=deps_hash(names of the previous phase)``
to :meth:`StageOutput.task_marker` / ``mark_task``: over another input set its markers are stale
and it runs again. Its ``items`` may be a function of the earlier phases' markers; a global step
that drives the engine itself (corpus dedup) is a phase with ``drives_engine=True``.
``on_input_change: refuse | redo`` (a run-only config key) decides what a rerun over a changed
input set does: refuse naming the files, or forget the tasks of removed and changed files and
every later-phase task, then run what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.progress import Progress
from foundation.errors import BadInputError, TaskFailed
from foundation.ledger import (RUN_ONLY_KEYS, InputChange, StageOutput, describe_inputs, output_lock, read_manifest,
                               sum_counts)
from storage_schemas import QUARANTINE, Table

log = logging.getLogger("mgte.stage")


@dataclasses.dataclass
class Outcomes:
    """What a read task did with each record it read: kept, dropped with a reason (a row of the
    stage's dropped table, its ``reason`` set) or quarantined (a QUARANTINE row: path, line, field,
    error). ``input = kept + dropped + quarantined`` holds by construction (:meth:`counts`).
    :meth:`write` writes ``dropped/<name>.parquet`` and ``quarantine/<name>.parquet`` only when
    they hold rows: readers and audits take a missing file as none. Rows may be lists of dicts or
    Arrow tables (a columnar task)."""

    kept: list | pa.Table = dataclasses.field(default_factory=list)
    dropped: list[dict] | pa.Table = dataclasses.field(default_factory=list)
    quarantined: list[dict] | pa.Table = dataclasses.field(default_factory=list)

    def keep(self, row: Any) -> None:
        self.kept.append(row)

    def drop(self, row: dict) -> None:
        if not row.get("reason"):
            raise ValueError(f"a dropped record needs its reason: {row}")
        self.dropped.append(row)

    def quarantine(self, bad) -> None:
        """``bad``: a :class:`pipelines.readers.Quarantined` (or its row)."""
        self.quarantined.append(bad.row() if hasattr(bad, "row") else bad)

    def counts(self) -> dict[str, int]:
        kept, dropped, quarantined = len(self.kept), len(self.dropped), len(self.quarantined)
        return {"input": kept + dropped + quarantined, "kept": kept, "dropped": dropped, "quarantined": quarantined}

    def write(self, out: StageOutput, name: str, dropped_schema: Table) -> list[str]:
        """The task's dropped and quarantine files (only those with rows), relative to ``out``."""
        files = []
        for sub, rows, schema in (("dropped", self.dropped, dropped_schema), ("quarantine", self.quarantined, QUARANTINE)):
            if len(rows):
                rel = f"{sub}/{name}.parquet"
                files.append(out.write_table(rel, rows, schema) if isinstance(rows, pa.Table)
                             else out.write_rows(rel, rows, schema))
        return files


@dataclasses.dataclass
class Stage:
    """A begun stage: its output ledger, its pinned inputs, and whether it is already complete."""

    out: StageOutput
    entries: list[dict]
    change: InputChange
    done: bool
    progress: bool = False  # a bar per phase on a terminal (the stage config's `progress`); log lines else

    @classmethod
    def begin(cls, name: str, cfg: Any, files: Iterable[str], *, per_input: Callable[[dict], list[str]],
              later: Callable[[list[dict]], list[str]] = lambda entries: [],
              exclude: Iterable[str] = RUN_ONLY_KEYS,
              describe: Callable[[Iterable[str]], list[dict]] = describe_inputs) -> "Stage":
        """Pin the config (``exclude``: keys left out of its hash) and the input list (``describe``:
        files -> their ``{path, size, fingerprint}``). On a changed input set: refuse (one line
        naming the files) or, with ``on_input_change: redo``, forget the tasks ``per_input`` names
        for the removed and changed files and every task ``later`` names, then pin the new list."""
        out = StageOutput(cfg.output, name, cfg, exclude=exclude)
        done = out.begin()
        entries = describe(files)
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
        return cls(out=out, entries=entries, change=change, done=done, progress=bool(getattr(cfg, "progress", False)))


@dataclasses.dataclass(frozen=True)
class Phase:
    """Tasks that may run in any order, each ``fn(*item)``; ``names`` their task names (for the
    check that all finished); ``deps`` the identity of the previous phase they read.

    ``items`` (and then ``names`` too) may be a function of the markers of the earlier phases
    (``{phase name: markers}``), for a phase whose arguments, or whose number of tasks, are what
    the one before wrote. ``drives_engine``: the phase is one
    global step that uses the engine itself (corpus dedup as a Beam or Ray Data pipeline); each
    unfinished item is then called here as ``fn(engine, *item)``."""

    name: str
    items: list[tuple] | Callable[[dict[str, list[dict]]], list[tuple]]
    fn: Callable
    names: list[str] | Callable[[dict[str, list[dict]]], list[str]]
    deps: str | None = None
    sort_key: Callable[[tuple], Any] | None = None  # e.g. largest input first
    drives_engine: bool = False
    unit: str = "tasks"  # what the progress report counts ("query chunks")


def finished(out: StageOutput, names: list[str], deps: str | None = None, *, stage: str = "stage") -> list[dict]:
    """The markers of ``names``; a missing one is a one-line :class:`TaskFailed`."""
    markers = [out.task_marker(t, deps) for t in names]
    missing = [t for t, m in zip(names, markers) if m is None]
    if missing:
        raise TaskFailed(f"{stage}: {len(missing)} task(s) did not finish, first {missing[0]}; rerun to resume")
    return markers


def run_phase(stage: Stage, engine, phase: Phase, earlier: dict[str, list[dict]] | None = None) -> list[dict]:
    """Run the unfinished tasks of one phase on ``engine``; return every task's marker."""
    out = stage.out
    names = phase.names(earlier or {}) if callable(phase.names) else phase.names
    unfinished = [name for name in names if out.task_marker(name, phase.deps) is None]
    items = phase.items(earlier or {}) if callable(phase.items) and unfinished else phase.items
    todo = [item for item, name in zip(items, names) if name in unfinished] if unfinished else []
    if phase.sort_key is not None:
        todo.sort(key=phase.sort_key)
    log.info("%s: phase %s: %d tasks, %d to run (engine %s)", out.stage, phase.name, len(names), len(todo),
             getattr(engine, "name", "?"))
    t0 = time.perf_counter()
    bar = Progress(len(todo), enabled=bool(todo), bar=stage.progress, desc=f"{out.stage} {phase.name}", unit=phase.unit)
    try:
        if todo and phase.drives_engine:
            for item in todo:
                phase.fn(engine, *item)
                bar.update()
        elif todo:
            engine.map(phase.fn, todo, on_done=bar.update)
    finally:
        bar.close()
    if todo:
        log.info("%s: phase %s done in %.1f s", out.stage, phase.name, time.perf_counter() - t0)
    return finished(out, names, phase.deps, stage=out.stage)


def run_phases(stage: Stage, engine, phases: list[Phase], *, budget: float | None = None) -> dict[str, list[dict]]:
    """Phases in order, each after every task of the one before; markers by phase name.
    ``budget``: the error budget, checked after each phase (before the next one reads it)."""
    markers: dict[str, list[dict]] = {}
    for phase in phases:
        markers[phase.name] = run_phase(stage, engine, phase, markers)
        if budget is not None:
            check_error_budget(markers[phase.name], stage.out, budget)
    return markers


def check_error_budget(markers: list[dict], out: StageOutput, budget: float) -> None:
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
    import pyarrow.compute as pc

    reasons: Counter = Counter()
    for f in files:  # counted in Arrow: no row becomes a Python object
        for vc in pc.value_counts(pq.read_table(f, columns=["reason"]).column("reason")).to_pylist():
            reasons[vc["values"]] += vc["counts"]
    return dict(sorted(reasons.items()))


def later_tasks(root: str | Path, prefixes: tuple[str, ...]) -> list[str]:
    """The tasks on disk whose names start with one of ``prefixes``: a stage's later phases, which
    read every input, so a changed input set forgets them (``StageSpec.later``)."""
    return sorted(p.stem for p in (Path(root) / "_tasks").glob("*.json") if p.stem.startswith(prefixes))


def task_outputs(markers: list[dict], subdir: str) -> list[str]:
    """Files under ``subdir`` of these tasks, relative to the stage output, in task order."""
    prefix = subdir.rstrip("/") + "/"
    return [f for m in markers for f in m["files"] if f.startswith(prefix)]


# ---- the runner: a stage declares, this does the rest ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class StageSpec:
    """What a data stage declares for :func:`run_stage`.

    ``phases(stage)``: its phases over the pinned inputs ``stage.entries``. ``per_input`` /
    ``later``: the tasks to forget when an input changes (see :meth:`Stage.begin`).
    ``finish(stage, result) -> (outputs, extra)``: writes the stage's summary tables (after
    every phase, the engine closed; ``result``: :class:`Result`) and returns the manifest ``outputs`` that differ from the default (every
    task's ``data/``, ``dropped/``, ``quarantine/`` files) and its ``extra``. ``error_budget(cfg)``:
    the fraction of records that may be quarantined. ``engine(cfg)``: where the tasks run.
    ``models(cfg) -> {key: name}``: the models it loads, checked before anything else
    (:func:`pipelines.embedding.resolve.check_models`: a bad one exits 2 naming the key)."""

    name: str
    phases: Callable[[Stage], list[Phase]]
    per_input: Callable[[dict], list[str]]
    later: Callable[[list[dict]], list[str]] = lambda entries: []
    finish: Callable[[Stage, "Result"], tuple[dict, dict]] | None = None
    error_budget: Callable[[Any], float | None] = lambda cfg: cfg.reader.error_budget
    engine: Callable[[Any], Any] | None = None  # default: pipelines.engines.make_engine
    exclude: tuple[str, ...] = RUN_ONLY_KEYS  # config keys that do not change the result
    describe: Callable[[Iterable[str]], list[dict]] = describe_inputs  # inputs -> pinned entries
    tally: Callable[[Iterable[Path]], dict[str, int]] = reason_tallies  # dropped files -> reasons
    counts: Callable[[dict[str, list[dict]]], dict[str, int]] | None = None  # markers -> counts (stage_counts)
    models: Callable[[Any], dict[str, str | None]] = lambda cfg: {}  # the model keys it loads: {key: name}


@dataclasses.dataclass(frozen=True)
class Result:
    """What the phases did: markers by phase, the stage's counts, dropped records per reason."""

    markers: dict[str, list[dict]]
    counts: dict[str, int]
    dropped_by_reason: dict[str, int]
    engine: str


def stage_counts(markers: dict[str, list[dict]]) -> dict[str, int]:
    """The stage's counts over its phases: the records the first phase read, those the last one
    kept, and every phase's dropped and quarantined records (the invariant
    ``input = kept + dropped + quarantined`` holds when each phase passes on what it kept)."""
    phases = [sum_counts(m) for m in markers.values()]
    return {"input": phases[0]["input"], "kept": phases[-1]["kept"],
            "dropped": sum(p["dropped"] for p in phases), "quarantined": sum(p["quarantined"] for p in phases)}


def run_stage(spec: StageSpec, cfg: Any, files: Iterable[str]) -> dict:
    """Check every model the stage names (:func:`pipelines.embedding.resolve.check_models`), lock
    the output (one writer, :func:`foundation.ledger.output_lock`), begin (config and input
    pinning, input changes), skip a complete stage, run the phases on the engine with the error
    budget after each, then counts, reason tallies and the manifest."""
    from pipelines.embedding.resolve import check_models

    check_models(spec.models(cfg), verify=getattr(cfg, "verify_model", True))
    with output_lock(cfg.output):
        return _run_locked(spec, cfg, files)


def _run_locked(spec: StageSpec, cfg: Any, files: Iterable[str]) -> dict:
    stage = Stage.begin(spec.name, cfg, files, per_input=spec.per_input, later=spec.later, exclude=spec.exclude,
                        describe=spec.describe)
    if stage.done:
        log.info("%s is complete for this config (hash %s): nothing to do", cfg.output, stage.out.config_hash)
        return read_manifest(cfg.output)
    if spec.engine is None:
        from pipelines.engines import make_engine

        engine = make_engine(cfg)
    else:
        engine = spec.engine(cfg)
    with engine:
        markers = run_phases(stage, engine, spec.phases(stage), budget=spec.error_budget(cfg))
    out = stage.out
    every = [m for ms in markers.values() for m in ms]
    dropped = sorted(task_outputs(every, "dropped"))
    result = Result(markers=markers, counts=(spec.counts or stage_counts)(markers), engine=engine.name,
                    dropped_by_reason=spec.tally(out.root / f for f in dropped))
    outputs, extra = spec.finish(stage, result) if spec.finish else ({}, {})
    outputs = {"data": task_outputs(every, "data"), "dropped": dropped,
               "quarantine": sorted(task_outputs(every, "quarantine")), **outputs}
    manifest = out.finish(counts=result.counts, dropped_by_reason=result.dropped_by_reason, inputs=stage.entries,
                          outputs=outputs, extra={"engine": engine.name, **extra})
    log.info("%s: %s", spec.name, result.counts)
    return manifest
