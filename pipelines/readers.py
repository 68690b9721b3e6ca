"""Raw record readers that never lose a record and never crash on one.

``read_records(path)`` yields, in file order, either a :class:`Record` or a :class:`Quarantined`
(path, 1-based line or 0-based row, field, error, raw). File-level damage (truncated gzip or
zstd, a ``.gz``/``.zst`` that is not, a cut parquet footer, a damaged parquet page, an empty
file) yields one file-level ``Quarantined`` row (line -1) after the records read before the
damage (for parquet: the rows of the intact row groups before it). A parquet value that is not
UTF-8 (damaged bytes inside an uncompressed string page, which pyarrow reads unchecked) costs only
its record: ``invalid_utf8`` naming the row group and the field. A record longer than
``max_record_bytes`` is skipped without being held in memory and quarantined as ``oversized``;
decompression runs in bounded pieces, so a compression bomb costs a normal run's memory.
Only infrastructure errors (permissions, a vanished file, a full disk) propagate.
:func:`check_string_field` is the one check of a string field that every stage uses.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from foundation.errors import BadInputError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz", ".json", ".jsonl.zst", ".json.zst",
                  ".ndjson.zst")
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
        raise BadInputError(f"no readable input files (jsonl[.gz|.zst], parquet) in {list(inputs)}")
    return unique


def _open_binary(path: str):
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


READ_BYTES = 1 << 16  # compressed bytes read at a time
OUT_BYTES = 1 << 20  # most bytes decompressed at once, however well the input compresses
GZIP_MAGIC = b"\x1f\x8b"
STREAM_ERRORS = (EOFError, zlib.error, zstandard.ZstdError)  # a damaged compressed stream
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _plain_chunks(fh) -> Iterator[bytes]:
    return iter(lambda: fh.read(OUT_BYTES), b"")


def _gzip_chunks(fh) -> Iterator[bytes]:
    """Decompressed pieces of at most OUT_BYTES (``max_length`` + ``unconsumed_tail``), so a gzip
    bomb never expands in memory; concatenated members are read on. Raises EOFError when cut."""
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for data in iter(lambda: fh.read(READ_BYTES), b""):
        while True:
            if decomp.eof and data:  # the next gzip member
                decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = decomp.decompress(data, OUT_BYTES)
            if out:
                yield out
            data = decomp.unused_data if decomp.eof else decomp.unconsumed_tail
            if not data and len(out) < OUT_BYTES:  # input used up and no output left pending
                break
    if not decomp.eof:
        raise EOFError("compressed stream ended before the end-of-stream marker (truncated gzip)")


class _ZstdFrames:
    """Walks the zstd frame structure of the compressed bytes as they are read, to tell a
    complete stream from a cut one (the zstandard stream reader just stops at a cut)."""

    def __init__(self, fh):
        self.fh, self.buf, self.skip, self.state, self.checksum = fh, b"", 0, "magic", 0
        self.bad = False  # bytes that start no frame (the decompressor reports them too)

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self._feed(data)
        return data

    @property
    def at_frame_end(self) -> bool:
        return self.state == "magic" and not self.buf and not self.skip and not self.bad

    _NEED = {"magic": 4, "skippable": 4, "header": 1, "block": 3}  # bytes of the next header

    def _feed(self, data: bytes) -> None:
        if self.bad:
            return
        buf = self.buf + data  # self.buf: at most the start of one header
        pos = min(self.skip, len(buf))
        self.skip -= pos
        while not self.skip and len(buf) - pos >= self._NEED[self.state]:
            head = buf[pos: pos + self._NEED[self.state]]
            pos += len(head)
            if self.state == "magic":
                if head == ZSTD_MAGIC:
                    self.state = "header"
                elif head[1:] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:  # a skippable frame
                    self.state = "skippable"
                else:
                    self.bad, self.buf = True, b""
                    return
            elif self.state == "skippable":
                self.skip, self.state = int.from_bytes(head, "little"), "magic"
            elif self.state == "header":  # window, dictionary id and content size follow
                fhd = head[0]
                single = bool(fhd & 0x20)
                self.checksum = 4 if fhd & 0x04 else 0
                fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
                self.skip, self.state = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs, "block"
            else:  # a block header: last flag, type, size
                h = int.from_bytes(head, "little")
                self.skip = 1 if (h >> 1) & 3 == 1 else h >> 3  # an RLE block stores one byte
                if h & 1:  # the last block of the frame
                    self.skip += self.checksum
                    self.state = "magic"
            step = min(self.skip, len(buf) - pos)
            pos += step
            self.skip -= step
        self.buf = buf[pos:]


def _zstd_chunks(fh) -> Iterator[bytes]:
    """Decompressed pieces of at most OUT_BYTES from a zstd stream (all frames); raises EOFError when cut."""
    frames = _ZstdFrames(fh)
    reader = zstandard.ZstdDecompressor().stream_reader(frames, read_size=READ_BYTES, read_across_frames=True)
    # Output in pieces of one zstd block (128 KB): a corrupt block then loses no earlier block's records.
    yield from iter(lambda: reader.read(1 << 17), b"")
    if frames.bad:
        raise EOFError("corrupt zstd stream: bytes that start no zstd frame")
    if not frames.at_frame_end:
        raise EOFError("compressed stream ended inside a frame (truncated zstd)")


def _lines(chunks: Iterator[bytes], max_bytes: int) -> Iterator[tuple[bytes | None, bool]]:
    """Yield (line, oversized) from byte chunks; a line over ``max_bytes`` is skipped, never buffered.

    A damaged stream yields the record it was inside of, then its error propagates."""
    pending = bytearray()
    skipping = False
    damage = None
    try:
        for data in chunks:
            start = 0
            while True:
                nl = data.find(b"\n", start)
                end = len(data) if nl < 0 else nl + 1
                if not skipping:
                    if nl >= 0 and not pending and end - start <= max_bytes:
                        yield data[start:end], False  # the common case: a whole line in one chunk
                        start = end
                        continue
                    pending += data[start:end]
                    if len(pending) > max_bytes:
                        skipping, pending = True, bytearray()
                if nl < 0:
                    break
                yield (None, True) if skipping else (bytes(pending), False)
                pending, skipping = bytearray(), False
                start = end
    except STREAM_ERRORS as exc:
        damage = exc
    if pending or skipping:
        yield (None, True) if skipping else (bytes(pending), False)
    if damage is not None:
        raise damage


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


def _compression(path: str, head: bytes) -> str | None:
    """``gzip``/``zstd``/None (plain) from the suffix and the first bytes, or a file-level error."""
    if path.endswith(".zst"):
        if head[:4] != ZSTD_MAGIC and not (head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50):
            raise _NotCompressed("not_zstd: the file is named .zst but is not zstd data")
        return "zstd"
    if path.endswith(".gz") and head[:2] != GZIP_MAGIC:
        raise _NotCompressed("not_gzip: the file is named .gz but is not gzip data")
    return "gzip" if head[:2] == GZIP_MAGIC else None


class _NotCompressed(Exception):
    """A file named as compressed that is not (one file-level quarantine row)."""


def _file_lines(path: str, max_record_bytes: int) -> Iterator[tuple[int, bytes] | Quarantined]:
    """``(line number, raw line)`` of a plain, gzip or zstd text file; an empty file, a false
    compression suffix, an oversized line and a cut stream come as :class:`Quarantined`. At most
    OUT_BYTES are decompressed at a time and a line over ``max_record_bytes`` is skipped unbuffered,
    so a compression bomb costs a normal run's memory."""
    lineno = 0
    try:
        with _open_binary(path) as fh:
            head = fh.read(4)
            fh.seek(0)
            if head == b"":
                yield Quarantined(path, -1, "<file>", "empty_file")
                return
            try:
                kind = _compression(path, head)
            except _NotCompressed as exc:
                yield Quarantined(path, -1, "<file>", str(exc))
                return
            chunks = {"gzip": _gzip_chunks, "zstd": _zstd_chunks, None: _plain_chunks}[kind](fh)
            for raw, oversized in _lines(chunks, max_record_bytes):
                lineno += 1
                if oversized:
                    yield Quarantined(path, lineno, "<record>", f"oversized: record longer than {max_record_bytes} bytes")
                else:
                    yield lineno, raw
    except STREAM_ERRORS as exc:
        yield Quarantined(path, -1, "<file>", f"truncated_or_corrupt: {exc} (after line {lineno})")


def read_jsonl(path: str, max_record_bytes: int) -> Iterator[Record | Quarantined]:
    """JSONL, plain, gzip or zstd (:func:`_file_lines`): one record per line."""
    for item in _file_lines(path, max_record_bytes):
        yield item if isinstance(item, Quarantined) else _parse_json_line(path, *item)


def read_tsv(path: str, max_record_bytes: int) -> Iterator[Record | Quarantined]:
    """Tab-separated lines (plain, gzip or zstd, as :func:`read_jsonl`) -> ``Record(data={"columns":
    [...]})``; a blank line, bad UTF-8 or an oversized line is quarantined with its line number."""
    for item in _file_lines(path, max_record_bytes):
        if isinstance(item, Quarantined):
            yield item
            continue
        lineno, raw = item
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        stripped = raw.rstrip(b"\r\n")
        if not stripped.strip():
            yield Quarantined(path, lineno, "<record>", "empty_line", None)
            continue
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Quarantined(path, lineno, "<record>", f"invalid_utf8: byte {exc.start}: {exc.reason}",
                              _preview(stripped))
            continue
        yield Record(path, lineno, {"columns": text.split("\t")})


def _is_damage(exc: BaseException) -> bool:
    """A pyarrow error about the file's bytes (a bad page, a cut footer), not about the machine:
    pyarrow raises damage as ArrowException or as an OSError without an errno, while permissions,
    a vanished file or a full disk carry an errno and must propagate."""
    return isinstance(exc, pa.ArrowException) or (isinstance(exc, OSError) and exc.errno is None)


def read_parquet(path: str, text_field: str, on_schema_error: str, batch_rows: int = 4096
                 ) -> Iterator[Record | Quarantined]:
    """Row group by row group: a page pyarrow cannot read costs its row group and the rest of the
    file (one file-level row naming the group), never the rows of the intact groups read before
    it. A page that reads but holds values that are not UTF-8 costs only their records (one
    ``invalid_utf8`` row each, naming row group and field; see :func:`_decode_each`)."""
    try:
        pf = pq.ParquetFile(_open_binary(path) if "://" in path else path)
    except (pa.ArrowException, OSError) as exc:
        if not _is_damage(exc):
            raise
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
    for group in range(pf.num_row_groups):
        first = row
        where = f"row group {group} of {pf.num_row_groups}"
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group]):
                try:
                    rows = batch.to_pylist()
                except UnicodeDecodeError:  # a damaged string page: decode value by value
                    rows = _decode_each(batch)
                for data in rows:
                    if isinstance(data, dict):
                        yield Record(path, row, data)
                    else:
                        name, exc, raw = data
                        yield Quarantined(path, row, name, f"invalid_utf8: {where}, field '{name}': "
                                          f"byte {exc.start}: {exc.reason}", _preview(raw))
                    row += 1
        except (pa.ArrowException, OSError) as exc:
            if not _is_damage(exc):
                raise
            error = " ".join(str(exc).split())
            yield Quarantined(path, -1, "<file>", f"bad_parquet: {where} (rows from {first}): {error} (after row {row})")
            return


def _decode_each(batch: pa.RecordBatch) -> list[dict | tuple[str, UnicodeDecodeError, bytes | None]]:
    """The batch's rows, a row with a value that is not UTF-8 replaced by (field, error, raw bytes).

    pyarrow reads a string page without checking its UTF-8 (a damaged byte in an uncompressed
    page is read as is); only the conversion to Python fails, for the whole batch. Here the
    columns that convert are kept and the others are decoded value by value; the first bad value
    of a row (in column order) names it. Raw bytes are None inside a nested column."""
    columns, bad = [], {}
    for name, col in zip(batch.schema.names, batch.columns):
        try:
            columns.append(col.to_pylist())
            continue
        except UnicodeDecodeError:
            pass
        kind = col.type
        raw = col.view(pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()) \
            if pa.types.is_string(kind) or pa.types.is_large_string(kind) else None
        values = []
        for i in range(len(col)):
            try:
                values.append(col[i].as_py())
            except UnicodeDecodeError as exc:
                values.append(None)
                bad.setdefault(i, (name, exc, raw[i].as_py() if raw is not None else None))
        columns.append(values)
    return [bad.get(i) or dict(zip(batch.schema.names, values)) for i, values in enumerate(zip(*columns))]


def read_records(path: str, *, text_field: str = "text", max_record_bytes: int = 8_000_000,
                 on_schema_error: str = "quarantine") -> Iterator[Record | Quarantined]:
    if path.endswith(PARQUET_SUFFIXES):
        yield from read_parquet(path, text_field, on_schema_error)
    else:
        yield from read_jsonl(path, max_record_bytes)


def check_string_field(data: dict, names: str | tuple[str, ...], *, path: str, line: int, required: bool = True,
                       allow_int: bool = False) -> str | None | Quarantined:
    """The ONE check of a string field of a raw record, for every stage and format (JSONL, parquet).

    ``names``: a field name, or alternatives of which the first present one is used. Returns the
    value; None when absent (or null) and not ``required``; or why it cannot be used:
    ``missing_field``, ``not_a_string: <type>`` (a null counts as a missing value only when not
    required), ``lone_surrogate at char N`` (valid JSON, but not encodable as UTF-8).
    ``allow_int``: an integer (not a bool) is accepted and returned as its decimal string, as ids often are.
    An empty string is returned as is: emptiness is decided after normalisation (``empty_text``).
    """
    alternatives = (names,) if isinstance(names, str) else tuple(names)
    name = next((n for n in alternatives if n in data), None)
    value = data.get(name) if name is not None else None
    if value is None and not required:
        return None
    if name is None:
        missing = f"no '{names}'" if isinstance(names, str) else f"none of {list(alternatives)}"
        return Quarantined(path, line, alternatives[0], f"missing_field: {missing}", _record_preview(data))
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return Quarantined(path, line, name, f"not_a_string: {type(value).__name__}", _record_preview(data))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Quarantined(path, line, name, f"lone_surrogate at char {exc.start}",
                           _preview(value.encode("utf-8", errors="replace")))
    return value


def _record_preview(data: dict) -> str | None:
    return _preview(json.dumps(data, ensure_ascii=False, default=str))


def check_text(rec: Record, text_field: str) -> str | Quarantined:
    """The record's text, or why it cannot be used: :func:`check_string_field` of a required field."""
    return check_string_field(rec.data, text_field, path=rec.path, line=rec.line)
