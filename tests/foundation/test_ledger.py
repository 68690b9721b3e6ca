import json

import pytest

from foundation.config import frozen
from foundation.ledger import StageOutput, read_manifest
from foundation.errors import StageConflict
from storage_schemas import QUARANTINE, ManifestError


@frozen
class Cfg:
    output: str | None = None
    knob: int = 1


def test_task_marker_last_and_readers_see_only_finished_tasks(tmp_path):
    out = StageOutput(tmp_path, "demo", Cfg(knob=1))
    assert out.begin() is False
    rel = out.write_rows("quarantine/t0.parquet", [{"path": "f", "line": 1, "field": "text", "error": "e"}],
                         QUARANTINE)
    assert out.task_files("quarantine") == []  # written, but no marker yet: unfinished
    out.mark_task("t0", {"input": 1, "kept": 0, "dropped": 0, "quarantined": 1}, [rel])
    assert out.task_files("quarantine") == [tmp_path / rel]
    assert out.task_marker("t0")["counts"]["quarantined"] == 1


def test_finish_checks_the_invariant_and_rerun_is_a_noop(tmp_path):
    out = StageOutput(tmp_path, "demo", Cfg())
    out.begin()
    with pytest.raises(ManifestError, match="input 3 != kept 1"):
        out.finish(counts={"input": 3, "kept": 1, "dropped": 1, "quarantined": 0},
                   dropped_by_reason={"x": 1}, inputs=[], outputs={})
    out.finish(counts={"input": 3, "kept": 1, "dropped": 1, "quarantined": 1},
               dropped_by_reason={"x": 1}, inputs=[], outputs={})
    assert read_manifest(tmp_path)["config_hash"] == out.config_hash
    assert (tmp_path / "_SUCCESS").is_file()
    assert StageOutput(tmp_path, "demo", Cfg()).begin() is True
    # where it writes does not change the hash
    assert StageOutput(tmp_path, "demo", Cfg(output="/elsewhere")).begin() is True


def test_changed_config_refuses_with_both_hashes(tmp_path):
    a = StageOutput(tmp_path, "demo", Cfg(knob=1))
    a.begin()
    b = StageOutput(tmp_path, "demo", Cfg(knob=2))
    with pytest.raises(StageConflict) as err:
        b.begin()
    assert a.config_hash in str(err.value) and b.config_hash in str(err.value)


def test_stale_tmp_files_are_removed_on_begin(tmp_path):
    StageOutput(tmp_path, "demo", Cfg()).begin()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part.parquet.tmp").write_bytes(b"half")
    (tmp_path / "checkpoints" / "step-3.tmp").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-3.tmp" / "model.safetensors.tmp").write_bytes(b"half")
    StageOutput(tmp_path, "demo", Cfg()).begin()
    assert not list(tmp_path.rglob("*.tmp"))
    assert json.loads((tmp_path / "_config.json").read_text())["stage"] == "demo"
