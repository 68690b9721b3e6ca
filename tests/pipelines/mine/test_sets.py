"""Labelled fine-tuning sets as `mgte mine` input (pipelines/mine/sets.py): a BEIR directory's train
split, MS MARCO-style TSV, JSONL with `positives` / `negatives`; each bad case accounted with file
and line; held-out splits refused; given negatives kept first and marked, mined ones fill up."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dags.cli import main
from foundation.errors import UsageError
from pipelines import mine
from pipelines.mine.inputs import resolve_inputs
from pipelines.mine.sets import held_out_split
from tests.pipelines.mine.conftest import TOPICS, config, read_rows, write_jsonl


def beir_set(root: Path, qrels: str, split: str = "train", queries=None) -> Path:
    """A small BEIR directory: documents d0..d9 per topic, one query per topic."""
    docs = [{"_id": f"{t}-d{i}", "title": t, "text": f"{t} document {i} text"} for t in TOPICS for i in range(10)]
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", queries or [{"_id": f"{t}-q", "text": f"{t} question?"} for t in TOPICS])
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return root


def quarantine_rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for f in manifest["outputs"]["quarantine"] for r in pq.read_table(out / f).to_pylist()]


def test_held_out_split_names():
    assert [held_out_split(p) for p in ("a/test.jsonl", "a/msmarco-dev.tsv", "a/qrels/test.tsv", "heldout/x.jsonl",
                                        "a/validation_pairs.parquet")] == ["test", "dev", "test", "heldout",
                                                                           "validation"]
    assert [held_out_split(p) for p in ("a/train.jsonl", "test_dir/pairs.jsonl", "a/qrels/train.tsv",
                                        "a/retrieval.tsv")] == [None] * 4


def test_beir_train_split_several_graded_positives_given_negatives_and_bad_judgements(tmp_path, fake):
    qrels = ("cats-q\tcats-d0\t2\ncats-q\tcats-d1\t1\ncats-q\tcats-d2\t0\n"   # two graded positives, one negative
             "dogs-q\tdogs-d0\t1\n"
             "dogs-q\tnot-a-doc\t1\n"  # line 6: the document is not in the corpus
             "ghost-q\tdogs-d1\t1\n"  # line 7: the query is not in queries.jsonl
             "empty-q\tdogs-d2\t1\n"  # line 8: the query's text is empty
             "rivers-q\trivers-d0\tx\n")  # line 9: not a grade
    queries = [{"_id": f"{t}-q", "text": f"{t} question?"} for t in TOPICS] + [{"_id": "empty-q", "text": "  "}]
    root = beir_set(tmp_path / "faq-set", qrels, queries=queries)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\npython-q\tpython-d0\t1\n")
    assert resolve_inputs((str(root),)) == [str(root / "qrels" / "train.tsv")]  # the held-out split is not read
    manifest = mine.run(config(tmp_path, [root], "num_negatives=2", "reader.error_budget=1", candidates=str(root)))
    assert manifest["counts"] == {"input": 8, "kept": 3, "dropped": 1, "quarantined": 4}
    assert manifest["dropped_by_reason"] == {"negative_judgement": 1}
    rows = read_rows(tmp_path / "out")
    assert [(r["query_id"], r["positive_id"]) for r in rows] == [("cats-q", "cats-d0"), ("cats-q", "cats-d1"),
                                                                 ("dogs-q", "dogs-d0")]
    assert {r["source"] for r in rows} == {"faq-set"}
    assert rows[0]["positive"] == "cats\ncats document 0 text"  # title and text joined as `mgte eval` does
    for r in rows[:2]:  # the label-0 judgement is a given negative of both positives of its query
        assert r["negative_ids"][0] == "cats-d2" and r["negative_given"] == [True, False]
        assert r["negative_ranks"][0] == 0 and r["negatives"][0] == "cats\ncats document 2 text"
        assert r["negative_ids"][1] not in {"cats-d0", "cats-d1", "cats-d2"}
    assert rows[2]["negative_given"] == [False, False]
    bad = {r["line"]: r for r in quarantine_rows(tmp_path / "out")}
    assert sorted(bad) == [6, 7, 8, 9] and {r["path"] for r in bad.values()} == {str(root / "qrels" / "train.tsv")}
    assert bad[6]["field"] == "corpus-id" and bad[6]["error"].startswith("unknown_doc: document 'not-a-doc'")
    assert bad[7]["error"].startswith("unknown_query") and bad[8]["error"].startswith("empty_query")
    assert bad[9]["error"].startswith("bad_score")


def test_a_held_out_split_as_input_is_exit_2_naming_it(tmp_path, capsys):
    root = beir_set(tmp_path / "only-test", "cats-q\tcats-d0\t1\n", split="test")
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"query": "q", "positive": "p"}])
    for item, split in ((root, "test"), (root / "qrels" / "test.tsv", "test"), (dev, "dev")):
        with pytest.raises(UsageError, match=f"`{split}` split"):
            resolve_inputs((str(item),))
        assert main(["mine", "--input", str(item), "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and split in err[0] and "not training input" in err[0], err


def test_tsv_query_positive_negatives_and_its_bad_lines(tmp_path, fake):
    lines = [f"{t} question {i}?\t{t} answer {i}\t{t} wrong answer {i}" for t in TOPICS for i in range(4)]
    lines += ["only a query", "", "q\tp\t  ", ]  # bad columns, blank line, an empty given negative
    src = tmp_path / "msmarco-train.tsv"
    src.write_bytes(("\n".join(lines) + "\n").encode() + b"caf\xe9\tp\n")  # + a line of bad UTF-8
    manifest = mine.run(config(tmp_path, [src], "num_negatives=3", "reader.error_budget=0.2"))
    assert manifest["counts"]["quarantined"] == 4 and manifest["counts"]["input"] == 36
    bad = {r["line"]: r["error"].split(":")[0].split(" ")[0] for r in quarantine_rows(tmp_path / "out")}
    assert bad == {33: "bad_columns", 34: "empty_line", 35: "empty_negative", 36: "invalid_utf8"}
    rows = read_rows(tmp_path / "out")
    assert rows and {r["source"] for r in rows} == {"msmarco-train"}
    for r in rows:
        stem = r["query"].split(" question ")
        assert r["negatives"][0] == f"{stem[0]} wrong answer {stem[1][:-1]}"
        assert r["negative_given"] == [True, False, False]
        assert r["negative_ids"][0].startswith("h:") and r["negative_ranks"][0] == 0
        assert len(r["negatives"]) == 3 and r["negatives"][0] not in r["negatives"][1:]


def test_jsonl_positives_and_negatives_lists(tmp_path, fake):
    recs = [{"query": f"{t} question?", "positives": [f"{t} answer one", f"{t} answer two"],
             "negatives": [f"{t} off-topic a", f"{t} off-topic b", f"{t} off-topic c"], "source": "faq"}
            for t in TOPICS]
    recs += [{"query": "x", "positives": []}, {"query": "x", "positive": "y", "negatives": "not a list"},
             {"query": "x", "positive": "y", "negatives": ["ok", " "]}]
    src = write_jsonl(tmp_path / "train.jsonl", recs)
    manifest = mine.run(config(tmp_path, [src], "num_negatives=2", "reader.error_budget=0.2"))
    assert manifest["counts"] == {"input": 19, "kept": 16, "dropped": 0, "quarantined": 3}
    bad = sorted((r["line"], r["field"], r["error"].split(":")[0].split(" ")[0])
                 for r in quarantine_rows(tmp_path / "out"))
    assert bad == [(9, "positives", "empty_list"), (10, "negatives", "not_a_list_of_strings"),
                   (11, "negatives", "empty_text")]
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 16 and {r["source"] for r in rows} == {"faq"}
    for r in rows:  # more given negatives than num_negatives: the first ones, nothing mined
        topic = r["query"].split()[0]
        assert r["negatives"] == [f"{topic} off-topic a", f"{topic} off-topic b"] and r["negative_given"] == [True] * 2
        assert r["positive_id"] is None and r["negative_ranks"] == [0, 0]


def test_given_negatives_are_kept_and_marked_mined_ones_fill_up(tmp_path, fake):
    """One pair file, the same pairs with and without given negatives: the given ones come first
    (rank 0, the miner's score, marked), and the mined ones are the plain run's best that are not
    given, in rank order."""
    plain = [{"query_id": f"{t}-q{i}", "query": f"{t} question {i}?", "positive_id": f"{t}-d{i}",
              "positive": f"{t} answer {i}"} for t in TOPICS for i in range(5)]
    src = write_jsonl(tmp_path / "plain.jsonl", plain)
    mine.run(config(tmp_path, [src], "num_negatives=4", out="plain"))
    given = [{**p, "negatives": [f"{p['query'].split()[0]} handwritten wrong answer"]} for p in plain]
    src = write_jsonl(tmp_path / "given.jsonl", given)
    mine.run(config(tmp_path, [src], "num_negatives=4", out="given"))
    by_key = {r["query_id"]: r for r in read_rows(tmp_path / "plain")}
    rows = read_rows(tmp_path / "given")
    assert rows and len(rows) == len(by_key)
    for r in rows:
        ref = by_key[r["query_id"]]
        assert r["negative_given"] == [True, False, False, False]
        assert r["negatives"][0].endswith("handwritten wrong answer") and r["negative_ranks"][0] == 0
        assert -1.0 <= r["negative_scores"][0] <= 1.0
        assert r["negatives"][1:] == ref["negatives"][:3] and r["negative_ranks"][1:] == ref["negative_ranks"][:3]
