"""The corpus stage's logic as plain functions; engines only decide where they run.

Three kinds of task, each the unit of retry with its own marker:

Tasks are named by their input file's content (:func:`foundation.ledger.input_task`), never by
its position in the input list, and each marker records the file it read.

* ``read-<file>-<hash>`` (one per input file): read -> normalise -> identify the language -> quality
  filters (verdict recorded) -> MinHash; with ``decontaminate``, an evaluation text (exact or near,
  :mod:`pipelines.decontam`) is dropped as ``eval_overlap`` whatever the language and quality say.
  Writes the file's candidates (``_work/candidates/``), the records dropped before
  de-duplication, and quarantined records.
* ``dedup`` (one): exact + near duplicate decisions over all candidates, in shards by input path
  (``_work/dedup/{exact,near}-<shard>.parquet``, written by the engine's workers); the engines
  compute it with the functions of :mod:`pipelines.corpus.dedup`. Its marker records the set of
  read tasks it read (``deps``): over another set it is stale and is redone.
* ``write-<file>-<hash>`` (one per input file, same ``deps`` as dedup): candidates that are neither duplicates nor
  quality-rejected -> ``data/``; the others -> ``dropped/`` (a duplicate's reason wins).

Quality-rejected documents take part in de-duplication, so a near copy of a rejected text that
happens to pass a threshold is still removed as its duplicate.
"""

from __future__ import annotations

import functools
import json
import os
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.corpus.config import Config, DedupConfig, QualityConfig
from pipelines.corpus.dedup import make_hasher, text_hash
from pipelines.corpus.lid import identify
from pipelines.corpus.normalize import normalize_with_changes
from pipelines.corpus.quality import QualityFilters
from pipelines.decontam import REASON as EVAL_OVERLAP, load_index
from foundation.errors import StageIOError
from foundation.faults import fault_point
from pipelines.contract import Outcomes
from pipelines.readers import Quarantined, check_text, read_records
from foundation.ledger import EMPTY_COUNTS, StageOutput, input_task
from storage_schemas import CANDIDATE, CLEAN_DOC, DEDUP_DECISION, DROPPED
from storage_schemas.corpus import DEDUP_INDEX

TEXT_PREVIEW = 2000
DEDUP_TASK = "dedup"
DEDUP_DIR = "_work/dedup"
DECISION_KINDS = {"exact": "exact_duplicate", "near": "near_duplicate"}  # file prefix -> reason


def read_task(entry: dict) -> str:
    """``entry``: the input's ``{path, size, fingerprint}`` (:func:`foundation.ledger.describe_input`)."""
    return input_task("read", entry)


def write_task(entry: dict) -> str:
    return input_task("write", entry)


def data_file(entry: dict) -> str:
    return f"data/{input_task('part', entry)}.parquet"


@functools.lru_cache(maxsize=4)
def _filters(cfg: QualityConfig) -> QualityFilters:
    return QualityFilters(cfg)


@functools.lru_cache(maxsize=4)
def _hasher(cfg: DedupConfig):
    return make_hasher(cfg.minhash, cfg.bands * cfg.rows, cfg.seed)


def _metadata(data: dict, skip: tuple[str, ...]) -> str | None:
    rest = {k: v for k, v in data.items() if k not in skip}
    return json.dumps(rest, ensure_ascii=False, default=str, sort_keys=True) if rest else None


def _dropped(doc_id: str, reason: str, path: str, line: int, text: str | None, *, lang=None, lang_score=None,
             scores: dict | None = None) -> dict:
    return {"id": doc_id, "reason": reason, "lang": lang, "lang_score": lang_score, "duplicate_of": None,
            "similarity": None, "scores": json.dumps(scores, sort_keys=True) if scores else None, "path": path,
            "line": line, "text": text[:TEXT_PREVIEW] if text else None}


def process_document(raw_text: str, cfg: Config, source: str | None = None) -> tuple[str, str | None, dict]:
    """Normalise, identify and filter one text -> (text, drop reason or None, facts).

    ``source``: the record's source, which picks its quality profile (``quality.source_profiles``,
    else ``quality.profile``).

    facts: lang, lang_score, the quality scores (with ``lid_first``, the first identifier's label and
    score, where ``lid.second_opinion`` decided), and ``normalized``: the characters normalisation
    removed, by kind (:data:`pipelines.corpus.normalize.CHANGE_KINDS`), when it removed any.
    """
    text, removed = normalize_with_changes(raw_text, cfg.normalize.unicode_form)
    base = {"normalized": removed} if removed else {}
    if not text:
        return text, "empty_text", base
    if len(text) > cfg.normalize.max_chars:
        if cfg.normalize.on_too_long == "drop":
            return text, "too_long", {**base, "n_chars": len(text)}
        text = text[: cfg.normalize.max_chars]
    lang, score, overruled = identify(cfg.lid, text[: cfg.lid.max_chars])
    facts: dict = {**base, "lang": lang, "lang_score": score}
    if lang not in cfg.lid.languages:
        return text, "lang_not_in_set", facts
    if score < cfg.lid.min_score:
        return text, "low_lang_score", facts
    reason, scores = _filters(cfg.quality).score(text, lang, profile=cfg.quality.profile_for(source))
    if overruled is not None:  # the second opinion decided (lid.second_opinion): the first identifier's answer
        scores = {**scores, "lid_first": [overruled[0], round(overruled[1], 4)]}
    facts["scores"] = scores
    return text, reason, facts


def run_read_task(entry: dict, cfg: Config, out: StageOutput) -> dict:
    """The read task over one input file; returns its marker (skips a finished task)."""
    task = read_task(entry)
    marker = out.task_marker(task)
    if marker is not None:
        return marker
    path = entry["path"]
    r = cfg.reader
    hasher = _hasher(cfg.dedup) if cfg.dedup.near else None
    decontam = load_index(cfg.decontaminate, cfg.dedup)  # built once per worker process
    name = os.path.basename(path)
    skip = (r.text_field, r.id_field)
    outcomes = Outcomes()  # kept: the candidates of de-duplication
    normalized = Counter()  # characters normalisation removed, by kind, over the task's records
    for item in read_records(path, text_field=r.text_field, max_record_bytes=r.max_record_bytes,
                             on_schema_error=r.on_schema_error):
        fault_point("after_records", path)
        if isinstance(item, Quarantined):
            outcomes.quarantine(item)
            continue
        raw = check_text(item, r.text_field)
        if isinstance(raw, Quarantined):
            outcomes.quarantine(raw)
            continue
        doc_id = item.data.get(r.id_field)
        doc_id = str(doc_id) if doc_id not in (None, "") else f"{name}:{item.line}"
        source = item.data.get(r.source_field)
        source = str(source) if source not in (None, "") else name
        text, reason, facts = process_document(raw, cfg, source)
        normalized.update(facts.get("normalized", {}))
        sig = None
        if decontam is not None and text and reason != "too_long":  # an eval text: whatever its language or quality
            sig = hasher.signature_of(text, cfg.dedup.ngram) if hasher else None
            if (hit := decontam.match(text, sig)) is not None:
                drop = _dropped(doc_id, EVAL_OVERLAP, path, item.line, text, lang=facts.get("lang"),
                                lang_score=facts.get("lang_score"), scores={EVAL_OVERLAP: hit.detail()})
                drop.update(duplicate_of=hit.ref, similarity=hit.similarity)
                outcomes.drop(drop)
                continue
        if reason is not None and "scores" not in facts:  # failed before the quality filters
            outcomes.drop(_dropped(doc_id, reason, path, item.line, text or raw, lang=facts.get("lang"),
                                   lang_score=facts.get("lang_score")))
            continue
        if sig is None:
            sig = hasher.signature_of(text, cfg.dedup.ngram) if hasher else np.zeros(0, np.uint32)
        outcomes.keep({
            "id": doc_id, "text": text, "lang": facts["lang"], "lang_score": facts["lang_score"],
            "source": source, "path": path, "line": item.line,
            "n_chars": len(text), "n_bytes": len(text.encode("utf-8")), "n_tokens": None,
            "text_hash": text_hash(text), "metadata": _metadata(item.data, skip), "minhash": sig.tolist(),
            "quality_reason": reason, "scores": json.dumps(facts["scores"], sort_keys=True),
        })
    files = [
        out.write_rows(f"_work/candidates/{task}.parquet", outcomes.kept, CANDIDATE),
        out.write_rows(f"index/{task}.parquet", outcomes.kept, DEDUP_INDEX),  # for later incremental builds
        *outcomes.write(out, task, DROPPED),
    ]
    return out.mark_task(task, outcomes.counts(), files, input=entry,
                         extra={"normalized": dict(sorted(normalized.items()))})


# ---- de-duplication inputs/outputs ---------------------------------------------------------------
DEDUP_COLUMNS = ["path", "line", "id", "text_hash", "minhash"]


def read_dedup_rows(item: tuple[str, int]) -> list[dict]:
    """The columns de-duplication needs from one candidates (or previous build's index) file,
    ``item = (path, build)``, each row tagged with its build."""
    path, build = item
    return [dict(r, build=build) for r in pq.read_table(path, columns=DEDUP_COLUMNS).to_pylist()]


def decision_shard(path: str, shards: int) -> int:
    """The decisions shard of an input path (stable across processes, unlike ``hash()``)."""
    return zlib.crc32(path.encode()) % shards


def decision_file(kind: str, shard: int) -> str:
    return f"{DEDUP_DIR}/{kind}-{shard:05d}.parquet"


def write_decision_shard(out: StageOutput, shard: int, decisions: list[dict], build: int = 0) -> list[str]:
    """One shard's decisions, one file per reason (every one even when empty, so the set of files is
    known without listing a directory): the decisions about this build's records (``build``; the rows
    of previous builds only take part)."""
    files = []
    for kind in DECISION_KINDS:
        rows = sorted((d for d in decisions if d["reason"] == DECISION_KINDS[kind] and d.get("build", 0) == build),
                      key=lambda d: (d["path"], d["line"]))
        files.append(out.write_rows(decision_file(kind, shard), rows, DEDUP_DECISION))
    return files


def mark_dedup(out: StageOutput, shards: int, n_rows: int, deps: str, extra: dict | None = None) -> dict:
    """The dedup task's marker, after every shard is written: the decisions counted from the
    files' footers (the driver reads no decision). ``deps``: the read tasks whose candidates it read."""
    files = [decision_file(kind, k) for kind in DECISION_KINDS for k in range(shards)]
    reasons = {DECISION_KINDS[kind]: sum(pq.read_metadata(out.root / decision_file(kind, k)).num_rows
                                         for k in range(shards)) for kind in DECISION_KINDS}
    # The dedup task only decides; its records are counted by the write tasks.
    return out.mark_task(DEDUP_TASK, EMPTY_COUNTS, files, deps=deps,
                         extra={"decisions": {r: n for r, n in reasons.items() if n}, "candidates": n_rows,
                                "shards": shards, **(extra or {})})


def write_decisions(out: StageOutput, decisions: list[dict], n_rows: int, deps: str, build: int = 0) -> dict:
    """The dedup task's output and marker from decisions held in this process (the local engine):
    one shard."""
    write_decision_shard(out, 0, decisions, build)
    return mark_dedup(out, 1, n_rows, deps)


@functools.lru_cache(maxsize=2)
def _decisions_by_key(files: tuple[tuple[str, int, int], ...]) -> dict[tuple[str, int], dict]:
    """``(file, mtime, size)`` of the shards -> (path, line) -> decision."""
    return {(d["path"], d["line"]): d for f, _, _ in files for d in pq.read_table(f).to_pylist()}


def decisions_for(out: StageOutput, paths) -> dict[tuple[str, int], dict]:
    """The decisions about the records of these input ``paths``: only their shards are read."""
    marker = out.task_marker(DEDUP_TASK)
    if marker is None:
        raise StageIOError(f"{out.root}: the dedup task has no marker; its decisions cannot be read")
    shards = int(marker.get("shards", 1))
    wanted = {decision_shard(p, shards) for p in paths}
    files = []
    for rel in marker["files"]:
        if int(Path(rel).stem.rsplit("-", 1)[1]) in wanted:
            st = (out.root / rel).stat()
            files.append((str(out.root / rel), st.st_mtime_ns, st.st_size))
    return _decisions_by_key(tuple(files))


TOKEN_BATCH = 1024  # texts per call of the Rust tokenizer


@functools.lru_cache(maxsize=2)
def _token_counter(name: str):
    """texts -> their token counts (no special tokens, never truncated) with the tokenizer ``name``
    (``stats.tokenizer``), loaded once per process; the Rust backend (:func:`backend_tokenizer`: no
    transformers, no torch in a corpus worker) encodes each batch of TOKEN_BATCH texts in one call,
    on its own threads."""
    from model.tokenizer import backend_tokenizer, load_tokenizer

    backend = backend_tokenizer(name)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    else:  # a slow (Python) tokenizer
        tok = load_tokenizer(name)

    def count(texts) -> list[int]:
        texts, counts = list(texts), []
        for i in range(0, len(texts), TOKEN_BATCH):
            batch = texts[i:i + TOKEN_BATCH]
            if backend is not None:
                counts += [len(e.ids) for e in backend.encode_batch(batch, add_special_tokens=False)]
            else:
                counts += [len(ids) for ids in tok(batch, add_special_tokens=False)["input_ids"]]
        return counts

    return count


def run_write_task(entry: dict, cfg: Config, out: StageOutput, deps: str) -> dict:
    """The write task of one input file: its candidates minus duplicates -> data/, the rest -> dropped/."""
    task = write_task(entry)
    marker = out.task_marker(task, deps)
    if marker is not None:
        return marker
    cand = pq.read_table(out.root / f"_work/candidates/{read_task(entry)}.parquet")
    decisions = decisions_for(out, set(cand.column("path").to_pylist()))
    keep_mask, outcomes = [], Outcomes()
    for row in cand.select(["id", "path", "line", "text", "lang", "lang_score", "quality_reason", "scores"]).to_pylist():
        d = decisions.get((row["path"], row["line"]))
        keep_mask.append(d is None and row["quality_reason"] is None)
        if d is not None:  # a duplicate, whatever its quality
            drop = _dropped(row["id"], d["reason"], row["path"], row["line"], row["text"], lang=row["lang"],
                            lang_score=row["lang_score"])
            drop.update(duplicate_of=d["duplicate_of"], similarity=d["similarity"])
            outcomes.drop(drop)
        elif row["quality_reason"] is not None:
            drop = _dropped(row["id"], row["quality_reason"], row["path"], row["line"], row["text"], lang=row["lang"],
                            lang_score=row["lang_score"])
            drop["scores"] = row["scores"]
            outcomes.drop(drop)
    kept = cand.filter(pa.array(keep_mask, type=pa.bool_())).drop_columns(["minhash", "quality_reason", "scores"])
    if cfg.stats.tokenizer and kept.num_rows:
        counts_tok = _token_counter(cfg.stats.tokenizer)(kept["text"].to_pylist())
        kept = kept.set_column(kept.schema.get_field_index("n_tokens"), "n_tokens", pa.array(counts_tok, pa.int64()))
    outcomes.kept = kept
    files = [out.write_table(data_file(entry), kept, CLEAN_DOC), *outcomes.write(out, task, DROPPED)]
    return out.mark_task(task, outcomes.counts(), files, input=entry, deps=deps)


