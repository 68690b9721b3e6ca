"""`mgte pairs`: Beam transforms (TestPipeline + assert_that, quarantine included), filters with
their exact reasons, dedup survivors, the stage's accounting, shards, reruns and a killed task."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from foundation.config import load_config
from pipelines import pairs
from foundation.ledger import read_manifest
from foundation.errors import BadInputError, StageConflict
from storage_schemas.pairs import PAIR

REPO = Path(__file__).resolve().parents[2]
# Beam's DirectRunner first tries to download the Prism runner binary; the in-process FnApiRunner
# (what DirectRunner falls back to) never touches the network.
BEAM = ["beam.options=--runner=FnApiRunner"]


def beam_pipeline():
    return BeamTestPipeline(runner="FnApiRunner")


def xlmr_tokenizer() -> str:
    import semantra_multilingual

    path = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    assert path.is_file(), path
    return str(path)


def config(tmp_path, inputs, *sets, **kw):
    return load_config(pairs.Config, None, [f"tokenizer={xlmr_tokenizer()}", *BEAM, *sets],
                       data={"input": [str(p) for p in inputs], "output": str(tmp_path / "out"), **kw})


def write_jsonl(path: Path, rows, extra_lines=()):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


EN_BODY = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence."
DE_BODY = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer vom alten Holzzaun zusieht."


# -- read + quarantine ------------------------------------------------------------------------


def test_read_pairs_quarantines_bad_records_with_path_and_line(tmp_path):
    good = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "a", "query": "q one", "positive": "d one"},
        {"query": "q two", "document": "d two", "source": "forum"},  # `document` is accepted
        {"query": "q three"},
        {"query": ["not", "text"], "positive": "x"},
    ], extra_lines=["{not json", "[1, 2]"])
    truncated = tmp_path / "cut.jsonl.gz"
    lines = [json.dumps({"id": f"cut{i}", "query": f"q{i} " + os.urandom(8).hex(), "positive": f"p{i}"})
             for i in range(400)]
    blob = gzip.compress("\n".join(lines).encode())
    truncated.write_bytes(blob[: len(blob) // 2])

    with beam_pipeline() as p:
        out = p | beam.Create([str(good), str(truncated)]) | pairs.ReadPairs(pairs.ReaderConfig())
        assert_that(out.pairs
                    | "NotCut" >> beam.Filter(lambda r: not r["pair_id"].startswith("cut"))
                    | "Ids" >> beam.Map(lambda r: (r["pair_id"], r["source"], r["positive"])),
                    equal_to([("a", "qa", "d one"), ("qa.jsonl:2", "forum", "d two")]), label="pairs")
        # the records before the cut are read, in order from the first
        assert_that(out.pairs
                    | "BeforeCut" >> beam.Filter(lambda r: r["pair_id"].startswith("cut"))
                    | "Count" >> beam.combiners.Count.Globally()
                    | "Some" >> beam.Map(lambda n: 100 < n < 400), equal_to([True]), label="before_cut")
        assert_that(out.quarantine
                    | "NoCut" >> beam.Filter(lambda r: r["path"] == str(good))
                    | "Key" >> beam.Map(lambda r: (r["line"], r["field"], r["error"].split(":")[0])),
                    equal_to([(3, "positive", "missing_field"), (4, "query", "not_a_string"),
                              (5, "<record>", "bad_json"), (6, "<record>", "not_an_object")]), label="quarantine")
        assert_that(out.quarantine
                    | "Cut" >> beam.Filter(lambda r: r["path"] == str(truncated) and r["field"] == "<file>")
                    | "CutKey" >> beam.Map(lambda r: (r["line"], r["field"], r["error"].split(":")[0])),
                    equal_to([(-1, "<file>", "truncated_or_corrupt")]), label="file_level")


# -- filters ----------------------------------------------------------------------------------


def pair(pid, query, positive, lang=None, source="s", line=1):
    return {"pair_id": pid, "query": query, "positive": positive, "source": source, "lang": lang,
            "path": "/in/x.jsonl", "line": line}


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


def test_filter_pairs_gives_the_exact_reason_per_example(tmp_path):
    cfg = config(tmp_path, [], "limits.query_max_tokens=8", "limits.drop_query_tokens=32",
                 "limits.document_max_tokens=16", "limits.drop_document_tokens=128")
    with beam_pipeline() as p:
        out = p | beam.Create([c for c, _ in FILTER_CASES] + KEPT_CASES) | pairs.FilterPairs(cfg)
        assert_that(out.dropped | "Reasons" >> beam.Map(lambda r: (r["pair_id"], r["reason"])),
                    equal_to([(c["pair_id"], reason) for c, reason in FILTER_CASES]), label="dropped")
        assert_that(out.kept | "Kept" >> beam.Map(lambda r: (r["pair_id"], r["lang"], r["positive_truncated"])),
                    equal_to([("ok_en", "en", True), ("ok_translation", "en-de", True),
                              ("ok_undeclared", "de", True), ("ok_short", "und", False)]), label="kept")


def test_checker_records_truncation_and_scores(tmp_path):
    cfg = config(tmp_path, [], "limits.query_max_tokens=8", "limits.document_max_tokens=16")
    kept, dropped = pairs.PairChecker(cfg)(pair("x", "A fox story about the farm and the old fence", EN_BODY, "en"))
    assert dropped is None
    assert kept["query_tokens"] > 8 and kept["query_truncated"]
    assert kept["positive_tokens"] > 16 and kept["positive_truncated"]
    PAIR.from_rows([kept])  # the row fits the declared table
    _, dropped = pairs.PairChecker(cfg)(pair("y", "A fox story", DE_BODY, "en"))
    assert json.loads(dropped["scores"])["positive_lid"][0] == "de"


def test_parse_lang():
    assert pairs.parse_lang("en-de") == ("en", "de")
    assert pairs.parse_lang("zh-cn") == ("zh", "zh")
    assert pairs.parse_lang("EN") == ("en", "en")
    assert pairs.parse_lang(None) == (None, None)


# -- dedup ------------------------------------------------------------------------------------


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
    with beam_pipeline() as p:
        out = p | beam.Create(rows) | pairs.DedupPairs()
        assert_that(out.kept | "K" >> beam.Map(lambda r: r["pair_id"]), equal_to(["first", "other", "earlier"]),
                    label="kept")
        assert_that(out.dropped | "D" >> beam.Map(lambda r: (r["pair_id"], r["reason"], r["duplicate_of"])),
                    equal_to([("nfd", "exact_duplicate", "first"), ("later", "exact_duplicate", "earlier")]),
                    label="dropped")


# -- the stage --------------------------------------------------------------------------------


def small_inputs(tmp_path: Path) -> list[Path]:
    d = tmp_path / "in"
    d.mkdir()
    a = write_jsonl(d / "title_body.jsonl", [
        {"id": f"tb{i}", "query": f"Title number {i}", "positive": f"{EN_BODY} Item {i}.", "lang": "en"}
        for i in range(7)
    ] + [{"id": "tb-dup", "query": "Title number 0", "positive": f"{EN_BODY} Item 0.", "lang": "en"},
         {"id": "tb-empty", "query": "Empty", "positive": "  "}], extra_lines=["{broken"])
    b = write_jsonl(d / "translation.jsonl.gz", [
        {"id": f"tr{i}", "query": f"{EN_BODY} ({i})", "positive": f"{DE_BODY} ({i})", "lang": "en-de",
         "source": "translation"} for i in range(5)
    ] + [{"id": "tr-dup-of-tb", "query": "Title number 1", "positive": f"{EN_BODY} Item 1.", "source": "translation"}])
    c = d / "qa.parquet"
    pq.write_table(pa.table({"query": ["Why is the sky blue?", "What is rain?"],
                             "positive": ["Rayleigh scattering of sunlight by the air.", "Water falling from clouds."],
                             "source": ["qa", "qa"]}), c)
    return [a, b, c]


def read_data(out: Path) -> dict[str, list[str]]:
    return {s: sorted(t.column("pair_id").to_pylist()) for s, t in pairs.read_pairs(out).items()}


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
    assert not (out / "candidates").exists() and not list(out.rglob("*.tmp"))

    assert pairs.run(cfg) == read_manifest(out)  # a rerun is a no-op
    with pytest.raises(StageConflict):
        pairs.run(config(tmp_path, cfg.input, "lang.min_chars=31", "reader.error_budget=0.2"))


def test_error_budget_names_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "positive": "p"}], extra_lines=["{x", "{y"])
    with pytest.raises(BadInputError, match=r"bad\.jsonl line 2 field '<record>'"):
        pairs.run(config(tmp_path, [bad]))


def test_parquet_without_the_query_column_fails_naming_file_and_field(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"title": ["x"], "positive": ["y"]}), path)
    with pytest.raises(Exception, match=r"wrong\.parquet.*'query'"):
        pairs.run(config(tmp_path, [path]))


def test_killed_task_is_redone_and_the_output_equals_a_clean_run(tmp_path):
    """RELIABILITY rows 1-2: killed between a task's files and its marker; the rerun finishes it."""
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
    ref_manifest, manifest = read_manifest(tmp_path / "ref" / "out"), read_manifest(out)
    assert manifest["counts"] == ref_manifest["counts"]
    assert manifest["dropped_by_reason"] == ref_manifest["dropped_by_reason"]
    for rel in ref_manifest["outputs"]["data"]:
        assert pq.read_table(out / rel).equals(pq.read_table(tmp_path / "ref" / "out" / rel))
    assert not list(out.rglob("*.tmp"))
