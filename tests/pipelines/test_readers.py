"""docs/reliability.md rows 11-14: every bad record or file is quarantined with path and line."""

import gzip
import io
import json
import os
import tracemalloc
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.readers import Quarantined, Record, check_string_field, check_text, expand_inputs, read_records
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
    ("plain.jsonl.zst", b'{"text": "plain text, not zstd"}\n', "not_zstd"),
    ("empty.jsonl.zst", b"", "empty_file"),
])
def test_file_level_problems(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_bytes(content)
    (got,) = records(path)
    assert isinstance(got, Quarantined) and got.line == -1 and got.field == "<file>" and got.error.startswith(error)


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
    for name in ("a/x.jsonl", "a/y.parquet", "a/z.txt", "a/v.jsonl.zst", "a/u.json.zst", "w.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.gz")])
    assert [p.split("/")[-1] for p in got] == ["u.json.zst", "v.jsonl.zst", "x.jsonl", "y.parquet", "w.jsonl.gz"]
    with pytest.raises(BadInputError, match="not found"):
        expand_inputs([str(tmp_path / "missing.jsonl")])


# ---- compression bombs (row 27), zstd, damaged parquet pages (row 11), the string validator ------
def _bomb(path, compressor, n_mb: int) -> None:
    """One JSONL line of ``n_mb`` MB of repeated bytes, then a normal line, written streaming."""
    with open(path, "wb") as fh:
        fh.write(compressor.compress(b'{"id": "bomb", "text": "'))
        block = b"x" * (1 << 20)
        for _ in range(n_mb):
            fh.write(compressor.compress(block))
        fh.write(compressor.compress(b'"}\n{"id": "after", "text": "after"}\n'))
        fh.write(compressor.flush())


@pytest.mark.parametrize("name", ["bomb.jsonl.gz", "bomb.jsonl.zst"])
def test_compression_bomb_costs_no_memory(tmp_path, name):
    path = tmp_path / name
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if name.endswith(".gz") else \
        zstandard.ZstdCompressor(level=3).compressobj()
    _bomb(path, comp, 120)
    assert path.stat().st_size < 1_000_000  # ~120 KB expanding to 120 MB
    tracemalloc.start()
    try:
        got = list(read_records(str(path), max_record_bytes=1_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(type(g).__name__, g.line) for g in got] == [("Quarantined", 1), ("Record", 2)]
    assert got[0].field == "<record>" and got[0].error == "oversized: record longer than 1000000 bytes"
    assert got[1].data == {"id": "after", "text": "after"}
    assert peak < 50_000_000, f"peak {peak / 1e6:.0f} MB while reading a 120 MB line"


def _docs(n: int) -> bytes:
    return b"".join(json.dumps({"id": str(i), "text": f"doc {i} " + os.urandom(40).hex()}).encode() + b"\n"
                    for i in range(n))


def test_zstd_is_read_like_gzip(tmp_path):
    body = _docs(3000)  # ~ 330 KB: several zstd blocks
    expected = [json.loads(line) for line in body.splitlines()]
    blob = zstandard.ZstdCompressor().compress(body)
    streamed = io.BytesIO()  # no content size in the header, a checksum at the end
    with zstandard.ZstdCompressor(write_checksum=True).stream_writer(streamed, closefd=False) as w:
        w.write(body)
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"notes"
    two_frames = tmp_path / "two.jsonl.zst"  # concatenated frames, as `cat a.zst b.zst` makes
    two_frames.write_bytes(skippable + blob + streamed.getvalue())
    assert [r.data for r in records(two_frames)] == expected + expected

    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    got = records(cut)
    good = [g for g in got if isinstance(g, Record)]
    assert 1000 < len(good) < 3000 and [g.data for g in good] == expected[: len(good)]
    file_rows = [g for g in got if isinstance(g, Quarantined) and g.line == -1]
    assert got[-1] is file_rows[0] and len(file_rows) == 1
    assert file_rows[0].field == "<file>" and "truncated zstd" in file_rows[0].error
    # a cut exactly between two frames is complete; one byte short of the end is not
    cut.write_bytes(skippable + blob)
    assert [r.data for r in records(cut)] == expected
    cut.write_bytes(blob[:-1])
    assert "truncated zstd" in records(cut)[-1].error


def test_damaged_parquet_page_keeps_the_intact_row_groups(tmp_path):
    table = pa.table({"id": [str(i) for i in range(40)], "text": [f"text number {i} " * 5 for i in range(40)]})
    for compression in ("none", "snappy"):
        path = tmp_path / f"damaged-{compression}.parquet"
        pq.write_table(table, path, row_group_size=10, compression=compression)
        meta = pq.ParquetFile(path).metadata
        assert meta.num_row_groups == 4
        offset = meta.row_group(2).column(1).data_page_offset  # the `text` data page of rows 20-29
        blob = bytearray(path.read_bytes())
        blob[offset: offset + 8] = bytes(b ^ 0xFF for b in blob[offset: offset + 8])
        path.write_bytes(bytes(blob))
        got = records(path)
        assert [g.data for g in got[:-1]] == table.slice(0, 20).to_pylist()
        assert [g.line for g in got[:-1]] == list(range(20))
        q = got[-1]
        assert isinstance(q, Quarantined) and (q.line, q.field) == (-1, "<file>")
        assert q.error.startswith("bad_parquet: row group 2 of 4 (rows from 20): ")


def damage_utf8(path, value: str, at: int = 5) -> None:
    """Overwrite two bytes of ``value`` where it is stored in ``path`` (once, as in an uncompressed
    plain page) with ``ff fe``: the page keeps its structure and the value is no longer UTF-8."""
    blob = bytearray(path.read_bytes())
    stored = value.encode("utf-8")
    assert blob.count(stored) == 1, f"{value[:30]!r} is stored {blob.count(stored)} times"
    start = blob.find(stored) + at
    blob[start: start + 2] = b"\xff\xfe"
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_damaged_utf8_in_a_parquet_page_quarantines_those_records_alone(tmp_path, text_type):
    """An uncompressed page whose bytes are damaged inside values: pyarrow reads it, only the values
    are not UTF-8. Those records are quarantined naming row group and field; all others are kept."""
    n = 40
    table = pa.table({
        "id": pa.array([f"id-{i:02d}" for i in range(n)]),
        "text": pa.array([f"text number {i:02d} of the file" for i in range(n)], text_type),
        "tags": pa.array([[f"tag-{i:02d}", "x"] for i in range(n)], pa.list_(pa.string())),
    })
    path = tmp_path / "damaged.parquet"
    pq.write_table(table, path, row_group_size=10, compression="none", use_dictionary=False)
    damage_utf8(path, "text number 23 of the file")  # row group 2
    damage_utf8(path, "text number 25 of the file")
    damage_utf8(path, "id-35", at=1)  # row group 3, another field
    damage_utf8(path, "tag-12", at=1)  # inside a nested column, row group 1
    with pytest.raises(UnicodeDecodeError):
        pq.read_table(path).to_pylist()  # what failed the whole stage before
    got = records(path)
    assert [g.line for g in got] == list(range(n))
    bad = {g.line: g for g in got if isinstance(g, Quarantined)}
    assert {i: (q.path, q.field, q.error) for i, q in bad.items()} == {
        12: (str(path), "tags", "invalid_utf8: row group 1 of 4, field 'tags': byte 1: invalid start byte"),
        23: (str(path), "text", "invalid_utf8: row group 2 of 4, field 'text': byte 5: invalid start byte"),
        25: (str(path), "text", "invalid_utf8: row group 2 of 4, field 'text': byte 5: invalid start byte"),
        35: (str(path), "id", "invalid_utf8: row group 3 of 4, field 'id': byte 1: invalid start byte"),
    }
    assert bad[23].raw == "text \ufffd\ufffdmber 23 of the file" and bad[12].raw is None
    kept = [g for g in got if isinstance(g, Record)]
    assert [g.data for g in kept] == [r for i, r in enumerate(table.to_pylist()) if i not in bad]


@pytest.mark.parametrize("data,names,kw,expected", [
    ({"text": "ok"}, "text", {}, "ok"),
    ({"text": ""}, "text", {}, ""),  # emptiness is decided after normalisation
    ({}, "text", {}, ("text", "missing_field: no 'text'")),
    ({"document": "d"}, ("positive", "document"), {}, "d"),
    ({}, ("positive", "document"), {}, ("positive", "missing_field: none of ['positive', 'document']")),
    ({"text": None}, "text", {}, ("text", "not_a_string: NoneType")),
    ({"text": ["a"]}, "text", {}, ("text", "not_a_string: list")),
    ({"text": "lone \ud800"}, "text", {}, ("text", "lone_surrogate at char 5")),
    ({"id": 7}, "id", {"allow_int": True}, "7"),
    ({"id": True}, "id", {"allow_int": True}, ("id", "not_a_string: bool")),
    ({"id": 7}, "id", {}, ("id", "not_a_string: int")),
    ({"id": None}, "id", {"required": False}, None),
    ({}, "id", {"required": False}, None),
])
def test_check_string_field(data, names, kw, expected):
    got = check_string_field(data, names, path="f.jsonl", line=3, **kw)
    if isinstance(expected, tuple):
        assert isinstance(got, Quarantined) and (got.path, got.line, got.field, got.error) == ("f.jsonl", 3, *expected)
    else:
        assert got == expected
