"""Near-duplicate clusters without a global gather: the distributed connected components equal a
union-find on random graphs and long paths; on a corpus whose near duplicates form one long chain
(d_i ~ d_i+1, d_0 and d_N unrelated, in shuffled order over three files and two builds) Beam, Ray
and the local pool through files write, shard by shard, exactly the local engine's in-memory
decisions; and the Beam pipelines hold no shuffle (GroupByKey) and no global combiner."""

import functools
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.errors import MgteError
from foundation.ledger import StageOutput
from pipelines.corpus import components as cc
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import UnionFind
from pipelines.corpus import dedup_rounds
from pipelines import engines
from pipelines.corpus.dedup_engines import dedup_in_memory, run_dedup
from pipelines.corpus.steps import DEDUP_TASK
from pipelines.engines import BeamEngine, LocalEngine, RayEngine

CFG = DedupConfig(bands=20, rows=4, threshold=0.45, minhash="numpy")
CHAIN = 24
RAY_CHAIN = 10


# ---- the connected components themselves -----------------------------------------------------
def union_find(links) -> dict:
    uf = UnionFind()
    for a, b, *_ in links:
        uf.union(a, b)
    return {k: uf.find(k) for k in uf.parent if uf.find(k) != k}


def random_graphs():
    rng = random.Random(7)
    for n in (2, 5, 30, 200):
        for density in (0.5, 1.0, 2.0):
            nodes = [(rng.randrange(2), f"f{rng.randrange(3)}", i, f"id{i}") for i in range(n)]
            yield [tuple(rng.sample(nodes, 2)) for _ in range(int(density * n))]
    for n in (50, 300):  # long paths, in key order and shuffled, and a path of stars
        yield [((0, "p", i, ""), (0, "p", i + 1, "")) for i in range(n)]
        order = list(range(n + 1))
        rng.shuffle(order)
        yield [((0, "p", order[i], ""), (0, "p", order[i + 1], "")) for i in range(n)]
        yield [((0, "p", i, ""), (0, "p", i + 1 + j, "")) for i in range(0, n, 5) for j in range(5)]


def test_components_equal_union_find():
    for links in random_graphs():
        got, rounds = cc.components(links)
        assert got == union_find(links)
        assert rounds <= cc.round_cap(len(links))


def test_a_long_path_needs_rounds_and_the_cap_raises():
    path = [((0, "p", i, ""), (0, "p", i + 1, "")) for i in range(300)]
    _, rounds = cc.components(path)
    assert rounds >= 5
    with pytest.raises(MgteError, match="did not converge in 2 rounds over 300 links"):
        cc.components(path, max_rounds=2)


def file_rounds(links, root: Path, shards: int, monkeypatch) -> tuple[dict, int, dict[int, list[int]]]:
    """The rounds shuffled through files (Beam's), partition tasks run one after another: the links
    written as one slice's link files -> ({node: its cluster's smallest node}, rounds, the values
    each task received, by step)."""
    from pipelines.corpus.dedup_shards import _edges_of, _link_table
    from pipelines.corpus.steps import decision_shard

    by_shard = {}
    for a, b in links:
        by_shard.setdefault(decision_shard(a[1], shards), []).append((a, b, 0.9))
    for s in range(shards):
        path = root / dedup_rounds.slice_file("links", 0, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_link_table(by_shard.get(s, [])), path)
    received, real = defaultdict(list), dedup_rounds._received

    def counting(root, step, dst):
        got = real(root, step, dst)
        received[step].append(sum(len(v) for _, v in got))
        return got

    monkeypatch.setattr(dedup_rounds, "_received", counting)
    out = StageOutput(root, "corpus", {"dedup": "test"})
    n, rounds = dedup_rounds.cluster_and_write(lambda steps: [t(i) for t, k in steps for i in range(k)], out, 1,
                                               shards, 1, False, True, 10**6)
    assert n == len(links)
    last = root / dedup_rounds.CC_DIR / f"step{dedup_rounds.converged_step(root):03d}"
    edges = [e for f in last.glob("edges-*.parquet") for e in _edges_of(pq.read_table(f))]
    return dict(edges), rounds, received


def test_the_rounds_through_files_equal_union_find_and_no_task_gets_all_links(tmp_path, monkeypatch):
    """Beam's clustering (issue 27): each step a task per partition of the nodes, reading and
    writing files. Same clusters as a union-find on random graphs and long paths with 1, 3 and 5
    partitions; with more than one, no task of the first steps receives every value of its step."""
    rng = random.Random(11)
    graphs = [[tuple((0, f"f{rng.randrange(9)}", rng.randrange(n), "") for _ in range(2)) for _ in range(n)]
              for n in (5, 60, 400)]
    order = list(range(121))
    rng.shuffle(order)
    graphs.append([((0, f"f{order[i] % 9}", order[i], ""), (0, f"f{order[i + 1] % 9}", order[i + 1], ""))
                   for i in range(120)])
    for g, links in enumerate(graphs):
        links = [(a, b) for a, b in links if a != b]
        for shards in (1, 3, 5):
            got, rounds, received = file_rounds(links, tmp_path / f"g{g}-{shards}", shards, monkeypatch)
            assert got == union_find(links), (g, shards)
            assert rounds <= cc.round_cap(len(links))
            if shards > 1 and len(links) > 50:
                for step in (0, 1):  # the first check (both ends' roles of every edge), the first small-star
                    got_step = received[step]
                    assert len(got_step) == shards and 0 < max(got_step) < sum(got_step), (g, shards, step, got_step)


# ---- the chain corpus ------------------------------------------------------------------------
def chain_signature(c: int) -> list[int]:
    """Doc ``c`` of the chain: band b changes every 2 docs, odd bands one doc later than even
    ones, so d_c and d_c+1 share half the bands (Jaccard 0.5 >= 0.45, one LSH bucket) and d_c and
    d_c+2 none."""
    values = []
    for b in range(CFG.bands):
        epoch = (c + b % 2) // 2
        values += [(hash((b, j, epoch)) & 0x7FFFFFFF) | 1 for j in range(CFG.rows)]
    return values


def write_chain_corpus(root: Path, length: int, names=(("old.jsonl", 0), ("a.jsonl", 1), ("b.jsonl", 1))
                       ) -> list[tuple[str, int]]:
    """(files, build) pairs: the chain d_0..d_length plus an exact copy of two of its docs, a short
    second chain and singletons, shuffled over a previous build's index and two candidate files."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    docs = [(f"c{c}", f"h{c}", chain_signature(c)) for c in range(length + 1)]
    docs += [(f"x{c}", f"h{c}", chain_signature(c)) for c in (length // 3, length - 3)]  # exact copies
    docs += [(f"s{c}", f"s{c}", chain_signature(1000 + c)) for c in range(4)]  # a chain of 4
    docs += [(f"u{c}", f"u{c}", rng.integers(1, 2**31, CFG.bands * CFG.rows).tolist()) for c in range(5)]
    order = rng.permutation(len(docs))
    rows = {name: [] for name, _ in names}
    for pos, i in enumerate(order):
        name = names[pos % 3][0]
        ident, th, sig = docs[i]
        rows[name].append({"path": f"in/{name}", "line": len(rows[name]), "id": ident, "text_hash": th,
                           "minhash": sig})
    files = []
    for name, build in names:
        path = root / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[name], schema=pa.schema([
            ("path", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("text_hash", pa.string()),
            ("minhash", pa.list_(pa.uint32()))])), path)
        files.append((str(path), build))
    return files


@pytest.fixture(scope="module")
def chain_corpus(tmp_path_factory):
    return write_chain_corpus(tmp_path_factory.mktemp("chain"), CHAIN)


def decisions(out: StageOutput) -> list[dict]:
    marker = out.task_marker(DEDUP_TASK)
    rows = [r for f in marker["files"] for r in pq.read_table(out.root / f).to_pylist()]
    for r in rows:
        r["similarity"] = round(r["similarity"], 5)
    return sorted(rows, key=lambda r: (r["path"], r["line"]))


def dedup_with(engine, files, out_dir, cfg=CFG) -> tuple[list[dict], dict]:
    out = StageOutput(out_dir, "corpus", {"dedup": "test"})
    with engine:
        run_dedup(engine, files, cfg, out, "deps", build=1)
    return decisions(out), out.task_marker(DEDUP_TASK)


@pytest.fixture(scope="module")
def local_decisions(chain_corpus, tmp_path_factory):
    return dedup_with(LocalEngine(), chain_corpus, tmp_path_factory.mktemp("local"))


def test_the_chain_is_one_cluster_locally(chain_corpus, local_decisions):
    got, marker = local_decisions
    rows = [dict(r, build=b) for f, b in chain_corpus for r in pq.read_table(f).to_pylist()]
    ref = sorted((d for d in dedup_in_memory(rows, CFG) if d["build"] == 1), key=lambda d: (d["path"], d["line"]))
    assert [(d["path"], d["line"], d["reason"], d["duplicate_of"]) for d in got] == \
        [(d["path"], d["line"], d["reason"], d["duplicate_of"]) for d in ref]
    sig = {r["id"]: np.array(r["minhash"]) for r in rows}
    assert np.mean(sig["c0"] == sig[f"c{CHAIN}"]) < CFG.threshold  # the ends are not near duplicates
    ids = {(r["path"], r["line"]): r["id"] for r in rows}
    of_chain = {(r["path"], r["line"]) for r in rows if r["id"][0] in "cx" and r["path"] != "in/old.jsonl"}
    assert {(d["path"], d["line"]) for d in ref if ids[(d["path"], d["line"])][0] in "cx"} == of_chain
    near = {d["duplicate_of"] for d in ref if d["reason"] == "near_duplicate" and (d["path"], d["line"]) in of_chain}
    assert len(near) == 1 and ids[min((r["build"], r["path"], r["line"]) for r in rows
                                      if r["id"][0] in "cx")[1:]] == near.pop()  # one survivor, the earliest
    assert marker["decisions"]["exact_duplicate"] >= 1


def test_beam_writes_the_local_decisions_on_a_chain(chain_corpus, local_decisions, tmp_path):
    engine = BeamEngine("--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory")
    got, marker = dedup_with(engine, chain_corpus, tmp_path)
    assert got == local_decisions[0]
    assert marker["decisions"] == local_decisions[1]["decisions"]
    assert marker["shards"] == 3 and len(marker["files"]) == 6
    assert marker["near_rounds"] > 2  # the chain needed several rounds
    assert not (tmp_path / "_work" / "dedup_cc").exists()


def test_beam_writes_the_local_decisions_when_the_chain_crosses_partitions(tmp_path):
    """The chain's three files in three decision shards (the default names share one), so the
    rounds' partition tasks (one per shard here) pass edges and similarities between them."""
    from pipelines.corpus.steps import decision_shard

    names = (("old.jsonl", 0), ("d.jsonl", 1), ("e.jsonl", 1))
    assert sorted(decision_shard(f"in/{n}", 3) for n, _ in names) == [0, 1, 2]
    files = write_chain_corpus(tmp_path / "chain", CHAIN, names)
    local = dedup_with(LocalEngine(), files, tmp_path / "local")
    engine = BeamEngine("--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing")
    got, marker = dedup_with(engine, files, tmp_path / "beam")
    assert got == local[0] and marker["near_rounds"] > 2
    assert sum(d["reason"] == "near_duplicate" for d in got) >= CHAIN // 2  # this build's part of the chain


def test_beam_in_slices_writes_the_local_decisions(chain_corpus, local_decisions, tmp_path):
    """Issue 27: the exact groups and LSH buckets cut into ceil(candidates x bands / shuffle_items)
    slice pipelines (36 candidates x 20 bands / 250 -> 3) give the one-slice decisions."""
    import dataclasses

    engine = BeamEngine("--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory")
    got, marker = dedup_with(engine, chain_corpus, tmp_path, dataclasses.replace(CFG, shuffle_items=250))
    assert marker["slices"] == 3
    assert got == local_decisions[0]
    assert not (tmp_path / "_work" / "dedup_slices").exists()  # the slice pass's files go with the task


def test_the_local_pool_through_files_writes_the_in_memory_decisions(tmp_path):
    """Past one slice the local engine runs the steps Beam and Ray run (the pass, a task per slice,
    the rounds through files) on its pool: the in-memory engine's decisions, in 3 slices and 3
    shards (the chain's files in three shards); its work files go with the task."""
    import dataclasses

    from pipelines.corpus.steps import decision_shard

    names = (("old.jsonl", 0), ("d.jsonl", 1), ("e.jsonl", 1))
    assert sorted(decision_shard(f"in/{n}", 3) for n, _ in names) == [0, 1, 2]
    files = write_chain_corpus(tmp_path / "chain", CHAIN, names)
    ref, ref_marker = dedup_with(LocalEngine(), files, tmp_path / "memory")
    assert ref_marker.get("slices") is None  # in memory: one slice
    got, marker = dedup_with(LocalEngine(2), files, tmp_path / "pool", dataclasses.replace(CFG, shuffle_items=250))
    assert marker["slices"] == 3 and marker["shards"] == 3 and marker["near_rounds"] > 2
    assert got == ref and marker["decisions"] == ref_marker["decisions"]
    assert {d["path"] for d in got} == {"in/d.jsonl", "in/e.jsonl"}
    work = tmp_path / "pool" / "_work"
    assert not (work / "dedup_slices").exists() and not (work / "dedup_cc").exists()


def slice_pass(files, cfg, exact_slices, slices, root) -> dict:
    """The slice pass over ``files`` -> {(kind, slice): [items of that slice's files]}: exact items
    ``(text hash, key)``, band items ``((band, bucket), (file, row))``."""
    from pipelines.corpus.dedup_shards import file_blocks, read_slice, write_slices

    def items(t):
        if t is None:
            return []
        if "text_hash" in t.column_names:
            cols = (t.column(c).to_pylist() for c in ("text_hash", "build", "path", "line", "id"))
            return [(th, (b, p, ln, i)) for th, b, p, ln, i in zip(*cols)]
        cols = (t.column(c).to_pylist() for c in ("band", "bucket", "file", "row"))
        return [((b, h), (f, r)) for b, h, f, r in zip(*cols)]

    n = sum(write_slices(i, block, files, cfg, exact_slices, slices, root)
            for i, block in enumerate(file_blocks(files, cfg)))
    got = {(kind, k): items(read_slice(root, kind, k))
           for kind, count in (("exact", exact_slices), ("bands", slices)) for k in range(count)}
    assert n == sum(map(len, got.values()))
    return got


def test_the_slice_pass_covers_every_item_once_and_keeps_a_bucket_whole(chain_corpus, tmp_path, monkeypatch):
    """One pass writes each (candidate, band) item and each exact item into exactly one slice, a
    bucket (text hash) whole in one slice, whatever the number of slices, of blocks (``shuffle_items``
    1: one block a candidates file) and of row groups a slice takes in a block; one file per block
    and kind, not one per block and slice."""
    import dataclasses

    from pipelines.corpus import dedup_shards
    from pipelines.corpus.dedup_shards import SLICE_DIR, band_items, file_blocks

    rows = [dict(r, build=b) for f, b in chain_corpus for r in pq.read_table(f).to_pylist()]
    key_at = {(fi, r): (b, row["path"], row["line"], row["id"]) for fi, (f, b) in enumerate(chain_corpus)
              for r, row in enumerate(pq.read_table(f).to_pylist())}
    # a slim band item names the bucket (band, hash of band_key) and the candidate (file, row)
    want_bands = sorted(((int(k.split(":")[0]), int(k.split(":")[1], 16)), m[0]) for r in rows for k, m in band_items(r, CFG))
    want_exact = sorted((r["text_hash"], (r["build"], r["path"], r["line"], r["id"])) for r in rows)
    for slices, shuffle_items, group_rows in ((1, CFG.shuffle_items, 1 << 20), (3, 1, 1 << 20), (7, 1, 5), (2, 10**6, 7)):
        monkeypatch.setattr(dedup_shards, "ROW_GROUP_ROWS", group_rows)
        cfg = dataclasses.replace(CFG, shuffle_items=shuffle_items)
        blocks = len(file_blocks(chain_corpus, cfg))
        assert blocks == (len(chain_corpus) if shuffle_items == 1 else 1)
        root = tmp_path / f"s{slices}-{group_rows}"
        got = slice_pass(chain_corpus, cfg, slices, slices, root)
        assert sorted(p.parent.name for p in (root / SLICE_DIR).rglob("*.parquet")) == ["bands"] * blocks + ["exact"] * blocks
        bands = [(k, v) for (kind, k), vs in got.items() if kind == "bands" for v in vs]
        exact = [(k, v) for (kind, k), vs in got.items() if kind == "exact" for v in vs]
        assert sorted((v[0], key_at[v[1]]) for _, v in bands) == want_bands
        assert sorted(v for _, v in exact) == want_exact
        for items in (bands, exact):  # one bucket (text hash) -> one slice
            where = {}
            for k, v in items:
                assert where.setdefault(v[0], k) == k
        if slices > 1:
            assert len({k for k, _ in bands}) == slices  # every slice gets buckets


def test_slim_band_rows_find_the_buckets_and_links_of_the_signatures(chain_corpus, tmp_path):
    """The LSH items carry (bucket, file, row) only: the slice pass's rows name every (candidate,
    band) bucket of :func:`band_items` (same hash), and the links read back (:func:`band_links`)
    from any set of whole buckets equal the links of those buckets built from whole signatures
    (:func:`slice_bucket_links`)."""
    from pipelines.corpus.dedup import band_key
    from pipelines.corpus.dedup_shards import band_items, band_links, read_slice, slice_bucket_links, write_slices

    rows = [dict(r, build=b) for f, b in chain_corpus for r in pq.read_table(f).to_pylist()]
    write_slices(0, list(range(len(chain_corpus))), chain_corpus, CFG, 1, 1, tmp_path)
    table = read_slice(tmp_path, "bands", 0)
    assert table.num_rows == len(rows) * CFG.bands
    at = {(f, r): (b, k) for f, r, b, k in zip(*(table.column(c).to_pylist() for c in ("file", "row", "band", "bucket")))
          if b == 3}
    for fi, (f, build) in enumerate(chain_corpus):  # band 3's bucket of each row: band_key's hash
        for r, sig in enumerate(pq.read_table(f).column("minhash").to_pylist()):
            assert at[(fi, r)] == (3, int(band_key(np.asarray(sig, np.uint32), 3, CFG.rows).split(":")[1], 16))
    buckets = {}
    for r in rows:
        for k, (key, sig) in band_items(r, CFG):
            buckets.setdefault(k, []).append((key, r["text_hash"], sig.tobytes()))
    want = sorted(link for members in buckets.values() for link in slice_bucket_links(members, CFG))
    assert len(want) >= CHAIN
    for parts in (1, 4):  # the buckets split by (band + hash) % parts: every part's links, together
        part = (table.column("band").to_numpy().astype(np.uint64) + table.column("bucket").to_numpy()) % np.uint64(parts)
        got = sorted(link for p in range(parts) for link in band_links(table.filter(pa.array(part == p)), chain_corpus, CFG))
        assert got == want


@pytest.mark.slow
def test_ray_writes_the_local_decisions_on_a_chain(tmp_path, local_ray):
    """A shorter chain than Beam's (each Ray round is two shuffles of ~12 s here), still several rounds."""
    from foundation.config import RayConfig

    import dataclasses

    files = write_chain_corpus(tmp_path / "chain", RAY_CHAIN)
    local = dedup_with(LocalEngine(), files, tmp_path / "local")
    sliced = dataclasses.replace(CFG, shuffle_items=150)  # 3 slices of the band items (22 candidates x 20 bands)
    got, marker = dedup_with(RayEngine(RayConfig(num_cpus=2)), files, tmp_path / "ray", sliced)
    assert got == local[0]
    assert marker["decisions"] == local[1]["decisions"]
    assert marker["near_rounds"] >= 3
    assert marker["slices"] == 3
    assert not (tmp_path / "ray" / "_work" / "dedup_slices").exists()


def test_a_round_cap_that_is_too_low_refuses_to_write(chain_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(dedup_rounds, "round_cap", lambda n: 2)
    engine = BeamEngine("--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory")
    with pytest.raises(MgteError, match="did not converge in 2 rounds"):
        dedup_with(engine, chain_corpus, tmp_path)
    assert not (tmp_path / "_tasks" / f"{DEDUP_TASK}.json").exists()


# ---- no global gather --------------------------------------------------------------------------
def combiners(pipeline) -> list:
    """Every transform of ``pipeline`` that brings a whole PCollection to one element."""
    import apache_beam as beam
    from apache_beam.transforms import combiners as cb
    from apache_beam.transforms.core import CallableWrapperCombineFn

    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            t = node.transform
            if isinstance(t, (cb.ToList, cb.ToDict, cb.ToSet, cb.Top.Of, cb.Sample.FixedSizeGlobally)):
                found.append((node.full_label, type(t).__name__))
            elif isinstance(t, beam.CombineGlobally):
                fn = t.fn
                counts = isinstance(fn, cb.CountCombineFn) or fn is sum or (
                    isinstance(fn, CallableWrapperCombineFn) and fn._fn is sum)
                found.append((node.full_label, "count" if counts else type(fn).__name__))

    pipeline.visit(Visitor())
    return found


def test_the_beam_pipelines_shuffle_and_gather_nothing(chain_corpus, tmp_path, monkeypatch):
    """Every pipeline a Beam dedup builds (in 3 slices): no GroupByKey of the data (the DirectRunner
    holds a shuffle in its driver; Create's reshuffle of the task numbers is all) and no combiner
    of a whole collection; the steps hand on through files."""
    import dataclasses

    import apache_beam as beam

    found, pipelines, real = [], [], engines.beam_task_pipeline

    class Shuffles(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            if isinstance(node.transform, beam.Create) and not all(isinstance(v, int) for v in node.transform.values):
                found.append((node.full_label, "Create of data"))
            # Create's own reshuffle of the task numbers (n of them) spreads the tasks over the workers
            if isinstance(node.transform, (beam.GroupByKey, beam.CoGroupByKey, beam.GroupBy)) and not inside_create(node):
                found.append((node.full_label, type(node.transform).__name__))

    def inside_create(node) -> bool:
        while node is not None and not isinstance(node.transform, beam.Create):
            node = node.parent
        return node is not None

    def visited(p, steps):
        real(p, steps)
        pipelines.append(len(steps))
        found.extend(combiners(p))
        p.visit(Shuffles())

    monkeypatch.setattr(engines, "beam_task_pipeline", visited)
    engine = BeamEngine("--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory")
    dedup_with(engine, chain_corpus, tmp_path, dataclasses.replace(CFG, shuffle_items=250))
    assert pipelines and pipelines[0] == 2  # the pass and the slices, then the rounds
    assert found == []
