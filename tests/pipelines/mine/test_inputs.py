"""What `mgte mine` reads: a `mgte pairs` output, candidate files with bad records, IVF through the
stage, and the rule function on its own against a direct computation."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from foundation.config import load_config
from pipelines import mine, pairs
from pipelines.mine.select import Rule, choose, ranked_without
from tests.pipelines.mine.conftest import config, read_rows, topic_pairs, write_jsonl


def test_a_pairs_output_is_read_through_its_marked_data_files(tmp_path, fake):
    raw = write_jsonl(tmp_path / "raw" / "qa.jsonl", [{**p, "id": f"{p['query_id']}-{i}"}
                                                      for i, p in enumerate(topic_pairs())])
    pairs.run(load_config(pairs.Config, None, ["tokenizer=null", "lang.identify=false", "engine=local"],
                          data={"input": [str(raw)], "output": str(tmp_path / "pairs")}))
    manifest = mine.run(config(tmp_path, [tmp_path / "pairs"]))
    n_pairs = pairs.read_pairs(tmp_path / "pairs")["topics"].num_rows
    assert manifest["counts"]["input"] == n_pairs and manifest["counts"]["kept"] > 0
    rows = read_rows(tmp_path / "out")
    assert all(r["positive_id"] is None and r["source"] == "topics" for r in rows)


def test_candidate_records_are_accounted_apart(tmp_path, fake):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    docs = [{"id": f"c{i}", "text": f"{t} candidate text {i}"} for i, t in enumerate(["cats", "dogs"] * 30)]
    cand = tmp_path / "cands.parquet"
    pq.write_table(pa.Table.from_pylist(docs + [{"id": "c0", "text": "again"}, {"id": "e", "text": " "}]), cand)
    manifest = mine.run(config(tmp_path, [src], candidates=str(cand), num_negatives=2))
    assert manifest["extra"]["candidates"] == {"read": 62, "kept": 60, "duplicate_id": 1, "empty_text": 1}
    bad = write_jsonl(tmp_path / "bad.jsonl", docs, extra_lines=["{oops", json.dumps({"text": "no id"})])
    manifest = mine.run(config(tmp_path, [src], "reader.error_budget=0.1", candidates=str(bad), out="o2"))
    assert manifest["extra"]["candidates"]["quarantined"] == 2
    assert pq.read_table(tmp_path / "o2" / manifest["outputs"]["candidate_quarantine"][0]).num_rows == 2


def test_ivf_probing_every_list_gives_the_flat_table(tmp_path, fake):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs(10))
    mine.run(config(tmp_path, [src], out="flat"))
    manifest = mine.run(config(tmp_path, [src], "search.index=ivf", "search.nlist=2", "search.nprobe=2", out="ivf"))
    assert manifest["extra"]["search"] == {"index": "ivf", "nlist": 2}
    assert read_rows(tmp_path / "ivf") == read_rows(tmp_path / "flat")


def test_choose_against_a_direct_computation():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(5, 60))
        rows = rng.permutation(100)[:n]
        scores = np.sort(rng.uniform(-0.2, 0.9, n).astype(np.float32))[::-1]
        removed = rng.choice(rows, size=int(rng.integers(0, 3)), replace=False)
        copies_of = set(rng.choice(rows, size=int(rng.integers(0, 3)), replace=False).tolist()) - set(removed.tolist())
        lo, hi = sorted(rng.integers(1, 30, 2).tolist())
        rule = Rule(num_negatives=int(rng.integers(1, 5)), lo=lo, hi=max(hi, lo), seed=3,
                    max_score_ratio=[None, 0.9][trial % 2], margin=[None, 0.05][(trial // 2) % 2],
                    select=["top", "random"][(trial // 4) % 2])
        pos = float(rng.uniform(0.3, 1.0))
        r, s, k = ranked_without(rows, scores, removed, rule.hi)
        got, facts = choose(r, s, k, pos, rule, [3, trial], copies=np.isin(r, list(copies_of)))
        ok = [i for i, (row, score, rank) in enumerate(zip(r, s, k))
              if rule.lo <= rank <= rule.hi and row not in copies_of
              and (rule.max_score_ratio is None or score < rule.max_score_ratio * pos)
              and (rule.margin is None or score < pos - rule.margin)]
        assert facts["passing"] == len(ok) and not set(r) & set(removed.tolist())
        assert list(k) == list(range(1, len(r) + 1))
        if len(ok) < rule.num_negatives:
            assert got is None
        elif rule.select == "top":
            assert list(got) == ok[:rule.num_negatives]
        else:
            assert set(got) <= set(ok) and len(set(got)) == rule.num_negatives and list(got) == sorted(got)
            again, _ = choose(r, s, k, pos, rule, [3, trial], copies=np.isin(r, list(copies_of)))
            assert list(again) == list(got)
