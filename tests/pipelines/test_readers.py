"""RELIABILITY.md rows 11-14: every bad record or file is quarantined with path and line."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.readers import Quarantined, Record, check_text, expand_inputs, read_records
from foundation.errors import BadInputError


def records(path, **kw):
    out = []
    for item in read_records(str(path), **kw):
        if isinstance(item, Record):
            checked = check_text(item, "text")
            item = checked if isinstance(checked, Quarantined) else item
        out.append(item)
    return out


def test_bad_lines_are_quarantined_alone(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        b'{"id": "a", "text": "good one"}\r\n',  # CRLF is fine
        b"not json\n",
        b'{"id": "b"}\n',  # missing text
        b'{"id": "c", "text": 5}\n',  # text not a string
        b'{"id": "d", "text": "bad \xff byte"}\n',  # invalid UTF-8
        b'{"id": "e", "text": "lone \\ud800 surrogate"}\n',
        b"\n",  # empty line
        b'[1, 2]\n',  # not an object
        b'{"id": "f", "text": "nul \\u0000 inside"}\n',
        b'{"id": "g", "text": "last"}',  # no trailing newline
    ]
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(lines))  # BOM at the start of the file
    got = records(path)
    assert [type(g).__name__ for g in got] == ["Record", "Quarantined", "Quarantined", "Quarantined", "Quarantined",
                                             "Quarantined", "Quarantined", "Quarantined", "Record", "Record"]
    q = [g for g in got if isinstance(g, Quarantined)]
    assert [(g.line, g.field) for g in q] == [(2, "<record>"), (3, "text"), (4, "text"), (5, "<record>"),
                                             (6, "text"), (7, "<record>"), (8, "<record>")]
    assert q[0].error.startswith("bad_json") and q[1].error.startswith("missing_field")
    assert q[2].error == "not_a_string: int" and q[3].error.startswith("invalid_utf8")
    assert q[4].error.startswith("lone_surrogate") and q[5].error == "empty_line"
    assert all(g.path == str(path) for g in q)
    assert got[0].data["text"] == "good one"


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
    body = b"".join(json.dumps({"id": str(i), "text": f"doc {i} " * 50}).encode() + b"\n" for i in range(200))
    blob = gzip.compress(body)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    got = records(path)
    good = [g for g in got if isinstance(g, Record)]
    assert 0 < len(good) < 200
    last = got[-1]
    assert isinstance(last, Quarantined) and last.line == -1 and last.field == "<file>"
    assert "truncated" in last.error


@pytest.mark.parametrize("name,content,error", [
    ("empty.jsonl", b"", "empty_file"),
    ("empty.jsonl.gz", b"", "empty_file"),
    ("fake.jsonl.gz", b'{"text": "plain text, not gzip"}\n', "not_gzip"),
])
def test_file_level_problems(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_bytes(content)
    (got,) = records(path)
    assert isinstance(got, Quarantined) and got.line == -1 and got.error.startswith(error)


def test_parquet_cut_footer_and_wrong_schema(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["a", None]}), good)
    got = records(good)
    assert isinstance(got[0], Record) and isinstance(got[1], Quarantined) and got[1].line == 1

    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    (q,) = records(cut)
    assert q.line == -1 and q.error.startswith("bad_parquet")

    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"id": ["1"], "text": [3]}), wrong)
    (q,) = records(wrong)
    assert q.field == "text" and "expected string" in q.error
    with pytest.raises(BadInputError, match="wrong.parquet.*'text' has type int64"):
        records(wrong, on_schema_error="fail")


def test_oversized_record_is_skipped_without_losing_the_next(tmp_path):
    huge = json.dumps({"id": "big", "text": "x" * 3_000_000}).encode()
    for name, data in (("big.jsonl", huge + b'\n{"text": "after"}\n'),
                       ("big.jsonl.gz", gzip.compress(huge + b'\n{"text": "after"}\n'))):
        path = tmp_path / name
        path.write_bytes(data)
        got = records(path, max_record_bytes=1_000_000)
        assert isinstance(got[0], Quarantined) and got[0].line == 1 and got[0].error.startswith("oversized")
        assert isinstance(got[1], Record) and got[1].line == 2 and got[1].data["text"] == "after"


def test_expand_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.jsonl", "a/y.parquet", "a/z.txt", "w.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.gz")])
    assert [p.split("/")[-1] for p in got] == ["x.jsonl", "y.parquet", "w.jsonl.gz"]
    with pytest.raises(BadInputError, match="not found"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
