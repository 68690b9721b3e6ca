"""Tasks named by their input's content; the input list pinned at the first run (docs/reliability.md row 26).

A rerun over another input set refuses naming what changed, or with ``on_input_change=redo``
gives exactly the output of a clean run over the new set: no file read twice, none skipped.
"""

import shutil

import pyarrow.parquet as pq
import pytest

from foundation.errors import BadInputError, StageConflict
from pipelines.corpus import run

from .conftest import RAW, TINY, cli, corpus_config, outcome

FILES = ("06-cpython-cjk.jsonl", "07-web-mixed.jsonl", "10-malformed.jsonl")


def make_inputs(tmp_path, names=FILES):
    src = tmp_path / "in"
    src.mkdir()
    for name in names:
        shutil.copy(RAW / name, src / name)
    return src


def mgte_corpus(src, out, *sets, env=None, check=True):
    args = ["corpus", "--config", str(TINY), "--input", str(src), "--output", str(out), "--set", "engine=local"]
    for item in sets:
        args += ["--set", item]
    return cli(*args, env=env, check=check)


def reference(src, out, *sets):
    run(corpus_config(out, "engine=local", *sets, inputs=(str(src),)))
    return outcome(out)


def ids(out):
    return pq.read_table(out / "data", columns=["id"]).column("id").to_pylist()


@pytest.mark.parametrize("fault", ["point=before_marker,count=2,action=exit137",
                                   "point=after_records,count=40,action=exit137"])
def test_interrupted_run_whose_input_gains_a_file_that_sorts_first(fault, tmp_path):
    src, out = make_inputs(tmp_path), tmp_path / "out"
    proc = mgte_corpus(src, out, env={"MGTE_FAULT": fault}, check=False)
    assert proc.returncode == 137 and not (out / "_SUCCESS").exists()
    # the new file sorts first and copies a file of the set: its records win every duplicate
    shutil.copy(RAW / "07-web-mixed.jsonl", src / "00-copy.jsonl")
    refused = mgte_corpus(src, out, check=False)
    assert refused.returncode == 2
    assert "1 added" in refused.stderr and "00-copy.jsonl" in refused.stderr
    assert "taking over the lock of a run that is gone" in refused.stderr  # the killed run's lock
    refusal = [line for line in refused.stderr.strip().splitlines() if "taking over the lock" not in line]
    assert "Traceback" not in refused.stderr and len(refusal) == 1
    mgte_corpus(src, out, "on_input_change=redo")
    ref = reference(src, tmp_path / "ref")
    assert outcome(out) == ref
    assert sorted(ids(out)) == sorted(ids(tmp_path / "ref")) and len(set(ids(out))) == len(ids(out))
    assert any(v[2] == "exact_duplicate" and k[0] == "07-web-mixed.jsonl" for k, v in ref.items())
    mgte_corpus(src, out)  # pinned again: the same set is a no-op


def test_rewritten_file_refuses_then_redo_equals_a_clean_run(tmp_path):
    src, out = make_inputs(tmp_path), tmp_path / "out"
    mgte_corpus(src, out)
    (src / "06-cpython-cjk.jsonl").write_bytes((RAW / "07-web-mixed.jsonl").read_bytes())  # same name, new text
    refused = mgte_corpus(src, out, check=False)
    assert refused.returncode == 2 and "1 changed" in refused.stderr and "06-cpython-cjk.jsonl" in refused.stderr
    mgte_corpus(src, out, "on_input_change=redo")
    assert outcome(out) == reference(src, tmp_path / "ref")
    assert len(set(ids(out))) == len(ids(out))


def test_removed_file_refuses_then_redo_equals_a_clean_run(tmp_path):
    src, out = make_inputs(tmp_path), tmp_path / "out"
    run(corpus_config(out, "engine=local", inputs=(str(src),)))
    (src / "10-malformed.jsonl").unlink()
    with pytest.raises(StageConflict, match=r"1 removed \(.*10-malformed.jsonl\)"):
        run(corpus_config(out, "engine=local", inputs=(str(src),)))
    manifest = run(corpus_config(out, "engine=local", "on_input_change=redo", inputs=(str(src),)))
    assert outcome(out) == reference(src, tmp_path / "ref")
    assert [e["path"] for e in manifest["inputs"]] == [str(src / n) for n in FILES if n != "10-malformed.jsonl"]
    assert not list((out / "_tasks").glob("*10-malformed*"))


def test_markers_record_the_input_they_read(tmp_path):
    src, out = make_inputs(tmp_path, FILES[:1]), tmp_path / "out"
    run(corpus_config(out, "engine=local", inputs=(str(src),)))
    import json

    markers = [json.loads(p.read_text()) for p in (out / "_tasks").glob("read-*.json")]
    assert [m["input"]["path"] for m in markers] == [str(src / FILES[0])]
    assert markers[0]["input"]["size"] == (src / FILES[0]).stat().st_size
    assert markers[0]["input"]["fingerprint"].startswith("xxh64:")


def test_raising_the_error_budget_after_a_budget_failure_completes(tmp_path):
    src = make_inputs(tmp_path, ("06-cpython-cjk.jsonl", "10-malformed.jsonl"))
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match="over reader.error_budget=0.01"):
        run(corpus_config(out, "engine=local", "reader.error_budget=0.01", inputs=(str(src),)))
    manifest = run(corpus_config(out, "engine=local", "reader.error_budget=0.9", inputs=(str(src),)))
    assert manifest["counts"]["quarantined"] > 0.01 * manifest["counts"]["input"]
    assert outcome(out) == reference(src, tmp_path / "ref", "reader.error_budget=0.9")
