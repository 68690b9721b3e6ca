"""The stage contract on toy stages: content-named tasks, pinned inputs, phases, error budget, and
the runner end to end (accounting, invariant, skipping finished tasks, one-line failures)."""

import functools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.config import frozen
from foundation.errors import BadInputError, StageConflict, TaskFailed
from foundation.ledger import StageOutput, deps_hash, input_task, read_manifest
from pipelines.contract import Outcomes, Phase, Stage, StageSpec, check_error_budget, run_phases, run_stage
from pipelines.engines import LocalEngine
from storage_schemas import DROPPED, QUARANTINE
from storage_schemas.base import Table
from storage_schemas.manifest import ManifestError

RUNS: list[str] = []


@frozen
class Cfg:
    output: str | None = None
    on_input_change: str = "refuse"


def count_lines(entry, out):
    RUNS.append(entry["path"])
    lines = open(entry["path"]).read().splitlines()
    bad = [{"path": entry["path"], "line": i + 1, "field": "text", "error": "empty"} for i, x in enumerate(lines) if not x]
    task = input_task("count", entry)
    files = [out.write_rows(f"quarantine/{task}.parquet", bad, QUARANTINE)]
    counts = {"input": len(lines), "kept": len(lines) - len(bad), "dropped": 0, "quarantined": len(bad)}
    return out.mark_task(task, counts, files, input=entry)


def run_toy(tmp_path, files, **cfg):
    stage = Stage.begin("toy", Cfg(output=str(tmp_path / "out"), **cfg), files,
                        per_input=lambda e: [input_task("count", e)])
    phase = Phase("count", [(e, stage.out) for e in stage.entries], count_lines,
                  names=[input_task("count", e) for e in stage.entries])
    with LocalEngine(1) as engine:
        markers = run_phases(stage, engine, [phase])["count"]
    return stage, markers


def test_toy_stage_skips_finished_tasks_and_redoes_exactly_what_changed(tmp_path):
    a, b = tmp_path / "b.txt", tmp_path / "a.txt"
    a.write_text("x\ny\n")
    b.write_text("z\n")
    RUNS.clear()
    stage, markers = run_toy(tmp_path, [str(a)])
    assert RUNS == [str(a)] and markers[0]["input"]["path"] == str(a)
    run_toy(tmp_path, [str(a)])
    assert RUNS == [str(a)]  # finished: skipped
    with pytest.raises(StageConflict, match=r"1 added \(.*a.txt\)"):
        run_toy(tmp_path, [str(b), str(a)])
    stage, markers = run_toy(tmp_path, [str(b), str(a)], on_input_change="redo")
    assert RUNS == [str(a), str(b)]  # only the new file was read
    assert [m["input"]["path"] for m in markers] == [str(b), str(a)]
    assert deps_hash(m["task"] for m in markers) == deps_hash(reversed([m["task"] for m in markers]))


def test_error_budget_names_the_worst_file_and_its_first_bad_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("x\n\n\n")
    stage, markers = run_toy(tmp_path, [str(f)])
    check_error_budget(markers, stage.out, 0.9)
    with pytest.raises(BadInputError, match=r"2 of 3 records quarantined.*bad.txt: 2 bad records, first at line 2"):
        check_error_budget(markers, stage.out, 0.5)


# ---- the runner end to end: a two-phase toy stage ------------------------------------------------
# Each input line is a record: "" is quarantined, "#..." dropped as a comment (phase "read"); the
# kept lines go to phase "keep", which drops lines shorter than 3 characters and keeps the rest.
LINES = Table("toy_lines", "a kept line", pa.schema([pa.field("path", pa.string(), False),
                                                      pa.field("line", pa.int64(), False),
                                                      pa.field("text", pa.string(), False)]))
CALLS: list[tuple[str, str]] = []


@frozen
class ToyReader:
    error_budget: float = 0.5


@frozen
class ToyCfg:
    output: str | None = None
    on_input_change: str = "refuse"
    engine: str = "local"
    reader: ToyReader = ToyReader()
    lossy: bool = False  # phase "keep" loses a record without saying why (the invariant must catch it)


def judge(text: str, path: str, line: int, outcomes: Outcomes) -> None:
    row = {"path": path, "line": line, "text": text}
    if not text:
        outcomes.quarantine({"path": path, "line": line, "field": "text", "error": "empty"})
    elif text.startswith("#"):
        outcomes.drop({"id": f"{line}", "reason": "comment", "path": path, "line": line})
    else:
        outcomes.keep(row)


def write_outcomes(out, task, entry, outcomes: Outcomes, deps=None):
    files = [out.write_rows(f"data/{task}.parquet", outcomes.kept, LINES), *outcomes.write(out, task, DROPPED)]
    return out.mark_task(task, outcomes.counts(), files, input=entry, deps=deps)


def read_one(entry, out):
    CALLS.append(("read", entry["path"]))
    lines = open(entry["path"]).read().split("\n")[:-1]
    outcomes = Outcomes()
    for n, t in enumerate(lines):
        judge(t, entry["path"], n + 1, outcomes)
    return write_outcomes(out, input_task("read", entry), entry, outcomes)


def keep_one(entry, cfg, out, deps):
    CALLS.append(("keep", entry["path"]))
    rows = pq.read_table(out.root / f"data/{input_task('read', entry)}.parquet").to_pylist()
    rows = rows[1:] if cfg.lossy else rows
    outcomes = Outcomes()
    for r in rows:
        if len(r["text"]) >= 3:
            outcomes.keep(r)
        else:
            outcomes.drop({"id": f"{r['line']}", "reason": "short", "path": r["path"], "line": r["line"]})
    return write_outcomes(out, input_task("keep", entry), entry, outcomes, deps)


def toy_phases(cfg, stage):
    reads = [input_task("read", e) for e in stage.entries]
    deps = deps_hash(reads)
    return [Phase("read", [(e, stage.out) for e in stage.entries], read_one, names=reads),
            Phase("keep", [(e, cfg, stage.out, deps) for e in stage.entries], keep_one,
                  names=[input_task("keep", e) for e in stage.entries], deps=deps)]


def run_toy_stage(tmp_path, files, **cfg):
    cfg = ToyCfg(output=str(tmp_path / "out"), **cfg)
    spec = StageSpec("toy", phases=functools.partial(toy_phases, cfg),
                     per_input=lambda e: [input_task("read", e), input_task("keep", e)],
                     later=lambda entries: [],
                     finish=lambda stage, result: ({"summary": []}, {"phases": sorted(result.markers)}))
    return run_stage(spec, cfg, [str(f) for f in files])


def toy_inputs(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("hello\n#note\n\nok\nworld\n")  # kept 2, dropped comment + short, 1 quarantined
    b.write_text("abc\n#x\n#y\n")
    return a, b


def test_runner_accounts_for_every_record_and_skips_finished_tasks(tmp_path):
    a, b = toy_inputs(tmp_path)
    CALLS.clear()
    manifest = run_toy_stage(tmp_path, [a, b])
    assert manifest["counts"] == {"input": 8, "kept": 3, "dropped": 4, "quarantined": 1}
    assert manifest["dropped_by_reason"] == {"comment": 3, "short": 1}
    assert manifest["extra"] == {"engine": "local", "phases": ["keep", "read"]}
    # dropped / quarantine files only where a task has such rows (b.txt has no bad line)
    assert manifest["outputs"]["summary"] == [] and len(manifest["outputs"]["quarantine"]) == 1
    assert len(manifest["outputs"]["dropped"]) == 3  # read a, read b, keep a (keep b drops nothing)
    assert [e["path"] for e in manifest["inputs"]] == [str(a), str(b)]
    kept = pq.read_table([tmp_path / "out" / f for f in manifest["outputs"]["data"]
                          if f.startswith("data/keep-")]).to_pylist()
    assert sorted((r["path"][-5:], r["line"], r["text"]) for r in kept) == [
        ("a.txt", 1, "hello"), ("a.txt", 5, "world"), ("b.txt", 1, "abc")]
    assert sorted(CALLS) == [("keep", str(a)), ("keep", str(b)), ("read", str(a)), ("read", str(b))]
    # complete: a rerun does nothing
    CALLS.clear()
    assert run_toy_stage(tmp_path, [a, b])["counts"] == manifest["counts"] and CALLS == []
    # interrupted after one task: only that task runs again, and the result is the same
    out = tmp_path / "out"
    (out / "_SUCCESS").unlink()
    (out / "_tasks" / f"{input_task('keep', manifest['inputs'][1])}.json").unlink()
    again = run_toy_stage(tmp_path, [a, b])
    assert CALLS == [("keep", str(b))]
    assert again["counts"] == manifest["counts"] and again["outputs"] == manifest["outputs"]
    assert read_manifest(out)["dropped_by_reason"] == manifest["dropped_by_reason"]


def test_outcomes_count_every_record_and_write_only_what_exists(tmp_path):
    out = StageOutput(tmp_path, "toy", ToyCfg(output=str(tmp_path)))
    out.begin()
    outcomes = Outcomes()
    outcomes.keep({"text": "a"})
    outcomes.drop({"id": "2", "reason": "comment", "path": "f", "line": 2})
    assert outcomes.counts() == {"input": 2, "kept": 1, "dropped": 1, "quarantined": 0}
    assert outcomes.write(out, "t", DROPPED) == ["dropped/t.parquet"]  # no empty quarantine file
    with pytest.raises(ValueError, match="needs its reason"):
        outcomes.drop({"id": "3", "reason": None})
    outcomes.quarantine({"path": "f", "line": 3, "field": "text", "error": "empty"})
    assert outcomes.counts() == {"input": 3, "kept": 1, "dropped": 1, "quarantined": 1}
    assert Outcomes().write(out, "none", DROPPED) == []


def test_runner_refuses_a_stage_that_loses_a_record(tmp_path):
    a, b = toy_inputs(tmp_path)
    with pytest.raises(ManifestError, match=r"input 8 != kept 1 \+ dropped 4 \+ quarantined 1"):
        run_toy_stage(tmp_path, [a, b], lossy=True)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_runner_error_budget_fails_in_one_line_before_the_next_phase(tmp_path):
    a, b = toy_inputs(tmp_path)
    c = tmp_path / "c.txt"
    c.write_text("\n\n\nfine\n")
    CALLS.clear()
    with pytest.raises(BadInputError) as err:
        run_toy_stage(tmp_path, [a, b, c], reader=ToyReader(error_budget=0.2))
    msg = str(err.value)
    assert "\n" not in msg
    assert "4 of 12 records quarantined, over reader.error_budget=0.2; worst file" in msg
    assert "c.txt: 3 bad records, first at line 1 (field text: empty)" in msg
    assert not any(step == "keep" for step, _ in CALLS)  # the budget stops the stage after phase "read"
    # the budget is not part of the output's identity: raising it resumes in the same directory
    CALLS.clear()
    manifest = run_toy_stage(tmp_path, [a, b, c], reader=ToyReader(error_budget=0.5))
    assert manifest["counts"] == {"input": 12, "kept": 4, "dropped": 4, "quarantined": 4}
    assert all(step == "keep" for step, _ in CALLS)


def test_a_task_error_is_one_line_naming_its_file(tmp_path):
    a, _b = toy_inputs(tmp_path)
    missing = tmp_path / "gone.txt"
    missing.write_text("x\n")
    cfg_files = [a, missing]
    stage_cfg = ToyCfg(output=str(tmp_path / "out"))
    spec = StageSpec("toy", phases=lambda stage: [Phase("read", [(e, stage.out) for e in stage.entries],
                                                        _explode, names=[input_task("read", e) for e in stage.entries])],
                     per_input=lambda e: [input_task("read", e)])
    with pytest.raises(TaskFailed, match=r"task over .*a.txt failed: ZeroDivisionError"):
        run_stage(spec, stage_cfg, [str(f) for f in cfg_files])


def _explode(entry, out):
    return 1 / 0
