"""The corpus dedup task with Ray Data, without a global gather: near-duplicate clusters by the
shuffled rounds of :mod:`pipelines.corpus.components` (each round materialized), decisions
written per shard by the workers, counts only on the driver."""

from __future__ import annotations

import functools
import zlib
from collections import defaultdict

import numpy as np

from foundation.ledger import StageOutput
from pipelines.corpus.components import (
    group_by_key,
    large_star_checked,
    not_converged,
    round_cap,
    small_star,
    small_star_emit,
    star_check_emit,
)
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import Decision
from pipelines.corpus.dedup_shards import (
    KEY_FIELDS,
    _edge_table,
    _edges_of,
    _key_columns,
    _key_schema,
    _keys_of,
    _shards,
    band_items,
    candidate_count,
    slice_count,
    bucket_stage,
    exact_stage,
    write_shard,
)
from pipelines.corpus.steps import DECISION_KINDS, decision_shard, mark_dedup


def dedup_ray(engine, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, deps: str,
              build: int = 0) -> None:
    """Exact groups, LSH buckets and the rounds' nodes are hash-partitioned into a few groups per
    CPU, or more when the input needs them (:func:`slice_count`: one group holds at most about
    ``dedup.shuffle_items`` band items, so a worker's memory follows the config, not the input):
    Ray Data's ``map_groups`` costs about a task per group, so one group per text hash, band
    bucket or node (hundreds of thousands) would cost more than the de-duplication itself. Each
    round is materialized (the object store spills what does not fit; ``ray.object_store_mb``);
    the driver sees counts only."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import ray

    from pipelines.corpus.steps import DEDUP_COLUMNS

    parts = max(engine.cfg.parallelism or 4 * max(1, int(ray.cluster_resources().get("CPU", 1))),
                slice_count(candidate_count(files), cfg))
    shards = _shards(files)
    local = all("://" not in f for f, _ in files)
    # Bounded retries for reading the candidates. The shuffle steps keep Ray's defaults: remote
    # args on them stop Ray Data (2.60) from fusing them, and its hash shuffle then fails on the
    # empty, schema-less blocks a filter leaves. They are pure functions of the candidates.
    retry = engine.retry_args
    by_build: dict[int, list[str]] = defaultdict(list)
    for f, b in files:
        by_build[b].append(f)
    parts_ds = [ray.data.read_parquet(fs, filesystem=pafs.LocalFileSystem() if local else None, ray_remote_args=retry)
                .select_columns(DEDUP_COLUMNS)
                .map_batches(functools.partial(_with_build, build=b), batch_format="pyarrow")
                for b, fs in sorted(by_build.items())]
    ds = parts_ds[0].union(*parts_ds[1:]) if len(parts_ds) > 1 else parts_ds[0]
    n_rows = ds.count()
    by_shard = [ray.data.from_arrow(_shard_rows(pa, [{"shard": k, "kind": "seed"} for k in range(shards)]))]
    survivors = ds
    if cfg.exact:
        grouped = (ds.map_batches(functools.partial(_with_part, column="text_hash", parts=parts), batch_format="pyarrow")
                   .groupby("part").map_groups(_ray_exact, batch_format="pyarrow")
                   .materialize())
        by_shard.append(grouped.map_batches(functools.partial(_exact_shard_rows, shards=shards),
                                            batch_format="pyarrow"))
        survivors = grouped.filter(lambda r: r["kind"] == "keep").drop_columns(["kind", "reason", "duplicate_of",
                                                                                 "similarity"])
    rounds, n_links = 0, 0
    if cfg.near:
        links = (survivors.map_batches(functools.partial(_band_rows, cfg=cfg, parts=parts), batch_format="pyarrow",
                                       batch_size=BAND_BATCH)
                 .groupby("part")
                 .map_groups(functools.partial(_ray_links, threshold=cfg.threshold), batch_format="pyarrow")
                 .materialize())
        n_links = links.count()
        edges = links.map_batches(_link_edges, batch_format="pyarrow").materialize()
        cap = round_cap(n_links)
        while n_links:  # each round: large-star, which also counts the nodes not yet in a star, and small-star
            checked = _ray_step(edges, star_check_emit, large_star_checked, parts).materialize()
            bad = int(checked.sum("bad") or 0)
            if not bad:
                break
            if rounds >= cap:
                raise not_converged(rounds, n_links, bad)
            edges = _ray_step(checked, small_star_emit, small_star, parts).materialize()
            rounds += 1
        by_shard += [edges.map_batches(functools.partial(_edge_shard_rows, shards=shards), batch_format="pyarrow"),
                     links.map_batches(functools.partial(_sim_shard_rows, shards=shards), batch_format="pyarrow")]
    written = (by_shard[0].union(*by_shard[1:]) if len(by_shard) > 1 else by_shard[0])
    (written.groupby("shard")
     .map_groups(functools.partial(_ray_write_shard, out=out, build=build), batch_format="pyarrow").materialize())
    mark_dedup(out, shards, n_rows, deps, {"near_links": n_links, "near_rounds": rounds})


BAND_BATCH = 256  # candidates per _band_rows call: 25 band rows each, as Python rows while they are built


_SHARD_FIELDS = [("shard", "int64"), ("kind", "string"), *[(f"a_{n}", t) for n, t in KEY_FIELDS],
                 *[(f"b_{n}", t) for n, t in KEY_FIELDS], ("sim", "float64")]


def _shard_rows(pa, rows: list[dict]):
    """The rows of the final shuffle (every shard's decisions' inputs), one explicit schema:
    ``exact``: a = (build, path, line, -) of the removed record, b_id = its survivor, sim;
    ``edge``: a = record, b = its representative; ``sim``: a = record, sim = one of its links;
    ``seed``: one per shard, so that every shard writes its files."""
    schema = pa.schema([(n, getattr(pa, t)()) for n, t in _SHARD_FIELDS])
    return pa.Table.from_pylist(rows, schema=schema)


def _exact_shard_rows(table, shards: int):
    import pyarrow as pa

    return _shard_rows(pa, [{"shard": decision_shard(r["path"], shards), "kind": "exact", "a_build": r["build"],
                             "a_path": r["path"], "a_line": r["line"], "b_id": r["duplicate_of"],
                             "sim": r["similarity"]} for r in table.to_pylist() if r["kind"] == "dup"])


def _edge_shard_rows(table, shards: int):
    import pyarrow as pa

    return _shard_rows(pa, [{"shard": decision_shard(c[1], shards), "kind": "edge", **_key_columns1("a", c),
                             **_key_columns1("b", p)} for c, p in _edges_of(table)])


def _sim_shard_rows(table, shards: int):
    import pyarrow as pa

    rows = []
    for a, b, sim in zip(_keys_of(table, "a"), _keys_of(table, "b"), table.column("sim").to_pylist()):
        rows += [{"shard": decision_shard(k[1], shards), "kind": "sim", **_key_columns1("a", k), "sim": sim}
                 for k in (a, b)]
    return _shard_rows(pa, rows)


def _key_columns1(prefix: str, key: tuple) -> dict:
    return {f"{prefix}_{name}": key[i] for i, (name, _) in enumerate(KEY_FIELDS)}


def _ray_write_shard(table, out: StageOutput, build: int):
    import pyarrow as pa

    exact, edges, sims, shard = [], [], [], None
    for r in table.to_pylist():
        shard = r["shard"]
        a = (r["a_build"], r["a_path"], r["a_line"], r["a_id"])
        if r["kind"] == "exact":
            exact.append(Decision.of(a, "exact_duplicate", (None, r["b_id"]), r["sim"]).row())
        elif r["kind"] == "edge":
            edges.append((a, (r["b_build"], r["b_path"], r["b_line"], r["b_id"])))
        elif r["kind"] == "sim":
            sims.append((a, r["sim"]))
    write_shard(out, shard, build, exact, edges, sims, tuple(DECISION_KINDS))
    return pa.table({"shard": [shard]}, schema=pa.schema([("shard", pa.int64())]))


def _link_edges(table):
    """Verified links (a = the bucket's earliest member, b = the other) -> (child, parent) edges."""
    a, b = _keys_of(table, "a"), _keys_of(table, "b")
    return _edge_table([(max(x, y), min(x, y)) for x, y in zip(a, b)])


def _node_part(node: tuple, parts: int) -> int:
    return zlib.crc32(repr(node).encode()) % parts


def _emit_table(pairs: list[tuple], parts: int):
    """``(node, value)`` pairs -> rows keyed by the node's partition; a value is a node or a
    ``(role, node)`` pair (:func:`star_check_emit`)."""
    import pyarrow as pa

    keys = [k for k, _ in pairs]
    roles = [v[0] if isinstance(v[0], str) else None for _, v in pairs]
    values = [v[1] if isinstance(v[0], str) else v for _, v in pairs]
    return pa.table({"part": [_node_part(k, parts) for k in keys], **_key_columns("k", keys),
                     **_key_columns("v", values), "role": roles},
                    schema=pa.schema([("part", pa.int64())] + _key_schema("k") + _key_schema("v")
                                     + [("role", pa.string())]))


def _ray_emit(table, emit, parts: int):
    return _emit_table([kv for e in _edges_of(table) for kv in emit(e)], parts)


def _grouped(table) -> list[tuple]:
    values = _keys_of(table, "v")
    roles = table.column("role").to_pylist()
    return group_by_key(zip(_keys_of(table, "k"), [v if r is None else (r, v) for v, r in zip(values, roles)]))


def _ray_reduce(table, reduce):
    """Each node's values -> ``reduce``'s edges; a reduce that also counts (:func:`large_star_checked`)
    adds one row of null nodes per partition whose ``bad`` column holds the count."""
    edges, bad = [], None
    for node, values in _grouped(table):
        got = reduce(node, values)
        if isinstance(got, tuple):
            got, n = got
            bad = (bad or 0) + n
        edges += got
    return _edge_table(edges, bad)


def _ray_step(edges, emit, reduce, parts: int):
    """One shuffle of a round: ``emit`` each edge keyed by node, ``reduce`` each node's values."""
    return (edges.map_batches(functools.partial(_ray_emit, emit=emit, parts=parts), batch_format="pyarrow")
            .groupby("part")
            .map_groups(functools.partial(_ray_reduce, reduce=reduce), batch_format="pyarrow"))


def _with_build(table, build: int):
    import pyarrow as pa

    return table.append_column("build", pa.array([build] * table.num_rows, pa.int64()))


def _part(key: str, parts: int) -> int:
    return zlib.crc32(key.encode()) % parts  # stable across processes (unlike hash())


def _with_part(table, column: str, parts: int):
    import pyarrow as pa

    return table.append_column("part", pa.array([_part(k, parts) for k in table.column(column).to_pylist()],
                                                pa.int64()))


def _band_rows(table, cfg: DedupConfig, parts: int):
    """Candidates -> one row per (LSH band key, candidate), with an explicit schema: an empty
    block must have the same columns and types as a full one when Ray shuffles them."""
    import pyarrow as pa

    schema = pa.schema([("band", pa.string()), ("part", pa.int64()), ("build", pa.int64()), ("path", pa.string()),
                        ("line", pa.int64()), ("id", pa.string()), ("minhash", pa.list_(pa.uint32()))])
    rows = [{"band": k, "part": _part(k, parts), "build": m[0][0], "path": m[0][1], "line": m[0][2], "id": m[0][3],
             "minhash": m[1].tolist()} for r in table.to_pylist() for k, m in band_items(r, cfg)]
    return pa.Table.from_pylist(rows, schema=schema)


def _decision(row: dict) -> dict:
    return {k: row[k] for k in ("path", "line", "reason", "duplicate_of", "similarity", "build")}


def _ray_exact(table):
    """One partition of text hashes -> its rows tagged keep / dup (one survivor per hash)."""
    import pyarrow as pa

    groups: dict[str, list[dict]] = defaultdict(list)
    for row in table.drop_columns(["part"]).to_pylist():
        groups[row["text_hash"]].append(row)
    rows = []
    for members in groups.values():
        keep, dups = exact_stage(members)
        rows += [dict(r, kind="keep", reason=None, duplicate_of=None, similarity=None) for r in keep]
        rows += [{"path": d["path"], "line": d["line"], "id": None, "text_hash": None, "minhash": [], "kind": "dup",
                  "reason": d["reason"], "duplicate_of": d["duplicate_of"], "similarity": d["similarity"],
                  "build": d["build"]} for d in dups]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("path", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("text_hash", pa.string()),
        ("build", pa.int64()),
        ("minhash", pa.list_(pa.uint32())), ("kind", pa.string()), ("reason", pa.string()),
        ("duplicate_of", pa.string()), ("similarity", pa.float64())]))


def _ray_links(table, threshold: float):
    """One partition of LSH buckets -> the verified links inside each bucket, on arrays: only the
    members of buckets of two or more become Python objects (most buckets hold one record)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    links = []
    if table.num_rows:
        codes = pc.dictionary_encode(table.column("band")).combine_chunks().indices.to_numpy()
        order = np.argsort(codes, kind="stable")
        run = codes[order]
        starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
        sizes = np.diff(np.r_[starts, len(run)])
        multi = [order[a:a + n] for a, n in zip(starts, sizes) if n > 1]
        if multi:
            rows = np.concatenate(multi)
            sub = table.take(pa.array(rows))
            keys = list(zip(sub.column("build").to_pylist(), sub.column("path").to_pylist(),
                            sub.column("line").to_pylist(), sub.column("id").to_pylist()))
            mh = sub.column("minhash").combine_chunks()
            values, offsets = mh.values.to_numpy(zero_copy_only=False), mh.offsets.to_numpy()
            pos = 0
            for bucket in multi:
                members = [(keys[j], values[offsets[j]:offsets[j + 1]].astype(np.uint32, copy=False))
                           for j in range(pos, pos + len(bucket))]
                links += bucket_stage(members, threshold)
                pos += len(bucket)
    fields = ("build", "path", "line", "id")
    types = (pa.int64(), pa.string(), pa.int64(), pa.string())
    return pa.Table.from_pylist(
        [{**{f"a_{f}": v for f, v in zip(fields, a)}, **{f"b_{f}": v for f, v in zip(fields, b)}, "sim": s}
         for a, b, s in links],
        schema=pa.schema([(f"{side}_{f}", t) for side in "ab" for f, t in zip(fields, types)] + [("sim", pa.float64())]))


