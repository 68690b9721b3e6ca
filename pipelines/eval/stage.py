"""``mgte eval``'s config and its steps: dense, sparse, hybrid, reranked and BM25 retrieval on a
BEIR set, with metrics.

One model per output directory (the full DAG runs it once per model into subdirectories; BM25 is
in every report). The steps are plain functions; the tasks of :mod:`pipelines.eval.tasks` run them:

    read_beir -> format texts -> encode corpus (cached) + queries -> dense / sparse / hybrid /
    rerank / bm25 runs -> runs/<method>.trec + metrics (trec_eval semantics) -> run.trec (the final
    method), metrics.json, data/*.parquet, report.html, manifest.json, _SUCCESS
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Literal, Sequence

import numpy as np

from foundation.config import frozen
import pipelines.eval.metrics as M
from pipelines.eval.beir import BeirSet, Texts
from pipelines.eval.retrieval import (
    Hits,
    InvertedIndex,
    dense_search,
    fill_with_zeros,
    hybrid,
    rerank_scored,
    score_top,
    truncate_dim,
)
from foundation.errors import BadInputError, MgteError


STAGE = "eval"
METHODS = ("bm25", "dense", "sparse", "hybrid", "rerank")
FINAL_PREFERENCE = ("rerank", "hybrid", "dense", "sparse", "bm25")
PICK_MEASURE = "ndcg@10"  # what hybrid.weight auto maximises on the dev split
HYBRID_WEIGHT_RANGE = (0.001, 0.01)  # the paper's, tuned to the released model's sparse scale
# `hybrid.weight: auto` tries these, smallest first: 0 (dense alone), then 1-2-5 steps over eight decades,
# so that a model whose sparse scores are 1e-3 or 1e3 times the released model's still finds its w; 5000
# is sparse alone in effect (dense only breaks its ties).
AUTO_GRID = (0.0, *(float(f"{m}e{e}") for e in range(-4, 4) for m in (1, 2, 5)))


@frozen
class FormatConfig:
    """How documents and queries become model input (part of the embedding cache key)."""

    doc_template: str = "{title}\n{text}"  # a document without a title is its text alone
    query_instruction: str = ""  # prepended to every query for the embedding model
    doc_max_length: int = 8192  # tokens; longer documents are truncated (and counted)
    query_max_length: int = 512

    def validate(self) -> None:
        if "{text}" not in self.doc_template:
            raise ValueError(f"format.doc_template {self.doc_template!r} must contain {{text}}")
        try:
            self.doc_template.format(title="", text="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"format.doc_template {self.doc_template!r}: only {{title}} and {{text}} "
                             f"may appear ({exc})") from None
        if self.doc_max_length < 8 or self.query_max_length < 8:
            raise ValueError("format.doc_max_length and format.query_max_length must be >= 8 tokens")


@frozen
class EncodeConfig:
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    pooling: Literal["auto", "cls", "mean"] = "auto"  # auto: mgte/HF -> [CLS], sentence-transformers -> its own
    max_tokens: int = 16384  # padded tokens per encoder batch
    max_batch: int = 64


@frozen
class DenseConfig:
    enabled: bool = True
    dim: int | None = None  # Matryoshka: keep the first `dim` dimensions, renormalise (null = all)
    index: str = "Flat"  # FAISS index_factory string; Flat = exact inner product
    # IVF indexes: inverted lists visited per query (FAISS's default is 1, which loses most of the
    # recall; ours: 32, as `mgte mine`); ignored by indexes without lists
    nprobe: int = 32

    def validate(self) -> None:
        if self.nprobe < 1:
            raise ValueError(f"dense.nprobe must be >= 1, got {self.nprobe}")


@frozen
class SparseConfig:
    enabled: bool = True  # used when the model has a sparse head


@frozen
class HybridConfig:
    enabled: bool = True
    # score = dense + weight * sparse. A number must lie in the paper's range [0.001, 0.01]; `auto` takes
    # the `grid` weight with the best nDCG@10 on `dev_split` (docs/eval.md, "Hybrid weight").
    weight: float | Literal["auto"] = 0.003
    depth: int = 1000  # candidates taken from each side before fusion
    dev_split: str = "dev"  # auto: qrels/<dev_split>.tsv of the same BEIR directory, less the queries `split` judges
    grid: tuple[float, ...] = AUTO_GRID  # auto: the weights tried, ascending; a tie goes to the smallest

    def validate(self) -> None:
        lo, hi = HYBRID_WEIGHT_RANGE
        if self.weight != "auto" and not lo <= self.weight <= hi:
            raise ValueError(f"hybrid.weight {self.weight} is outside the paper's range [{lo}, {hi}] "
                             f"(or `auto`: the best of hybrid.grid on the dev split)")
        if self.depth < 1:
            raise ValueError("hybrid.depth must be >= 1")
        if not self.grid or any(not (w >= 0) for w in self.grid) or list(self.grid) != sorted(set(self.grid)):
            raise ValueError(f"hybrid.grid {list(self.grid)} must be non-empty, >= 0 and strictly ascending")
        if not self.dev_split:
            raise ValueError("hybrid.dev_split must name a qrels file")

    @property
    def auto(self) -> bool:
        return self.enabled and self.weight == "auto"


@frozen
class RerankConfig:
    top_k: int = 100  # candidates of the final first-stage run rescored by the cross-encoder
    max_length: int = 8192
    max_tokens: int = 16384
    max_batch: int = 32
    # ours (the paper reranks with the cross-encoder's score alone, = 0): the reranked score is
    # (1 - a) z(reranker) + a z(first stage), each standardised over the query's top_k
    # (pipelines.eval.retrieval.fuse_scores); metrics.json["rerank_fusion"] keeps the reranker alone
    first_stage_weight: float = 0.0

    def validate(self) -> None:
        if self.top_k < 1 or self.max_length < 8:
            raise ValueError("rerank.top_k must be >= 1 and rerank.max_length >= 8")
        if not 0.0 <= self.first_stage_weight <= 1.0:
            raise ValueError(f"rerank.first_stage_weight must lie in [0, 1], got {self.first_stage_weight}")


@frozen
class BM25Config:
    enabled: bool = True
    k1: float = 0.9  # Anserini's BEIR/MIRACL baseline values
    b: float = 0.4
    tokenizer: Literal["unicode", "xlmr"] = "unicode"


@frozen
class Config:
    """``mgte eval`` (docs/eval.md)."""

    input: tuple[str, ...] = ()
    output: str | None = None
    model: str | None = "all-MiniLM-L6-v2"  # embedding model; null = BM25 only
    reranker: str | None = None  # cross-encoder; null = no reranking
    verify_model: bool = True  # check model and reranker against their checksums.json (mgte-written models)
    name: str | None = None  # label in reports (default: the model name)
    split: str = "test"
    top_k: int = 100  # depth of every run written
    format: FormatConfig = FormatConfig()
    encode: EncodeConfig = EncodeConfig()
    dense: DenseConfig = DenseConfig()
    sparse: SparseConfig = SparseConfig()
    hybrid: HybridConfig = HybridConfig()
    rerank: RerankConfig = RerankConfig()
    bm25: BM25Config = BM25Config()
    cache: bool = True
    cache_dir: str | None = None  # null = $MGTE_CACHE/embeddings, else ~/.cache/mgte/embeddings
    report: bool = True
    max_record_bytes: int = 64_000_000  # a longer JSONL line is quarantined as oversized
    on_input_change: Literal["refuse", "redo"] = "refuse"  # a changed BEIR file or model: refuse, or rerun what read it

    def validate(self) -> None:
        if self.top_k < 100:
            raise ValueError(f"top_k {self.top_k}: recall@100 needs runs at least 100 deep")
        if self.rerank.top_k > self.top_k:
            raise ValueError(f"rerank.top_k {self.rerank.top_k} > top_k {self.top_k}: the reranker reads the run")
        if self.dense.dim is not None and self.dense.dim < 1:
            raise ValueError("dense.dim must be >= 1 (or null)")
        if self.model is None and not self.bm25.enabled:
            raise ValueError("nothing to evaluate: model is null and bm25.enabled is false")
        if self.hybrid.auto and self.hybrid.dev_split == self.split:
            raise ValueError(f"hybrid.dev_split {self.split!r} is the evaluated split: hybrid.weight auto must be "
                             f"chosen on queries outside it")


# -------------------------------------------------------------------------------------------------
# Formatting.


def format_docs(titles: Sequence[str], texts: Sequence[str], template: str) -> list[str]:
    return [template.format(title=t.strip(), text=x) if t.strip() else x for t, x in zip(titles, texts)]


def format_queries(texts: Sequence[str], instruction: str) -> list[str]:
    return [instruction + t for t in texts]


# -------------------------------------------------------------------------------------------------
# Encoding.


def encode_corpus(embedder, doc_ids: Sequence[str], doc_texts: Sequence[str], cfg: Config):
    """Corpus embeddings from the cache, or encoded and stored there."""
    from pipelines.eval.cache import EmbeddingCache, cache_key, corpus_hash

    protocol = {"doc_template": cfg.format.doc_template, "doc_max_length": cfg.format.doc_max_length,
                "dtype": cfg.encode.dtype, "pooling": cfg.encode.pooling}
    key = cache_key(embedder.model_id, corpus_hash(doc_ids, doc_texts), protocol)
    cache = EmbeddingCache(cfg.cache_dir) if cfg.cache else None
    if cache is not None and (hit := cache.load(key)) is not None and hit.dense.shape[0] == len(doc_ids):
        return hit, key, True
    encoded = embedder.encode(doc_texts, max_length=cfg.format.doc_max_length, max_tokens=cfg.encode.max_tokens,
                              max_batch=cfg.encode.max_batch, sparse=embedder.has_sparse)
    _check_finite(encoded.dense, doc_ids, "document")
    if cache is not None:
        cache.save(key, encoded, {"model_id": embedder.model_id, "model": embedder.name,
                                  "protocol": protocol, "corpus_docs": len(doc_ids)})
    return encoded, key, False


def _check_finite(vectors: np.ndarray, ids: Sequence[str], what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise MgteError(f"the model produced non-finite embeddings for {bad.size} {what}(s), first {ids[bad[0]]!r}")


# -------------------------------------------------------------------------------------------------
# Runs: TREC text and evaluation.


def run_rows(hits: Sequence[Hits], query_ids: Sequence[str], doc_ids: Sequence[str]):
    """Flat (query ids, doc ids, ranks, scores) of a run; queries without results have no rows."""
    q, d, r, s = [], [], [], []
    for qid, h in zip(query_ids, hits):
        q += [qid] * len(h)
        d += [doc_ids[i] for i in h.docs.tolist()]
        r += list(range(1, len(h) + 1))
        s += h.scores.tolist()
    return q, d, r, s


def trec_text(q, d, r, s, tag: str) -> str:
    """TREC run lines; ``repr`` writes each score so that it reads back as the same double."""
    return "".join(f"{qi} Q0 {di} {ri} {si!r} {tag}\n" for qi, di, ri, si in zip(q, d, r, s))


def evaluate_run(q, d, s, beir: BeirSet) -> tuple[dict, dict[str, dict]]:
    """(summary, per-query metrics) of one run, as pytrec_eval would compute them from its TREC file."""
    per_query = M.evaluate_arrays(q, d, s, beir.qrels, M.MEASURES)
    lang_of = dict(zip(beir.queries.ids, beir.query_langs))
    summary = M.mean(per_query, M.MEASURES)
    by_lang: dict[str, list[str]] = {}
    for qid in per_query:
        by_lang.setdefault(lang_of.get(qid, "und"), []).append(qid)
    summary["per_language"] = {lang: M.mean(per_query, M.MEASURES, qids) for lang, qids in sorted(by_lang.items())}
    summary["queries_without_results"] = len(beir.queries) - len({*q})
    return summary, per_query


# -------------------------------------------------------------------------------------------------
# The stage.


def bm25_run(cfg: Config, beir: BeirSet, doc_texts: list[str], keys: np.ndarray, timings: dict) -> list[Hits]:
    from pipelines.eval.bm25 import BM25Index

    t0 = time.perf_counter()
    index = BM25Index(doc_texts, k1=cfg.bm25.k1, b=cfg.bm25.b, tokenizer=cfg.bm25.tokenizer)
    timings["bm25_index_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = [fill_with_zeros(h, cfg.top_k, keys) for h in index.search(beir.queries.texts, cfg.top_k, keys)]
    timings["bm25_search_s"] = time.perf_counter() - t0
    return hits


def search_queries(embedder, docs, texts: Sequence[str], ids: Sequence[str], cfg: Config, keys: np.ndarray,
                   depth: int, use_dense: bool, use_sparse: bool, timings: dict, facts: dict, prefix: str = ""):
    """(dense hits, sparse hits) of the queries ``texts`` over the encoded corpus, ``depth`` deep (None for
    a side not asked for); timings under ``<prefix>query_encode_s`` and so on."""
    t0 = time.perf_counter()
    queries = embedder.encode(format_queries(texts, cfg.format.query_instruction),
                              max_length=cfg.format.query_max_length, max_tokens=cfg.encode.max_tokens,
                              max_batch=cfg.encode.max_batch, sparse=embedder.has_sparse)
    _check_finite(queries.dense, ids, "query")
    timings[f"{prefix}query_encode_s"] = time.perf_counter() - t0
    facts[f"{prefix}truncated_queries"] = queries.n_truncated
    dense_hits = sparse_hits = None
    if use_dense:
        dim = cfg.dense.dim
        t0 = time.perf_counter()
        dense_hits = dense_search(truncate_dim(docs.dense, dim), truncate_dim(queries.dense, dim), depth, keys,
                                  index_factory=cfg.dense.index, nprobe=cfg.dense.nprobe)
        timings[f"{prefix}dense_search_s"] = time.perf_counter() - t0
    if use_sparse:
        t0 = time.perf_counter()
        sparse_hits = InvertedIndex(docs.sparse).search(queries.sparse, depth, keys)
        timings[f"{prefix}sparse_search_s"] = time.perf_counter() - t0
    return dense_hits, sparse_hits


def model_runs(embedder, cfg: Config, beir: BeirSet, doc_texts: list[str], keys: np.ndarray, timings: dict,
               facts: dict, dev: BeirSet | None = None) -> dict[str, list[Hits]]:
    """Dense, sparse and hybrid runs of one embedding model over the judged queries (``dev``: the dev
    queries of ``hybrid.weight: auto``, already without the test split's)."""
    facts.update(model_kind=embedder.kind, model_id=embedder.model_id, has_sparse_head=embedder.has_sparse)
    t0 = time.perf_counter()
    docs, key, hit = encode_corpus(embedder, beir.corpus.ids, doc_texts, cfg)
    timings["corpus_encode_s"] = time.perf_counter() - t0
    facts.update(cache_key=key, cache_hit=hit, truncated_docs=docs.n_truncated, doc_max_length_used=docs.max_length,
                 dense_dim_full=int(docs.dense.shape[1]))

    runs: dict[str, list[Hits]] = {}
    depth = cfg.top_k
    use_sparse = embedder.has_sparse and (cfg.sparse.enabled or cfg.hybrid.enabled)
    use_dense = cfg.dense.enabled or (cfg.hybrid.enabled and use_sparse)
    fuse = use_sparse and use_dense and cfg.hybrid.enabled
    fused_depth = max(depth, cfg.hybrid.depth) if fuse else depth
    if use_dense:
        facts["dense_dim"] = min(cfg.dense.dim, docs.dense.shape[1]) if cfg.dense.dim else int(docs.dense.shape[1])
    dense_hits, sparse_hits = search_queries(embedder, docs, beir.queries.texts, beir.queries.ids, cfg, keys,
                                             fused_depth, use_dense, use_sparse, timings, facts)
    if cfg.dense.enabled and dense_hits is not None:
        runs["dense"] = [_cut(h, depth) for h in dense_hits]
    if cfg.sparse.enabled and sparse_hits is not None:
        runs["sparse"] = [fill_with_zeros(_cut(h, depth), depth, keys) for h in sparse_hits]
    if fuse:
        weight = cfg.hybrid.weight
        facts["hybrid"] = {"weight": weight, "chosen_by": "config"}
        if cfg.hybrid.auto:
            if dev is None:
                raise MgteError("hybrid.weight auto: no dev queries were given to model_runs")
            t0 = time.perf_counter()
            dev_dense, dev_sparse = search_queries(embedder, docs, dev.queries.texts, dev.queries.ids, cfg, keys,
                                                   fused_depth, True, True, timings, facts, prefix="dev_")
            weight, dev_ndcg = pick_weight(dev_dense, dev_sparse, cfg.hybrid.grid, depth, keys, dev)
            timings["hybrid_auto_s"] = time.perf_counter() - t0
            facts["hybrid"] = {"weight": weight, "chosen_by": f"best dev {PICK_MEASURE} over hybrid.grid",
                               "dev_split": cfg.hybrid.dev_split, "dev_qrels": dev.files[2]["path"],
                               "dev_queries": len(dev.queries), "dev_queries_in_test_left_out": dev.stats["in_test"],
                               "grid": list(cfg.hybrid.grid), f"dev_{PICK_MEASURE}": dev_ndcg}
        t0 = time.perf_counter()
        runs["hybrid"] = hybrid(dense_hits, sparse_hits, weight, depth, keys)
        timings["hybrid_fuse_s"] = time.perf_counter() - t0
    return runs


# -------------------------------------------------------------------------------------------------
# Hybrid weight auto: the dev split's queries outside the test split, the grid point best on them.


def dev_queries(dev: BeirSet, test: BeirSet, split: str = "test") -> BeirSet:
    """``dev`` without the queries that the test split judges (``stats["in_test"]`` counts them), so
    that the weight is never chosen on a test query; none left is an error naming the dev qrels."""
    keep = [i for i, qid in enumerate(dev.queries.ids) if qid not in test.qrels]
    if not keep:
        raise BadInputError(f"hybrid.weight auto: {dev.files[2]['path']} has no judged query outside the "
                             f"{split} split ({len(dev.queries)} judged, all in it)")
    q = dev.queries
    queries = Texts([q.ids[i] for i in keep], [q.titles[i] for i in keep], [q.texts[i] for i in keep],
                    [q.langs[i] for i in keep], [q.lines[i] for i in keep])
    return replace(dev, queries=queries, query_langs=[dev.query_langs[i] for i in keep],
                   qrels={qid: dev.qrels[qid] for qid in queries.ids},
                   stats={**dev.stats, "in_test": len(dev.queries) - len(keep)})


def pick_weight(dense: Sequence[Hits], sparse: Sequence[Hits], grid: Sequence[float], k: int,
                order_keys: np.ndarray, dev: BeirSet) -> tuple[float, list[float]]:
    """The weight of ``grid`` whose hybrid run has the best mean nDCG@10 over the dev queries (the
    first, i.e. smallest, of a tie), and every grid point's value."""
    values = []
    for w in grid:
        q, d, _r, s = run_rows(hybrid(dense, sparse, w, k, order_keys), dev.queries.ids, dev.corpus.ids)
        values.append(M.mean(M.evaluate_arrays(q, d, s, dev.qrels, (PICK_MEASURE,)), (PICK_MEASURE,))[PICK_MEASURE])
    return float(grid[int(np.argmax(values))]), values


def _cut(hits: Hits, k: int) -> Hits:
    return Hits(hits.docs[:k], hits.scores[:k])


def rerank_run(model, cfg: Config, beir: BeirSet, doc_texts: list[str], first: list[Hits], keys: np.ndarray,
               timings: dict, facts: dict) -> list[Hits]:
    facts["reranker_id"] = model.model_id
    truncated = 0

    def score(q_rows: list[int], d_rows: list[int]) -> np.ndarray:
        nonlocal truncated
        values, truncated = model.score([beir.queries.texts[i] for i in q_rows], [doc_texts[i] for i in d_rows],
                                        max_length=cfg.rerank.max_length, max_tokens=cfg.rerank.max_tokens,
                                        max_batch=cfg.rerank.max_batch)
        return values

    t0 = time.perf_counter()
    scored = score_top(first, cfg.rerank.top_k, score)
    weight = cfg.rerank.first_stage_weight
    out = rerank_scored(first, cfg.rerank.top_k, scored, keys, weight)
    timings["rerank_s"] = time.perf_counter() - t0
    facts["truncated_rerank_pairs"] = truncated
    if weight > 0:
        facts["rerank_fusion"] = {"first_stage_weight": weight, "first_stage": timings.get("rerank_first_stage"),
                                  "scores": "(1 - w) z(reranker) + w z(first stage) over each query's top_k",
                                  "reranker_alone_run": "runs/rerank_alone.trec"}
        return out, rerank_scored(first, cfg.rerank.top_k, scored, keys, 0.0)
    return out, None


def why_not(method: str, cfg: Config, facts: dict) -> str:
    """Why a method has no run (for metrics.json and the report)."""
    if method == "rerank":
        return "reranker is null"
    if method == "bm25":
        return "bm25.enabled is false"
    if cfg.model is None:
        return "model is null"
    if method in ("sparse", "hybrid") and not facts.get("has_sparse_head"):
        return "the model has no sparse head"
    return f"{method}.enabled is false"


def queries_per_second(n: int, timings: dict, methods: Sequence[str]) -> dict[str, float]:
    """Query throughput of each method: query encoding plus its own search/fusion/rerank time."""
    enc = timings.get("query_encode_s", 0.0)
    cost = {
        "bm25": timings.get("bm25_search_s"),
        "dense": enc + timings["dense_search_s"] if "dense_search_s" in timings else None,
        "sparse": enc + timings["sparse_search_s"] if "sparse_search_s" in timings else None,
    }
    if "hybrid_fuse_s" in timings:
        cost["hybrid"] = enc + timings["dense_search_s"] + timings["sparse_search_s"] + timings["hybrid_fuse_s"]
    if "rerank_s" in timings:
        first = {"hybrid": cost.get("hybrid"), "dense": cost.get("dense"), "sparse": cost.get("sparse"),
                 "bm25": cost.get("bm25")}.get(timings.get("rerank_first_stage", ""), 0.0) or 0.0
        cost["rerank"] = first + timings["rerank_s"]
    return {m: round(n / cost[m], 3) for m in methods if cost.get(m)}


def metrics_document(cfg: Config, beir: BeirSet, methods: dict, final: str, skipped: dict, qps: dict,
                     facts: dict) -> dict:
    """metrics.json: the final method's numbers at the top (CONTRACT.md), every method under `methods`."""
    return {
        **{m: methods[final][m] for m in M.MEASURES},
        "per_language": methods[final]["per_language"],
        "n_queries": methods[final]["n_queries"],
        "final_method": final,
        "run": "run.trec",
        "model": cfg.model,
        "reranker": cfg.reranker,
        "name": cfg.name or cfg.model or "bm25",
        "methods": methods,
        "skipped": skipped,
        "queries_per_s": qps,
        **({"hybrid": facts["hybrid"]} if "hybrid" in methods and "hybrid" in facts else {}),
        **({"rerank_fusion": facts["rerank_fusion"]} if "rerank" in methods and "rerank_fusion" in facts else {}),
        "truncated": {k: facts[k] for k in ("truncated_docs", "truncated_queries", "truncated_rerank_pairs")
                      if k in facts},
        "data": {**{k: v.as_dict() for k, v in beir.accounts.items()}, **beir.stats},
        "semantics": "trec_eval/pytrec_eval: queries in both run and qrels; ties (in float32) by doc id "
                     "descending; relevant = grade >= 1; mrr@10 = recip_rank on the 10 best documents",
    }

