"""The stage contract on a toy stage: content-named tasks, pinned inputs, phases, error budget."""

import pytest

from foundation.config import frozen
from foundation.errors import BadInputError, StageConflict
from foundation.ledger import deps_hash, input_task
from pipelines.contract import Phase, Stage, check_error_budget, run_phases
from pipelines.engines import LocalEngine
from storage_schemas import QUARANTINE

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
