"""Embeddings on disk: sharded ``.npy`` files in a cache keyed by model + data + encode settings.

A *collection* (the queries, the candidates, the positives that are not candidates) is a column
of texts in an Arrow file under the stage's ``_work/``. Its vectors live in
``<cache>/<key>/shard-NNNNN.npy`` (``encode.shard_size`` rows each, ``encode.store_dtype``,
L2-normalised) with ``meta.json`` written last. The key is a hash of the model's fingerprint and
kind, the pooling and compute dtype, the storage dtype, the max length, the shard size and the
hash of the texts: a later run with other mining rules (window, thresholds, select) or another
output directory finds every shard and encodes nothing.

Each shard is written as a temporary file and renamed, so a killed run leaves whole shards only
and the rerun encodes just the missing ones. The shards of one collection are encoded in this
process (``engine: local``) or on a Ray Data actor pool (``engine: ray``: ``map_batches`` over
the missing shard numbers, one model copy per actor, ``encode.actors`` actors, GPU actors when
``encode.num_gpus`` > 0). Inside a shard the embedder cuts length-sorted token-budget batches
(:func:`model.batching.token_budget_batches`; our encoder runs them unpadded).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from foundation.errors import MgteError
from foundation.faults import fault_point
from foundation.ledger import StageOutput, atomic_write_arrow, atomic_write_json, atomic_write_npy
from foundation.progress import progress
from foundation.ray_init import apply_env, driver_env

log = logging.getLogger(__name__)
CACHE_ENV = "MGTE_CACHE"


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "mgte")
    return Path(root).expanduser() / "mine"


def cache_root(cfg) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


@functools.lru_cache(maxsize=4)
def model_identity(model: str) -> dict:
    """The model's directory, kind and fingerprint, without loading its weights (the cache key's model part)."""
    from pipelines.embedding import model_fingerprint, model_kind, resolve_model_dir

    model_dir = resolve_model_dir(model)
    return {"model": model, "dir": str(model_dir), "kind": model_kind(model_dir),
            "fingerprint": model_fingerprint(model_dir)}


def texts_hash(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def encode_settings(cfg, side: str) -> dict:
    """What, besides the model and the texts, decides the vectors (and their files)."""
    enc = cfg.encode
    max_length = enc.query_max_length if side == "query" else enc.doc_max_length
    return {"pooling": enc.pooling, "dtype": enc.dtype, "store_dtype": enc.store_dtype, "max_length": max_length,
            "shard_size": enc.shard_size}


def cache_key(identity: dict, settings: dict, data_hash: str) -> str:
    blob = json.dumps({"kind": identity["kind"], "fingerprint": identity["fingerprint"], "settings": settings,
                       "data": data_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def write_collection(out: StageOutput, rel: str, texts: list[str], **columns: list[str]) -> tuple[str, str]:
    """Texts of one collection (and other string ``columns``) -> ``rel``, an uncompressed Arrow file
    (read by slices, memory-mapped); returns ``rel`` and the hash of the texts."""
    table = pa.table({"text": pa.array(texts, pa.string()),
                      **{name: pa.array(values, pa.string()) for name, values in columns.items()}})
    atomic_write_arrow(out.root / rel, table)
    return rel, texts_hash(texts)


def read_column(path: Path, column: str = "text") -> pa.ChunkedArray:
    """A column of a collection / candidate Arrow file, memory-mapped (pages load when touched)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all().column(column)


def shard_path(entry: Path, shard: int) -> Path:
    return entry / f"shard-{shard:05d}.npy"


def n_shards(rows: int, shard_size: int) -> int:
    return (rows + shard_size - 1) // shard_size


@functools.lru_cache(maxsize=2)
def load_model(model: str, device: str, dtype: str, pooling: str, verify: bool = True):
    """One embedder per process (a Ray actor or this one), loaded on first use only."""
    from pipelines.embedding import load_embedder

    return load_embedder(model, device=device, dtype=dtype, pooling=pooling, verify=verify)


def encode_shard(job: dict, shard: int) -> int:
    """Encode one shard of a collection and store it (tmp + rename); returns its rows."""
    target = shard_path(Path(job["entry"]), shard)
    if target.is_file():
        return 0
    texts = read_column(Path(job["texts"]))
    lo = shard * job["shard_size"]
    chunk = texts.slice(lo, job["shard_size"]).to_pylist()
    embedder = load_model(job["model"], job["device"], job["dtype"], job["pooling"], job.get("verify", True))
    vectors = embedder.encode(chunk, max_length=job["max_length"], max_tokens=job["max_tokens"],
                              max_batch=job["max_batch"]).dense
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise MgteError(f"model {job['model']} gave a non-finite embedding for text {lo + bad} of {job['texts']}")
    fault_point("encode_shard", str(target))
    atomic_write_npy(target, vectors.astype(job["store_dtype"]), private=True)  # a cache other runs may fill too
    return len(chunk)


class ShardEncoder:
    """A Ray Data actor: one model copy; each batch names shards to encode and store."""

    def __init__(self, job: dict, env: dict):
        apply_env(env)
        self.job = job

    def __call__(self, batch: dict) -> dict:
        shards = [int(s) for s in batch["shard"]]
        return {"shard": np.asarray(shards), "rows": np.asarray([encode_shard(self.job, s) for s in shards])}


def _encode_missing_ray(engine, job: dict, missing: list[int], cfg) -> None:
    import ray

    ds = ray.data.from_items([{"shard": s} for s in missing], override_num_blocks=len(missing))
    ds = ds.map_batches(ShardEncoder, fn_constructor_kwargs={"job": job, "env": driver_env()}, batch_size=1,
                        concurrency=min(cfg.encode.actors, len(missing)), num_cpus=1,
                        num_gpus=cfg.encode.num_gpus or None, max_restarts=engine.max_retries,
                        max_task_retries=engine.max_retries)
    done = sorted(int(s) for s in ds.to_pandas()["shard"].tolist())
    if done != sorted(missing):
        raise MgteError(f"mine: Ray encoded shards {done}, expected {sorted(missing)}")


def encode_collection(engine, task: str, side: str, rel: str, data_hash: str, rows: int, cfg,
                      out: StageOutput, deps: str) -> dict:
    """The task over one collection: the missing shards encoded (locally or on Ray), ``meta.json``,
    then the marker (the cache key, and how many shards were encoded now or found cached)."""
    identity = model_identity(cfg.model)
    settings = encode_settings(cfg, side)
    key = cache_key(identity, settings, data_hash)
    entry = cache_root(cfg) / key
    entry.mkdir(parents=True, exist_ok=True)
    total = n_shards(rows, cfg.encode.shard_size)
    missing = [s for s in range(total) if not shard_path(entry, s).is_file()]
    job = {"entry": str(entry), "texts": str(out.root / rel), "model": cfg.model, "device": cfg.encode.device,
           "dtype": cfg.encode.dtype, "pooling": cfg.encode.pooling, "verify": cfg.verify_model, "store_dtype": cfg.encode.store_dtype,
           "shard_size": cfg.encode.shard_size, "max_length": settings["max_length"],
           "max_tokens": cfg.encode.max_tokens, "max_batch": cfg.encode.max_batch}
    t0 = time.perf_counter()
    if missing and getattr(engine, "name", "local") == "ray":
        _encode_missing_ray(engine, job, missing, cfg)
    else:
        for shard in progress(missing, f"mine encode {side}", unit="shards"):
            encode_shard(job, shard)
    seconds = time.perf_counter() - t0
    dim = int(np.load(shard_path(entry, 0), mmap_mode="r").shape[1]) if total else 0
    atomic_write_json(entry / "meta.json", {"key": key, "model": identity, "settings": settings, "data": data_hash,
                                            "rows": rows, "shards": total, "dim": dim})
    log.info("mine: %s: %d texts, %d shards encoded, %d cached (%.1f s)", side, rows, len(missing),
             total - len(missing), seconds)
    return out.mark_task(task, {"input": 0, "kept": 0, "dropped": 0, "quarantined": 0}, [], deps=deps,
                         extra={"cache_key": key, "cache_entry": str(entry), "rows": rows, "dim": dim,
                                "miner": f"{cfg.model} ({identity['kind']}:{identity['fingerprint']})",
                                "encoded_shards": len(missing), "cached_shards": total - len(missing),
                                "encode_s": round(seconds, 3)})


def open_vectors(marker: dict) -> list[np.ndarray]:
    """The shards of an encoded collection, memory-mapped (nothing is read until used)."""
    entry = Path(marker["cache_entry"])
    total = n_shards(marker["rows"], json.loads((entry / "meta.json").read_text())["settings"]["shard_size"]) \
        if (entry / "meta.json").is_file() else -1
    if total < 0:
        raise MgteError(f"mine: embedding cache entry {entry} is gone; delete {marker['task']} from _tasks/ or "
                        f"use a new --output to encode again")
    shards = [np.load(shard_path(entry, s), mmap_mode="r") for s in range(total)]
    if sum(s.shape[0] for s in shards) != marker["rows"]:
        raise MgteError(f"mine: embedding cache entry {entry} holds {sum(s.shape[0] for s in shards)} rows, "
                        f"expected {marker['rows']}")
    return shards


def rows_of(shards: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Vectors of the given global rows (float32) from memory-mapped shards."""
    if not shards:
        return np.zeros((len(rows), 0), dtype=np.float32)
    size = shards[0].shape[0]
    out = np.empty((len(rows), shards[0].shape[1]), dtype=np.float32)
    for i, r in enumerate(np.asarray(rows, dtype=np.int64)):
        out[i] = shards[r // size][r % size]
    return out
