"""Tasks named by their input's content, the input list pinned at the first run (docs/reliability.md row 26):
a rerun over another input set refuses naming the files, or with ``on_input_change=redo`` gives
exactly the output of a clean run over the new set: no file read twice, none skipped."""

import os
import shutil
import subprocess
import sys

from pipelines import pairs

from .conftest import BEAM, REPO, config, outcome, small_inputs, xlmr_tokenizer

SETS = ("engine=local", "lang.min_chars=30", "reader.error_budget=0.2")


def mgte_pairs(src, out, *sets, env=None):
    cmd = [sys.executable, "-m", "dags.cli", "pairs", "--input", str(src), "--output", str(out),
           "--set", f"tokenizer={xlmr_tokenizer()}", "--set", BEAM[0]]
    for item in (*SETS, *sets):
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=300)


def test_interrupted_run_whose_input_gains_a_file_that_sorts_first(tmp_path):
    src = small_inputs(tmp_path)[0].parent
    out = tmp_path / "out"
    killed = mgte_pairs(src, out, env={"MGTE_FAULT": "point=before_marker,count=2,action=exit137"})
    assert killed.returncode == 137 and not (out / "_SUCCESS").exists()
    assert len(list((out / "_tasks").glob("read-*.json"))) == 1
    # the new file sorts first and copies a file of the set: its records win every duplicate
    shutil.copy(src / "title_body.jsonl", src / "00-copy.jsonl")
    refused = mgte_pairs(src, out)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "1 added" in refused.stderr and "00-copy.jsonl" in refused.stderr
    lines = [line for line in refused.stderr.strip().splitlines() if " WARNING " not in line]
    assert "Traceback" not in refused.stderr and len(lines) == 1, refused.stderr

    redo = mgte_pairs(src, out, "on_input_change=redo")
    assert redo.returncode == 0, redo.stderr[-2000:]
    (tmp_path / "ref").mkdir()
    pairs.run(config(tmp_path / "ref", [src], *SETS))
    ref = outcome(tmp_path / "ref" / "out")
    assert outcome(out) == ref
    assert ref["counts"] == {"input": 28, "kept": 14, "dropped": 12, "quarantined": 2}
    dups = [r for r in ref["dropped"] if r["reason"] == "exact_duplicate"]
    assert {r["path"].rsplit("/", 1)[1] for r in dups} == {"00-copy.jsonl", "title_body.jsonl", "translation.jsonl.gz"}
    assert not any(r["path"].endswith("/title_body.jsonl") for r in ref["data"])  # read once, all duplicates
    assert ref["data_files"][0] == "data/source=00-copy/part-00000.parquet"
    assert mgte_pairs(src, out).returncode == 0  # pinned again: the same set is a no-op


def test_rewritten_file_refuses_then_redo_equals_a_clean_run(tmp_path):
    inputs = small_inputs(tmp_path)
    src, out = inputs[0].parent, tmp_path / "out"
    assert mgte_pairs(src, out).returncode == 0
    inputs[0].write_text(inputs[0].read_text().replace("Title number 3", "Heading number 3"))
    refused = mgte_pairs(src, out)
    assert refused.returncode == 2 and "1 changed" in refused.stderr and "title_body.jsonl" in refused.stderr
    assert mgte_pairs(src, out, "on_input_change=redo").returncode == 0
    (tmp_path / "ref").mkdir()
    pairs.run(config(tmp_path / "ref", [src], *SETS))
    assert outcome(out) == outcome(tmp_path / "ref" / "out")
