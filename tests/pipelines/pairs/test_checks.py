"""The per-pair filters with their exact reasons, truncation and scores, and dedup survivors."""

import json

from pipelines import pairs
from storage_schemas.pairs import PAIR
from .conftest import DE_BODY, EN_BODY, config, pair


FILTER_CASES = [
    (pair("empty_q", "", "body"), "empty_query"),
    (pair("empty_p", "title", ""), "empty_positive"),
    (pair("same", "Stai barando", "stai  barando"), "identical_query_positive"),
    (pair("long_q", " ".join(["word"] * 40), EN_BODY), "over_long_query"),
    (pair("long_p", "title", " ".join(["word"] * 200)), "over_long_positive"),
    (pair("mismatch", "A fox story", DE_BODY, lang="en"), "lang_mismatch"),
    (pair("not_in_set", "A fox story", EN_BODY, lang="xh"), "lang_not_in_set"),
    (pair("translation_bad", EN_BODY, EN_BODY + " Again.", lang="en-de"), "lang_mismatch"),
]
KEPT_CASES = [
    pair("ok_en", "A fox story", EN_BODY, lang="en"),
    pair("ok_translation", EN_BODY, DE_BODY, lang="en-de"),
    pair("ok_undeclared", "Fuchs", DE_BODY),
    pair("ok_short", "hi", "hello there"),  # too short to identify: kept, language unknown
]


def test_checker_gives_the_exact_reason_per_example(tmp_path):
    cfg = config(tmp_path, [], "limits.query_max_tokens=8", "limits.drop_query_tokens=32",
                 "limits.document_max_tokens=16", "limits.drop_document_tokens=128")
    check = pairs.PairChecker(cfg)
    outcomes = [check(c) for c in [c for c, _ in FILTER_CASES] + KEPT_CASES]
    assert [(d["pair_id"], d["reason"]) for k, d in outcomes if d is not None] == \
        [(c["pair_id"], reason) for c, reason in FILTER_CASES]
    assert [(k["pair_id"], k["lang"], k["positive_truncated"]) for k, d in outcomes if k is not None] == \
        [("ok_en", "en", True), ("ok_translation", "en-de", True), ("ok_undeclared", "de", True),
         ("ok_short", "und", False)]


def test_checker_records_truncation_and_scores(tmp_path):
    cfg = config(tmp_path, [], "limits.query_max_tokens=8", "limits.document_max_tokens=16")
    kept, dropped = pairs.PairChecker(cfg)(pair("x", "A fox story about the farm and the old fence", EN_BODY, "en"))
    assert dropped is None
    assert kept["query_tokens"] > 8 and kept["query_truncated"]
    assert kept["positive_tokens"] > 16 and kept["positive_truncated"]
    PAIR.from_rows([kept])  # the row fits the declared table
    _, dropped = pairs.PairChecker(cfg)(pair("y", "A fox story", DE_BODY, "en"))
    assert json.loads(dropped["scores"])["positive_lid"][0] == "de"




def test_dedup_keeps_the_earliest_record_of_each_normalised_pair(tmp_path):
    cfg = config(tmp_path, [], "lang.identify=false")
    check = pairs.PairChecker(cfg)
    rows = [check(pair(pid, q, d, line=line))[0] for pid, q, d, line in [
        ("first", "Café menu", "Coffee and cake", 1),
        ("nfd", "Cafe\u0301 menu", "Coffee  and\ncake", 2),  # NFD + other whitespace: same pair
        ("other", "Café menu", "Tea and cake", 3),  # same query, other positive: kept
        ("earlier", "Tea", "Milk", 0),
        ("later", "Tea", "Milk", 9),
    ]]
    groups: dict = {}
    for row in rows:  # the stage groups by pair hash (its dedup tasks split that space into parts)
        groups.setdefault(row["pair_hash"], []).append(row)
    outcomes = [pairs.pick_survivor(group) for group in groups.values()]
    assert sorted(first["pair_id"] for first, _ in outcomes) == sorted(["first", "other", "earlier"])
    assert sorted((d["pair_id"], d["reason"], d["duplicate_of"]) for _, dups in outcomes for d in dups) == \
        [("later", "exact_duplicate", "earlier"), ("nfd", "exact_duplicate", "first")]
