"""What ``mgte mine`` reads: pair records (raw files or a ``mgte pairs`` output) and candidates.

Pair records are JSONL (.gz/.zst) or parquet rows with ``query`` and ``positive`` (or
``document``), optionally ``query_id``, ``positive_id`` (or BEIR-style ``corpus_id``), ``source``
and ``lang``. A ``mgte pairs`` output directory stands for its data files (read through the one
reader of stage outputs). Several rows with one ``query_id`` are several positives of one query;
without a ``query_id`` the query is named by the hash of its normalised text, so equal query texts
are one query. A record that cannot be used is quarantined (path, line, field), an empty side is
dropped (``empty_query`` / ``empty_positive``).

Candidates are a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``; title and text joined with
``doc_template`` as ``mgte eval`` does) or JSONL/parquet with ``id`` and ``text``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from foundation.errors import BadInputError
from foundation.ledger import stage_output, stage_output_files
from foundation.text import text_hash
from pipelines.pairs.records import AUDIT_CHARS, file_stem
from pipelines.corpus.normalize import normalize_text
from pipelines.readers import Quarantined, Record, check_string_field, expand_inputs, read_records
from storage_schemas.pairs import PAIR

QUERY_FIELDS = ("query",)
POSITIVE_FIELDS = ("positive", "document")
POSITIVE_ID_FIELDS = ("positive_id", "corpus_id")
CANDIDATE_ID_FIELDS = ("_id", "id")


def resolve_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Pair files: a `mgte pairs` output directory stands for the data files of its marked tasks."""
    if not inputs:
        raise BadInputError("mine: no input (give --input: pair files or a `mgte pairs` output)")
    files: list[str] = []
    for item in inputs:
        root = Path(item)
        if (manifest := stage_output(root, "pairs", who="mine")) is not None:
            files += [str(p.resolve()) for p in stage_output_files(root, "data", PAIR, fields=("query", "positive"),
                                                                     manifest=manifest)]
        else:
            files += expand_inputs([item])
    return sorted(dict.fromkeys(files))


def _optional(rec: Record, names: tuple[str, ...] | str) -> str | None | Quarantined:
    value = check_string_field(rec.data, names, path=rec.path, line=rec.line, required=False, allow_int=True)
    return value if isinstance(value, Quarantined) or (value is not None and value.strip()) else None


def parse_pair(rec: Record) -> dict | Quarantined:
    """A read record -> a pair row (texts normalised; ids and hashes filled), or why it is unusable."""
    sides = {}
    for side, names in (("query", QUERY_FIELDS), ("positive", POSITIVE_FIELDS)):
        value = check_string_field(rec.data, names, path=rec.path, line=rec.line)
        if isinstance(value, Quarantined):
            return value
        sides[side] = normalize_text(value)
    meta = {}
    for key, names in (("query_id", "query_id"), ("positive_id", POSITIVE_ID_FIELDS), ("source", "source"),
                       ("lang", "lang")):
        value = _optional(rec, names)
        if isinstance(value, Quarantined):
            return value
        meta[key] = value.strip() if value is not None else None
    query_hash = text_hash(sides["query"])
    return {"path": rec.path, "line": rec.line, "query_id": meta["query_id"] or query_hash,
            "query": sides["query"], "positive_id": meta["positive_id"], "positive": sides["positive"],
            "positive_hash": text_hash(sides["positive"]), "source": meta["source"] or file_stem(rec.path),
            "lang": meta["lang"]}


def empty_reason(row: dict) -> str | None:
    if not row["query"].strip():
        return "empty_query"
    if not row["positive"].strip():
        return "empty_positive"
    return None


def dropped_row(row: dict, reason: str, scores: dict | None = None, positive_score: float | None = None) -> dict:
    """A HARD_NEGATIVES_DROPPED row: the (query, positive), why, and the numbers behind it."""
    return {"query_id": row["query_id"], "positive_id": row.get("positive_id"), "reason": reason,
            "source": row.get("source"), "scores": json.dumps(scores, sort_keys=True) if scores else None,
            "positive_score": positive_score, "query": row["query"][:AUDIT_CHARS],
            "positive": row["positive"][:AUDIT_CHARS], "path": row["path"], "line": row["line"]}


def read_pair_file(path: str, max_record_bytes: int, on_schema_error: str) -> Iterator[dict | Quarantined]:
    """One pair file -> pair rows and :class:`Quarantined` records, in file order."""
    for item in read_records(path, text_field=QUERY_FIELDS[0], max_record_bytes=max_record_bytes,
                             on_schema_error=on_schema_error):
        yield parse_pair(item) if isinstance(item, Record) else item


def parse_candidate(rec: Record, template: str) -> dict | Quarantined:
    """A candidate record -> {id, text, hash} (BEIR title + text joined with ``template``)."""
    doc_id = check_string_field(rec.data, CANDIDATE_ID_FIELDS, path=rec.path, line=rec.line, allow_int=True)
    if isinstance(doc_id, Quarantined):
        return doc_id
    text = check_string_field(rec.data, "text", path=rec.path, line=rec.line)
    if isinstance(text, Quarantined):
        return text
    title = check_string_field(rec.data, "title", path=rec.path, line=rec.line, required=False)
    if isinstance(title, Quarantined):
        return title
    text = normalize_text(text)
    title = normalize_text(title or "").strip()
    body = template.format(title=title, text=text) if title else text
    return {"id": doc_id.strip(), "text": body, "hash": text_hash(body), "line": rec.line}


def read_candidate_file(path: str, template: str, max_record_bytes: int) -> Iterator[dict | Quarantined]:
    for item in read_records(path, text_field="text", max_record_bytes=max_record_bytes, on_schema_error="fail"):
        yield parse_candidate(item, template) if isinstance(item, Record) else item
