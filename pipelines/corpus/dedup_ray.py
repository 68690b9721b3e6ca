"""The corpus dedup task with Ray Data, without a global gather: LSH buckets shuffled as slim
(bucket, file, row) rows, near-duplicate clusters by the shuffled rounds of
:mod:`pipelines.corpus.components` (each round materialized), decisions written per shard by the
workers, counts only on the driver."""

from __future__ import annotations

import functools
import shutil
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
    _exact_table,
    _key_columns,
    _key_schema,
    _keys_of,
    _link_table,
    SLICE_DIR,
    _shards,
    bucket_members,
    candidate_count,
    exact_stage,
    file_blocks,
    slice_bucket_links,
    slice_count,
    slice_files,
    write_shard,
    write_slices,
)
from pipelines.corpus.steps import DECISION_KINDS, decision_shard, mark_dedup


def dedup_ray(engine, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, deps: str,
              build: int = 0) -> None:
    """Exact groups, LSH buckets and the rounds' nodes are hash-partitioned into a few groups per
    CPU (``ray.parallelism`` or 4 per CPU) inside each slice of at most ``dedup.shuffle_items``
    items (below), so a worker's memory follows the config, not the input: Ray Data's
    ``map_groups`` costs about a task per group, so one group per text hash, band bucket or node
    (hundreds of thousands) would cost more than the de-duplication itself.

    The LSH shuffle carries no signature: one slim row per (candidate, band) -- the bucket, and
    where the candidate lies (file, row), ~30 bytes instead of the ~0.6 KB of a signature -- and
    each group reads back from the candidate files only the members of its buckets of two or more
    (the few that can link). The exact items (one per candidate) and the band items run in
    slices of at most ``dedup.shuffle_items`` items, one shuffle each (as Beam's slices), so Ray
    Data's shuffle holds a slice, not the input: one pass (:func:`write_slices`, a task per block
    of candidates files) reads each candidates file once and writes its items per slice, and
    each slice's shuffle reads its own files only. Each round is materialized (the object store
    spills what does not fit; ``ray.object_store_mb``); the driver sees counts and file names only."""
    import pyarrow as pa
    import ray

    n_rows = candidate_count(files)
    parts = engine.cfg.parallelism or 4 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    shards = _shards(files)
    # Bounded retries for reading the candidates. The shuffle steps keep Ray's defaults: remote
    # args on them stop Ray Data (2.60) from fusing them, and its hash shuffle then fails on the
    # empty, schema-less blocks a filter leaves. They are pure functions of the candidates.
    retry = engine.retry_args
    by_shard = [ray.data.from_arrow(_shard_rows(pa, [{"shard": k, "kind": "seed"} for k in range(shards)]))]
    # the exact items in as many slices as the band items (as on Beam): one exact item per
    # candidate, so an exact slice holds 1/bands of a band slice and its size follows the config;
    # one task decides a slice (its files hold whole text hashes), no shuffle
    exact_slices = slice_count(n_rows, cfg)
    slices = exact_slices if cfg.near else 0
    shutil.rmtree(out.root / SLICE_DIR, ignore_errors=True)
    if blocks := file_blocks(files, cfg):  # the slice pass: each candidates file read once
        (ray.data.from_items([{"block": i} for i in range(len(blocks))], override_num_blocks=len(blocks))
         .map_batches(functools.partial(_slice_pass, blocks=blocks, files=files, cfg=cfg, exact_slices=exact_slices,
                                        slices=max(1, slices), root=str(out.root)),
                      batch_format="pyarrow", batch_size=1, **retry)
         .materialize())
    if cfg.exact:  # a slice holds every item of its text hashes: one task per slice, no shuffle
        # (Ray's default retries: remote args here leave empty, schema-less blocks for the shard shuffle)
        by_shard.append(ray.data.from_items([{"slice": k} for k in range(exact_slices)], override_num_blocks=exact_slices)
                        .map_batches(functools.partial(_exact_slice, root=str(out.root), shards=shards),
                                     batch_format="pyarrow", batch_size=1)
                        .materialize())
    rounds, n_links = 0, 0
    if cfg.near:
        links = [(_read_slice(paths, retry)
                  .map_batches(functools.partial(_band_part, parts=parts), batch_format="pyarrow")
                  .groupby("part")
                  .map_groups(functools.partial(_bucket_links, files=files, cfg=cfg), batch_format="pyarrow")
                  .materialize()) for k in range(slices)
                 if (paths := slice_files(out.root, "bands", k))]  # one shuffle of at most shuffle_items band items at a time
        links = links or [ray.data.from_arrow(_link_table([]))]
        links = (links[0].union(*links[1:]) if len(links) > 1 else links[0]).materialize()
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
    mark_dedup(out, shards, n_rows, deps, {"near_links": n_links, "near_rounds": rounds, "slices": slices})
    shutil.rmtree(out.root / SLICE_DIR, ignore_errors=True)


def _slice_pass(batch, blocks: list[list[int]], files: list[tuple[str, int]], cfg: DedupConfig,
                exact_slices: int, slices: int, root: str):
    """One block of candidates files -> its items written per slice (:func:`write_slices`)."""
    import pyarrow as pa

    i = batch.column("block")[0].as_py()
    return pa.table({"items": [write_slices(i, blocks[i], files, cfg, exact_slices, slices, root)]})


def _read_slice(paths: list[str], retry: dict):
    """One slice's files, which the pass wrote under the (local) output root."""
    import pyarrow.fs as pafs
    import ray

    return ray.data.read_parquet(paths, filesystem=pafs.LocalFileSystem(), ray_remote_args=retry)


def _band_part(table, parts: int):
    """Slim band rows -> with the partition of their bucket (band, hash)."""
    import pyarrow as pa

    bucket, band = table.column("bucket").to_numpy(), table.column("band").to_numpy().astype(np.uint64)
    return table.append_column("part", pa.array(((bucket >> np.uint64(8)) + band) % np.uint64(parts), pa.int64()))


def _exact_slice(batch, root: str, shards: int):
    """One exact slice's files (the pass wrote every item of a text hash into one slice) -> its
    exact-duplicate decisions (:func:`_ray_exact`) as rows of the shard shuffle."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = slice_files(root, "exact", batch.column("slice")[0].as_py())
    dups = _ray_exact(pa.concat_tables([pq.read_table(p) for p in paths])) if paths else _exact_table([])
    return _exact_shard_rows(dups, shards)


def _bucket_links(table, files: list[tuple[str, int]], cfg: DedupConfig):
    """One partition of slim band rows -> the verified links of its buckets of two or more members:
    only those members' keys, text hashes and signatures are read back from the candidate files
    (one read per file with such a member), then :func:`slice_bucket_links` as on Beam."""
    links = []
    if table.num_rows:
        band, bucket = table.column("band").to_numpy(), table.column("bucket").to_numpy()
        fidx, ridx = table.column("file").to_numpy(), table.column("row").to_numpy()
        order = np.lexsort((ridx, fidx, bucket, band))
        b, k = band[order], bucket[order]
        starts = np.flatnonzero(np.r_[True, (b[1:] != b[:-1]) | (k[1:] != k[:-1])])
        sizes = np.diff(np.r_[starts, len(order)])
        multi = [order[s:s + n] for s, n in zip(starts, sizes) if n > 1]
        wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # file -> (bucket number, row)
        for n, idx in enumerate(multi):
            for j in idx:
                wanted[int(fidx[j])].append((n, int(ridx[j])))
        members: dict[int, list[tuple]] = defaultdict(list)
        for fi, need in wanted.items():
            for n, member in bucket_members((fi, need), files):
                members[n].append(member)
        for group in members.values():
            links += slice_bucket_links(group, cfg)
    return _link_table(links)


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
                             "sim": r["similarity"]} for r in table.to_pylist()])


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


def _ray_exact(table):
    """One partition of text hashes -> the exact-duplicate decisions of its groups (one survivor per
    hash): only the rows of hashes seen twice or more become Python objects."""
    import pyarrow.compute as pc

    counts = table.group_by("text_hash").aggregate([("text_hash", "count")])
    repeated = counts.filter(pc.greater(counts.column("text_hash_count"), 1)).column("text_hash")
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in table.filter(pc.is_in(table.column("text_hash"), value_set=repeated)).select(
            ["text_hash", "build", "path", "line", "id"]).to_pylist():
        groups[row["text_hash"]].append(row)
    return _exact_table([d for members in groups.values() for d in exact_stage(members)[1]])
