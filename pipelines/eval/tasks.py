"""``mgte eval`` on the stage contract (:func:`pipelines.contract.run_stage`): its inputs, pinned by
content, are the three BEIR files and the models (a model directory by the sha256 of its files),
and its tasks are named by what they read, so a changed model reruns exactly the methods that used it.

1. ``read-beir-<hash>``: the BEIR set -> the query accounting (the stage's counts), ``dropped/``
   (queries, documents and judgements, with ``kind``) and ``quarantine/``;
2. ``bm25`` and ``model-<fingerprint>`` (dense, sparse and hybrid of one embedding model): each
   writes ``runs/<method>.trec``;
3. ``rerank-<fingerprint>`` (when a reranker is set): the best first-stage run rescored.

The summary (``run.trec`` = the final method's run, ``data/*.parquet``, ``metrics.json``, the
report) is written from the runs after every task. A changed model or BEIR file refuses, naming
it, or with ``on_input_change: redo`` forgets the tasks that read it and reruns only those.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import pipelines.eval.metrics as M
from foundation.errors import BadInputError, MgteError, UsageError
from foundation.ledger import (
    EMPTY_COUNTS, RUN_ONLY_KEYS, StageOutput, atomic_write_bytes, atomic_write_json, deps_hash, describe_inputs,
    input_task,
)
from pipelines.contract import Phase, Result, Stage, StageSpec, later_tasks, run_stage
from pipelines.eval.beir import BeirSet, find_files, read_beir
from pipelines.eval.retrieval import Hits, doc_order_keys
from pipelines.eval.stage import (
    FINAL_PREFERENCE, METHODS, Config, bm25_run, dev_queries, evaluate_run, format_docs, metrics_document, model_runs,
    queries_per_second, rerank_run, run_rows, trec_text, why_not,
)
from storage_schemas.corpus import QUARANTINE
from storage_schemas.eval import EVAL_DROPPED, EVAL_QUERY_METRICS, EVAL_RUN

STAGE = "eval"
TASKS = ("read-beir-", "bm25", "model-", "rerank-")


# ---- inputs: the BEIR files and the models, by content ----------------------------------------------
def model_entry(name: str, role: str) -> dict:
    """A model directory as a pinned input: its path, size and the sha256 of its files (a wrong
    name fails here, before any work)."""
    from pipelines.embedding.resolve import model_fingerprint, model_size, resolve_model_dir

    model_dir = resolve_model_dir(name)
    size = model_size(model_dir)  # the model's files: its card is updated after evaluations
    return {"path": str(model_dir), "size": size, "fingerprint": f"sha256:{model_fingerprint(model_dir)}",
            "role": role}


def describe(cfg: Config, files: Iterable[str]) -> list[dict]:
    entries = describe_inputs(files)
    for name, role in ((cfg.model, "model"), (cfg.reranker, "reranker")):
        if name:
            entries.append(model_entry(name, role))
    return entries


def read_name(entries: list[dict]) -> str:
    return "read-beir-" + deps_hash(input_task("beir", e) for e in entries if "role" not in e)


def model_task(entry: dict) -> str:
    return f"{'model' if entry['role'] == 'model' else 'rerank'}-{entry['fingerprint'].split(':')[-1][:16]}"


def per_input(root: str, entry: dict) -> list[str]:
    """The tasks that read ``entry``: a model's own task; every task for a BEIR file."""
    return [model_task(entry)] if "role" in entry else later_tasks(root, TASKS)


# ---- the tasks ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)  # the evaluated split and hybrid.weight auto's dev split
def load_beir(inputs: tuple[str, ...], split: str, max_record_bytes: int) -> BeirSet:
    return read_beir(inputs, split, max_record_bytes=max_record_bytes)


def _beir(cfg: Config) -> BeirSet:
    return load_beir(tuple(cfg.input), cfg.split, cfg.max_record_bytes)


def _dev(cfg: Config) -> BeirSet | None:
    """hybrid.weight auto's dev queries: the dev split without the queries the evaluated split judges."""
    if not cfg.hybrid.auto:
        return None
    dev = load_beir(tuple(cfg.input), cfg.hybrid.dev_split, cfg.max_record_bytes)
    return dev_queries(dev, _beir(cfg), cfg.split)


def input_files(cfg: Config) -> list[str]:
    """The pinned BEIR files: corpus, queries and the split's qrels, and the dev split's qrels when
    hybrid.weight is auto (a missing one is refused here, before any work: exit 2)."""
    files = [str(p) for p in find_files(cfg.input, cfg.split)]
    if cfg.hybrid.auto and cfg.model is not None:
        try:
            files.append(str(find_files(cfg.input, cfg.hybrid.dev_split)[2]))
        except BadInputError:
            root = Path(files[0]).parent
            raise UsageError(f"hybrid.weight auto needs a dev split: {root}/qrels/{cfg.hybrid.dev_split}.tsv "
                                f"not found (hybrid.dev_split names it; or give hybrid.weight a number)") from None
    return files


def read_task(task: str, cfg: Config, out: StageOutput) -> dict:
    """The BEIR set's accounting: the queries are the stage's records; documents and judgements are
    accounted per file in the marker (and the manifest's ``*_accounts``)."""
    if (marker := out.task_marker(task)) is not None:
        return marker
    beir = _beir(cfg)
    if not len(beir.corpus):
        raise BadInputError(f"{beir.root}: corpus has no usable documents ({beir.accounts['corpus'].as_dict()})")
    files = []
    if beir.dropped:
        files.append(out.write_rows("dropped/dropped.parquet", beir.dropped, EVAL_DROPPED))
    if beir.quarantine:
        files.append(out.write_rows("quarantine/quarantine.parquet", beir.quarantine, QUARANTINE))
    acc = beir.accounts["queries"]
    counts = {"input": acc.input, "kept": acc.kept, "dropped": sum(acc.dropped.values()), "quarantined": acc.quarantined}
    return out.mark_task(task, counts, files, extra={"accounts": {k: v.as_dict() for k, v in beir.accounts.items()},
                                                     "stats": beir.stats})


def write_run(out: StageOutput, method: str, hits: list[Hits], beir: BeirSet) -> str:
    q, d, r, s = run_rows(hits, beir.queries.ids, beir.corpus.ids)
    rel = f"runs/{method}.trec"
    atomic_write_bytes(out.root / rel, trec_text(q, d, r, s, f"mgte-{method}").encode())
    return rel


def read_run(path: Path) -> tuple[list[str], list[str], list[int], list[float]]:
    """A run file back as (query ids, doc ids, ranks, scores): ``repr`` wrote each score exactly."""
    q, d, r, s = [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            qi, _q0, di, ri, si, _tag = line.split()
            q.append(qi), d.append(di), r.append(int(ri)), s.append(float(si))
    return q, d, r, s


def _mark_runs(out: StageOutput, task: str, runs: dict[str, list[Hits]], beir: BeirSet, deps: str, timings: dict,
               facts: dict) -> dict:
    files = [write_run(out, method, hits, beir) for method, hits in runs.items()]
    return out.mark_task(task, EMPTY_COUNTS, files, deps=deps,
                         extra={"methods": list(runs), "timings": timings, "facts": facts})


def bm25_task(task: str, cfg: Config, out: StageOutput, deps: str) -> dict:
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    beir, timings = _beir(cfg), {}
    docs = format_docs(beir.corpus.titles, beir.corpus.texts, cfg.format.doc_template)
    runs = {"bm25": bm25_run(cfg, beir, docs, doc_order_keys(beir.corpus.ids), timings)}
    return _mark_runs(out, task, runs, beir, deps, timings, {})


def embedder_task(task: str, cfg: Config, out: StageOutput, deps: str) -> dict:
    """Dense, sparse and hybrid runs of the embedding model."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    from pipelines.embedding import load_embedder

    beir, timings, facts = _beir(cfg), {}, {}
    embedder = load_embedder(cfg.model, device=cfg.encode.device, dtype=cfg.encode.dtype, pooling=cfg.encode.pooling,
                             verify=cfg.verify_model)
    docs = format_docs(beir.corpus.titles, beir.corpus.texts, cfg.format.doc_template)
    runs = model_runs(embedder, cfg, beir, docs, doc_order_keys(beir.corpus.ids), timings, facts, _dev(cfg))
    return _mark_runs(out, task, runs, beir, deps, timings, facts)


def first_task(task: str, cfg: Config, out: StageOutput, deps: str) -> dict:
    """``bm25`` or ``model-<fingerprint>``."""
    return (bm25_task if task == "bm25" else embedder_task)(task, cfg, out, deps)


def _first_stage(out: StageOutput, method: str, beir: BeirSet) -> list[Hits]:
    row = {doc: i for i, doc in enumerate(beir.corpus.ids)}
    by_query: dict[str, tuple[list[int], list[float]]] = {}
    q, d, _r, s = read_run(out.root / f"runs/{method}.trec")
    for qi, di, si in zip(q, d, s):
        docs, scores = by_query.setdefault(qi, ([], []))
        docs.append(row[di]), scores.append(si)
    empty = ([], [])
    return [Hits(np.asarray(by_query.get(qid, empty)[0], dtype=np.int64),
                 np.asarray(by_query.get(qid, empty)[1], dtype=np.float64)) for qid in beir.queries.ids]


def rerank_task(task: str, first: str, cfg: Config, out: StageOutput, deps: str) -> dict:
    """The reranker over the ``first`` method's run (the best first stage that ran)."""
    if (marker := out.task_marker(task, deps)) is not None:
        return marker
    from pipelines.embedding import load_reranker

    beir, timings, facts = _beir(cfg), {"rerank_first_stage": first}, {}
    reranker = load_reranker(cfg.reranker, device=cfg.encode.device, dtype=cfg.encode.dtype, verify=cfg.verify_model)
    docs = format_docs(beir.corpus.titles, beir.corpus.texts, cfg.format.doc_template)
    hits, alone = rerank_run(reranker, cfg, beir, docs, _first_stage(out, first, beir),
                             doc_order_keys(beir.corpus.ids), timings, facts)
    return _mark_runs(out, task, {"rerank": hits, **({"rerank_alone": alone} if alone is not None else {})}, beir,
                      deps, timings, facts)


def phases(cfg: Config, stage: Stage) -> list[Phase]:
    out, entries = stage.out, stage.entries
    read = read_name(entries)
    models = {e["role"]: model_task(e) for e in entries if "role" in e}
    first = (["bm25"] if cfg.bm25.enabled else []) + ([models["model"]] if "model" in models else [])
    out_phases = [Phase("read", [(read, cfg, out)], read_task, names=[read]),
                  Phase("first", [(name, cfg, out, read) for name in first], first_task, names=first, deps=read)]
    if "reranker" in models:
        deps = deps_hash([read, *first])

        def rerank_items(m):
            ran = {method for marker in m["first"] for method in marker["methods"]}
            best = next((x for x in FINAL_PREFERENCE[1:] if x in ran), None)
            if best is None:
                raise MgteError("rerank: no first-stage run to rerank (every retrieval method is off)")
            return [(models["reranker"], best, cfg, out, deps)]

        out_phases.append(Phase("rerank", rerank_items, rerank_task, names=[models["reranker"]], deps=deps))
    return out_phases


# ---- the summary ----------------------------------------------------------------------------------------
def finish(cfg: Config, stage: Stage, result: Result) -> tuple[dict, dict]:
    """run.trec, data/run.parquet, data/per_query.parquet, metrics.json and the report, from the runs."""
    out, beir = stage.out, _beir(cfg)
    markers = [m for name in ("first", "rerank") for m in result.markers.get(name, [])]
    ran = {method for m in markers for method in m["methods"]}
    timings = {k: v for m in markers for k, v in m["timings"].items()}
    facts = {k: v for m in markers for k, v in m["facts"].items()}
    if not ran:
        raise MgteError(f"no retrieval method ran: {[why_not(m, cfg, facts) for m in METHODS]}")
    final = next(m for m in FINAL_PREFERENCE if m in ran)
    lang_of = dict(zip(beir.queries.ids, beir.query_langs))
    run_tables, per_query_rows, methods = [], [], {}
    for method in (m for m in METHODS if m in ran):
        rel = f"runs/{method}.trec"
        q, d, r, s = read_run(out.root / rel)
        summary, per_query = evaluate_run(q, d, s, beir)
        methods[method] = {**summary, "run": rel}
        run_tables.append(EVAL_RUN.from_rows([{"method": method, "query_id": a, "doc_id": b, "rank": c, "score": e}
                                              for a, b, c, e in zip(q, d, r, s)]))
        per_query_rows += [{"method": method, "query_id": qid, "lang": lang_of.get(qid, "und"),
                            **{k: v[k] for k in M.MEASURES}, "num_rel": v["num_rel"], "num_ret": v["num_ret"]}
                           for qid, v in per_query.items()]
    atomic_write_bytes(out.root / "run.trec", (out.root / f"runs/{final}.trec").read_bytes())
    out.write_table("data/run.parquet", pa.concat_tables(run_tables), EVAL_RUN)
    out.write_rows("data/per_query.parquet", per_query_rows, EVAL_QUERY_METRICS)
    if "rerank" in ran and "rerank_fusion" in facts:  # the cross-encoder's own order, for comparison
        aq, ad, _ar, ascore = read_run(out.root / facts["rerank_fusion"]["reranker_alone_run"])
        facts["rerank_fusion"]["reranker_alone"] = {k: v for k, v in evaluate_run(aq, ad, ascore, beir)[0].items()
                                                    if k in M.MEASURES}
    qps = queries_per_second(len(beir.queries), timings, [m for m in METHODS if m in ran])
    skipped = {m: why_not(m, cfg, facts) for m in METHODS if m not in ran}
    metrics = metrics_document(cfg, beir, methods, final, skipped, qps, facts)
    atomic_write_json(out.root / "metrics.json", metrics)
    report = []
    if cfg.report:
        from pipelines.eval.report import write_report

        report = write_report(out.root, metrics)
    runs = sorted(["run.trec", *(methods[m]["run"] for m in methods)])
    read = result.markers["read"][0]
    extra = {"final_method": final, "timings_s": {k: (round(v, 4) if isinstance(v, float) else v)
                                                  for k, v in timings.items()},
             "queries_per_s": qps, **facts, **{f"{k}_accounts": v for k, v in read["accounts"].items()},
             **read["stats"]}
    return {"data": ["data/run.parquet"], "per_query": ["data/per_query.parquet"], "runs": runs,
            "metrics": ["metrics.json"], "report": report}, extra


def query_reasons(files: Iterable[Path]) -> dict[str, int]:
    """Dropped queries per reason: the stage's records are the queries (documents and judgements
    are in the same table, with their ``kind``, and accounted per file)."""
    reasons: Counter = Counter()
    for f in files:
        t = pq.read_table(f, columns=["kind", "reason"]).to_pydict()
        reasons.update(r for k, r in zip(t["kind"], t["reason"]) if k == "query")
    return dict(sorted(reasons.items()))


def run(cfg: Config) -> dict:
    from pipelines.engines import LocalEngine

    spec = StageSpec(STAGE, phases=functools.partial(phases, cfg), per_input=functools.partial(per_input, cfg.output),
                     finish=functools.partial(finish, cfg), error_budget=lambda cfg: None,
                     engine=lambda cfg: LocalEngine(), exclude=RUN_ONLY_KEYS + ("cache", "cache_dir", "report"),
                     describe=functools.partial(describe, cfg), tally=query_reasons,
                     counts=lambda markers: dict(markers["read"][0]["counts"]),  # the runs decide no record
                     models=lambda cfg: {"model": cfg.model, "reranker": cfg.reranker})
    return run_stage(spec, cfg, input_files(cfg))
