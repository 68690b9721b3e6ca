"""``mgte mine``: hard negatives for (query, positive) pairs with any embedding model (docs/mining.md).

Input: pair rows (JSONL/parquet with ``query``, ``positive`` | ``positives``, optional
``negatives``, ``query_id``, ``positive_id`` / ``corpus_id``, ``source``, ``lang``), a ``mgte pairs``
output, or labelled fine-tuning sets (:mod:`.sets`: a BEIR directory's train split, MS MARCO-style
TSV; negatives a set gives are kept and marked ``negative_given``, mined ones fill up to
``num_negatives``); candidates: a BEIR corpus or id/text rows (``candidates``), or the pool of
every positive. Output::

    DIR/data/part-NNNNN.parquet     HARD_NEGATIVES rows, one per (query, positive), ranks ascending
    DIR/dropped/*.parquet           HARD_NEGATIVES_DROPPED rows (empty_query, empty_positive,
                                    duplicate_pair, too_few_negatives) with the numbers behind them
    DIR/quarantine/*.parquet        unreadable pair records (path, line, field, error)
    DIR/_work/                      pair rows, query/candidate texts, candidate order (inputs of the tasks)
    <cache>/<key>/shard-*.npy       embeddings, shared by every run with the same model, data and encode settings

The stage runs on the stage contract (:mod:`pipelines.contract`), phase after phase, each task
marked when done so a killed run resumes where it stopped:

1. ``read`` one task per pair file (:mod:`.tasks`); ``candidates`` one task over the candidate file;
2. ``group`` the (query, positive) rows, queries, the positives pool, each query's own positives;
3. ``encode`` queries, candidates and the positives that are not candidates (:mod:`.encode`):
   only shards missing from the embedding cache, locally or on a Ray Data actor pool;
4. ``index`` (ivf / hnsw only) an approximate index kept beside the cached vectors;
5. ``search`` one task per chunk of queries (:mod:`.mining`): rank (:mod:`.search`), choose
   (:mod:`.select`), write.
"""

from __future__ import annotations

import functools

from foundation.ledger import deps_hash, describe_input, input_task
from pipelines.contract import Phase, Result, Stage, StageSpec, later_tasks, run_stage
from pipelines.decontam import (REASON as EVAL_OVERLAP, check as check_decontam, load_index, pin as pin_decontam,
                                with_absolute_dirs)
from pipelines.mine.config import Config, EncodeConfig, ReaderConfig, SearchConfig
from pipelines.mine.encode import encode_collection
from pipelines.mine.inputs import resolve_inputs
from pipelines.mine.mining import build_ann, chunks, mine_chunk, search_task
from pipelines.mine.select import Rule, choose, ranked_without
from pipelines.mine.sets import describe_all
from pipelines.mine.tasks import candidates_file, group_pairs, read_candidates, read_file, read_task

__all__ = ["Config", "EncodeConfig", "ReaderConfig", "Rule", "SearchConfig", "STAGE", "choose", "ranked_without",
           "run"]
STAGE = "mine"
COLLECTIONS = (("queries", "query"), ("candidates", "doc"), ("positives", "doc"))
LATER = ("group", "encode-", "index", "search-")  # they read every input


def _by_name(markers: list[dict]) -> dict[str, dict]:
    return {m["task"]: m for m in markers}


def phases(cfg: Config, stage: Stage) -> list[Phase]:
    out = stage.out
    reads = [read_task(e) for e in stage.entries]
    cand = []
    if cfg.candidates is not None:
        entry = describe_input(candidates_file(cfg.candidates))
        cand = [(input_task("candidates", entry), entry, cfg, out)]
    deps = deps_hash(reads + [c[0] for c in cand])
    pin_decontam(out.root, load_index(cfg.decontaminate))

    def group_items(m):
        files = [f for marker in m["read"] for f in marker["files"] if f.startswith("_work/pairs/")]
        return [(files, m["candidates"][0] if cand else None, cfg, out, deps)]

    def encode_items(m):
        collections = m["group"][0]["collections"]
        return [(f"encode-{name}", side, collections[name]["rel"], collections[name]["hash"],
                 collections[name]["rows"], cfg, out, deps) for name, side in COLLECTIONS]

    def vectors(m):
        return {name: _by_name(m["encode"])[f"encode-{name}"] for name, _ in COLLECTIONS}

    def search_names(m):
        return [search_task(c) for c in chunks(m["group"][0]["queries"], cfg.search.query_chunk)]

    def search_items(m):
        index = m["index"][0] if "index" in m else None
        return [(search_task(c), c, vectors(m), index, cfg, out, deps)
                for c in chunks(m["group"][0]["queries"], cfg.search.query_chunk)]

    out_phases = [Phase("read", [(e, cfg, out) for e in stage.entries], read_file, names=reads,
                        sort_key=lambda item: -item[0]["size"])]
    if cand:
        out_phases.append(Phase("candidates", cand, read_candidates, names=[cand[0][0]]))
    out_phases += [Phase("group", group_items, group_pairs, names=["group"], deps=deps),
                   Phase("encode", encode_items, encode_collection, names=[f"encode-{n}" for n, _ in COLLECTIONS],
                         deps=deps, drives_engine=True, unit="collections")]
    if cfg.search.index != "flat":
        out_phases.append(Phase("index", lambda m: [("index", vectors(m)["candidates"], cfg, out, deps)], build_ann,
                                names=["index"], deps=deps))
    out_phases.append(Phase("search", search_items, mine_chunk, names=search_names, deps=deps, unit="query chunks"))
    return out_phases


def finish(cfg: Config, stage: Stage, result: Result) -> tuple[dict, dict]:
    m = result.markers
    encode = {mk["task"].removeprefix("encode-"): {k: mk[k] for k in ("rows", "dim", "cache_key", "encoded_shards",
                                                                       "cached_shards", "encode_s")}
              for mk in m["encode"]}
    extra = {"miner": m["encode"][0]["miner"], "queries": m["group"][0]["queries"], "encode": encode,
             "encoded_shards": sum(e["encoded_shards"] for e in encode.values()),
             "search": {"index": cfg.search.index, **(m["index"][0]["params"] if "index" in m else {})}}
    outputs = {}
    if "candidates" in m:
        extra["candidates"] = m["candidates"][0]["candidates"]
        quarantine = [f for f in m["candidates"][0]["files"] if f.endswith("candidates_quarantine.parquet")]
        if quarantine:
            outputs["candidate_quarantine"] = quarantine
    else:
        extra["candidates"] = {"pool_of_positives": m["group"][0]["collections"]["candidates"]["rows"]}
    if (index := load_index(cfg.decontaminate)) is not None:
        extra["decontaminate"] = {**index.summary(), "dropped": result.dropped_by_reason.get(EVAL_OVERLAP, 0),
                                  "negatives_left_out": sum(mk.get("eval_overlap_negatives", 0) for mk in m["read"]),
                                  "candidates_left_out": (m["candidates"][0]["candidates"].get(EVAL_OVERLAP, 0)
                                                          if "candidates" in m else 0)}
    return outputs, extra


def run(cfg: Config) -> dict:
    check_decontam(cfg.decontaminate, cfg.output)  # a missing eval dir: one line, before any work
    spec = StageSpec(STAGE, phases=functools.partial(phases, with_absolute_dirs(cfg)),
                     per_input=lambda e: [read_task(e)],
                     later=lambda entries: later_tasks(cfg.output, LATER), finish=functools.partial(finish, cfg),
                     models=lambda cfg: {"model": cfg.model}, describe=describe_all)
    return run_stage(spec, cfg, resolve_inputs(cfg.input))
