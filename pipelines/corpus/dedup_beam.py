"""The corpus dedup task as Apache Beam pipelines, without a global gather: the exact groups and
the LSH buckets in slice pipelines of a configured size, near-duplicate clusters by the rounds of
:mod:`pipelines.corpus.components` shuffled through files (:mod:`pipelines.corpus.dedup_rounds`),
decisions written per shard by the workers, counts only on the driver.

Beam's DirectRunner (the FnApiRunner) keeps every shuffle of a pipeline in the driver's memory
until the pipeline ends, so one pipeline over all band items would hold 25 items per candidate
there (each a bucket and a (file, row): no signature travels; the members of buckets of two or
more are read back from the candidates files). The exact groups and the LSH buckets are therefore cut into
``ceil(candidates x bands / dedup.shuffle_items)`` slices (by text hash; by each band's first
MinHash value, so a bucket lies in one slice): one pipeline (the slice pass) reads every
candidates file once and writes its items per slice, then one pipeline per slice reads that
slice's items only and writes its exact decisions and verified links per shard. The clustering
rounds do not use Beam's shuffle: they would hold every link in the DirectRunner's driver; each
step is one task per partition of the nodes that reads and writes files (no process holds more
than a partition's links), up to 3 rounds and the write chained in one pipeline. On a distributed runner (Dataflow, Flink, Spark)
shuffles spill to disk and the slices only bound each worker's bucket; the rounds' files then
need an output root its workers share."""

from __future__ import annotations

import functools
import shutil

from foundation.errors import MgteError
from foundation.ledger import StageOutput
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import exact_group_decisions
from pipelines.corpus.dedup_rounds import CC_DIR, cluster_and_write, slice_file
from pipelines.corpus.dedup_shards import (
    _exact_table,
    _link_table,
    _shards,
    SLICE_DIR,
    bucket_members,
    candidate_count,
    file_blocks,
    read_slice_items,
    slice_bucket_links,
    slice_count,
    slice_files,
    write_slices,
)
from pipelines.corpus.steps import DECISION_KINDS, decision_shard, mark_dedup
from pipelines.engines import beam_error


def dedup_beam(engine, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, deps: str,
               build: int = 0) -> None:
    """:func:`slice_count` slice pipelines decide the exact duplicates and verify the LSH links of
    their slice; then the clustering rounds and the shards' writes, steps of partition tasks
    chained in a few pipelines (:func:`pipelines.corpus.dedup_rounds.cluster_and_write`), until no
    node is left outside a star, up to :func:`~pipelines.corpus.components.round_cap` rounds."""
    shards = _shards(files)
    for d in (out.root / CC_DIR, out.root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)
    try:
        n_rows = candidate_count(files)
        slices = slice_count(n_rows, cfg)
        with engine.pipeline() as p:
            beam_pass_pipeline(p, files, cfg, out, slices)
        for k in range(slices):
            with engine.pipeline() as p:
                beam_slice_pipeline(p, files, cfg, out, k, slices, shards)
        n_links, rounds = cluster_and_write(functools.partial(_beam_run, engine), out, build, shards, slices,
                                            cfg.exact, cfg.near, cfg.shuffle_items, tuple(DECISION_KINDS))
    except MgteError:
        raise
    except Exception as exc:  # noqa: BLE001 - Beam wraps the step's error; name it in one line
        raise beam_error(exc, [(f,) for f, _ in files]) from exc
    mark_dedup(out, shards, n_rows, deps, {"near_links": n_links, "near_rounds": rounds, "slices": slices})
    for d in (out.root / CC_DIR, out.root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)


def _beam_run(engine, tasks: list, n: int) -> None:
    """One pipeline of steps: ``task(i)`` for each of ``n`` partitions, spread over the workers
    (``Create`` reshuffles its elements), each step after the previous one (its results as a side
    input: the runner computes a side input whole before the step that reads it). What the tasks
    hand on goes through files."""
    with engine.pipeline() as p:
        beam_task_pipeline(p, tasks, n)


def beam_task_pipeline(p, tasks: list, n: int) -> None:
    import apache_beam as beam

    done = None
    for i, task in enumerate(tasks):
        parts = p | f"Parts{i}" >> beam.Create(list(range(n)))
        done = (parts | f"Step{i}" >> beam.Map(task) if done is None
                else parts | f"Step{i}" >> beam.Map(_after, beam.pvalue.AsList(done), task))


def _after(part: int, before: list, task) -> int:
    """``task(part)``, once the step before (``before``: its results) is done."""
    return task(part)


def beam_pass_pipeline(p, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, slices: int) -> None:
    """The slice pass: each block of candidates files (:func:`file_blocks`) read once, its items
    written per slice (:func:`write_slices`), for the slice pipelines to read."""
    import apache_beam as beam

    _ = (p | "Blocks" >> beam.Create(list(enumerate(file_blocks(files, cfg))))
         | "SlicePass" >> beam.Map(_write_block, files, cfg, slices, str(out.root)))


def _write_block(block: tuple[int, list[int]], files: list[tuple[str, int]], cfg: DedupConfig, slices: int,
                 root: str) -> int:
    return write_slices(block[0], block[1], files, cfg, slices, slices, root)


def beam_slice_pipeline(p, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, k: int, slices: int,
                        shards: int) -> None:
    """Slice ``k``: its items, as the slice pass wrote them -> its text-hash groups -> exact decisions,
    its LSH buckets -> verified links, both written per shard (``exact-``/``links-<k>-<shard>``,
    every shard's files, empty or not)."""
    import apache_beam as beam

    item_files = [f for kind in ("exact", "bands") for f in slice_files(out.root, kind, k)]
    items = (p | "SliceFiles" >> beam.Create(item_files)
             | "SliceItems" >> beam.FlatMap(_tagged_slice_items).with_outputs("exact", "band"))
    parts = {"seed": p | "Shards" >> beam.Create([(s, None) for s in range(shards)])}
    if cfg.exact:
        parts["exact"] = (items.exact | "GroupExact" >> beam.GroupByKey()
                          | "ExactDecide" >> beam.FlatMap(lambda kv: [d.row() for d in exact_group_decisions(kv[1])[1]])
                          | "ExactByShard" >> beam.Map(lambda d: (decision_shard(d["path"], shards), d)))
    if cfg.near:
        # slim band items (bucket, (file, row)); only the members of buckets of two or more are
        # read back, one read of each candidates file that has some, then verified per bucket
        parts["link"] = (items.band | "GroupBuckets" >> beam.GroupByKey()
                         | "MultiMembers" >> beam.FlatMap(_multi_members)
                         | "ByFile" >> beam.GroupByKey()
                         | "ReadMembers" >> beam.FlatMap(bucket_members, files)
                         | "GroupMembers" >> beam.GroupByKey()
                         | "VerifyLinks" >> beam.FlatMap(lambda kv: slice_bucket_links(kv[1], cfg))
                         | "LinkByShard" >> beam.Map(lambda link: (decision_shard(link[0][1], shards), link)))
    _ = (parts | "ByShard" >> beam.CoGroupByKey()
         | "WriteSlice" >> beam.Map(_beam_write_slice, out, k, cfg.exact, cfg.near))


def _multi_members(kv):
    """One LSH bucket's ``(file, row)`` members -> ``(file, (bucket, row))`` for each, when it has two or more."""
    bucket, members = kv
    members = list(members)
    return [(fi, (bucket, row)) for fi, row in members] if len(members) > 1 else []


def _tagged_slice_items(path: str):
    import apache_beam as beam

    for tag, value in read_slice_items(path):
        yield beam.pvalue.TaggedOutput(tag, value)


def _beam_write_slice(kv, out: StageOutput, k: int, exact: bool, near: bool) -> int:
    from foundation.ledger.atomic import atomic_write_parquet

    shard, parts = kv
    if exact:
        atomic_write_parquet(out.root / slice_file("exact", k, shard), _exact_table(list(parts.get("exact", []))))
    if near:
        atomic_write_parquet(out.root / slice_file("links", k, shard), _link_table(list(parts.get("link", []))))
    return shard

