"""The read-side tasks of ``mgte mine``, each a plain function that writes its files and marks last.

- ``read-<file>-<content hash>`` (:func:`read_file`, one per pair file): parse and check each
  record -> its pair rows (``_work/pairs/``), ``empty_*`` drops, quarantine rows.
- ``candidates-<file>-<content hash>`` (:func:`read_candidates`, when ``candidates`` is set): the
  candidate documents -> ``_work/candidates.arrow`` (id, text, hash); bad records go to
  ``_work/candidates_quarantine.parquet`` (candidates are not pairs: they are accounted apart, in
  the manifest's ``candidates`` entry, with their own error budget).
- ``group`` (:func:`group_pairs`): every pair row -> one row per (query, positive) (a repeated one
  dropped as ``duplicate_pair``), the queries in first-seen order, the pool of positives as the
  candidates when ``candidates`` is null, and per query the candidate rows that are its positives
  (same id; same normalised-text hash for a positive without id), removed from its ranking, and
  the exact copies of a positive under another id (same hash), ranked but never chosen; and per
  (query, positive) the negatives the set gave (dropped when they are one of the query's
  positives), located among the candidates (same id, else same hash) or among the extra texts to
  encode; their candidate rows are never mined again for that query.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import BadInputError
from foundation.ledger import StageOutput, atomic_write_npy, input_task
from pipelines.mine.encode import read_column, write_collection
from pipelines.mine.inputs import dropped_row, empty_reason, read_candidate_file, read_pair_file
from pipelines.mine.search import order_keys
from pipelines.pairs.records import text_hash
from pipelines.contract import Outcomes
from pipelines.decontam import REASON as EVAL_OVERLAP, load_index
from pipelines.readers import Quarantined
from storage_schemas.corpus import QUARANTINE
from storage_schemas.mine import HARD_NEGATIVES_DROPPED

WORK = "_work"
CANDIDATES = f"{WORK}/candidates.arrow"
CANDIDATE_KEYS = f"{WORK}/candidate_keys.npy"
QUERIES = f"{WORK}/queries.arrow"
QUERY_TABLE = f"{WORK}/queries.parquet"
POSITIVES = f"{WORK}/positives.arrow"
ROWS = f"{WORK}/rows.parquet"
PAIR_SCHEMA = pa.schema([("path", pa.string()), ("line", pa.int64()), ("query_id", pa.string()),
                         ("query", pa.string()), ("positive_id", pa.string()), ("positive", pa.string()),
                         ("positive_hash", pa.string()), ("source", pa.string()), ("lang", pa.string()),
                         ("negatives", pa.list_(pa.string())), ("negative_ids", pa.list_(pa.string()))])
ROW_SCHEMA = pa.schema([*PAIR_SCHEMA, ("qrow", pa.int64()), ("pos_in", pa.string()), ("pos_row", pa.int64()),
                        ("neg_in", pa.list_(pa.string())), ("neg_rows", pa.list_(pa.int64()))])
QUERY_SCHEMA = pa.schema([("qrow", pa.int64()), ("query_id", pa.string()), ("removed", pa.list_(pa.int64())),
                          ("copies", pa.list_(pa.int64()))])
POOL_PREFIX = "h:"  # a pooled positive without an id is named by its text hash


def counts(input_: int, kept: int, dropped: int, quarantined: int) -> dict:
    return {"input": input_, "kept": kept, "dropped": dropped, "quarantined": quarantined}


def read_task(entry: dict) -> str:
    return input_task("read", entry)


# ---- read: one pair file -------------------------------------------------------------------------
def read_file(entry: dict, cfg, out: StageOutput) -> dict:
    task = read_task(entry)
    if (marker := out.task_marker(task)) is not None:
        return marker
    outcomes = Outcomes()
    decontam = load_index(cfg.decontaminate)
    removed_negatives = 0  # given negatives left out as evaluation texts
    for item in read_pair_file(entry["path"], cfg):
        if isinstance(item, Quarantined) or "error" in item:  # a reader's Quarantined or its QUARANTINE row
            outcomes.quarantine(item)
        elif (reason := item.pop("reason", None) or empty_reason(item)) is not None:
            outcomes.drop(dropped_row(item, reason))
        elif decontam is not None and (hit := next(((side, h) for side in ("query", "positive")
                                                    if (h := decontam.match(item[side])) is not None), None)):
            outcomes.drop(dropped_row(item, EVAL_OVERLAP, {EVAL_OVERLAP: hit[1].detail(hit[0])}))
        else:
            if decontam is not None and item["negatives"]:  # an evaluation text as a negative: left out, pair kept
                keep = [decontam.match(n) is None for n in item["negatives"]]
                removed_negatives += keep.count(False)
                item["negatives"] = [n for n, k in zip(item["negatives"], keep) if k]
                item["negative_ids"] = [n for n, k in zip(item["negative_ids"], keep) if k]
            outcomes.keep(item)
    files = [out.write_table(f"{WORK}/pairs/{task}.parquet", pa.Table.from_pylist(outcomes.kept, schema=PAIR_SCHEMA)),
             *outcomes.write(out, task, HARD_NEGATIVES_DROPPED)]
    extra = {"eval_overlap_negatives": removed_negatives} if decontam is not None else None
    return out.mark_task(task, outcomes.counts(), files, input=entry, extra=extra)


# ---- candidates: the documents to mine from --------------------------------------------------------
def candidates_file(path: str) -> str:
    """A BEIR directory stands for its corpus.jsonl(.gz)."""
    root = Path(path)
    if root.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (root / name).is_file():
                return str(root / name)
        raise BadInputError(f"mine: candidates directory {root} has no corpus.jsonl")
    if not root.is_file():
        raise BadInputError(f"mine: candidates file {root} does not exist")
    return str(root.resolve())


def read_candidates(task: str, entry: dict, cfg, out: StageOutput) -> dict:
    if (marker := out.task_marker(task)) is not None:
        return marker
    ids, texts, hashes, quarantine = [], [], [], []
    tally: Counter = Counter()
    seen: set[str] = set()
    decontam = load_index(cfg.decontaminate)
    for item in read_candidate_file(entry["path"], cfg.doc_template, cfg.reader.max_record_bytes):
        tally["read"] += 1
        if isinstance(item, Quarantined):
            quarantine.append(item.row())
            tally["quarantined"] += 1
        elif not item["text"].strip():
            tally["empty_text"] += 1
        elif item["id"] in seen:
            tally["duplicate_id"] += 1
        elif decontam is not None and decontam.match(item["text"]) is not None:
            tally[EVAL_OVERLAP] += 1  # never mined as a negative
        else:
            seen.add(item["id"])
            ids.append(item["id"])
            texts.append(item["text"])
            hashes.append(item["hash"])
    if tally["quarantined"] > cfg.reader.error_budget * max(tally["read"], 1):
        first = quarantine[0]
        raise BadInputError(f"{entry['path']}: {tally['quarantined']} of {tally['read']} candidate records "
                            f"quarantined, over reader.error_budget={cfg.reader.error_budget}; first at line "
                            f"{first['line']} (field {first['field']}: {first['error']})")
    if not ids:
        raise BadInputError(f"{entry['path']}: no usable candidate document (need `_id` or `id`, and `text`)")
    tally["kept"] = len(ids)
    rel, data_hash = write_collection(out, CANDIDATES, texts, id=ids, hash=hashes)
    files = [rel]
    if quarantine:
        files.append(out.write_rows(f"{WORK}/candidates_quarantine.parquet", quarantine, QUARANTINE))
    return out.mark_task(task, counts(0, 0, 0, 0), files, input=entry,
                         extra={"candidates": dict(sorted(tally.items())), "data_hash": data_hash, "rows": len(ids)})


# ---- group: (query, positive) rows, queries, the pool, positives -----------------------------------
def _pool(rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """The positives of the input as candidates: one per id (its `positive_id`, else its text hash)."""
    ids, texts, hashes, seen = [], [], [], set()
    for row in rows:
        doc_id = row["positive_id"] or POOL_PREFIX + row["positive_hash"]
        if doc_id not in seen:
            seen.add(doc_id)
            ids.append(doc_id)
            texts.append(row["positive"])
            hashes.append(row["positive_hash"])
    return ids, texts, hashes


def _own(rows: list[dict], by_id: dict[str, int], by_hash: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """Candidate rows that are one query's positives (removed from its ranking: same id, or same
    normalised-text hash for a positive without id) and copies of them (same hash, another id:
    ranked, never chosen)."""
    removed, copies = set(), set()
    for row in rows:
        if row["positive_id"] is not None:
            if row["positive_id"] in by_id:
                removed.add(by_id[row["positive_id"]])
        else:
            removed.update(by_hash.get(row["positive_hash"], ()))
        copies.update(by_hash.get(row["positive_hash"], ()))
    return sorted(removed), sorted(copies - removed)


def group_pairs(pair_files: list[str], candidates_marker: dict | None, cfg, out: StageOutput, deps: str) -> dict:
    task = "group"
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    rows = [r for f in pair_files for r in pq.read_table(out.root / f).to_pylist()]
    rows.sort(key=lambda r: (r["path"], r["line"]))
    kept, dropped, seen = [], [], set()
    for row in rows:
        key = (row["query_id"], row["positive_id"] or row["positive_hash"])
        if key in seen:
            dropped.append(dropped_row(row, "duplicate_pair"))
        else:
            seen.add(key)
            kept.append(row)
    files, collections = [], {}
    if candidates_marker is None:
        ids, texts, hashes = _pool(kept)
        rel, data_hash = write_collection(out, CANDIDATES, texts, id=ids, hash=hashes)
        files.append(rel)
        collections["candidates"] = {"rel": rel, "hash": data_hash, "rows": len(ids)}
    else:
        ids = read_column(out.root / CANDIDATES, "id").to_pylist()
        hashes = read_column(out.root / CANDIDATES, "hash").to_pylist()
        collections["candidates"] = {"rel": CANDIDATES, "hash": candidates_marker["data_hash"], "rows": len(ids)}
    by_id = {doc_id: i for i, doc_id in enumerate(ids)}
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    atomic_write_npy(out.root / CANDIDATE_KEYS, order_keys(ids))
    files.append(CANDIDATE_KEYS)

    by_query: dict[str, list[dict]] = {}
    for row in kept:
        by_query.setdefault(row["query_id"], []).append(row)
    qrow = {qid: i for i, qid in enumerate(by_query)}
    extra: dict[str, int] = {}  # texts to encode that are not candidates (positives, given negatives) by hash
    extra_texts: list[str] = []

    def locate(doc_id: str | None, text: str, text_hash_: str) -> tuple[str, int]:
        if doc_id is not None and doc_id in by_id:
            return "candidates", by_id[doc_id]
        if text_hash_ in by_hash:
            return "candidates", by_hash[text_hash_][0]
        if text_hash_ not in extra:
            extra[text_hash_] = len(extra)
            extra_texts.append(text)
        return "positives", extra[text_hash_]

    given_rows: dict[str, set[int]] = defaultdict(set)  # per query: candidate rows of its given negatives
    for row in kept:
        row["qrow"] = qrow[row["query_id"]]
        row["pos_in"], row["pos_row"] = locate(row["positive_id"], row["positive"], row["positive_hash"])
        siblings = by_query[row["query_id"]]
        own = {r["positive_id"] for r in siblings if r["positive_id"]} | {r["positive_hash"] for r in siblings}
        given = [(i, t, text_hash(t)) for i, t in zip(row["negative_ids"], row["negatives"])]
        given = [g for g in given if g[0] not in own and g[2] not in own]  # a positive of the query is no negative
        row["negative_ids"] = [i or POOL_PREFIX + h for i, _, h in given]
        row["negatives"] = [t for _, t, _ in given]
        places = [locate(i, t, h) for i, t, h in given]
        row["neg_in"], row["neg_rows"] = [p[0] for p in places], [p[1] for p in places]
        for i, _, h in given:  # ranked, never mined again
            given_rows[row["query_id"]].update([by_id[i]] if i in by_id else by_hash.get(h, ()))
    kept.sort(key=lambda r: (r["qrow"], r["path"], r["line"]))
    query_texts = [cfg.query_instruction + rs[0]["query"] for rs in by_query.values()]
    rel, data_hash = write_collection(out, QUERIES, query_texts)
    collections["queries"] = {"rel": rel, "hash": data_hash, "rows": len(query_texts)}
    rel, data_hash = write_collection(out, POSITIVES, extra_texts)
    collections["positives"] = {"rel": rel, "hash": data_hash, "rows": len(extra_texts)}
    queries = []
    for i, (qid, rs) in enumerate(by_query.items()):
        removed, copies = _own(rs, by_id, by_hash)
        copies = sorted((set(copies) | given_rows[qid]) - set(removed))
        queries.append({"qrow": i, "query_id": qid, "removed": removed, "copies": copies})
    files += [QUERIES, POSITIVES,
              out.write_table(QUERY_TABLE, pa.Table.from_pylist(queries, schema=QUERY_SCHEMA)),
              out.write_table(ROWS, pa.Table.from_pylist(kept, schema=ROW_SCHEMA))]
    if dropped:
        files.append(out.write_rows(f"dropped/{task}.parquet", dropped, HARD_NEGATIVES_DROPPED))
    return out.mark_task(task, counts(len(rows), len(kept), len(dropped), 0), files, deps=deps,
                         extra={"collections": collections, "queries": len(queries)})
