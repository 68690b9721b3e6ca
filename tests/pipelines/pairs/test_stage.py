"""The stage: accounting of every record, shards by source, reruns, the error budget, a killed task."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.errors import BadInputError, StageConflict
from foundation.ledger import read_manifest
from pipelines import pairs
from .conftest import BEAM, REPO, config, read_data, small_inputs, write_jsonl, xlmr_tokenizer


def test_stage_shards_by_source_and_accounts_for_every_record(tmp_path):
    cfg = config(tmp_path, small_inputs(tmp_path), "lang.min_chars=30", "reader.error_budget=0.2")
    manifest = pairs.run(cfg)
    out = tmp_path / "out"
    assert manifest["counts"] == {"input": 18, "kept": 14, "dropped": 3, "quarantined": 1}
    assert manifest["dropped_by_reason"] == {"empty_positive": 1, "exact_duplicate": 2}
    assert read_data(out) == {
        "qa": ["qa.parquet:0", "qa.parquet:1"],
        "title_body": sorted(f"tb{i}" for i in range(7)),
        "translation": sorted(f"tr{i}" for i in range(5)),  # its copy of tb1 is a duplicate
    }
    assert sorted(p.parent.name for p in (out / "data").glob("*/part-*.parquet")) == [
        "source=qa", "source=title_body", "source=translation"]
    assert manifest["extra"]["sources"]["title_body"]["pairs"] == 7
    stats = pq.read_table(out / "stats/source_stats.parquet").to_pylist()
    assert sum(r["q"] for r in stats) == pytest.approx(1.0)
    quarantine = pq.read_table(out / manifest["outputs"]["quarantine"][0]).to_pylist()
    assert [(Path(r["path"]).name, r["line"], r["field"]) for r in quarantine] == [("title_body.jsonl", 10, "<record>")]
    dups = [r for f in manifest["outputs"]["dropped"] for r in pq.read_table(out / f).to_pylist()
            if r["reason"] == "exact_duplicate"]
    assert sorted((r["pair_id"], r["duplicate_of"]) for r in dups) == [("tb-dup", "tb0"), ("tr-dup-of-tb", "tb1")]
    assert not (out / "_work").exists() and not list(out.rglob("*.tmp"))

    assert pairs.run(cfg) == read_manifest(out)  # a rerun is a no-op
    with pytest.raises(StageConflict):
        pairs.run(config(tmp_path, cfg.input, "lang.min_chars=31", "reader.error_budget=0.2"))


def test_error_budget_names_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "positive": "p"}], extra_lines=["{x", "{y"])
    with pytest.raises(BadInputError, match=r"worst file \S*bad\.jsonl: 2 bad records, first at line 2 \(field <record>"):
        pairs.run(config(tmp_path, [bad]))


def test_parquet_without_the_query_column_fails_naming_file_and_field(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"title": ["x"], "positive": ["y"]}), path)
    with pytest.raises(Exception, match=r"wrong\.parquet.*'query'"):
        pairs.run(config(tmp_path, [path]))


def test_killed_task_is_redone_and_the_output_equals_a_clean_run(tmp_path):
    """docs/reliability.md rows 1-2: killed between a task's files and its marker; the rerun finishes it."""
    inputs = small_inputs(tmp_path)
    ref = config(tmp_path / "ref", inputs, "reader.error_budget=0.2")
    (tmp_path / "ref").mkdir()
    pairs.run(ref)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dags.cli", "pairs", "--input", *map(str, inputs), "--output", str(out),
           "--set", f"tokenizer={xlmr_tokenizer()}", "--set", BEAM[0], "--set", "reader.error_budget=0.2"]
    env = dict(os.environ, MGTE_FAULT=f"point=before_marker,count=4,action=exit137,once={tmp_path / 'once'}")
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 137, first.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    assert len(list((out / "_tasks").glob("*.json"))) == 3
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"taking over the lock of a run that is gone (host {socket.gethostname()} pid" in second.stderr
    ref_manifest, manifest = read_manifest(tmp_path / "ref" / "out"), read_manifest(out)
    assert manifest["counts"] == ref_manifest["counts"]
    assert manifest["dropped_by_reason"] == ref_manifest["dropped_by_reason"]
    for rel in ref_manifest["outputs"]["data"]:
        assert pq.read_table(out / rel).equals(pq.read_table(tmp_path / "ref" / "out" / rel))
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("first", [0, 1])
def test_two_runs_started_together_one_writes_the_other_refuses_naming_it(tmp_path, first):
    """One writer per output: two `mgte pairs` into one directory at once (each pauses 4 s before its
    first marker, so they overlap whoever wins); the loser exits 2 naming the winner, before touching
    anything, and the output equals a clean run's."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "dags.cli", "pairs", "--input", *map(str, inputs), "--output", str(out),
           "--set", f"tokenizer={xlmr_tokenizer()}", "--set", BEAM[0], "--set", "reader.error_budget=0.2"]
    env = dict(os.environ, MGTE_FAULT="point=before_marker,count=1,action=pause,seconds=4")
    procs = [None, None]
    for i in (first, 1 - first):  # both orders of start
        procs[i] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    winner = next(p for p, (rc, _) in zip(procs, results) if rc == 0)
    refusal = next(err for rc, err in results if rc == 2).strip().splitlines()[-1]
    assert refusal.startswith("mgte: error: ") and f"pid {winner.pid}" in refusal and "being written by another run" in refusal
    ref = config(tmp_path / "ref", inputs, "reader.error_budget=0.2")
    (tmp_path / "ref").mkdir()
    assert read_manifest(out)["counts"] == pairs.run(ref)["counts"] == {"input": 18, "kept": 14, "dropped": 3,
                                                                       "quarantined": 1}


def test_dedup_parts_follow_the_input_and_any_count_gives_the_same_output(tmp_path):
    """Issue 27: ``ceil(candidates / dedup_part_rows)`` parts, not a fixed number; each part reads only
    its hash range's keys, and 1 part and 5 parts write the same output."""
    import json

    from .conftest import outcome
    from pipelines.pairs.tasks import hash_range

    inputs = small_inputs(tmp_path)
    runs = {}
    for rows in (1_000_000, 3):
        cfg = config(tmp_path / str(rows), inputs, "engine=local", "lang.min_chars=30", "reader.error_budget=0.2",
                     f"dedup_part_rows={rows}", "keep_candidates=true")
        pairs.run(cfg)
        out = Path(cfg.output)
        markers = [json.loads(p.read_text()) for p in sorted((out / "_tasks").glob("dedup-*.json"))]
        runs[rows] = outcome(out)
        candidates = sum(m["candidates"] for m in markers)
        assert candidates == 16  # 14 kept + 2 exact duplicates: every candidate in exactly one part
        assert len(markers) == -(-candidates // rows)
        assert sorted(m["part"] for m in markers) == list(range(len(markers)))
        for m in markers:  # a part's duplicates lie in its range of the hash space
            lo, hi = hash_range(m["part"], len(markers))
            for f in m["files"]:
                for h in pq.read_table(out / f, columns=["pair_hash"]).column("pair_hash").to_pylist():
                    assert h >= lo and (hi is None or h < hi)
    assert runs[3] == runs[1_000_000]
    assert runs[3]["dropped_by_reason"]["exact_duplicate"] == 2


def test_hash_ranges_cover_the_hash_space_once():
    from pipelines.pairs.tasks import dedup_parts, hash_range

    assert [dedup_parts(n, 4) for n in (0, 1, 4, 5, 9)] == [1, 1, 1, 2, 3]
    for parts in (1, 3, 7):
        ranges = [hash_range(p, parts) for p in range(parts)]
        assert ranges[0][0] == "00000000" and ranges[-1][1] is None
        assert all(ranges[p][1] == ranges[p + 1][0] for p in range(parts - 1))
    assert hash_range(0, 2) == ("00000000", "80000000")  # a 32-digit hash compares as its first 8 digits
    assert "7fffffff" + "f" * 24 < "80000000" <= "80000000" + "0" * 24


def test_a_source_task_streams_its_read_tasks_files_in_key_order_into_parts(tmp_path):
    """Issue 27: a source task holds one candidate file and one part at a time, not the source: the
    read tasks' candidate files (given in input order c, a, b), each sorted, are taken in the order
    of their first record, so the parts hold the source's kept pairs in (path, line) order, whatever
    part size, and duplicates across files are dropped on the way."""
    from .conftest import EN_BODY

    d = tmp_path / "in"
    d.mkdir()
    inputs = []
    for name in ("c", "a", "b"):
        rows = [{"id": f"{name}{i}", "query": f"Title {name} {i}", "positive": f"{EN_BODY} {name} item {i}.",
                 "source": "web"} for i in range(3)]
        if name != "a":  # a copy of a0: a.jsonl comes first in key order, so a0 survives
            rows.append({"id": f"{name}-dup", "query": "Title a 0", "positive": f"{EN_BODY} a item 0.", "source": "web"})
        inputs.append(d / f"{name}.jsonl")
        write_jsonl(inputs[-1], rows)
    manifest = pairs.run(config(tmp_path, inputs, "engine=local", "lang.min_chars=30", "shard_rows=2"))
    parts = sorted((tmp_path / "out" / "data" / "source=web").glob("part-*.parquet"))
    assert [pq.read_table(p).column("pair_id").to_pylist() for p in parts] == [
        ["a0", "a1"], ["a2", "b0"], ["b1", "b2"], ["c0", "c1"], ["c2"]]
    assert manifest["counts"] == {"input": 11, "kept": 9, "dropped": 2, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"exact_duplicate": 2}


def test_a_source_task_that_fails_leaves_no_half_written_part(tmp_path):
    """A source task that stops on bad input (its candidate files out of key order: here one file
    given twice) raises in one line and leaves no part's temporary file behind."""
    from foundation.errors import MgteError
    from foundation.ledger import StageOutput
    from pipelines.pairs.tasks import write_source
    from .conftest import EN_BODY

    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "query": f"Title a {i}", "positive": f"{EN_BODY} a item {i}.",
                                 "source": "web"} for i in range(3)])
    pairs.run(config(tmp_path, [d / "a.jsonl"], "engine=local", "lang.min_chars=30", "keep_candidates=true"))
    out = StageOutput(tmp_path / "out", "pairs", {})
    cand = [str(p.relative_to(out.root)) for p in (out.root / "_work" / "candidates").rglob("*.parquet")]
    assert len(cand) == 1
    with pytest.raises(MgteError, match="not in key order"):
        write_source("source-again", cand * 2, [], 100, out, "deps")
    assert not list(out.root.rglob("*.tmp"))


def test_source_stats_count_pairs_and_truncations_per_source_over_every_file(tmp_path):
    """The per-source counts (counted in Arrow, file by file) against a count of the rows in Python."""
    import random
    from collections import Counter

    from pipelines.pairs.stage import source_stats

    rng = random.Random(5)
    files, want = [], Counter()
    for i in range(3):
        rows = [{"source": rng.choice("abc"), "query_truncated": rng.random() < 0.3,
                 "positive_truncated": rng.random() < 0.6} for _ in range(200)]
        for r in rows:
            want[(r["source"], "pairs")] += 1
            want[(r["source"], "q")] += r["query_truncated"]
            want[(r["source"], "p")] += r["positive_truncated"]
        files.append(tmp_path / f"{i}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), files[-1])
    got = source_stats(config(tmp_path, [], "alpha=0.5"), files).to_pylist()
    assert {(r["source"], k): r[c] for r in got for k, c in (("pairs", "pairs"), ("q", "query_truncated"),
                                                             ("p", "positive_truncated"))} == dict(want)
    assert sum(r["q"] for r in got) == pytest.approx(1.0)
