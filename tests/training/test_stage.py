"""The model-stage contract pins its input by content (training/stage.py): a TRM whose mining
output was rebuilt under it, finished or interrupted, refuses to go on in one line naming the
changed file; with ``on_input_change=redo`` it moves the old run aside and trains on the new data
only. Tiny TRM runs in-process from a tiny random encoder of ours."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from foundation import faults
from foundation.errors import StageConflict
from foundation.ledger import StageOutput
from storage_schemas.mine import HARD_NEGATIVES
from tests.training.trm.test_trm import hard_negative_rows, tiny_cfg, tiny_init  # noqa: F401  (fixture)
from training import trm
from training.loop import Preempted
from training.metrics import read_metrics
from training.stage import input_files


def mine_output(root, rows: list[dict]):
    """A finished `mgte mine`-like stage output holding ``rows`` (rebuilt from scratch each call)."""
    shutil.rmtree(root, ignore_errors=True)
    out = StageOutput(root, "mine", {"rows": len(rows)})
    out.begin()
    rel = out.write_table("data/part-0.parquet", HARD_NEGATIVES.from_rows(rows), HARD_NEGATIVES)
    counts = {"input": len(rows), "kept": len(rows), "dropped": 0, "quarantined": 0}
    out.mark_task("search-0", counts, [rel])
    out.finish(counts=counts, dropped_by_reason={}, inputs=[], outputs={"data": [rel]})
    return root


def rebuilt_rows() -> list[dict]:
    """Another mining result: the last three queries gone, the first one's negatives changed."""
    rows = hard_negative_rows()[:9]
    rows[0] = {**rows[0], "negatives": [n.replace("history", "story") for n in rows[0]["negatives"]]}
    return rows


def cfg_for(tmp_path, mined, init, *sets):
    return tiny_cfg(tmp_path, [mined], f"init={init}", "loop.max_steps=3", "loop.ckpt_every=1", *sets)


def test_pinned_files_of_a_stage_output_are_its_listed_outputs(tmp_path):
    mined = mine_output(tmp_path / "mine", hard_negative_rows())
    assert input_files([str(mined)]) == [str(mined / "data" / "part-0.parquet")]
    (mined / "_SUCCESS").unlink()  # an unfinished output pins nothing: its reader refuses it
    assert input_files([str(mined)]) == []


def test_finished_trm_refuses_a_rebuilt_mining_output_and_redo_trains_on_the_new_one(tmp_path, tiny_init):
    mined = mine_output(tmp_path / "mine", hard_negative_rows())
    first = trm.run(cfg_for(tmp_path, mined, tiny_init))
    assert first["counts"]["input"] == 13 and first["extra"]["final"]["step"] == 3
    assert trm.run(cfg_for(tmp_path, mined, tiny_init))["finished"] == first["finished"]  # a no-op

    mine_output(mined, rebuilt_rows())
    with pytest.raises(StageConflict) as refused:
        trm.run(cfg_for(tmp_path, mined, tiny_init))
    message = str(refused.value)
    assert "\n" not in message and "1 changed" in message and str(mined / "data" / "part-0.parquet") in message
    assert "on_input_change=redo" in message and refused.value.exit_code == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["finished"] == first["finished"]

    redone = trm.run(cfg_for(tmp_path, mined, tiny_init, "on_input_change=redo"))
    assert redone["counts"] == {"input": 9, "kept": 9, "dropped": 0, "quarantined": 0}
    assert redone["extra"]["final"]["resumed_from"] is None and redone["extra"]["final"]["step"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3]
    (aside,) = (tmp_path / "out").glob("discarded-*")
    assert sorted(p.name for p in (aside / "checkpoints").iterdir())[-1] == "step-3"  # moved, not deleted
    assert (aside / "model" / "trm.json").is_file() and (aside / "metrics.jsonl").is_file()
    assert trm.run(cfg_for(tmp_path, mined, tiny_init))["finished"] == redone["finished"]  # pinned now


def test_interrupted_trm_refuses_a_rebuilt_mining_output_and_redo_starts_over(tmp_path, tiny_init, monkeypatch):
    mined = mine_output(tmp_path / "mine", hard_negative_rows())
    monkeypatch.setenv(faults.ENV, "point=train_step,count=2,action=sigterm")
    with pytest.raises(Preempted):
        trm.run(cfg_for(tmp_path, mined, tiny_init))
    monkeypatch.delenv(faults.ENV)
    faults._calls.clear()
    assert (tmp_path / "out" / "checkpoints" / "step-2").is_dir()

    mine_output(mined, rebuilt_rows())
    with pytest.raises(StageConflict, match=r"1 changed \(.*part-0\.parquet\)"):
        trm.run(cfg_for(tmp_path, mined, tiny_init))
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-1", "step-2"]  # kept

    redone = trm.run(cfg_for(tmp_path, mined, tiny_init, "on_input_change=redo"))
    assert redone["counts"]["input"] == 9 and redone["extra"]["final"]["resumed_from"] is None
    assert [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3]
    (aside,) = (tmp_path / "out").glob("discarded-*")
    assert (aside / "checkpoints" / "step-2").is_dir()
    pinned = json.loads((tmp_path / "out" / "_inputs.json").read_text())["inputs"]
    assert [e["size"] for e in pinned] == [(mined / "data" / "part-0.parquet").stat().st_size]
    assert pq.read_table(mined / "data" / "part-0.parquet").num_rows == 9
