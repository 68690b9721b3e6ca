"""`mgte audit` on a `mgte mine` output: score distributions (overall and per source), the rank
histogram, suspected false negatives, drops by reason and source, the rule counts behind
too_few_negatives, the cache use; ``mine.json`` holds the numbers, checked against a recount from
the mined and dropped tables."""

import json
import re
from collections import Counter

import pytest

from dags.cli import main
from pipelines import mine
from tests.pipelines.mine.conftest import config, read_dropped, read_rows, topic_pairs, write_jsonl


def _pairs() -> list[dict]:
    """Two sources; some rows with a given negative (rank 0); an empty query and a repeated pair
    (dropped before mining)."""
    rows = topic_pairs()
    for r in rows[::2]:
        r["source"] = "other"
    for r in rows[1::5]:
        r["negatives"] = [f"{r['query'].split()[0]} handwritten wrong answer {r['query_id']}"]
    rows.append({**rows[0]})  # duplicate_pair
    rows.append({"query_id": "blank", "query": "  ", "positive_id": "x", "positive": "cats text", "source": "topics"})
    return rows


def _page(root) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (root / "audit" / "index.html").read_text()))


def test_audit_page_of_a_mine_output(tmp_path, fake, capsys):
    src = write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    manifest = mine.run(config(tmp_path, [src], rank_range=[1, 30], num_negatives=4, margin=None))
    out = tmp_path / "out"
    assert main(["audit", str(out)]) == 0
    text = _page(out)
    facts = json.loads((out / "audit" / "mine.json").read_text())
    rows, dropped = read_rows(out), read_dropped(out)

    # the recount: every (row, negative) with a score at or above the row's positive score
    expected = sorted((r["query_id"], r["negative_ids"][j], s) for r in rows
                      for j, s in enumerate(r["negative_scores"]) if s >= r["positive_score"])
    assert expected, "the fixture must mine some negatives scoring above their positive"
    got = sorted((f["query_id"], f["negative_id"], f["negative_score"]) for f in facts["false_negatives"])
    assert got == expected and facts["false_negatives_total"] == len(expected)
    assert all(f["negative_score"] - f["positive_score"] == f["excess"] >= 0 for f in facts["false_negatives"])
    assert f"{len(expected)} negatives score at or above their own positive" in text
    top = facts["false_negatives"][0]
    assert top["excess"] == max(f["excess"] for f in facts["false_negatives"])
    assert top["negative"] in text and top["query"] in text  # listed with the texts

    ranks = Counter(k for r in rows for k in r["negative_ranks"])
    assert facts["rank_histogram"] == {str(k): n for k, n in sorted(ranks.items()) if k > 0}
    assert facts["given_negatives"] == ranks[0] > 0
    assert {(f["query_id"], f["negative_id"]) for f in facts["false_negatives"] if f["given"]} == {
        (r["query_id"], r["negative_ids"][j]) for r in rows for j, s in enumerate(r["negative_scores"])
        if s >= r["positive_score"] and r["negative_given"][j]}
    assert f"{sum(ranks.values()) - ranks[0]} mined negatives over {len(facts['rank_histogram'])} ranks" in text

    for source in ("topics", "other"):
        mine_rows = [r for r in rows if r["source"] == source]
        s = facts["sources"][source]
        assert s["rows"] == len(mine_rows) > 0
        assert s["positive"]["mean"] == pytest.approx(sum(r["positive_score"] for r in mine_rows) / len(mine_rows), rel=1e-12)
        assert s["dropped"] == sum(d["source"] == source for d in dropped)
        assert s["false_negatives"] == sum(1 for r in mine_rows for x in r["negative_scores"]
                                           if x >= r["positive_score"])
    # drops: input = kept + dropped(reason) + quarantined, every reason with examples
    c, reasons = manifest["counts"], manifest["dropped_by_reason"]
    assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"] and sum(reasons.values()) == c["dropped"]
    assert {"duplicate_pair", "empty_query"} <= set(reasons)
    assert Counter(d["reason"] for d in facts["dropped_by_reason_and_source"] for _ in range(d["rows"])) \
        == Counter(d["reason"] for d in dropped) == Counter(reasons)
    for reason, n in reasons.items():
        assert f"{reason} ({n})" in text  # the samples per reason
    assert "shards encoded" in text
    for png in ("scores.png", "ranks.png", "scores_per_source.png"):
        assert (out / "audit" / png).stat().st_size > 5000


def test_rule_counts_of_too_few_negatives(tmp_path, fake):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    manifest = mine.run(config(tmp_path, [src], rank_range=[55, 70], num_negatives=9))
    assert main(["audit", str(tmp_path / "out")]) == 0
    text = _page(tmp_path / "out")
    assert f"too_few_negatives ({manifest['dropped_by_reason']['too_few_negatives']})" in text
    assert "candidates left after each rule" in text and "passing" in text
    facts = json.loads((tmp_path / "out" / "audit" / "mine.json").read_text())
    lost = {d["query_id"] for d in read_dropped(tmp_path / "out")} - {r["query_id"] for r in read_rows(tmp_path / "out")}
    assert facts["queries_without_rows_by_reason"] == ({"too_few_negatives": len(lost)} if lost else {})


def test_a_negative_scoring_exactly_its_positive_is_a_suspected_false_negative():
    from pipelines.audit.mine import false_negatives

    row = {"query_id": "q", "positive_id": "p", "source": "s", "query": "q?", "positive": "p.", "positive_score": 0.5,
           "negative_ids": ["a", "b", "c", "d"], "negatives": ["A", "B", "C", "D"], "negative_ranks": [0, 3, 4, 9],
           "negative_scores": [0.5, 0.49, 0.75, 0.5], "negative_given": None}
    found = false_negatives([row])
    assert [(f["negative_id"], f["rank"], f["given"], f["excess"]) for f in found] == [
        ("c", 4, False, 0.25), ("a", 0, True, 0.0), ("d", 9, False, 0.0)]


def test_diff_of_two_mining_runs(tmp_path, fake, capsys):
    src = write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    mine.run(config(tmp_path, [src], rank_range=[1, 30], num_negatives=3, out="a"))
    mine.run(config(tmp_path, [src], rank_range=[1, 30], num_negatives=8, margin=0.3, out="b"))
    assert main(["audit", "diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0, capsys.readouterr().err
    facts = json.loads((tmp_path / "b" / "audit" / "diff" / "diff.json").read_text())
    assert facts["stage"] == "mine"
    side = {k: read_rows(tmp_path / k) for k in "ab"}
    drops = {k: read_dropped(tmp_path / k) for k in "ab"}
    for source in ("topics", "other"):
        n = {k: sum(r["source"] == source for r in side[k]) for k in "ab"}
        d = {k: sum(r["source"] == source for r in drops[k]) for k in "ab"}
        s = facts["mine"]["sources"][source]
        assert s["rows"] == {"old": n["a"], "new": n["b"], "delta": n["b"] - n["a"]}
        assert s["dropped"] == {"old": d["a"], "new": d["b"], "delta": d["b"] - d["a"]}
    reasons = {k: Counter(r["reason"] for r in drops[k]) for k in "ab"}
    assert facts["dropped_by_reason"]["too_few_negatives"]["new"] == reasons["b"]["too_few_negatives"] > 0
    assert facts["dropped_by_reason"]["duplicate_pair"] == {"old": 1, "new": 1, "delta": 0}
    lost = {r["query_id"] for r in side["a"]} - {r["query_id"] for r in side["b"]}
    assert lost and facts["mine"]["queries"]["removed"] == len(lost) and facts["mine"]["queries"]["removed_ids"] == sorted(lost)
    ranks = {k: [x for r in side[k] for x in r["negative_ranks"] if x > 0] for k in "ab"}  # mined ones
    assert facts["mine"]["mean_rank"]["old"] == pytest.approx(sum(ranks["a"]) / len(ranks["a"]))
