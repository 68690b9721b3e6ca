"""Raw records -> pair dicts (the stage's read_pair_records): quarantine with path, line and
field, declared language codes."""

import gzip
import json
import os

from pipelines import pairs
from pipelines.readers import Quarantined
from .conftest import write_jsonl


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

    got = {str(path): list(pairs.read_pair_records(str(path), pairs.ReaderConfig())) for path in (good, truncated)}
    rows = [r for r in got[str(good)] if not isinstance(r, Quarantined)]
    assert [(r["pair_id"], r["source"], r["positive"]) for r in rows] == [("a", "qa", "d one"),
                                                                       ("qa.jsonl:2", "forum", "d two")]
    bad = [r for r in got[str(good)] if isinstance(r, Quarantined)]
    assert [(q.line, q.field, q.error.split(":")[0]) for q in bad] == [
        (3, "positive", "missing_field"), (4, "query", "not_a_string"), (5, "<record>", "bad_json"),
        (6, "<record>", "not_an_object")]
    cut = got[str(truncated)]
    # the records before the cut are read, in order from the first, then one file-level row
    before = [r for r in cut if not isinstance(r, Quarantined)]
    assert 100 < len(before) < 400 and [r["pair_id"] for r in before] == [f"cut{i}" for i in range(len(before))]
    # the half line at the cut is a bad record; then one file-level row
    assert [(q.line, q.field, q.error.split(":")[0]) for q in cut if isinstance(q, Quarantined)] == \
        [(len(before) + 1, "<record>", "bad_json"), (-1, "<file>", "truncated_or_corrupt")]


def test_parse_lang():
    assert pairs.parse_lang("en-de") == ("en", "de")
    assert pairs.parse_lang("zh-cn") == ("zh", "zh")
    assert pairs.parse_lang("EN") == ("en", "en")
    assert pairs.parse_lang(None) == (None, None)
