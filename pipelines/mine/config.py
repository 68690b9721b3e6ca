"""The typed config of ``mgte mine`` (docs/mining.md).

The mining rule keys (``num_negatives``, ``rank_range``, ``max_score_ratio``, ``margin``,
``select``, ``seed``) and ``model`` / ``candidates`` are named by the user contract. The encode
settings (``encode``) and the model are the embedding cache key: changing only the rule keys or
the search settings re-mines from the cached embeddings.
"""

from __future__ import annotations

from typing import Literal

from foundation.config import DataStageConfig, frozen


@frozen
class ReaderConfig:
    max_record_bytes: int = 8_000_000  # a longer record is quarantined as `oversized`
    on_schema_error: Literal["fail", "quarantine"] = "fail"  # parquet without a string query column
    error_budget: float = 0.05  # fail when more than this fraction of pair records is quarantined

    def validate(self) -> None:
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("reader.error_budget must be in [0, 1]")


@frozen
class EncodeConfig:
    """How texts become vectors: part of the embedding cache key (with the model's fingerprint)."""

    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # the model's compute dtype
    store_dtype: Literal["float16", "float32"] = "float16"  # the embedding shards on disk
    pooling: Literal["auto", "cls", "mean"] = "auto"  # auto: mgte/HF -> [CLS], sentence-transformers -> its own
    query_max_length: int = 512  # tokens (mGTE B.3 truncates queries at 512 ...)
    doc_max_length: int = 1024  # ... and documents at 1024 when fine-tuning
    max_tokens: int = 16384  # (padded) tokens per encoder batch (token-budget batches, longest first)
    max_batch: int = 64
    shard_size: int = 8192  # texts per embedding shard (.npy); the unit of encoding work and of resume
    actors: int = 1  # Ray Data encoder actors (engine=ray); each holds one copy of the model
    num_gpus: float = 0.0  # GPUs per Ray actor (0 = CPU actors)

    def validate(self) -> None:
        if self.query_max_length < 8 or self.doc_max_length < 8:
            raise ValueError("encode.query_max_length and encode.doc_max_length must be >= 8 tokens")
        if self.shard_size < 1 or self.actors < 1 or self.max_tokens < 1 or self.max_batch < 1:
            raise ValueError("encode.shard_size, encode.actors, encode.max_tokens and encode.max_batch must be >= 1")


@frozen
class SearchConfig:
    """How candidates are ranked: exact inner product (flat) or an approximate FAISS index."""

    index: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int = 1024  # ivf: inverted lists (at most one per 39 candidates is used)
    nprobe: int = 32  # ivf: lists visited per query
    hnsw_m: int = 32  # hnsw: links per node
    ef_search: int = 256  # hnsw: search breadth
    ef_construction: int = 200  # hnsw: build breadth
    query_chunk: int = 1024  # queries per search task: peak memory is set by this x the shard size
    slack: int = 16  # extra neighbours fetched from an approximate index beyond hi + #positives
    gpu: Literal["auto", "never"] = "auto"  # auto: faiss-gpu when it is installed and sees a GPU

    def validate(self) -> None:
        if min(self.nlist, self.nprobe, self.hnsw_m, self.ef_search, self.ef_construction, self.query_chunk) < 1:
            raise ValueError("search.nlist, nprobe, hnsw_m, ef_search, ef_construction and query_chunk must be >= 1")
        if self.slack < 0:
            raise ValueError("search.slack must be >= 0")


@frozen
class Config(DataStageConfig):
    engine: Literal["ray", "local"] = "local"  # where the tasks run; ray: encoding on a Ray Data actor pool
    model: str = "all-MiniLM-L6-v2"  # embedding model: our CPT/TRM dir, or any HF / sentence-transformers dir or name
    verify_model: bool = True  # check the model's files against its checksums.json (mgte-written models)
    candidates: str | None = None  # BEIR corpus.jsonl (_id, title, text) or JSONL/parquet (id, text); null = positives
    num_negatives: int = 8  # hard negatives per (query, positive); fewer -> dropped `too_few_negatives`
    rank_range: tuple[int, int] = (10, 100)  # 1-based ranks (own positives removed) a negative may have
    max_score_ratio: float | None = 0.95  # keep a candidate only if score < ratio x positive score
    margin: float | None = None  # keep a candidate only if score < positive score - margin
    select: Literal["top", "random"] = "top"  # the best-ranked that pass, or a seeded sample of them
    seed: int = 0
    query_instruction: str = ""  # prepended to every query before encoding (part of the cache key)
    doc_template: str = "{title}\n{text}"  # how a BEIR title and text are joined (as `mgte eval` does)
    reader: ReaderConfig = ReaderConfig()
    encode: EncodeConfig = EncodeConfig()
    search: SearchConfig = SearchConfig()
    cache_dir: str | None = None  # embedding shards; null = $MGTE_CACHE/mine, else ~/.cache/mgte/mine
    # evaluation sets (BEIR directories, or directories of them): a (query, positive) whose query or
    # positive is, or nearly is, one of their texts is dropped as `eval_overlap`; such a given
    # negative or candidate is left out (pipelines/decontam.py)
    decontaminate: tuple[str, ...] = ()

    def validate(self) -> None:
        lo, hi = self.rank_range
        if not 1 <= lo <= hi:
            raise ValueError(f"rank_range {list(self.rank_range)}: need 1 <= lo <= hi")
        if self.num_negatives < 1:
            raise ValueError("num_negatives must be >= 1")
        if self.num_negatives > hi - lo + 1:
            raise ValueError(f"num_negatives {self.num_negatives} cannot fit in rank_range {list(self.rank_range)}")
        if self.max_score_ratio is not None and self.max_score_ratio <= 0:
            raise ValueError("max_score_ratio must be > 0 (or null = off)")
        if self.margin is not None and self.margin < 0:
            raise ValueError("margin must be >= 0 (or null = off)")
        if "{text}" not in self.doc_template:
            raise ValueError(f"doc_template {self.doc_template!r} must contain {{text}}")
