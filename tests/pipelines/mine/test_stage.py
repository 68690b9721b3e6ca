"""`mgte mine` end to end with the fake embedder: every rule against a brute-force reference,
positives / siblings / copies never negatives, too_few_negatives, cache reuse, kill + rerun,
accounting and bad input."""

import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from foundation.config import config_to_dict
from pipelines import mine
from pipelines.pairs.records import text_hash
from tests.pipelines.mine.conftest import REPO, config, fake_vector, read_dropped, read_rows, topic_pairs, write_jsonl


def reference(pairs, candidates, cfg, vector=None):
    """Brute force, written apart from pipelines/mine (only the text hash is shared): score every
    candidate, sort by (-score, id) in Python, drop the query's own positives, then the window,
    copies, ratio and margin rules in turn: {(query_id, positive_id): (negative ids, ranks) or None (too few)}."""
    vector = vector or fake_vector
    ids = [c[0] for c in candidates]
    vecs = np.stack([vector(c[1]) for c in candidates])
    hashes = [text_hash(c[1]) for c in candidates]
    positives = defaultdict(list)
    for p in pairs:
        positives[p["query_id"]].append(p)
    lo, hi = cfg.rank_range
    out = {}
    for p in pairs:
        own = positives[p["query_id"]]
        own_ids = {o["positive_id"] for o in own if o.get("positive_id")}
        no_id_hashes = {text_hash(o["positive"]) for o in own if not o.get("positive_id")}
        own_hashes = {text_hash(o["positive"]) for o in own}
        removed = {i for i, (cid, h) in enumerate(zip(ids, hashes)) if cid in own_ids or h in no_id_hashes}
        copies = {i for i, h in enumerate(hashes) if h in own_hashes} - removed
        q = vector(p["query"])
        scores = (vecs @ q).astype(np.float32)
        order = [i for i in sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i])) if i not in removed]
        pos = float(np.float32(q @ vector(p["positive"])))
        passing = []
        for rank, i in enumerate(order[:hi], 1):
            ok = lo <= rank <= hi and i not in copies
            ok &= cfg.max_score_ratio is None or scores[i] < cfg.max_score_ratio * pos
            ok &= cfg.margin is None or scores[i] < pos - cfg.margin
            if ok:
                passing.append((ids[i], rank))
        out[(p["query_id"], p["positive_id"] or p["positive"])] = passing[:cfg.num_negatives] if len(passing) >= cfg.num_negatives else None
    return out


def pool(pairs):
    seen = {}
    for p in pairs:
        seen.setdefault(p["positive_id"], p["positive"])
    return list(seen.items())


def check_against_reference(out, pairs, candidates, cfg, vector=None):
    ref = reference(pairs, candidates, cfg, vector)
    rows = {(r["query_id"], r["positive_id"] or r["positive"]): r for r in read_rows(out)}
    dropped = {(r["query_id"], r["positive_id"] or r["positive"]) for r in read_dropped(out)
               if r["reason"] == "too_few_negatives"}
    assert set(rows) == {k for k, v in ref.items() if v is not None}
    assert dropped == {k for k, v in ref.items() if v is None}
    for key, row in rows.items():
        assert list(zip(row["negative_ids"], row["negative_ranks"])) == ref[key]
        assert row["negative_ranks"] == sorted(row["negative_ranks"])
    return rows


@pytest.mark.parametrize("rule", [{}, {"max_score_ratio": 0.9}, {"margin": 0.05, "rank_range": [3, 30]}])
def test_negatives_equal_a_brute_force_ranking(tmp_path, fake, rule):
    pairs = topic_pairs()
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = config(tmp_path, [src], "encode.store_dtype=float32", "encode.shard_size=20", "search.query_chunk=7", **rule)
    mine.run(cfg)
    rows = check_against_reference(tmp_path / "out", pairs, pool(pairs), cfg)
    assert len(rows) > 20
    for row in rows.values():
        assert len(row["negatives"]) == cfg.num_negatives
        if cfg.max_score_ratio is not None:
            assert max(row["negative_scores"]) < cfg.max_score_ratio * row["positive_score"]


def topic_only_vector(text: str) -> np.ndarray:
    """Every text of a topic (its first word) gets the same vector: scores tie in blocks."""
    return fake_vector(text.split()[0] if text.split() else "")


def test_tied_scores_follow_the_candidate_id_order_of_the_brute_force(tmp_path, monkeypatch, fake):
    """With scores tied in whole topics, which tied candidates fall inside the window is decided by
    the id tie-break alone; the ratio filter then drops the positive's own topic (score = positive's)."""
    import tests.pipelines.mine.conftest as fake_module

    monkeypatch.setattr(fake_module, "fake_vector", topic_only_vector)
    pairs = topic_pairs()
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = config(tmp_path, [src], "encode.store_dtype=float32", "search.query_chunk=5", rank_range=[2, 25],
                 max_score_ratio=0.95, num_negatives=4)
    mine.run(cfg)
    rows = check_against_reference(tmp_path / "out", pairs, pool(pairs), cfg, topic_only_vector)
    assert len(rows) > 10
    ranked = [r for r in rows.values() if len(set(r["negative_scores"])) < len(r["negative_scores"])]
    assert ranked and all(r["negative_ids"] == sorted(r["negative_ids"], key=lambda i: (
        -r["negative_scores"][r["negative_ids"].index(i)], i)) for r in ranked)  # ties listed by id


def test_no_positive_sibling_or_copy_of_a_positive_is_a_negative(tmp_path, fake):
    pairs = topic_pairs()
    src = write_jsonl(tmp_path / "pairs.jsonl", [{**p, "corpus_id": p.pop("positive_id")} for p in topic_pairs()])
    corpus = [{"_id": p["positive_id"], "title": "", "text": p["positive"]} for p in pairs]
    corpus += [{"_id": f"copy-{p['positive_id']}", "text": "  " + p["positive"].replace(" ", "  ") + " "}
               for p in pairs]  # the same text under another id, other spacing
    corpus += [{"_id": f"titled-{i}", "title": "cats", "text": f"cats facts {i}"} for i in range(5)]
    cand = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    cfg = config(tmp_path, [src], "encode.store_dtype=float32", candidates=str(cand), rank_range=[1, 15])
    mine.run(cfg)
    rows = read_rows(tmp_path / "out")
    own = defaultdict(set)
    for p in pairs:
        own[p["query_id"]] |= {p["positive_id"], f"copy-{p['positive_id']}"}
    assert rows and all(not (set(r["negative_ids"]) & own[r["query_id"]]) for r in rows)
    assert any(i.startswith("titled-") for r in rows for i in r["negative_ids"])
    titled = {i: t for r in rows for i, t in zip(r["negative_ids"], r["negatives"])}
    assert titled.get("titled-0", "cats\ncats facts 0") == "cats\ncats facts 0"  # title + text, as eval joins them
    check_against_reference(tmp_path / "out", pairs, [(c["_id"], (c["title"] + "\n" + c["text"]) if c.get("title")
                                                      else c["text"]) for c in corpus], cfg)


def test_too_few_negatives_are_dropped_never_padded_and_counted(tmp_path, fake):
    pairs = topic_pairs()
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs, extra_lines=["{broken", json.dumps({"query": 3})])
    cfg = config(tmp_path, [src], "reader.error_budget=0.5", rank_range=[55, 70], num_negatives=9)
    manifest = mine.run(cfg)
    c = manifest["counts"]
    assert c["input"] == len(pairs) + 2 == c["kept"] + c["dropped"] + c["quarantined"] and c["quarantined"] == 2
    assert manifest["dropped_by_reason"]["too_few_negatives"] > 0 and c["kept"] > 0
    assert all(len(r["negative_ids"]) == 9 for r in read_rows(tmp_path / "out"))
    for d in read_dropped(tmp_path / "out"):
        assert d["reason"] != "too_few_negatives" or json.loads(d["scores"])["passing"] < 9


def test_changing_only_the_rule_remines_from_the_cached_embeddings(tmp_path, fake):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    first = mine.run(config(tmp_path, [src], "encode.shard_size=16", out="a"))
    encoded = fake.calls
    assert encoded > 0 and first["extra"]["encoded_shards"] > 0
    second = mine.run(config(tmp_path, [src], "encode.shard_size=16", "select=random", out="b", rank_range=[2, 9],
                             max_score_ratio=0.99, margin=0.01))
    assert fake.calls == encoded  # nothing encoded again
    assert second["extra"]["encoded_shards"] == 0
    assert second["extra"]["encode"]["candidates"]["cache_key"] == first["extra"]["encode"]["candidates"]["cache_key"]
    assert all(2 <= r for row in read_rows(tmp_path / "b") for r in row["negative_ranks"])
    mine.run(config(tmp_path, [src], "encode.shard_size=16", "encode.doc_max_length=64", out="c"))
    assert fake.calls > encoded  # another encode setting is another cache entry


def test_random_select_is_seeded_and_in_rank_order(tmp_path, fake):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    runs = [read_rows(tmp_path / o) for o in ("a", "b") if mine.run(config(tmp_path, [src], "select=random", out=o))]
    assert runs[0] == runs[1]
    assert all(r["negative_ranks"] == sorted(r["negative_ranks"]) for r in runs[0])
    top = read_rows(tmp_path / "c") if mine.run(config(tmp_path, [src], out="c")) else None
    assert [r["negative_ids"] for r in top] != [r["negative_ids"] for r in runs[0]]


@pytest.mark.parametrize("fault", ["point=before_marker,count=7", "point=encode_shard,count=2"])
def test_killed_run_then_rerun_equals_a_clean_run(tmp_path, fake, fault):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    sets = ["encode.shard_size=16", "search.query_chunk=10"]
    mine.run(config(tmp_path, [src], *sets, out="clean", cache_dir=str(tmp_path / "clean-cache")))
    cfg = config(tmp_path, [src], *sets, out="killed")
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config_to_dict(cfg)))
    cmd = [sys.executable, "-m", "tests.pipelines.mine.run_fake", str(path)]
    env = dict(os.environ, MGTE_FAULT=f"{fault},action=exit137,once={tmp_path / 'once'}")
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 137, first.stderr[-2000:]
    assert not (tmp_path / "killed" / "_SUCCESS").exists()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert read_rows(tmp_path / "killed") == read_rows(tmp_path / "clean")
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    killed = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert killed["counts"] == clean["counts"] and killed["dropped_by_reason"] == clean["dropped_by_reason"]
    assert not list((tmp_path / "killed").rglob("*.tmp")) and not list((tmp_path / "cache").rglob("*.tmp"))


def test_cli_bad_input_is_one_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": 1, "positive": 2}] * 3)
    proc = subprocess.run([sys.executable, "-m", "dags.cli", "mine", "--input", str(bad), "--output",
                           str(tmp_path / "o"), "--set", f"cache_dir={tmp_path / 'c'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip() and " INFO " not in l]
    assert len(lines) == 1 and "bad.jsonl" in lines[0] and "query" in lines[0], proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dags.cli", "mine", "--input", str(bad), "--output",
                           str(tmp_path / "o2"), "--set", "rank_range=[5,2]"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "rank_range" in proc.stderr


def test_pairs_without_ids_group_by_query_text_and_remove_positives_by_text(tmp_path, fake):
    pairs = [{"query": p["query"], "positive": p["positive"]} for p in topic_pairs()]
    pairs.append({"query": pairs[0]["query"], "positive": "  " + pairs[0]["positive"] + "  "})  # a spaced copy
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = config(tmp_path, [src], "encode.store_dtype=float32")
    manifest = mine.run(cfg)
    assert manifest["dropped_by_reason"].get("duplicate_pair") == 1  # the spaced copy is the same pair
    named = [{"query_id": text_hash(p["query"]), "positive_id": None, **p} for p in pairs[:-1]]
    pool_ids = {}
    for p in named:
        pool_ids.setdefault("h:" + text_hash(p["positive"]), p["positive"])
    check_against_reference(tmp_path / "out", named, list(pool_ids.items()), cfg)
    rows = read_rows(tmp_path / "out")
    siblings = defaultdict(set)
    for p in named:
        siblings[p["query_id"]].add("h:" + text_hash(p["positive"]))
    assert rows and all(not (set(r["negative_ids"]) & siblings[r["query_id"]]) for r in rows)
