"""Labelled fine-tuning sets as ``mgte mine`` input, beside pair files (docs/mining.md, "Fine-tuning sets").

- A BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``; read with
  :mod:`pipelines.eval.beir`'s readers): one pair row per judgement with label > 0 (several
  positives per query); a judgement with label <= 0 is dropped as ``negative_judgement`` and its
  document becomes a given negative of every positive of that query. A judgement whose query or
  document is not usable (missing id, empty text, unreadable line) is quarantined naming the qrels
  file and line. ``source`` is the directory's name.
- MS MARCO-style TSV (``.tsv`` / ``.tsv.gz``, no header): ``query <TAB> positive [<TAB> negative ...]``.
- JSONL / parquet records with ``query`` and ``positive`` | ``positives`` (a list) and optionally
  ``negatives`` (a list): read by :func:`pipelines.mine.inputs.parse_pair`.

Only training splits are input: a file whose name says ``test`` / ``dev`` / ``val`` /
``validation`` / ``heldout`` (or that sits in a directory so named), or a BEIR directory without
``qrels/train.tsv``, is refused (exit 2) naming the split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import xxhash

from foundation.errors import UsageError
from foundation.ledger import describe_input
from pipelines.corpus.normalize import normalize_text
from pipelines.eval.beir import iter_qrels, read_texts
from pipelines.pairs.records import file_stem, text_hash
from pipelines.readers import Quarantined, Record, read_tsv

HELD_OUT = frozenset({"test", "dev", "val", "valid", "validation", "heldout", "eval"})
TRAIN_QRELS = ("qrels/train.tsv", "qrels/train.tsv.gz")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".tsv.zst")


def held_out_split(path: str | Path) -> str | None:
    """The held-out split a file's name (or its directory's name) says it is, else None."""
    path = Path(path)
    tokens = re.split(r"[^a-z0-9]+", path.name.split(".")[0].lower())
    named = next((t for t in tokens if t in HELD_OUT), None)
    return named or (path.parent.name.lower() if path.parent.name.lower() in HELD_OUT else None)


def refuse_held_out(path: str | Path) -> None:
    if (split := held_out_split(path)) is not None:
        raise UsageError(f"mine: {path} is a `{split}` split; test/dev splits are not training input "
                         f"(give the train split)")


def is_beir_dir(path: Path) -> bool:
    return (path.is_dir() and (path / "qrels").is_dir()
            and any((path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz")))


def train_qrels(root: Path) -> str:
    """A BEIR directory's ``qrels/train.tsv``; refused naming its splits when it has none."""
    for name in TRAIN_QRELS:
        if (root / name).is_file():
            return str((root / name).resolve())
    splits = sorted(p.name.split(".")[0] for p in (root / "qrels").iterdir() if p.is_file())
    named = " and ".join(f"`{s}`" for s in splits) or "no"
    raise UsageError(f"mine: BEIR directory {root} has the {named} split(s) but no qrels/train.tsv; "
                     f"test/dev splits are not training input")


def beir_root(path: str) -> Path | None:
    """The BEIR directory of a ``qrels/<split>.tsv`` path, else None."""
    p = Path(path)
    return p.parent.parent if p.parent.name == "qrels" and is_beir_dir(p.parent.parent) else None


def _beir_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (root / name).is_file():
            return root / name
    raise UsageError(f"mine: BEIR directory {root} has no {stem}.jsonl")


def describe(path: str) -> dict:
    """A pinned input entry (:func:`foundation.ledger.describe_input`); a BEIR qrels file stands
    for its whole set: its fingerprint covers corpus.jsonl and queries.jsonl too."""
    entry = describe_input(path)
    root = beir_root(path)
    if root is None:
        return entry
    parts = [entry] + [describe_input(str(_beir_file(root, s))) for s in ("corpus", "queries")]
    digest = xxhash.xxh64("|".join(e["fingerprint"] for e in parts).encode()).hexdigest()
    return {"path": path, "size": sum(e["size"] for e in parts), "fingerprint": f"xxh64:{digest}"}


def describe_all(paths) -> list[dict]:
    return [describe(p) for p in paths]


# ---- BEIR ------------------------------------------------------------------------------------------
def _row(path: str, line: int, qid: str, query: str, did: str, doc: str, source: str, lang: str | None) -> dict:
    return {"path": path, "line": line, "query_id": qid, "query": query, "positive_id": did, "positive": doc,
            "positive_hash": text_hash(doc), "source": source, "lang": lang, "negatives": [], "negative_ids": []}


def read_beir_pairs(qrels_path: str, template: str, max_record_bytes: int) -> Iterator[dict | Quarantined]:
    """One BEIR training set -> pair rows (label > 0), ``negative_judgement`` drops (a row with
    ``reason``) and quarantine rows, every record of qrels/train.tsv accounted once; unreadable
    lines of corpus.jsonl / queries.jsonl are quarantined too (the set's records)."""
    root = beir_root(qrels_path)
    corpus, _, bad_docs, dropped_docs = read_texts(_beir_file(root, "corpus"), "doc", with_title=True,
                                                   max_record_bytes=max_record_bytes)
    queries, _, bad_queries, dropped_queries = read_texts(_beir_file(root, "queries"), "query", with_title=False,
                                                          max_record_bytes=max_record_bytes)
    yield from bad_docs
    yield from bad_queries
    empty = {(d["kind"], d["id"]) for d in dropped_docs + dropped_queries if d["reason"] == "empty_text"}
    docs = {}
    for i, did in enumerate(corpus.ids):
        text, title = normalize_text(corpus.texts[i]), normalize_text(corpus.titles[i]).strip()
        docs[did] = (template.format(title=title, text=text) if title else text, corpus.langs[i])
    query_text = {qid: (normalize_text(t), lang) for qid, t, lang in zip(queries.ids, queries.texts, queries.langs)}
    source = root.name
    judgements: list[tuple[int, str, str, int]] = []
    for item in iter_qrels(Path(qrels_path)):
        if isinstance(item, dict):
            yield item
            continue
        line, qid, did, grade = item
        problem = None
        if qid not in query_text:
            problem = ("query-id", f"{'empty_query' if ('query', qid) in empty else 'unknown_query'}: "
                                   f"query {qid!r} {'has an empty text' if ('query', qid) in empty else 'is not'} "
                                   f"in queries.jsonl")
        elif did not in docs:
            problem = ("corpus-id", f"{'empty_text' if ('doc', did) in empty else 'unknown_doc'}: document {did!r} "
                                    f"{'has an empty text' if ('doc', did) in empty else 'is not'} in corpus.jsonl")
        if problem is not None:
            yield Quarantined(qrels_path, line, problem[0], problem[1], f"{qid}\t{did}\t{grade}")
        else:
            judgements.append(item)
    negatives: dict[str, list[str]] = {}
    for _, qid, did, grade in judgements:
        if grade <= 0 and did not in negatives.setdefault(qid, []):
            negatives[qid].append(did)
    for line, qid, did, grade in judgements:
        query, q_lang = query_text[qid]
        doc, d_lang = docs[did]
        row = _row(qrels_path, line, qid, query, did, doc, source, q_lang or d_lang)
        if grade <= 0:
            row["reason"] = "negative_judgement"
        else:
            row["negative_ids"] = list(negatives.get(qid, []))
            row["negatives"] = [docs[n][0] for n in row["negative_ids"]]
        yield row


# ---- MS MARCO-style TSV ----------------------------------------------------------------------------
def read_tsv_pairs(path: str, max_record_bytes: int) -> Iterator[dict | Quarantined]:
    """``query <TAB> positive [<TAB> negative ...]`` lines -> pair rows with their given negatives."""
    for item in read_tsv(path, max_record_bytes):
        if not isinstance(item, Record):
            yield item
            continue
        columns = [normalize_text(c) for c in item.data["columns"]]
        if len(columns) < 2:
            yield Quarantined(path, item.line, "<record>", f"bad_columns: expected query, positive[, negatives...], "
                              f"got {len(columns)} column", columns[0][:1000])
            continue
        if (empty := next((i for i, c in enumerate(columns[2:], 2) if not c.strip()), None)) is not None:
            yield Quarantined(path, item.line, "negatives", f"empty_negative in column {empty + 1}",
                              "\t".join(columns)[:1000])
            continue
        query, positive, given = columns[0], columns[1], columns[2:]
        yield {"path": path, "line": item.line, "query_id": text_hash(query), "query": query, "positive_id": None,
               "positive": positive, "positive_hash": text_hash(positive), "source": file_stem(path), "lang": None,
               "negatives": given, "negative_ids": [None] * len(given)}
