"""What ``mgte mine`` reads: pair records (raw files or a ``mgte pairs`` output) and candidates.

Pair records are JSONL (.gz/.zst) or parquet rows with ``query`` and ``positive`` (or
``document``, or ``positives``: a list, one pair per positive), optionally ``negatives`` (a list of
texts the set gives), ``query_id``, ``positive_id`` (or BEIR-style ``corpus_id``), ``source`` and
``lang``. Labelled fine-tuning sets (a BEIR directory's train split, MS MARCO-style TSV) are read by
:mod:`pipelines.mine.sets`; held-out splits are refused there. A ``mgte pairs`` output directory
stands for its data files (read through the one reader of stage outputs). Several rows with one ``query_id`` are several positives of one query;
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
from pipelines.mine.sets import (TSV_SUFFIXES, beir_root, is_beir_dir, read_beir_pairs, read_tsv_pairs, refuse_held_out,
                                 train_qrels)
from pipelines.readers import Quarantined, Record, check_string_field, expand_inputs, read_records
from storage_schemas.pairs import PAIR

QUERY_FIELDS = ("query",)
POSITIVE_FIELDS = ("positive", "document")
POSITIVE_ID_FIELDS = ("positive_id", "corpus_id")
CANDIDATE_ID_FIELDS = ("_id", "id")


def resolve_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Pair files: a `mgte pairs` output directory stands for the data files of its marked tasks, a
    BEIR directory (or a directory holding some, and then nothing else of it) for the
    ``qrels/train.tsv`` of each; a held-out split is refused."""
    if not inputs:
        raise BadInputError("mine: no input (give --input: pair files, fine-tuning sets or a `mgte pairs` output)")
    files: list[str] = []
    for item in inputs:
        root = Path(item)
        if (manifest := stage_output(root, "pairs", who="mine")) is not None:
            files += [str(p.resolve()) for p in stage_output_files(root, "data", PAIR, fields=("query", "positive"),
                                                                     manifest=manifest)]
            continue
        sets = [] if not root.is_dir() else [root] if is_beir_dir(root) else sorted(
            {p.parent for p in root.glob("**/qrels") if is_beir_dir(p.parent)})
        if sets:  # a directory holding BEIR sets stands for their train splits (nothing else in it is read)
            files += [train_qrels(s) for s in sets]
            continue
        for f in expand_inputs([item]):  # a qrels/train.tsv given as a file is a BEIR set too
            refuse_held_out(f)
            files.append(f)
    return sorted(dict.fromkeys(files))


def _optional(rec: Record, names: tuple[str, ...] | str) -> str | None | Quarantined:
    value = check_string_field(rec.data, names, path=rec.path, line=rec.line, required=False, allow_int=True)
    return value if isinstance(value, Quarantined) or (value is not None and value.strip()) else None


def _text_list(rec: Record, name: str) -> list[str] | None | Quarantined:
    """An optional list-of-strings field (``positives``, ``negatives``), normalised; None when absent."""
    value = rec.data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return Quarantined(rec.path, rec.line, name, f"not_a_list_of_strings: {type(value).__name__}",
                           str(value)[:1000])
    texts = [normalize_text(v) for v in value]
    if (empty := next((i for i, t in enumerate(texts) if not t.strip()), None)) is not None:
        return Quarantined(rec.path, rec.line, name, f"empty_text at index {empty}", str(value)[:1000])
    return texts


def parse_pair(rec: Record) -> list[dict] | Quarantined:
    """A read record -> its pair rows (one per positive; texts normalised; ids and hashes filled;
    given negatives attached), or why it is unusable."""
    query = check_string_field(rec.data, QUERY_FIELDS, path=rec.path, line=rec.line)
    if isinstance(query, Quarantined):
        return query
    query = normalize_text(query)
    if "positives" in rec.data:
        positives = _text_list(rec, "positives")
        if isinstance(positives, Quarantined):
            return positives
        if not positives:
            return Quarantined(rec.path, rec.line, "positives", "empty_list: no positive", None)
    else:
        positive = check_string_field(rec.data, POSITIVE_FIELDS, path=rec.path, line=rec.line)
        if isinstance(positive, Quarantined):
            return positive
        positives = [normalize_text(positive)]
    negatives = _text_list(rec, "negatives")
    if isinstance(negatives, Quarantined):
        return negatives
    meta = {}
    for key, names in (("query_id", "query_id"), ("positive_id", POSITIVE_ID_FIELDS), ("source", "source"),
                       ("lang", "lang")):
        value = _optional(rec, names)
        if isinstance(value, Quarantined):
            return value
        meta[key] = value.strip() if value is not None else None
    negatives = negatives or []
    return [{"path": rec.path, "line": rec.line, "query_id": meta["query_id"] or text_hash(query), "query": query,
             "positive_id": meta["positive_id"] if len(positives) == 1 else None, "positive": positive,
             "positive_hash": text_hash(positive), "source": meta["source"] or file_stem(rec.path),
             "lang": meta["lang"], "negatives": negatives, "negative_ids": [None] * len(negatives)}
            for positive in positives]


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


def read_pair_file(path: str, cfg) -> Iterator[dict | Quarantined]:
    """One input file -> pair rows (a row with a ``reason`` is dropped) and :class:`Quarantined`
    records, in file order: a BEIR set's train qrels, a TSV file, or JSONL/parquet pair records."""
    reader = cfg.reader
    if beir_root(path) is not None:
        yield from read_beir_pairs(path, cfg.doc_template, reader.max_record_bytes)
        return
    if path.endswith(TSV_SUFFIXES):
        yield from read_tsv_pairs(path, reader.max_record_bytes)
        return
    for item in read_records(path, text_field=QUERY_FIELDS[0], max_record_bytes=reader.max_record_bytes,
                             on_schema_error=reader.on_schema_error):
        parsed = parse_pair(item) if isinstance(item, Record) else item
        yield from ([parsed] if isinstance(parsed, Quarantined) else parsed)


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
