"""Raw pair records -> pair dicts, hashes and dedup survivors: the ONE place raw pairs become rows.

The stage's tasks (:mod:`pipelines.pairs.tasks`) and the in-process reader of raw pair files
(:func:`pipelines.pairs.read.read_raw_pairs`, used by CPT and eval) all read through
:func:`read_pair_records`, check with :class:`pipelines.pairs.checks.PairChecker` and dedup with
:func:`split_survivor`, so they cannot drift apart.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Iterator

import xxhash

from foundation.text import text_hash, text_key  # noqa: F401  (text_hash: re-exported)
from pipelines.corpus.langs import MGTE_LANGS, to_mgte
from pipelines.corpus.normalize import normalize_text
from pipelines.pairs.config import ReaderConfig
from pipelines.readers import Quarantined, Record, check_string_field, read_records

AUDIT_CHARS = 1000  # characters of query / positive / raw record kept in dropped and quarantine rows


def norm_key(text: str) -> str:
    """The text a hash is taken of (:func:`foundation.text.text_key`: NFC, controls removed,
    whitespace runs collapsed): the one notion of "the same text" of every stage."""
    return text_key(text)


def pair_hash(query: str, positive: str) -> str:
    return xxhash.xxh3_128_hexdigest((norm_key(query) + "\x00" + norm_key(positive)).encode("utf-8"))


def file_stem(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".zst", ".jsonl", ".ndjson", ".json", ".parquet", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def safe_name(source: str) -> str:
    """A directory-safe, unique name for a source (``source=NAME``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "source"
    return clean if clean == source else f"{clean}-{xxhash.xxh32_hexdigest(source.encode())}"


def parse_pair(rec: Record, reader: ReaderConfig) -> dict | Quarantined:
    """A read record -> a pair dict, or why it cannot be used (missing or non-string fields)."""
    sides = {}
    for side, names in (("query", reader.query_fields), ("positive", reader.positive_fields)):
        value = check_string_field(rec.data, tuple(names), path=rec.path, line=rec.line)
        if isinstance(value, Quarantined):
            return value
        sides[side] = value
    meta = {}
    for key, field in (("id", reader.id_field), ("source", reader.source_field), ("lang", reader.lang_field)):
        value = check_string_field(rec.data, field, path=rec.path, line=rec.line, required=False, allow_int=True)
        if isinstance(value, Quarantined):
            return value
        meta[key] = value if value is not None and value.strip() else None
    name = rec.path.rsplit("/", 1)[-1]
    return {
        "pair_id": meta["id"] or f"{name}:{rec.line}",
        "query": normalize_text(sides["query"]),
        "positive": normalize_text(sides["positive"]),
        "source": meta["source"] or file_stem(rec.path),
        "lang": meta["lang"],
        "path": rec.path,
        "line": rec.line,
    }


def read_pair_records(path: str, reader: ReaderConfig) -> Iterator[dict | Quarantined]:
    """One raw pair file -> pair dicts and :class:`Quarantined` records, in file order."""
    for item in read_records(path, text_field=reader.query_fields[0], max_record_bytes=reader.max_record_bytes,
                             on_schema_error=reader.on_schema_error):
        yield parse_pair(item, reader) if isinstance(item, Record) else item


def parse_lang(declared: str | None) -> tuple[str | None, str | None]:
    """``en`` -> (en, en); ``en-de`` -> (en, de); ``zh-cn`` -> (zh, zh); None -> (None, None)."""
    if declared is None:
        return None, None
    code = declared.strip().lower().replace("_", "-")
    parts = code.split("-")
    if len(parts) == 2 and all(to_mgte(p) in MGTE_LANGS for p in parts):
        return to_mgte(parts[0]), to_mgte(parts[1])
    lang = to_mgte(code)
    return lang, lang


def lang_label(query_lang: str | None, positive_lang: str | None) -> str:
    q, p = query_lang or "und", positive_lang or "und"
    return q if q == p else f"{q}-{p}"


def dropped_row(pair: dict, reason: str, scores: dict | None = None, duplicate_of: str | None = None) -> dict:
    """A PAIR_DROPPED row: the pair's identity, why, and the start of its texts for an audit."""
    return {
        "pair_id": pair["pair_id"], "reason": reason, "source": pair["source"], "lang": pair["lang"],
        "duplicate_of": duplicate_of, "scores": json.dumps(scores, sort_keys=True) if scores else None,
        "path": pair["path"], "line": pair["line"],
        "query": pair["query"][:AUDIT_CHARS], "positive": pair["positive"][:AUDIT_CHARS],
    }


def survivor_key(row: dict) -> tuple:
    return (row["path"], row["line"], row["pair_id"])


def split_survivor(rows: Iterable[dict]) -> tuple[dict, list[dict]]:
    """The dedup rule: of one pair-hash group the earliest record by (path, line) survives ->
    (survivor, the others). Rows need only the :func:`survivor_key` fields."""
    ordered = sorted(rows, key=survivor_key)
    return ordered[0], ordered[1:]


def duplicate_row(row: dict, survivor_id: str) -> dict:
    return dropped_row(row, "exact_duplicate", {"pair_hash": row["pair_hash"]}, survivor_id)


def pick_survivor(rows: Iterable[dict]) -> tuple[dict, list[dict]]:
    """One pair-hash group -> (survivor, its ``exact_duplicate`` dropped rows)."""
    first, rest = split_survivor(rows)
    return first, [duplicate_row(r, first["pair_id"]) for r in rest]
