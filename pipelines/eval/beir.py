"""Read a BEIR-format directory without crashing on bad lines, accounting for every record.

Layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``, optional ``lang``), ``queries.jsonl`` (``_id``,
``text``, optional ``lang``), ``qrels/<split>.tsv`` (``query-id  corpus-id  score`` with a header
line; 4-column TREC qrels are accepted too). The JSONL files may be gzipped (``.jsonl.gz``).

Per file: ``input = kept + dropped + quarantined``. Malformed lines (bad JSON/UTF-8, missing or
non-string fields, ids with whitespace, which a TREC run cannot hold) are quarantined with path
and line. Read-but-unused records are dropped with a reason: ``empty_text``, ``duplicate_id`` (the
first one is kept), ``no_qrels`` (queries), ``duplicate_qrel`` (the last judgement of a pair wins,
as in a dict built line by line). Judgements of documents missing from the corpus are kept -
they count against recall exactly as trec_eval counts them - and reported.
"""

from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from foundation.errors import BadInputError
from foundation.ledger import atomic_write_bytes
from pipelines.readers import Quarantined, Record, check_string_field, read_jsonl

UNDEFINED_LANG = "und"


@dataclass
class Account:
    """Counts of one input file."""

    path: str
    input: int = 0
    kept: int = 0
    quarantined: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"path": self.path, "input": self.input, "kept": self.kept, "dropped": sum(self.dropped.values()),
                "quarantined": self.quarantined, "dropped_by_reason": dict(sorted(self.dropped.items()))}


@dataclass
class Texts:
    """Records kept from corpus.jsonl or queries.jsonl, in file order."""

    ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    langs: list[str | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # 1-based line in the file

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class BeirSet:
    root: str
    corpus: Texts
    queries: Texts  # only the queries that will be evaluated
    query_langs: list[str]  # `lang`, else the majority language of the relevant documents, else `und`
    qrels: dict[str, dict[str, int]]
    accounts: dict[str, Account]  # corpus, queries, qrels
    quarantine: list[dict]  # storage_schemas.QUARANTINE rows
    dropped: list[dict]  # storage_schemas.eval.EVAL_DROPPED rows
    stats: dict
    files: list[dict]  # [{path, size}]


def _first_existing(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise BadInputError(f"BEIR directory {root}: no {what} (looked for {', '.join(names)})")


def find_files(inputs: tuple[str, ...] | list[str], split: str) -> tuple[Path, Path, Path]:
    """(corpus, queries, qrels) of the single BEIR directory in ``inputs``."""
    dirs = sorted({str(Path(p).resolve()) for p in inputs})
    if len(dirs) != 1:
        raise BadInputError(f"mgte eval takes one BEIR directory as --input, got {list(inputs) or 'none'}")
    root = Path(dirs[0])
    if not root.is_dir():
        raise BadInputError(f"BEIR input {root} is not a directory")
    return (_first_existing(root, ("corpus.jsonl", "corpus.jsonl.gz"), "corpus.jsonl"),
            _first_existing(root, ("queries.jsonl", "queries.jsonl.gz"), "queries.jsonl"),
            _first_existing(root, (f"qrels/{split}.tsv", f"qrels/{split}.tsv.gz"), f"qrels/{split}.tsv"))


def _quarantine(q: Quarantined) -> dict:
    return q.row()


def _string_field(rec: Record, name: str, *, required: bool) -> str | Quarantined:
    """:func:`pipelines.readers.check_string_field`; an absent optional field is ``""``; ids may be integers."""
    value = check_string_field(rec.data, name, path=rec.path, line=rec.line, required=required,
                               allow_int=name == "_id")
    return "" if value is None else value


def read_texts(path: Path, kind: str, *, with_title: bool, max_record_bytes: int
               ) -> tuple[Texts, Account, list[dict], list[dict]]:
    """Read corpus.jsonl (kind ``doc``) or queries.jsonl (kind ``query``)."""
    out, account, quarantine, dropped = Texts(), Account(str(path)), [], []
    seen: set[str] = set()
    for item in read_jsonl(str(path), max_record_bytes):
        if isinstance(item, Quarantined):
            account.input += item.line != -1  # a file-level row is not a record
            account.quarantined += item.line != -1
            quarantine.append(_quarantine(item))
            continue
        account.input += 1
        fields = {"_id": _string_field(item, "_id", required=True),
                  "text": _string_field(item, "text", required=True),
                  "title": _string_field(item, "title", required=False) if with_title else ""}
        bad = next((v for v in fields.values() if isinstance(v, Quarantined)), None)
        if bad is None and (not fields["_id"] or any(c.isspace() for c in fields["_id"])):
            bad = Quarantined(item.path, item.line, "_id", "bad_id: empty or contains whitespace (a TREC run "
                              "cannot hold it)", fields["_id"][:1000])
        if bad is not None:
            account.quarantined += 1
            quarantine.append(_quarantine(bad))
            continue
        reason = None
        if not (fields["text"].strip() or fields["title"].strip()):
            reason = "empty_text"
        elif fields["_id"] in seen:
            reason = "duplicate_id"
        if reason:
            account.dropped[reason] += 1
            dropped.append({"kind": kind, "id": fields["_id"], "reason": reason, "path": item.path,
                            "line": item.line})
            continue
        seen.add(fields["_id"])
        lang = item.data.get("lang")
        out.ids.append(fields["_id"])
        out.titles.append(fields["title"])
        out.texts.append(fields["text"])
        out.langs.append(lang if isinstance(lang, str) and lang else None)
        out.lines.append(item.line)
        account.kept += 1
    return out, account, quarantine, dropped


def _open_text(path: Path):
    raw = open(path, "rb")
    if path.suffix == ".gz":
        raw = gzip.GzipFile(fileobj=raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)


def _parse_score(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def iter_qrels(path: Path) -> Iterator[tuple[int, str, str, int] | dict]:
    """qrels/<split>.tsv, line by line: ``(line, query-id, corpus-id, grade)`` per judgement, or a
    QUARANTINE row (a bad line; ``line`` -1 for a file-level error, which is not a record). The
    header line is not a record."""
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n").lstrip("\ufeff") if lineno == 1 else line.rstrip("\n")
                if not line.strip():
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                parts = [p.strip() for p in parts]
                if lineno == 1 and len(parts) >= 3 and _parse_score(parts[-1]) is None:
                    continue  # the header, e.g. query-id corpus-id score
                error = None
                if len(parts) == 4:
                    parts = [parts[0], parts[2], parts[3]]  # TREC qrels: qid iter docid rel
                if len(parts) != 3:
                    error = ("<record>", f"bad_columns: expected 3 (or 4) columns, got {len(parts)}")
                elif not parts[0] or not parts[1] or any(c.isspace() for c in parts[0] + parts[1]):
                    error = ("<record>", "bad_id: empty or contains whitespace")
                elif _parse_score(parts[2]) is None:
                    error = ("score", f"bad_score: {parts[2]!r} is not an integer")
                if error:
                    yield {"path": str(path), "line": lineno, "field": error[0], "error": error[1], "raw": line[:1000]}
                    continue
                yield lineno, parts[0], parts[1], _parse_score(parts[2])
    except UnicodeDecodeError as exc:
        yield {"path": str(path), "line": lineno + 1, "field": "<record>",
               "error": f"invalid_utf8: {exc.reason}; the rest of the file is unreadable", "raw": None}
    except (EOFError, OSError) as exc:
        if isinstance(exc, (PermissionError, FileNotFoundError)):
            raise
        yield {"path": str(path), "line": -1, "field": "<file>",
               "error": f"truncated_or_corrupt: {exc} (after line {lineno})", "raw": None}


def read_qrels(path: Path) -> tuple[dict[str, dict[str, int]], Account, list[dict], list[dict]]:
    """qrels/<split>.tsv -> {query: {doc: grade}} (:func:`iter_qrels`; the last judgement of a pair wins)."""
    qrels: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], int] = {}
    account, quarantine, dropped = Account(str(path)), [], []
    for item in iter_qrels(path):
        if isinstance(item, dict):
            account.input += item["line"] != -1
            account.quarantined += item["line"] != -1
            quarantine.append(item)
            continue
        lineno, qid, did, grade = item
        account.input += 1
        if (qid, did) in where:
            account.dropped["duplicate_qrel"] += 1
            account.kept -= 1
            dropped.append({"kind": "qrel", "id": f"{qid}/{did}", "reason": "duplicate_qrel",
                            "path": str(path), "line": where[(qid, did)]})
        where[(qid, did)] = lineno
        qrels.setdefault(qid, {})[did] = grade
        account.kept += 1
    return qrels, account, quarantine, dropped


def query_languages(queries: Texts, corpus: Texts, qrels: dict[str, dict[str, int]]) -> list[str]:
    """`lang` of each query, else the most common language of its relevant documents, else `und`."""
    doc_lang = {i: lang for i, lang in zip(corpus.ids, corpus.langs) if lang}
    out = []
    for qid, lang in zip(queries.ids, queries.langs):
        if not lang:
            votes = Counter(doc_lang[d] for d, g in qrels.get(qid, {}).items() if g > 0 and d in doc_lang)
            lang = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0] if votes else UNDEFINED_LANG
        out.append(lang)
    return out


def read_beir(inputs: tuple[str, ...] | list[str], split: str = "test", *, max_record_bytes: int = 64_000_000
              ) -> BeirSet:
    corpus_path, queries_path, qrels_path = find_files(inputs, split)
    corpus, corpus_acc, quarantine, dropped = read_texts(corpus_path, "doc", with_title=True,
                                                         max_record_bytes=max_record_bytes)
    queries, query_acc, q_quarantine, q_dropped = read_texts(queries_path, "query", with_title=False,
                                                             max_record_bytes=max_record_bytes)
    qrels, qrels_acc, r_quarantine, r_dropped = read_qrels(qrels_path)
    quarantine += q_quarantine + r_quarantine
    dropped += q_dropped + r_dropped

    judged = Texts()
    for i, qid in enumerate(queries.ids):
        if qid in qrels:
            judged.ids.append(qid)
            judged.titles.append("")
            judged.texts.append(queries.texts[i])
            judged.langs.append(queries.langs[i])
            judged.lines.append(queries.lines[i])
        else:
            query_acc.kept -= 1
            query_acc.dropped["no_qrels"] += 1
            dropped.append({"kind": "query", "id": qid, "reason": "no_qrels", "path": str(queries_path),
                            "line": queries.lines[i]})
    doc_set, query_set = set(corpus.ids), set(queries.ids)
    stats = {
        "qrels_queries": len(qrels),
        "qrels_queries_not_evaluated": sum(q not in query_set for q in qrels),  # no usable query record
        "qrels_doc_not_in_corpus": sum(d not in doc_set for docs in qrels.values() for d in docs),
        "queries_without_relevant_docs": sum(not any(g >= 1 for g in qrels[q].values()) for q in judged.ids),
    }
    files = [{"path": str(p), "size": os.path.getsize(p)} for p in (corpus_path, queries_path, qrels_path)]
    return BeirSet(str(corpus_path.parent), corpus, judged, query_languages(judged, corpus, qrels), qrels,
                   {"corpus": corpus_acc, "queries": query_acc, "qrels": qrels_acc}, quarantine, dropped, stats, files)


def write_beir_from_pairs(table, root: str | Path, split: str = "test", *, dev_share: float = 0.0,
                          dev_split: str = "dev") -> dict:
    """Pair rows (``storage_schemas.pairs.PAIR``) -> a BEIR directory at ``root``; returns its counts.

    Each distinct query text becomes one query, each distinct positive text one document, and a
    document is judged relevant (1) to every query it was paired with, so a held-out split of the
    pairs CPT trains on (title-body, question-answer, translation) becomes a retrieval set of the
    same kind. Ids come from the text hashes (stable across runs); ``lang`` is the pair's
    query-side and positive-side language (``xx-yy`` pairs are split).

    ``dev_share`` > 0 judges that share of the queries in ``qrels/<dev_split>.tsv`` instead (for
    ``hybrid.weight: auto``): a query goes there when the first 8 hex digits of its text hash, read
    as a fraction of 16**8, are below ``dev_share``, so the two splits never share a query and the
    choice is stable across runs. The corpus is the same for both (every positive).
    """
    import json

    from pipelines.pairs.records import parse_lang

    root = Path(root)
    queries: dict[str, dict] = {}
    docs: dict[str, dict] = {}
    qrels: dict[str, set[str]] = {}
    for row in table.select(["query", "positive", "query_hash", "positive_hash", "lang"]).to_pylist():
        q_lang, d_lang = parse_lang(None if row["lang"] in (None, UNDEFINED_LANG) else row["lang"])
        qid, did = f"q-{row['query_hash'][:20]}", f"d-{row['positive_hash'][:20]}"
        queries.setdefault(qid, {"_id": qid, "text": row["query"], "lang": q_lang or UNDEFINED_LANG})
        docs.setdefault(did, {"_id": did, "title": "", "text": row["positive"], "lang": d_lang or UNDEFINED_LANG})
        qrels.setdefault(qid, set()).add(did)
    for name, records in (("corpus.jsonl", docs), ("queries.jsonl", queries)):
        atomic_write_bytes(root / name, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                for r in records.values()).encode("utf-8"))
    dev = {q for q in qrels if int(q[2:10], 16) / 16**8 < dev_share}
    splits = {split: [q for q in qrels if q not in dev]} | ({dev_split: [q for q in qrels if q in dev]} if dev else {})
    for name, judged in splits.items():
        text = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q in judged for d in sorted(qrels[q]))
        atomic_write_bytes(root / "qrels" / f"{name}.tsv", text.encode("utf-8"))
    counts = {"pairs": table.num_rows, "queries": len(splits[split]), "documents": len(docs),
              "judgements": sum(len(qrels[q]) for q in splits[split])}  # the queries and judgements of `split`
    if dev:
        counts |= {f"{dev_split}_queries": len(dev), f"{dev_split}_judgements": sum(len(qrels[q]) for q in dev)}
    return counts
