"""``mgte audit diff OLD NEW``: two outputs of one stage side by side (HTML + diff.json), checked
against a recount from the two outputs' tables; two outputs of different stages are refused."""

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dags.cli import main
from pipelines.corpus import run as corpus_run
from tests.pipelines.corpus.test_profiles import DOCS, docs_config
from tests.pipelines.test_audit import _stage

LINES = (DOCS / "01-coreutils-a.jsonl").read_text(encoding="utf-8").splitlines()


def _build(tmp_path: Path, name: str, lines: list[str], *sets: str) -> Path:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus_run(docs_config(tmp_path / name, "quality.profile=curated", f"input=['{src}']", *sets))
    return tmp_path / name


def _table(root: Path, sub: str, columns: list[str]) -> list[dict]:
    return pq.read_table(root / sub, columns=columns).to_pylist() if any((root / sub).rglob("*.parquet")) else []


def _diff(old: Path, new: Path, out: Path, capsys) -> tuple[dict, str]:
    assert main(["audit", "diff", str(old), str(new), "--output", str(out)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (out / "index.html").read_text()))
    return json.loads((out / "diff.json").read_text()), text


@pytest.fixture(scope="module")
def corpus_pair(tmp_path_factory):
    """OLD: the first 80 records; NEW: records 30-124 (the first 30 removed, 44 added), record 50
    with another text under its id."""
    base = tmp_path_factory.mktemp("corpus-diff")
    edited = json.loads(LINES[50])
    edited["text"] += " Zusätzlicher Satz mit weiteren Wörtern für diesen geänderten Eintrag."
    return _build(base, "old", LINES[:80]), _build(base, "new", LINES[30:50] + [json.dumps(edited)] + LINES[51:])


def test_corpus_diff_equals_a_recount(corpus_pair, tmp_path, capsys):
    old, new = corpus_pair
    facts, text = _diff(old, new, tmp_path / "d", capsys)
    assert facts["stage"] == "corpus"
    kept = {k: {r["id"]: r for r in _table(d, "data", ["id", "lang", "text"])} for k, d in (("old", old), ("new", new))}
    changed = sorted(i for i in set(kept["old"]) & set(kept["new"]) if kept["old"][i]["text"] != kept["new"][i]["text"])
    assert facts["corpus"]["documents"]["changed_text_ids"] == changed == [json.loads(LINES[50])["id"]]
    added, removed = sorted(set(kept["new"]) - set(kept["old"])), sorted(set(kept["old"]) - set(kept["new"]))
    assert added and removed
    docs = facts["corpus"]["documents"]
    assert (docs["added"], docs["removed"]) == (len(added), len(removed))
    assert docs["added_ids"] == added and docs["removed_ids"] == removed
    assert pq.read_table(tmp_path / "d" / "added.parquet")["id"].to_pylist() == added
    assert pq.read_table(tmp_path / "d" / "removed.parquet")["id"].to_pylist() == removed
    assert f"{len(added)} added, {len(removed)} removed" in text
    example = docs["examples"]["added"][0]
    assert example["id"] == added[0] and kept["new"][added[0]]["text"].startswith(example["text"][:100])
    assert " ".join(example["text"][:60].split()) in text

    langs = {k: Counter(r["lang"] for r in v.values()) for k, v in kept.items()}
    assert facts["corpus"]["kept_per_language"] == {
        lg: {"old": langs["old"][lg], "new": langs["new"][lg], "delta": langs["new"][lg] - langs["old"][lg]}
        for lg in sorted(set(langs["old"]) | set(langs["new"]))}
    reasons = {k: Counter(r["reason"] for r in _table(d, "dropped", ["reason"])) for k, d in (("old", old), ("new", new))}
    assert facts["dropped_by_reason"] == {
        r: {"old": reasons["old"][r], "new": reasons["new"][r], "delta": reasons["new"][r] - reasons["old"][r]}
        for r in sorted(set(reasons["old"]) | set(reasons["new"]))}
    for key in ("input", "kept", "dropped"):
        n_old, n_new = (json.loads((d / "manifest.json").read_text())["counts"][key] for d in (old, new))
        assert facts["counts"][key] == {"old": n_old, "new": n_new, "delta": n_new - n_old}
    assert facts["counts"]["kept"]["old"] == len(kept["old"]) and facts["counts"]["kept"]["new"] == len(kept["new"])


def test_diff_of_an_output_with_itself_is_empty(corpus_pair, tmp_path, capsys):
    old, _ = corpus_pair
    facts, _ = _diff(old, old, tmp_path / "d", capsys)
    docs = facts["corpus"]["documents"]
    assert (docs["added"], docs["removed"], docs["changed_text"]) == (0, 0, 0)
    assert all(v["delta"] == 0 for v in facts["corpus"]["kept_per_language"].values())


def test_incremental_build_against_old_adds_and_removes_nothing_of_old(tmp_path, capsys):
    """The scheduled-build recipe: NEW built with previous=[LAST] holds only its own documents;
    nothing of LAST counts as removed, NEW's documents are the additions."""
    first = _build(tmp_path, "first", LINES[:30])
    last = _build(tmp_path, "last", LINES[30:60], f"previous=['{first}']")
    new = _build(tmp_path, "new", LINES[60:], f"previous=['{last}']")
    facts, text = _diff(last, new, tmp_path / "d", capsys)
    c = facts["corpus"]
    assert c["incremental"] and "NEW was built against OLD (previous builds: 2)" in text
    ids = {d: {r["id"] for r in _table(d, "data", ["id"])} for d in (first, last, new)}
    assert c["documents"]["removed"] == 0
    assert c["documents"]["added_ids"] == sorted(ids[new] - ids[first] - ids[last]) and ids[new]
    cumulative = {d: Counter(r["lang"] for x in chain for r in _table(x, "data", ["lang"]))
                  for d, chain in ((last, (first, last)), (new, (first, last, new)))}
    assert c["kept_per_language_cumulative"] == {
        lg: {"old": cumulative[last][lg], "new": cumulative[new][lg], "delta": cumulative[new][lg] - cumulative[last][lg]}
        for lg in sorted(set(cumulative[last]) | set(cumulative[new]))}
    # without the chain, by the two tables alone, every document of LAST would count as removed
    assert ids[last] and not ids[last] & ids[new]


def _eval_output(root: Path, methods: dict) -> Path:
    final = "dense"
    metrics = {**methods[final], "final_method": final, "methods": methods, "name": root.name, "model": "m",
               "skipped": {}}
    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    _stage(root, "eval", {"data/q.parquet": pa.table({"query_id": ["q1"]})},
           {"input": 3, "kept": 3, "dropped": 0, "quarantined": 0}, {})
    return root


def _method(ndcg: float, per_lang: dict[str, float]) -> dict:
    return {"ndcg@10": ndcg, "recall@10": ndcg / 2, "n_queries": 3,
            "per_language": {lg: {"ndcg@10": v, "recall@10": v / 2, "n_queries": 1} for lg, v in per_lang.items()}}


def test_eval_diff_per_method_and_language(tmp_path, capsys):
    old = _eval_output(tmp_path / "old", {"dense": _method(0.5, {"de": 0.4, "en": 0.6}),
                                          "bm25": _method(0.3, {"de": 0.3})})
    new = _eval_output(tmp_path / "new", {"dense": _method(0.625, {"en": 0.75, "fr": 0.5})})
    facts, text = _diff(old, new, tmp_path / "d", capsys)
    e = facts["eval"]
    assert e["methods"]["dense"]["ndcg@10"] == {"old": 0.5, "new": 0.625, "delta": 0.125}
    assert e["methods"]["bm25"]["ndcg@10"] == {"old": 0.3, "new": None, "delta": None}
    assert e["final"]["ndcg@10"]["delta"] == 0.125
    dense = e["per_language"]["dense"]
    assert dense["en"]["ndcg@10"] == {"old": 0.6, "new": 0.75, "delta": 0.75 - 0.6}
    assert dense["de"]["recall@10"] == {"old": 0.2, "new": None, "delta": None}
    assert dense["fr"]["ndcg@10"] == {"old": None, "new": 0.5, "delta": None}
    assert set(e["per_language"]["bm25"]) == {"de"}
    assert "0.5000 / 0.6250 / +0.1250" in text and "dense per language" in text


def test_outputs_of_two_stages_are_refused_in_one_line(corpus_pair, tmp_path, capsys):
    old, _ = corpus_pair
    new = _eval_output(tmp_path / "ev", {"dense": _method(0.5, {})})
    assert main(["audit", "diff", str(old), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(old) in err and str(new) in err and "corpus" in err and "eval" in err
    assert main(["audit", "diff", str(old)]) == 2  # one directory: a usage error, not an audit of "diff"
    assert "two stage output directories" in capsys.readouterr().err
