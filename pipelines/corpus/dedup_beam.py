"""The corpus dedup task as Apache Beam pipelines, without a global gather: the exact groups and
the LSH buckets in slice pipelines of a configured size, near-duplicate clusters by the shuffled
rounds of :mod:`pipelines.corpus.components`, decisions written per shard by the workers, counts
only on the driver.

Beam's DirectRunner (the FnApiRunner) keeps every shuffle of a pipeline in the driver's memory
until the pipeline ends, so one pipeline over all band items would hold 25 items per candidate
there (each a bucket and a (file, row): no signature travels; the members of buckets of two or
more are read back from the candidates files). The exact groups and the LSH buckets are therefore cut into
``ceil(candidates x bands / dedup.shuffle_items)`` slices (by text hash; by each band's first
MinHash value, so a bucket lies in one slice): one pipeline (the slice pass) reads every
candidates file once and writes its items per slice, then one pipeline per slice reads that
slice's items only and writes its exact decisions and verified links per shard; the clustering
pipelines then shuffle only the links (a few per duplicate). On a distributed runner (Dataflow,
Flink, Spark) shuffles spill to disk and the slices only bound each worker's bucket."""

from __future__ import annotations

from foundation.errors import MgteError
from foundation.ledger import StageOutput
from pipelines.corpus.components import (
    large_star,
    large_star_emit,
    not_converged,
    round_cap,
    small_star,
    small_star_emit,
    star_check,
    star_check_emit,
)
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import exact_group_decisions
from pipelines.corpus.dedup_shards import (
    _edge_table,
    _edges_of,
    _exact_table,
    _link_table,
    _links_of,
    _shards,
    _sim_table,
    _sims_of,
    SLICE_DIR,
    bucket_members,
    candidate_count,
    file_blocks,
    read_slice_items,
    slice_bucket_links,
    slice_count,
    slice_files,
    write_shard,
    write_slices,
)
from pipelines.corpus.steps import DECISION_KINDS, decision_shard, mark_dedup
from pipelines.engines import beam_error


CC_DIR = "_work/dedup_cc"  # the Beam pipelines' state between pipelines, removed when the task is marked
FIRST_ROUNDS = 2  # rounds in the pipeline that reads the links (most link graphs are stars after 1-2)
MORE_ROUNDS = 4  # rounds in each further pipeline, over the edges the previous one left


def dedup_beam(engine, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, deps: str,
               build: int = 0) -> None:
    """:func:`slice_count` slice pipelines decide the exact duplicates and verify the LSH links of
    their slice; one pipeline reads the links and runs :data:`FIRST_ROUNDS` rounds; while nodes are
    left outside a star (a count its workers write), further pipelines run :data:`MORE_ROUNDS` rounds
    each over the edges it left, up to :func:`round_cap`. Every clustering pipeline writes every
    shard's near decisions, final once no node is left."""
    import shutil

    shards = _shards(files)
    work = out.root / CC_DIR
    for d in (work, out.root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)
    try:
        n_rows = candidate_count(files)
        slices = slice_count(n_rows, cfg)
        with engine.pipeline() as p:
            beam_pass_pipeline(p, files, cfg, out, slices)
        for k in range(slices):
            with engine.pipeline() as p:
                beam_slice_pipeline(p, files, cfg, out, k, slices, shards)
        with engine.pipeline() as p:
            beam_first_pipeline(p, files, cfg, out, build, shards, slices, n_rows)
        counts = _read_counts(work, 0)
        rounds, i = (FIRST_ROUNDS if cfg.near else 0), 0
        while counts["bad"]:
            cap = round_cap(counts["links"])
            if rounds >= cap:
                raise not_converged(rounds, counts["links"], counts["bad"])
            i += 1
            n = min(MORE_ROUNDS, cap - rounds)
            with engine.pipeline() as p:
                beam_more_pipeline(p, out, build, shards, i, n)
            counts = {**counts, **_read_counts(work, i)}
            rounds += n
    except MgteError:
        raise
    except Exception as exc:  # noqa: BLE001 - Beam wraps the step's error; name it in one line
        raise beam_error(exc, [(f,) for f, _ in files]) from exc
    mark_dedup(out, shards, counts["candidates"], deps,
               {"near_links": counts["links"], "near_rounds": rounds, "slices": slices})
    for d in (work, out.root / SLICE_DIR):
        shutil.rmtree(d, ignore_errors=True)


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
        atomic_write_parquet(out.root / _slice_file("exact", k, shard), _exact_table(list(parts.get("exact", []))))
    if near:
        atomic_write_parquet(out.root / _slice_file("links", k, shard), _link_table(list(parts.get("link", []))))
    return shard


def beam_first_pipeline(p, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, build: int,
                        shards: int, slices: int = 1, candidates: int | None = None) -> None:
    """The slices' links -> :data:`FIRST_ROUNDS` rounds -> every shard's decisions (its exact
    decisions read from the slices' files by its writer) and the state of the next pipeline."""
    import apache_beam as beam

    candidates = candidate_count(files) if candidates is None else candidates
    parts = {"seed": p | "Shards" >> beam.Create([(k, None) for k in range(shards)])}
    if cfg.near:
        links = (p | "LinkFiles" >> beam.Create([str(out.root / _slice_file("links", k, s))
                                                 for k in range(slices) for s in range(shards)])
                 | "ReadLinks" >> beam.FlatMap(lambda f: _links_of(pq_read(f))))
        n_links = links | "CountLinks" >> beam.combiners.Count.Globally()
        sims = links | "LinkEnds" >> beam.FlatMap(lambda link: [(link[0], link[2]), (link[1], link[2])])
        edges = _beam_rounds(links | "Orient" >> beam.Map(lambda link: (max(link[:2]), min(link[:2]))), FIRST_ROUNDS)
        bad = _beam_not_in_stars(edges)
        parts["edge"] = edges | "EdgeByShard" >> beam.Map(lambda e: (decision_shard(e[0][1], shards), e))
        parts["sim"] = sims | "SimByShard" >> beam.Map(lambda s: (decision_shard(s[0][1], shards), s))
    else:
        n_links = p | "NoLinks" >> beam.Create([0])
        bad = p | "NoClusters" >> beam.Create([0])
    kinds = tuple(DECISION_KINDS)
    exact_slices = slices if cfg.exact else 0
    _ = (parts | "ByShard" >> beam.CoGroupByKey()
         | "WriteShards" >> beam.Map(_beam_write_shard, out, build, kinds, 0 if cfg.near else None, exact_slices))
    _ = (p | "Counts" >> beam.Create([0])
         | "WriteCounts" >> beam.Map(_write_counts, out, candidates, beam.pvalue.AsSingleton(n_links),
                                     beam.pvalue.AsSingleton(bad)))


def beam_more_pipeline(p, out: StageOutput, build: int, shards: int, i: int, rounds: int) -> None:
    import apache_beam as beam

    edges = (p | "EdgeFiles" >> beam.Create([str(out.root / _state_file("edges", i - 1, k)) for k in range(shards)])
             | "ReadEdges" >> beam.FlatMap(lambda f: _edges_of(pq_read(f))))
    sims = (p | "SimFiles" >> beam.Create([str(out.root / _state_file("sims", 0, k)) for k in range(shards)])
            | "ReadSims" >> beam.FlatMap(lambda f: _sims_of(pq_read(f))))
    edges = _beam_rounds(edges, rounds)
    parts = {"seed": p | "Shards" >> beam.Create([(k, None) for k in range(shards)]),
             "edge": edges | "EdgeByShard" >> beam.Map(lambda e: (decision_shard(e[0][1], shards), e)),
             "sim": sims | "SimByShard" >> beam.Map(lambda s: (decision_shard(s[0][1], shards), s))}
    _ = (parts | "ByShard" >> beam.CoGroupByKey()
         | "WriteShards" >> beam.Map(_beam_write_shard, out, build, ("near",), i))
    _ = (p | "Counts" >> beam.Create([i])
         | "WriteCounts" >> beam.Map(_write_counts, out, bad=beam.pvalue.AsSingleton(_beam_not_in_stars(edges))))


def _beam_rounds(edges, n: int):
    import apache_beam as beam

    for r in range(n):
        edges = (edges | f"LargeStarEmit{r}" >> beam.FlatMap(large_star_emit)
                 | f"LargeStarGroup{r}" >> beam.GroupByKey()
                 | f"LargeStar{r}" >> beam.FlatMapTuple(large_star)
                 | f"SmallStarEmit{r}" >> beam.FlatMap(small_star_emit)
                 | f"SmallStarGroup{r}" >> beam.GroupByKey()
                 | f"SmallStar{r}" >> beam.FlatMapTuple(small_star))
    return edges


def _beam_not_in_stars(edges):
    """The number of nodes not yet a leaf or centre of a star (0: converged)."""
    import apache_beam as beam

    return (edges | "StarCheckEmit" >> beam.FlatMap(star_check_emit)
            | "StarCheckGroup" >> beam.GroupByKey()
            | "StarCheck" >> beam.MapTuple(star_check)
            | "NotInStars" >> beam.CombineGlobally(sum))


def _state_file(kind: str, i: int, shard: int) -> str:
    return f"{CC_DIR}/{kind}-{i:03d}-{shard:05d}.parquet"


def _slice_file(kind: str, k: int, shard: int) -> str:
    return f"{CC_DIR}/{kind}-slice{k:05d}-{shard:05d}.parquet"


def pq_read(path: str):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _beam_write_shard(kv, out: StageOutput, build: int, kinds: tuple[str, ...], state: int | None,
                      exact_slices: int = 0) -> int:
    """One shard's CoGroupByKey result (and its exact decisions from ``exact_slices`` slice files)
    -> its decision files, and (``state``: this pipeline's number) the edges and link
    similarities the next pipeline starts from."""
    from foundation.ledger.atomic import atomic_write_parquet

    shard, parts = kv
    edges, sims = list(parts.get("edge", [])), list(parts.get("sim", []))
    exact = [r for k in range(exact_slices) for r in pq_read(str(out.root / _slice_file("exact", k, shard))).to_pylist()]
    write_shard(out, shard, build, exact, edges, sims, kinds)
    if state is not None:
        atomic_write_parquet(out.root / _state_file("edges", state, shard), _edge_table(edges))
        if state == 0:
            atomic_write_parquet(out.root / _state_file("sims", 0, shard), _sim_table(sims))
    return shard


def _write_counts(i: int, out: StageOutput, candidates: int | None = None, links: int | None = None,
                  bad: int = 0) -> None:
    from foundation.ledger.atomic import atomic_write_json

    counts = {"bad": int(bad)}
    if candidates is not None:
        counts.update(candidates=int(candidates), links=int(links))
    atomic_write_json(out.root / CC_DIR / f"counts-{i:03d}.json", counts)


def _read_counts(work, i: int) -> dict:
    import json

    return json.loads((work / f"counts-{i:03d}.json").read_text())
