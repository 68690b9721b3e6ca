"""Raw records -> pair dicts: quarantine with path, line and field (through the Beam read
transform), declared language codes."""

import gzip
import json
import os

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from pipelines import pairs
from .conftest import beam_pipeline, write_jsonl


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


def test_parse_lang():
    assert pairs.parse_lang("en-de") == ("en", "de")
    assert pairs.parse_lang("zh-cn") == ("zh", "zh")
    assert pairs.parse_lang("EN") == ("en", "en")
    assert pairs.parse_lang(None) == (None, None)
