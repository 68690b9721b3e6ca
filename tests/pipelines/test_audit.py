"""``mgte audit DIR`` on every kind of stage output (built by hand here with StageOutput), and a
one-line refusal for a directory that is no finished stage output."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dags.cli import main
from foundation.config import frozen
from foundation.ledger import StageOutput


@frozen
class Cfg:
    output: str = ""
    seed: int = 0


QUARANTINE = pa.table({"path": ["/raw/a.jsonl"], "line": [7], "field": ["text"], "error": ["not a string"],
                       "raw": ['{"text": 5}']})


def _stage(root: Path, stage: str, tables: dict[str, pa.Table], counts: dict, reasons: dict, extra=None) -> Path:
    out = StageOutput(root, stage, Cfg(output=str(root)))
    out.begin()
    outputs: dict[str, list[str]] = {}
    for rel, table in tables.items():  # "stats/<name>.parquet" is listed as <name>, the rest by directory
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel)
        top, name = rel.split("/", 1)
        outputs.setdefault(name.removesuffix(".parquet") if top == "stats" else top, []).append(rel)
    out.finish(counts=counts, dropped_by_reason=reasons, inputs=[], outputs=outputs, extra=extra or {})
    return root


def _audit(root: Path, capsys) -> str:
    assert main(["audit", str(root)]) == 0, capsys.readouterr().err
    page = root / "audit" / "index.html"
    assert capsys.readouterr().out.strip() == str(page)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))


def _common(text: str, counts: dict, reasons: dict):
    c = counts
    assert f"holds ({c['input']} = {c['kept']} + {c['dropped']} + {c['quarantined']})" in text
    assert f"dropped_by_reason sums to dropped: holds ({sum(reasons.values())})" in text
    for reason, n in reasons.items():
        assert f"{reason} {n}" in text


def test_mlm_shards(tmp_path, capsys):
    data = pa.table({"lang": ["de", "de", "fr"], "n_tokens": [100, 50, 30], "input_ids": [[1, 2]] * 3})
    stats = pa.table({"lang": ["de", "fr"], "docs": [1, 1], "chunks": [2, 1], "tokens": [150, 30], "q": [0.6, 0.4]})
    dropped = pa.table({"id": ["x"], "reason": ["too_short"], "n_tokens": [1]})
    counts = {"input": 4, "kept": 2, "dropped": 1, "quarantined": 1}
    root = _stage(tmp_path / "shards", "mlm-shards", {"data/lang=de/p.parquet": data.slice(0, 2),
                                                      "data/lang=fr/p.parquet": data.slice(2),
                                                      "stats/shard_stats.parquet": stats, "dropped/d.parquet": dropped,
                                                      "quarantine/q.parquet": QUARANTINE},
                  counts, {"too_short": 1}, extra={"chunks": 3, "tokens": 180, "max_len": 2048})
    text = _audit(root, capsys)
    _common(text, counts, {"too_short": 1})
    assert "3 chunks, 180 tokens, 2 languages, 2 files, max_len 2048" in text
    assert "shard_stats agree with the shards" in text
    assert "de 1 2 150 75.0000 0.6000" in text and "fr 1 1 30 30.0000 0.4000" in text
    assert "a.jsonl:7 text not a string" in text  # the quarantine sample
    for png in ("chunks_per_language.png", "tokens_per_language.png", "chunk_lengths.png"):
        assert (root / "audit" / png).stat().st_size > 5000


def test_pairs(tmp_path, capsys):
    data = pa.table({"source": ["qa", "qa", "qa", "tr"], "lang": ["en", "en", "de", "fr"],
                     "query": ["q1", "q2", "q3", "bonjour"], "positive": ["p1", "p2", "p3", "hello"],
                     "pair_id": ["1", "2", "3", "4"]})
    stats = pa.table({"source": ["qa", "tr"], "pairs": [3, 1], "query_truncated": [0, 1], "positive_truncated": [2, 0],
                      "p": [0.75, 0.25], "q": [0.63, 0.37]})
    dropped = pa.table({"pair_id": ["9", "8"], "reason": ["lang_mismatch", "empty_query"], "source": ["tr", "qa"],
                        "query": ["hola", ""], "positive": ["x", "y"]})
    counts = {"input": 6, "kept": 4, "dropped": 2, "quarantined": 0}
    reasons = {"lang_mismatch": 1, "empty_query": 1}
    root = _stage(tmp_path / "pairs", "pairs", {"data/source=qa/p.parquet": data.slice(0, 3),
                                                "data/source=tr/p.parquet": data.slice(3),
                                                "stats/source_stats.parquet": stats, "dropped/d.parquet": dropped},
                  counts, reasons)
    text = _audit(root, capsys)
    _common(text, counts, reasons)
    assert "4 pairs, 2 sources, 3 languages" in text
    assert "qa 3 0.7500 0.6300 0 2" in text and "tr 1 0.2500 0.3700 1 0" in text
    assert "qa de 1" in text and "qa en 2" in text and "tr fr 1" in text
    assert "fr bonjour hello" in text  # a sample pair
    assert "lang_mismatch (1)" in text and "hola" in text  # a dropped sample
    assert "Quarantine (0) none" in text


def test_train(tmp_path, capsys):
    counts = {"input": 10, "kept": 10, "dropped": 0, "quarantined": 0}
    root = _stage(tmp_path / "mlm", "train-mlm", {}, counts, {}, extra={"steps": 4})
    rows = [{"step": 1, "loss": 9.0, "lr": 0.001, "tokens_per_s": 100.0, "nonfinite_skipped": 0},
            {"step": 2, "loss": "nan", "lr": 0.002, "tokens_per_s": 110.0, "nonfinite_skipped": 1},
            {"step": 2, "loss": 8.5, "lr": 0.002, "tokens_per_s": 120.0, "nonfinite_skipped": 1},  # resumed
            {"step": 4, "loss": 7.5, "lr": 0.0005, "tokens_per_s": 130.0, "nonfinite_skipped": 1}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    (root / "model" / "model.safetensors").write_bytes(b"x" * 1234)
    for step in (2, 4):
        (root / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (root / "checkpoints" / f"step-{step}" / "state.pt").write_bytes(b"y" * (100 * step))
    text = _audit(root, capsys)
    _common(text, counts, {})
    assert "3 logged steps, last step 4, manifest steps 4, 1 steps logged twice (resumed runs)" in text
    assert "skipped steps (non-finite): 1; logged non-finite losses: 0" in text
    assert "model.safetensors 1234" in text and "config.json 2" in text
    assert "Checkpoints (2)" in text and "step-2 1 200" in text and "step-4 1 400" in text
    for png in ("loss.png", "lr.png", "skipped.png", "throughput.png"):
        assert (root / "audit" / png).stat().st_size > 5000
    assert not (root / "audit" / "accuracy.png").exists()  # not logged: no empty plot


def test_eval(tmp_path, capsys):
    counts = {"input": 3, "kept": 2, "dropped": 1, "quarantined": 0}
    root = _stage(tmp_path / "eval", "eval", {"dropped/dropped.parquet": pa.table(
        {"id": ["q9"], "reason": ["no_relevant_docs"]})}, counts, {"no_relevant_docs": 1},
        extra={"final_method": "dense"})

    def res(ndcg, de, en):
        return {"ndcg@10": ndcg, "recall@10": 0.5, "recall@20": 0.6, "recall@100": 0.9, "mrr@10": 0.4, "map": 0.3,
                "n_queries": 2, "per_language": {"de": {"ndcg@10": de}, "en": {"ndcg@10": en}}}

    metrics = {"model": "m", "final_method": "dense", "ndcg@10": 0.25, "n_queries": 2,
               "methods": {"bm25": res(0.5, 0.75, 0.25), "dense": res(0.25, 0.125, 0.375)},
               "skipped": {"sparse": "the model has no sparse head"}}
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "run.trec").write_text("q1 Q0 d1 1 0.9 dense\nq1 Q0 d2 2 0.8 dense\nq2 Q0 d1 1 0.7 dense\n")
    text = _audit(root, capsys)
    _common(text, counts, {"no_relevant_docs": 1})
    assert "final method dense , nDCG@10 0.25, queries 2" in text
    assert "bm25 0.5000 0.5000 0.6000 0.9000 0.4000 0.3000 2" in text
    assert "de 0.7500 0.1250" in text and "en 0.2500 0.3750" in text
    assert "sparse the model has no sparse head" in text
    assert "run.trec 3 2" in text
    assert "no_relevant_docs (1)" in text and "q9" in text
    assert (root / "audit" / "ndcg_per_language.png").stat().st_size > 5000


def test_a_stage_without_its_own_report_gets_the_common_page(tmp_path, capsys):
    counts = {"input": 5, "kept": 3, "dropped": 2, "quarantined": 0}
    root = _stage(tmp_path / "future", "future-stage", {"dropped/d.parquet": pa.table(
        {"item_id": ["a", "b"], "reason": ["too_short"] * 2})}, counts, {"too_short": 2})
    text = _audit(root, capsys)
    _common(text, counts, {"too_short": 2})
    assert "too_short (2)" in text


def test_the_audit_reads_through_the_one_reader_of_stage_outputs(tmp_path, capsys):
    """A listed file whose task is marked for another config is not shown (docs/reliability.md row 2)."""
    counts = {"input": 5, "kept": 3, "dropped": 2, "quarantined": 0}
    root = _stage(tmp_path / "future", "future-stage", {"dropped/d.parquet": pa.table(
        {"item_id": ["a", "b"], "reason": ["too_short"] * 2})}, counts, {"too_short": 2})
    (root / "_tasks").mkdir(exist_ok=True)
    (root / "_tasks" / "t.json").write_text(json.dumps({"task": "t", "config_hash": "another", "files": ["dropped/d.parquet"],
                                                        "counts": counts}))
    text = _audit(root, capsys)
    assert "too_short (2)" not in text and "dropped/d.parquet" in text  # listed in the manifest, not read


@pytest.mark.parametrize("case", ["plain", "unfinished", "missing", "bad-json"])
def test_no_stage_output_is_one_line(tmp_path, capsys, case):
    root = tmp_path / "x"
    if case != "missing":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    if case == "unfinished":
        (root / "manifest.json").write_text("{}")
    if case == "bad-json":
        (root / "manifest.json").write_text("{not json")
        (root / "_SUCCESS").write_text("")
    code = main(["audit", str(root)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mgte: error: {root}") and "Traceback" not in err
    expected = {"plain": (2, "no manifest.json / _SUCCESS"), "unfinished": (2, "no _SUCCESS"),
                "missing": (2, "is not a directory"), "bad-json": (1, "not a valid stage manifest")}[case]
    assert code == expected[0] and expected[1] in err
    assert not (root / "audit").exists()
