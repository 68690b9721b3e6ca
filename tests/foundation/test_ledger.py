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


@frozen
class Reader:
    error_budget: float = 0.1
    text_field: str = "text"


@frozen
class NestedCfg:
    output: str | None = None
    reader: Reader = Reader()


def test_dotted_run_only_keys_leave_the_identity():
    from foundation.ledger import identity_hash

    base = identity_hash(NestedCfg())
    assert identity_hash(NestedCfg(reader=Reader(error_budget=0.9))) == base
    assert identity_hash(NestedCfg(reader=Reader(text_field="body"))) != base


def test_input_identity_and_pinning(tmp_path):
    from foundation.ledger import describe_input, input_task

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"x" * (3 << 20))  # large: first and last MiB
    b.write_bytes(b'{"text": "1"}\n')
    ea, eb = describe_input(str(a)), describe_input(str(b))
    assert ea["size"] == 3 << 20 and ea["fingerprint"].startswith("xxh64:")
    out = StageOutput(tmp_path / "o", "demo", Cfg())
    out.begin()
    assert not out.pin_inputs([ea, eb])
    assert not out.pin_inputs([ea, eb])  # same set: nothing to do
    with open(a, "r+b") as fh:  # same size, last byte rewritten
        fh.seek((3 << 20) - 1)
        fh.write(b"y")
    ea2 = describe_input(str(a))
    assert input_task("read", ea2) != input_task("read", ea) and input_task("read", ea).startswith("read-a.jsonl-")
    c = tmp_path / "0.jsonl"
    c.write_bytes(b"{}\n")
    with pytest.raises(StageConflict, match=r"1 added \(.*0.jsonl\); 1 removed \(.*b.jsonl\); 1 changed \(.*a.jsonl\)"):
        out.pin_inputs([describe_input(str(c)), ea2])
    change = out.pin_inputs([describe_input(str(c)), ea2], "redo")
    assert [e["path"] for e in change.added] == [str(c)] and change.changed[0][0] == ea
    assert out.pinned_inputs() == [ea, eb]  # pinned anew only by the stage, after its redo


def test_read_stage_output_reads_marked_tasks_only_and_names_file_and_field(tmp_path):
    from foundation.errors import BadInputError
    from foundation.ledger import read_stage_output, stage_output_files

    out = StageOutput(tmp_path, "demo", Cfg())
    out.begin()
    row = {"path": "f", "line": 1, "field": "text", "error": "e"}
    rel = out.write_rows("quarantine/t0.parquet", [row], QUARANTINE)
    out.mark_task("t0", {"input": 1, "kept": 0, "dropped": 0, "quarantined": 1}, [rel])
    out.write_rows("quarantine/stray.parquet", [row, row], QUARANTINE)  # no marker: never read
    out.finish(counts={"input": 1, "kept": 0, "dropped": 0, "quarantined": 1}, dropped_by_reason={}, inputs=[],
               outputs={"quarantine": [rel]})
    assert read_stage_output(tmp_path, "quarantine", QUARANTINE).to_pylist()[0]["path"] == "f"
    assert stage_output_files(tmp_path, "quarantine") == [tmp_path / rel]
    with pytest.raises(BadInputError, match=r"the demo stage kept 0 of 1 records \(quarantined 1\): nothing to read"):
        read_stage_output(tmp_path, "data")  # a finished stage that kept nothing says so
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["f"], "line": ["one"]}), tmp_path / rel)  # damaged upstream file
    with pytest.raises(BadInputError, match=r"t0.parquet: field 'line' expected int64, got string"):
        stage_output_files(tmp_path, "quarantine", QUARANTINE, fields=["path", "line"])


def test_stage_level_files_are_read_when_listed_and_task_files_only_when_marked(tmp_path):
    from foundation.ledger import read_stage_output, stage_output_files

    out = StageOutput(tmp_path, "demo", Cfg())
    out.begin()
    row = {"path": "f", "line": 1, "field": "text", "error": "e"}
    rel = out.write_rows("quarantine/t0.parquet", [row], QUARANTINE)
    out.mark_task("t0", {"input": 1, "kept": 0, "dropped": 0, "quarantined": 1}, [rel])
    stats = out.write_rows("stats/table.parquet", [row, row], QUARANTINE)  # written by the stage, not a task
    out.finish(counts={"input": 1, "kept": 0, "dropped": 0, "quarantined": 1}, dropped_by_reason={}, inputs=[],
               outputs={"quarantine": [rel], "table": [stats]})
    assert read_stage_output(tmp_path, "stats/table.parquet", QUARANTINE).num_rows == 2
    marker = tmp_path / "_tasks" / "t0.json"  # its task now of another config: its file is not readable
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "config_hash": "other"}))
    assert stage_output_files(tmp_path, "quarantine") == []


def test_stage_output_is_the_one_check_of_what_a_directory_is(tmp_path):
    from foundation.errors import BadInputError
    from foundation.ledger import is_stage_output, read_manifest, stage_output

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pairs.jsonl").write_text("{}\n")
    assert not is_stage_output(raw) and stage_output(raw, "pairs") is None  # raw files: the caller reads them
    out = StageOutput(tmp_path / "o", "demo", Cfg())
    out.begin()
    assert is_stage_output(tmp_path / "o")
    with pytest.raises(BadInputError, match="who: .*o is an unfinished stage output"):
        stage_output(tmp_path / "o", "demo", who="who")  # begun, not finished: never read as raw files
    out.finish(counts={"input": 0, "kept": 0, "dropped": 0, "quarantined": 0}, dropped_by_reason={}, inputs=[],
               outputs={})
    assert stage_output(tmp_path / "o", "demo")["stage"] == "demo"
    assert read_manifest(tmp_path / "o", ("pairs", "demo"))["stage"] == "demo"
    with pytest.raises(BadInputError, match=r"is a 'demo' output, not a `mgte pairs` one"):
        stage_output(tmp_path / "o", "pairs")


def test_the_atomic_writer_syncs_renames_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import os

    from foundation.errors import StageIOError
    from foundation.ledger import atomic_write, atomic_write_npy

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "d" / "x.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and synced
    monkeypatch.setenv("MGTE_FAULT", "point=before_rename,action=enospc")
    with pytest.raises(StageIOError, match=r"cannot write .*keys.npy"):
        atomic_write_npy(tmp_path / "d" / "keys.npy", [1, 2, 3], private=True)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.bin"]  # no final file, no tmp left


def test_identity_records_paths_under_the_output_parent_relative_to_the_output(tmp_path, monkeypatch):
    from foundation.ledger import diff_inputs, identity_hash
    from foundation.ledger.identity import portable_path

    base = tmp_path / "dag"
    assert portable_path(str(base / "corpus" / "docs"), base) == "../corpus/docs"
    assert portable_path(str(tmp_path / "data" / "x.jsonl"), base) == str(tmp_path / "data" / "x.jsonl")
    assert portable_path(str(tmp_path / "dagger" / "x"), base) == str(tmp_path / "dagger" / "x")  # not a prefix match
    assert portable_path("s3://bucket/dag/corpus", base) == "s3://bucket/dag/corpus"
    assert portable_path("cls", base) == "cls"
    (base / "corpus").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable_path("dag/corpus", base) == "../corpus"  # an existing relative path
    moved = tmp_path / "elsewhere" / "dag"
    cfg = {"input": [str(base / "corpus")], "init": str(base / "cpt" / "model"), "tokenizer": "xlm-roberta-base"}
    cfg_moved = {"input": [str(moved / "corpus")], "init": str(moved / "cpt" / "model"), "tokenizer": "xlm-roberta-base"}
    assert identity_hash(cfg, (), base) == identity_hash(cfg_moved, (), moved)
    assert identity_hash(cfg, ()) != identity_hash(cfg_moved, ())  # without a base: absolute paths count
    assert identity_hash({**cfg, "input": [str(tmp_path / "other")]}, (), base) != identity_hash(cfg, (), base)
    entry = {"path": str(base / "corpus" / "a.parquet"), "size": 3, "fingerprint": "xxh64:1"}
    entry_moved = {**entry, "path": str(moved / "corpus" / "a.parquet")}
    assert not diff_inputs([entry], [entry_moved], pinned_base=str(base), base=str(moved))
    assert diff_inputs([entry], [{**entry_moved, "size": 4}], pinned_base=str(base), base=str(moved)).changed
    assert diff_inputs([entry], [entry_moved])  # no bases: another path is another file
