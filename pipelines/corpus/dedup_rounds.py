"""The corpus dedup task through files, on every engine: the slice pass, one task per slice, and
near-duplicate clusters by the rounds of :mod:`pipelines.corpus.components`, each shuffle written
to and read from files, decisions written per shard by the tasks. The engine only runs tasks
(``run(steps)``: each step's ``n`` calls ``task(0 .. n - 1)``, a step after the one before it: a
Beam pipeline of chained steps, Ray tasks, the local pool), so no engine's own shuffle holds a
step (Beam's DirectRunner keeps every GroupByKey in its driver) and no process ever holds more
than one slice's items or one partition's links; counts travel as file footers and small JSON
files, so the driver holds nothing but them. On a cluster the output root must be shared by the
workers (as the corpus stage's own tasks need).

* pass: one task per block of candidates files (:func:`~pipelines.corpus.dedup_shards.file_blocks`)
  reads each file once and writes its exact items and slim band items per slice;
* slice: one task per slice (at most ``dedup.shuffle_items`` items; a slice holds whole text
  hashes and whole buckets) -> its exact decisions and verified links, one file per decisions shard;

A node's partition is its decisions shard modulo :func:`round_parts` (so a partition owns whole
shards, and its last task writes their decisions). Each step of the rounds is one task per
partition: it reads the files the previous step wrote for it (``step<n>/sent/<from>-<to>.parquet``),
groups its values by node, applies the step, and writes what the next step needs into one file
per destination partition.

* start: each partition's links (those of the slices' link files of its shards) -> the star check's
  values of their edges, and each link's similarity to both ends' partitions;
* check (a large-star that also counts the nodes not yet in a star): if none is left in any
  partition, the edges it read are the converged clusters, kept per partition;
* small-star, then check again, up to :func:`round_cap`;
* write: each shard's exact decisions (the slices' files), its records' edges and similarities ->
  its decision files.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable

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
from pipelines.corpus.dedup_shards import (
    SLICE_DIR,
    _edge_table,
    _edges_of,
    _exact_table,
    _key_columns,
    _key_schema,
    _keys_of,
    _link_table,
    _links_of,
    _shards,
    _sim_table,
    _sims_of,
    band_links,
    candidate_count,
    exact_decisions,
    file_blocks,
    read_slice,
    slice_count,
    write_shard,
    write_slices,
)
from pipelines.corpus.steps import decision_shard, mark_dedup

Steps = list[tuple[Callable[[int], int], int]]  # (task, n): task(0 .. n - 1), a step after the one before

CC_DIR = "_work/dedup_cc"  # the slices' exact decisions and links, and the rounds' files; removed with the task
MIN_PARTS = 8  # ours: partitions of the rounds however few the links (bounded by the shards)
ROUNDS_PER_RUN = 3  # ours: rounds chained in one engine run (a Beam pipeline: ~4 s to start here)


def slice_file(kind: str, k: int, shard: int) -> str:
    """Slice ``k``'s exact decisions or verified links of one decisions shard, relative to the output root."""
    return f"{CC_DIR}/{kind}-slice{k:05d}-{shard:05d}.parquet"


def round_parts(links: int, shards: int, shuffle_items: int) -> int:
    """Partitions of the rounds: at least :data:`MIN_PARTS`, more once a partition would receive
    over ``shuffle_items`` values (a link sends up to four: both ends' roles and similarities),
    at most one per shard."""
    return max(1, min(shards, max(MIN_PARTS, -(-4 * links // max(1, shuffle_items)))))


def _part(node: tuple, shards: int, parts: int) -> int:
    return decision_shard(node[1], shards) % parts


def _read(path) -> "object":
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _emit(root: Path, step: int, src: int, pairs: list[tuple], shards: int, parts: int) -> int:
    """``(node, value)`` pairs -> one file per destination partition with any (a value is a node, or a
    ``(role, node)`` pair of the star check). Returns the pairs written."""
    import pyarrow as pa

    from foundation.ledger.atomic import atomic_write_parquet

    by_part: dict[int, list[tuple]] = defaultdict(list)
    for kv in pairs:
        by_part[_part(kv[0], shards, parts)].append(kv)
    schema = pa.schema(_key_schema("k") + _key_schema("v") + [("role", pa.string())])
    for dst, kvs in by_part.items():
        roles = [v[0] if isinstance(v[0], str) else None for _, v in kvs]
        values = [v[1] if isinstance(v[0], str) else v for _, v in kvs]
        atomic_write_parquet(root / _step_file(step, src, dst), pa.table(
            {**_key_columns("k", [k for k, _ in kvs]), **_key_columns("v", values), "role": roles}, schema=schema))
    return len(pairs)


def _step_dir(step: int) -> str:
    return f"{CC_DIR}/step{step:03d}"


def _step_file(step: int, src: int, dst: int) -> str:
    return f"{_step_dir(step)}/sent/{src:04d}-{dst:04d}.parquet"


def _received(root: Path, step: int, dst: int) -> list[tuple]:
    """Every ``(node, values)`` group that step ``step`` sent to partition ``dst``."""
    pairs = []
    for f in sorted((root / _step_dir(step) / "sent").glob(f"*-{dst:04d}.parquet")):
        t = _read(f)
        roles = t.column("role").to_pylist()
        pairs += [(k, v if r is None else (r, v)) for k, v, r in zip(_keys_of(t, "k"), _keys_of(t, "v"), roles)]
    return group_by_key(pairs)


def _owned(part: int, shards: int, parts: int) -> list[int]:
    return [s for s in range(shards) if s % parts == part]


def start_task(part: int, root: str, shards: int, parts: int, slices: int) -> int:
    """Partition ``part``'s links (first end in one of its shards) -> step 0: each edge's star-check
    values, and each end's link similarity (to its own partition, for the write)."""
    from foundation.ledger.atomic import atomic_write_parquet

    root = Path(root)
    links = [link for s in _owned(part, shards, parts) for k in range(slices)
             if (f := root / slice_file("links", k, s)).exists() for link in _links_of(_read(f))]
    edges = [(max(a, b), min(a, b)) for a, b, _ in links]
    _emit(root, 0, part, [kv for e in edges for kv in star_check_emit(e)], shards, parts)
    sims: dict[int, list[tuple]] = defaultdict(list)
    for a, b, sim in links:
        for node in (a, b):
            sims[_part(node, shards, parts)].append((node, sim))
    for dst, rows in sims.items():
        atomic_write_parquet(root / f"{CC_DIR}/sims/{part:04d}-{dst:04d}.parquet", _sim_table(rows))
    return len(links)


def check_task(part: int, root: str, step: int, shards: int, parts: int) -> int:
    """A large-star over the star check's values: writes the partition's current edges (its nodes'
    ``(node, parent)``: the clusters, once no node is left), its count of nodes not yet in a star,
    and the large-star's edges as the small-star's values."""
    from foundation.ledger.atomic import atomic_write_json, atomic_write_parquet

    root = Path(root)
    out, bad, current = [], 0, []
    for node, roles in _received(root, step - 1, part):
        current += [(node, other) for role, other in roles if role == "parent"]
        got, n = large_star_checked(node, roles)
        out += got
        bad += n
    atomic_write_parquet(root / _step_dir(step) / f"edges-{part:04d}.parquet", _edge_table(current))
    atomic_write_json(root / _step_dir(step) / f"bad-{part:04d}.json", {"bad": bad})
    _emit(root, step, part, [kv for e in out for kv in small_star_emit(e)], shards, parts)
    return bad


def small_task(part: int, root: str, step: int, shards: int, parts: int) -> int:
    """A small-star over its nodes' smaller neighbours -> the next check's values; nothing once the
    check before it found every node in a star (a chained step after convergence)."""
    root = Path(root)
    if _bad(root, step - 1) == 0:
        return 0
    edges = [e for node, parents in _received(root, step - 1, part) for e in small_star(node, parents)]
    return _emit(root, step, part, [kv for e in edges for kv in star_check_emit(e)], shards, parts)


def write_task(part: int, root: str, out, build: int, shards: int, parts: int, slices: int,
               exact: bool, near: bool) -> int:
    """Every shard the partition owns: its exact decisions (the slices' files), its records' converged
    edges (the first check that found every node in a star) and link similarities -> its decision
    files; nothing while the rounds have not converged (chained after the last check of a run)."""
    root = Path(root)
    edges, sims = defaultdict(list), defaultdict(list)
    if near:
        if (step := converged_step(root)) is None:
            return -1
        for e in _edges_of(_read(root / _step_dir(step) / f"edges-{part:04d}.parquet")):
            edges[decision_shard(e[0][1], shards)].append(e)
        for f in sorted((root / CC_DIR / "sims").glob(f"*-{part:04d}.parquet")):
            for node, sim in _sims_of(_read(f)):
                sims[decision_shard(node[1], shards)].append((node, sim))
    for s in _owned(part, shards, parts):
        rows = [r for k in range(slices if exact else 0) if (f := root / slice_file("exact", k, s)).exists()
                for r in _read(f).to_pylist()]
        write_shard(out, s, build, rows, edges[s], sims[s])
    return part


def _bad(root: Path, step: int) -> int | None:
    """The nodes not yet in a star after check ``step``, summed over its partitions' counts (None:
    not a finished check)."""
    files = list((root / _step_dir(step)).glob("bad-*.json"))
    return sum(json.loads(f.read_text())["bad"] for f in files) if files else None


def converged_step(root: Path) -> int | None:
    """The first check whose partitions found every node in a star."""
    for step in sorted(int(d.name[4:]) for d in (root / CC_DIR).glob("step*")):
        if _bad(root, step) == 0:
            return step
    return None


def link_count(root, shards: int, slices: int) -> int:
    """The slices' verified links, from their files' footers."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for k in range(slices) for s in range(shards)
               if (f := Path(root) / slice_file("links", k, s)).exists())


def cluster_and_write(run: Callable[[Steps], None], out, build: int, shards: int, slices: int, exact: bool,
                      near: bool, shuffle_items: int) -> tuple[int, int]:
    """The rounds over the slices' links, then every shard's decisions. ``run(steps)`` runs each
    ``(task, n)`` step's ``task(0 .. n - 1)``, a step once the one before is done (one engine run:
    a Beam pipeline). A run chains up to :data:`ROUNDS_PER_RUN` rounds (check, small-star, ...,
    check) and the write, which the tasks skip once the rounds have converged (the small-stars) or
    while they have not (the write); between runs the driver reads the last check's count and
    stops at :func:`round_cap`. Returns (links, rounds)."""
    root = Path(out.root)
    n_links = link_count(root, shards, slices) if near else 0
    parts = round_parts(n_links, shards, shuffle_items)
    kw = {"root": str(root), "shards": shards, "parts": parts}
    write = functools.partial(write_task, out=out, build=build, slices=slices, exact=exact, near=near, **kw)
    if not near:
        run([(write, parts)])
        return 0, 0
    cap = round_cap(n_links)
    tasks = [functools.partial(start_task, slices=slices, **kw), functools.partial(check_task, step=1, **kw)]
    step, rounds = 1, 0
    while True:
        for _ in range(min(ROUNDS_PER_RUN, cap - rounds)):  # (small-star, check) x k after the last check
            tasks += [functools.partial(small_task, step=step + 1, **kw), functools.partial(check_task, step=step + 2, **kw)]
            step += 2
        run([(t, parts) for t in tasks + [write]])
        if (done := converged_step(root)) is not None:
            return n_links, (done - 1) // 2
        rounds = (step - 1) // 2
        if rounds >= cap:
            raise not_converged(rounds, n_links, _bad(root, step))
        for d in (root / CC_DIR).glob("step*"):  # the next run starts from the last check's values
            if int(d.name[4:]) < step:
                shutil.rmtree(d, ignore_errors=True)
        tasks = []


# ---- the whole task: the pass, the slices, the rounds ---------------------------------------------
def pass_task(block: int, blocks: list[list[int]], files: list[tuple[str, int]], cfg: DedupConfig, slices: int,
              root: str) -> int:
    """The slice pass of one block of candidates files (:func:`write_slices`)."""
    return write_slices(block, blocks[block], files, cfg, slices, slices, root)


def slice_task(k: int, files: list[tuple[str, int]], cfg: DedupConfig, root: str, shards: int) -> int:
    """Slice ``k``'s items, as the pass wrote them -> its exact decisions (:func:`exact_decisions`)
    and verified links (:func:`band_links`), one file per decisions shard with any (a link in its
    first end's shard). Holds one slice: at most ``dedup.shuffle_items`` items. Returns the rows written."""
    root = Path(root)
    written = 0
    if cfg.exact and (table := read_slice(root, "exact", k)) is not None:
        rows = exact_decisions(table)
        del table
        written += _write_by_shard(root, "exact", k, rows, [r["path"] for r in rows], shards, _exact_table)
    if cfg.near and (table := read_slice(root, "bands", k)) is not None:
        links = band_links(table, files, cfg)
        del table
        written += _write_by_shard(root, "links", k, links, [a[1] for a, _b, _sim in links], shards, _link_table)
    return written


def _write_by_shard(root: Path, name: str, k: int, rows: list, paths: list[str], shards: int, to_table) -> int:
    """``rows`` (each of the record file in ``paths``) -> one file of slice ``k`` per decisions shard with any."""
    from foundation.ledger.atomic import atomic_write_parquet

    by_shard: dict[int, list] = defaultdict(list)
    for row, path in zip(rows, paths):
        by_shard[decision_shard(path, shards)].append(row)
    for s, got in by_shard.items():
        atomic_write_parquet(root / slice_file(name, k, s), to_table(got))
    return len(rows)


def dedup_through_files(run: Callable[[Steps], None], files: list[tuple[str, int]], cfg: DedupConfig, out,
                        deps: str, build: int = 0) -> None:
    """The dedup task over ``(file, build)`` pairs on an engine's ``run``: the pass and the slices (one
    engine run), then :func:`cluster_and_write`; marks the task with counts read from the files'
    footers. Its work files are removed before and after."""
    root = Path(out.root)
    shards = _shards(files)
    for d in (root / CC_DIR, root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)
    n_rows = candidate_count(files)
    slices = slice_count(n_rows, cfg)
    blocks = file_blocks(files, cfg)
    run([step for step in ((functools.partial(pass_task, blocks=blocks, files=files, cfg=cfg, slices=slices,
                                              root=str(root)), len(blocks)),
                           (functools.partial(slice_task, files=files, cfg=cfg, root=str(root), shards=shards), slices))
         if step[1]])
    n_links, rounds = cluster_and_write(run, out, build, shards, slices, cfg.exact, cfg.near, cfg.shuffle_items)
    mark_dedup(out, shards, n_rows, deps, {"near_links": n_links, "near_rounds": rounds, "slices": slices})
    for d in (root / CC_DIR, root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)


def engine_run(engine, steps: Steps) -> None:
    """``run`` on an engine's :meth:`map` (the local pool, Ray tasks): one step at a time."""
    for task, n in steps:
        engine.map(task, [(i,) for i in range(n)])
