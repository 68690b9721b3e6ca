"""Raw record readers that never lose a record and never crash on one.

``read_records(path)`` yields, in file order, either a :class:`Record` or a :class:`Quarantined`
(path, 1-based line or 0-based row, field, error, raw). File-level damage (truncated gzip, a
``.gz`` that is not gzip, a cut parquet footer, an empty file) yields one file-level
``Quarantined`` row (line -1) after the records read before the damage. A record longer than
``max_record_bytes`` is skipped without being held in memory and quarantined as ``oversized``.
Only infrastructure errors (permissions, a vanished file) propagate.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import BadInputError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz", ".json", ".jsonl.zst")
PARQUET_SUFFIXES = (".parquet",)
RAW_PREVIEW = 1000


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    line: int
    data: dict = field(repr=False)


@dataclass(frozen=True, slots=True)
class Quarantined:
    path: str
    line: int
    field: str
    error: str
    raw: str | None = None

    def row(self) -> dict:
        return {"path": self.path, "line": self.line, "field": self.field, "error": self.error, "raw": self.raw}


def _preview(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw[: RAW_PREVIEW * 4].decode("utf-8", errors="replace")
    return raw[:RAW_PREVIEW].encode("utf-8", errors="replace").decode("utf-8")


def is_supported(path: str) -> bool:
    return path.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def expand_inputs(inputs: tuple[str, ...] | list[str]) -> list[str]:
    """Files, directories (searched recursively for supported files) and globs -> sorted paths.

    fsspec URLs (``s3://``, ``gs://``, ...) are expanded with fsspec.
    """
    out: list[str] = []
    for item in inputs:
        if "://" in item and not item.startswith("file://"):
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(item)
            found = []
            for p in paths:
                found += [f for f in fs.find(p)] if fs.isdir(p) else [p]
            out += [fs.unstrip_protocol(f) for f in found if is_supported(f)]
            continue
        item = item.removeprefix("file://")
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches:
            raise BadInputError(f"input {item!r} matches no file")
        for m in matches:
            if os.path.isdir(m):
                out += sorted(str(p) for p in Path(m).rglob("*") if p.is_file() and is_supported(str(p)))
            elif os.path.exists(m):
                out.append(os.path.abspath(m))
            else:
                raise BadInputError(f"input file not found: {m}")
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(os.path.abspath(p) if "://" not in p else p)
    if not unique:
        raise BadInputError(f"no readable input files (jsonl[.gz], parquet) in {list(inputs)}")
    return unique


def _open_binary(path: str):
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def _gzip_lines(fh, max_bytes: int) -> Iterator[tuple[bytes | None, bool]]:
    """Yield (line, oversized) from a gzip stream with bounded memory; raises on damage."""
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = bytearray()
    skipping = False
    while True:
        chunk = fh.read(1 << 20)
        if not chunk:
            break
        data = decomp.decompress(chunk)
        while decomp.unused_data:  # concatenated gzip members
            rest = decomp.unused_data
            decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data += decomp.decompress(rest)
        start = 0
        while True:
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl + 1]
            if not skipping:
                pending += piece
                if len(pending) > max_bytes:
                    skipping = True
                    pending = bytearray()
            if nl < 0:
                break
            yield (None, True) if skipping else (bytes(pending), False)
            pending, skipping = bytearray(), False
            start = nl + 1
    if not decomp.eof:
        if pending or skipping:
            yield (None, True) if skipping else (bytes(pending), False)
        raise EOFError("compressed stream ended before the end-of-stream marker (truncated gzip)")
    if pending or skipping:
        yield (None, True) if skipping else (bytes(pending), False)


def _plain_lines(fh, max_bytes: int) -> Iterator[tuple[bytes | None, bool]]:
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the record
                line = fh.readline(1 << 20)
            yield None, True
            continue
        yield line, False


def _parse_json_line(path: str, lineno: int, raw: bytes) -> Record | Quarantined:
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a BOM at the start of the file is an encoding mark, not content
    stripped = raw.rstrip(b"\r\n")
    if not stripped.strip():
        return Quarantined(path, lineno, "<record>", "empty_line", None)
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Quarantined(path, lineno, "<record>", f"invalid_utf8: byte {exc.start}: {exc.reason}",
                           _preview(stripped))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Quarantined(path, lineno, "<record>", f"bad_json: {exc.msg} at column {exc.colno}", _preview(text))
    if not isinstance(data, dict):
        return Quarantined(path, lineno, "<record>", f"not_an_object: {type(data).__name__}", _preview(text))
    return Record(path, lineno, data)


def read_jsonl(path: str, max_record_bytes: int) -> Iterator[Record | Quarantined]:
    lineno = 0
    try:
        with _open_binary(path) as fh:
            head = fh.read(2)
            fh.seek(0)
            if path.endswith(".gz") and head != b"\x1f\x8b":
                if head == b"":
                    yield Quarantined(path, -1, "<file>", "empty_file")
                else:
                    yield Quarantined(path, -1, "<file>", "not_gzip: the file is named .gz but is not gzip data")
                return
            if head == b"":
                yield Quarantined(path, -1, "<file>", "empty_file")
                return
            lines = _gzip_lines(fh, max_record_bytes) if head == b"\x1f\x8b" else _plain_lines(fh, max_record_bytes)
            for raw, oversized in lines:
                lineno += 1
                if oversized:
                    yield Quarantined(path, lineno, "<record>", f"oversized: record longer than {max_record_bytes} bytes")
                else:
                    yield _parse_json_line(path, lineno, raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        yield Quarantined(path, -1, "<file>", f"truncated_or_corrupt: {exc} (after line {lineno})")


def read_parquet(path: str, text_field: str, on_schema_error: str, batch_rows: int = 4096
                 ) -> Iterator[Record | Quarantined]:
    try:
        pf = pq.ParquetFile(_open_binary(path) if "://" in path else path)
    except pa.ArrowException as exc:
        yield Quarantined(path, -1, "<file>", f"bad_parquet: {exc}")
        return
    schema = pf.schema_arrow
    problem = None
    if text_field not in schema.names:
        problem = f"missing column '{text_field}' (columns: {schema.names})"
    elif not (pa.types.is_string(schema.field(text_field).type) or pa.types.is_large_string(schema.field(text_field).type)):
        problem = f"column '{text_field}' has type {schema.field(text_field).type}, expected string"
    if problem:
        if on_schema_error == "fail":
            raise BadInputError(f"{path}: wrong schema: {problem}")
        yield Quarantined(path, -1, text_field, f"wrong_schema: {problem}")
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for data in batch.to_pylist():
                yield Record(path, row, data)
                row += 1
    except pa.ArrowException as exc:
        yield Quarantined(path, -1, "<file>", f"bad_parquet: {exc} (after row {row})")


def read_records(path: str, *, text_field: str = "text", max_record_bytes: int = 8_000_000,
                 on_schema_error: str = "quarantine") -> Iterator[Record | Quarantined]:
    if path.endswith(PARQUET_SUFFIXES):
        yield from read_parquet(path, text_field, on_schema_error)
    else:
        yield from read_jsonl(path, max_record_bytes)


def check_text(rec: Record, text_field: str) -> str | Quarantined:
    """The record's text, or why it cannot be used (missing, not a string, lone surrogates)."""
    if text_field not in rec.data:
        return Quarantined(rec.path, rec.line, text_field, f"missing_field: no '{text_field}'",
                           _preview(json.dumps(rec.data, ensure_ascii=False, default=str)))
    text = rec.data[text_field]
    if not isinstance(text, str):
        return Quarantined(rec.path, rec.line, text_field, f"not_a_string: {type(text).__name__}",
                           _preview(json.dumps(rec.data, ensure_ascii=False, default=str)))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Quarantined(rec.path, rec.line, text_field, f"lone_surrogate at char {exc.start}",
                           _preview(text.encode("utf-8", errors="replace")))
    return text
