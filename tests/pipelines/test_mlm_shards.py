"""mgte mlm-shards: chunking, down-sampling, accounting, restart per task, schema errors, input changes."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from foundation import faults
from pipelines.mlm_shards import Config, chunk_tokens, keep_score, run, task_name
from foundation.ledger import describe_input, read_manifest, read_stage_output
from foundation.errors import BadInputError, StageConflict
from storage_schemas.corpus import CLEAN_DOC

REPO = Path(__file__).resolve().parents[2]
UDHR = REPO / "data" / "corpus" / "raw" / "01-udhr-a.jsonl"


def clean_doc_rows(n: int, start: int = 0, long_every: int = 0) -> list[dict]:
    """Real UDHR paragraphs as clean docs; every `long_every`-th one made long by repetition."""
    records = [json.loads(line) for line in UDHR.read_text(encoding="utf-8").splitlines()][start:start + n]
    rows = []
    for i, r in enumerate(records):
        text = r["text"] * (12 if long_every and i % long_every == 0 else 1)
        rows.append(dict(id=r["id"], text=text, lang=r["id"].split("-")[1], lang_score=0.9, source="udhr",
                         path=str(UDHR), line=start + i + 1, n_chars=len(text), n_bytes=len(text.encode()),
                         n_tokens=None, text_hash=f"h{start + i}", metadata=None))
    return rows


def write_clean_docs(directory: Path, parts: list[list[dict]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(parts):
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(CLEAN_DOC.from_rows(rows), path)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(faults.ENV, raising=False)
    faults._calls.clear()


def _cfg(inputs, out, *sets):
    return load_config(Config, REPO / "dags/configs/mlm-shards/tiny.yaml",
                       [f"input=[{', '.join(str(p) for p in inputs)}]", f"output={out}", "progress=false", *sets])


def test_chunk_tokens_splits_long_and_keeps_short():
    assert chunk_tokens([5, 6, 7], 8, 0, 2) == [[0, 5, 6, 7, 2]]
    chunks = chunk_tokens(list(range(10, 23)), 6, 0, 2)  # 13 tokens, 4 per chunk
    assert chunks == [[0, 10, 11, 12, 13, 2], [0, 14, 15, 16, 17, 2], [0, 18, 19, 20, 21, 2], [0, 22, 2]]
    assert chunk_tokens([], 6, 0, 2) == []


def test_shards_by_language_with_accounting(tmp_path):
    docs = clean_doc_rows(40, long_every=10)
    docs[3]["text"] = ""  # tokenises to nothing
    files = write_clean_docs(tmp_path / "in", [docs[:20], docs[20:]])
    manifest = run(_cfg(files, tmp_path / "out", "max_len=64"))
    counts = manifest["counts"]
    assert counts == {"input": 40, "kept": 39, "dropped": 1, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"empty_after_tokenize": 1}
    chunks = read_stage_output(tmp_path / "out", "data")
    assert max(chunks.column("n_tokens").to_pylist()) <= 64
    assert all(p.split("/")[1].startswith("lang=") for p in manifest["outputs"]["data"])
    by_doc = {}
    for row in chunks.select(["doc_id", "chunk", "n_chunks", "input_ids", "lang"]).to_pylist():
        by_doc.setdefault(row["doc_id"], []).append(row)
        assert row["input_ids"][0] == 0 and row["input_ids"][-1] == 2 and 1 not in row["input_ids"]
    long_doc = by_doc[docs[0]["id"]]
    assert len(long_doc) > 1 and [r["chunk"] for r in long_doc] == list(range(len(long_doc)))
    for f in manifest["outputs"]["data"]:  # one language per shard directory
        lang = f.split("lang=")[1].split("/")[0]
        assert set(pq.read_table(tmp_path / "out" / f).column("lang").to_pylist()) == {lang}
    stats = read_stage_output(tmp_path / "out", "stats/shard_stats.parquet")
    assert sum(stats.column("chunks").to_pylist()) == chunks.num_rows
    assert sum(stats.column("q").to_pylist()) == pytest.approx(1.0)
    assert run(_cfg(files, tmp_path / "out", "max_len=64"))["finished"] == manifest["finished"]  # no-op rerun
    with pytest.raises(StageConflict):
        run(_cfg(files, tmp_path / "out", "max_len=128"))


def test_8192_phase_downsamples_short_texts_deterministically(tmp_path):
    files = write_clean_docs(tmp_path / "in", [clean_doc_rows(60, long_every=6)])
    sets = ("max_len=128", "short_threshold=100", "short_keep_rate=0.3", "seed=5")
    manifest = run(_cfg(files, tmp_path / "a", *sets))
    dropped = read_stage_output(tmp_path / "a", "dropped").to_pylist()
    assert {d["reason"] for d in dropped} == {"downsampled_short"}
    assert all(d["doc_tokens"] < 100 and d["keep_score"] >= 0.3 for d in dropped)
    assert all(keep_score(d["id"], 5) == d["keep_score"] for d in dropped)
    kept = set(read_stage_output(tmp_path / "a", "data").column("doc_id").to_pylist())
    assert 0 < len(dropped) < 60 and len(kept) + len(dropped) == 60
    again = run(_cfg(files, tmp_path / "b", *sets))
    assert again["counts"] == manifest["counts"]


def test_quarantine_and_wrong_schema(tmp_path):
    rows = clean_doc_rows(5)
    table = CLEAN_DOC.from_rows(rows)
    texts = table.column("text").to_pylist()
    texts[2] = None
    bad = table.set_column(1, pa.field("text", pa.string(), nullable=True), pa.array(texts))
    (tmp_path / "in").mkdir()
    pq.write_table(bad, tmp_path / "in" / "a.parquet")
    manifest = run(_cfg([tmp_path / "in" / "a.parquet"], tmp_path / "out"))
    assert manifest["counts"] == {"input": 5, "kept": 4, "dropped": 0, "quarantined": 1}
    q = read_stage_output(tmp_path / "out", "quarantine").to_pylist()
    assert q[0]["line"] == 2 and q[0]["field"] == "text"
    pq.write_table(pa.table({"id": ["x"], "body": ["y"], "lang": ["en"]}), tmp_path / "wrong.parquet")
    with pytest.raises(BadInputError, match="wrong.parquet: missing field 'text'"):
        run(_cfg([tmp_path / "wrong.parquet"], tmp_path / "out2"))


def test_killed_task_is_redone_alone(tmp_path):
    import os
    import subprocess
    import sys

    files = write_clean_docs(tmp_path / "in", [clean_doc_rows(10), clean_doc_rows(10, start=10), clean_doc_rows(10, 20)])
    code = ("from tests.pipelines.test_mlm_shards import _cfg; from pipelines.mlm_shards import run; "
            f"run(_cfg({[str(f) for f in files]!r}, {str(tmp_path / 'out')!r}))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", faults.ENV: "point=before_marker,count=2,action=exit137"}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 137
    done = sorted(p.stem for p in (tmp_path / "out" / "_tasks").glob("*.json"))
    assert done == [task_name(describe_input(str(files[0])))]
    manifest = run(_cfg(files, tmp_path / "out"))
    reference = run(_cfg(files, tmp_path / "ref"))
    assert manifest["counts"] == reference["counts"] == {"input": 30, "kept": 30, "dropped": 0, "quarantined": 0}
    assert not list((tmp_path / "out").rglob("*.tmp"))
    a = read_stage_output(tmp_path / "out", "data").sort_by("id")
    b = read_stage_output(tmp_path / "ref", "data").sort_by("id")
    assert a.equals(b)


def test_ray_engine_equals_local(tmp_path, local_ray):
    files = write_clean_docs(tmp_path / "in", [clean_doc_rows(30, long_every=7)])
    local = run(_cfg(files, tmp_path / "local", "max_len=64"))
    remote = run(_cfg(files, tmp_path / "ray", "max_len=64", "engine=ray", "ray.num_cpus=2", "batch_size=8"))
    assert remote["counts"] == local["counts"]
    a = read_stage_output(tmp_path / "local", "data")
    b = read_stage_output(tmp_path / "ray", "data")
    assert a.sort_by("id").equals(b.sort_by("id"))
    assert read_manifest(tmp_path / "ray")["extra"]["engine"] == "ray"


def _corpus_like(root: Path, parts: list[list[dict]]) -> Path:
    """A finished upstream stage output (data files of marked tasks, manifest, _SUCCESS), as the
    one reader of upstream outputs expects it."""
    from foundation.config import frozen
    from foundation.ledger import StageOutput

    @frozen
    class Up:
        output: str | None = None

    out = StageOutput(root, "corpus", Up(output=str(root)))
    out.begin()
    files = []
    for i, rows in enumerate(parts):
        rel = out.write_table(f"data/part-{i}.parquet", CLEAN_DOC.from_rows(rows), CLEAN_DOC)
        out.mark_task(f"write-{i}", {"input": len(rows), "kept": len(rows), "dropped": 0, "quarantined": 0}, [rel])
        files.append(rel)
    n = sum(len(rows) for rows in parts)
    out.finish(counts={"input": n, "kept": n, "dropped": 0, "quarantined": 0}, dropped_by_reason={}, inputs=[],
               outputs={"data": files})
    return root


def test_changed_upstream_output_refuses_naming_the_file_or_is_redone(tmp_path):
    up = _corpus_like(tmp_path / "corpus", [clean_doc_rows(6), clean_doc_rows(6, start=6)])
    first = run(_cfg([up], tmp_path / "out", "max_len=64"))
    assert first["counts"]["input"] == 12
    assert {Path(e["path"]).name for e in first["inputs"]} == {"part-0.parquet", "part-1.parquet"}
    # the upstream stage is rebuilt and one of its files now holds other documents
    changed = up / "data" / "part-1.parquet"
    pq.write_table(CLEAN_DOC.from_rows(clean_doc_rows(9, start=20)), changed)
    with pytest.raises(StageConflict, match=r"another input set: 1 changed \(.*part-1.parquet\).*on_input_change=redo"):
        run(_cfg([up], tmp_path / "out", "max_len=64"))
    kept_tasks = sorted(p.name for p in (tmp_path / "out" / "_tasks").glob("*.json"))
    redone = run(_cfg([up], tmp_path / "out", "max_len=64", "on_input_change=redo"))
    reference = run(_cfg([up], tmp_path / "ref", "max_len=64"))
    assert redone["counts"] == reference["counts"] == {"input": 15, "kept": 15, "dropped": 0, "quarantined": 0}
    a = read_stage_output(tmp_path / "out", "data").sort_by("id")
    b = read_stage_output(tmp_path / "ref", "data").sort_by("id")
    assert a.equals(b)
    # exactly what changed was redone: the unchanged file's task kept its marker, the old one is gone
    now = sorted(p.name for p in (tmp_path / "out" / "_tasks").glob("*.json"))
    assert len(set(now) & set(kept_tasks)) == 1 and len(now) == 2
    assert not [f for f in (tmp_path / "out" / "data").rglob("*.parquet")
                if f.name not in {Path(x).name for x in redone["outputs"]["data"]}]


def test_error_budget_fails_in_one_line_naming_the_file(tmp_path):
    rows = clean_doc_rows(4)
    table = CLEAN_DOC.from_rows(rows)
    texts = [None, None, table.column("text")[2].as_py(), None]
    bad = table.set_column(1, pa.field("text", pa.string(), nullable=True), pa.array(texts))
    (tmp_path / "in").mkdir()
    pq.write_table(bad, tmp_path / "in" / "bad.parquet")
    with pytest.raises(BadInputError) as err:
        run(_cfg([tmp_path / "in" / "bad.parquet"], tmp_path / "out"))
    assert "\n" not in str(err.value)
    assert "3 of 4 records quarantined, over reader.error_budget=0.25; worst file" in str(err.value)
    assert "bad.parquet: 3 bad records, first at line 0 (field text" in str(err.value)
    manifest = run(_cfg([tmp_path / "in" / "bad.parquet"], tmp_path / "out", "reader.error_budget=0.8"))
    assert manifest["counts"] == {"input": 4, "kept": 1, "dropped": 0, "quarantined": 3}


def test_beam_and_local_workers_equal_this_process(tmp_path):
    pytest.importorskip("apache_beam")
    files = write_clean_docs(tmp_path / "in", [clean_doc_rows(12, long_every=5), clean_doc_rows(12, start=12)])
    local = run(_cfg(files, tmp_path / "local", "max_len=64"))
    reference = read_stage_output(tmp_path / "local", "data").sort_by("id")
    for name, sets in (("beam", ["engine=beam"]), ("workers", ["local.workers=2"])):
        other = run(_cfg(files, tmp_path / name, "max_len=64", *sets))
        assert other["counts"] == local["counts"] and other["config_hash"] == local["config_hash"]
        assert read_stage_output(tmp_path / name, "data").sort_by("id").equals(reference)
    assert read_manifest(tmp_path / "beam")["extra"]["engine"] == "beam"
