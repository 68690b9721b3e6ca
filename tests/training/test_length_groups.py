"""Fine-tuning batches: one source and one length group per batch, sources by eq. 1, the table's batch
sizes, small groups merged into their neighbour, every row at most once per source epoch, exact
resume, disjoint ranks."""

import numpy as np
import pytest

from foundation.sampling import eq1_weights
from tests import paper
from training.length_groups import (PAPER_EMBEDDER_GROUPS, PAPER_RERANKER_GROUPS, LengthGroup,
                                    LengthGroupBatchSampler, assign_groups, source_buckets)

GROUPS = (LengthGroup(max_length=10, batch_size=4, sub_batch=8), LengthGroup(max_length=20, batch_size=2, sub_batch=4),
          LengthGroup(max_length=40, batch_size=2, sub_batch=2))
LENGTHS = np.random.default_rng(0).integers(1, 60, size=37)


def test_paper_tables_are_table12_of_the_paper():
    """The constants against Table 12 as the paper's text has it (tests/paper.py), bounds included."""
    table = paper.table12()
    assert [r["lo"] for r in table] == [0] + [r["hi"] for r in table[:-1]]  # contiguous length spans
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in PAPER_EMBEDDER_GROUPS] == \
        [(r["hi"], r["bs_e"], r["sbs_e"]) for r in table]
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in PAPER_RERANKER_GROUPS] == \
        [(r["hi"], r["bs_r"], r["sbs_r"]) for r in table]


def test_paper_tables_every_column():
    """Table 12: BS(E), S-BS(E), BS(R), S-BS(R) by length group (the reranker 512 at 0-500)."""
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in PAPER_EMBEDDER_GROUPS] == [
        (500, 768, 256), (1000, 384, 128), (2000, 256, 64), (3000, 160, 48), (8000, 80, 16)]
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in PAPER_RERANKER_GROUPS] == [
        (500, 512, 256), (1000, 384, 128), (2000, 256, 64), (3000, 160, 48), (8000, 80, 16)]


def test_assign_groups_bounds():
    got = assign_groups([1, 10, 11, 20, 21, 40, 41, 10_000], GROUPS)
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="increase"):
        assign_groups([1], (GROUPS[1], GROUPS[0]))


# three sources of very different sizes, each with rows in every group
SOURCES = np.array(["big"] * 400 + ["mid"] * 100 + ["small"] * 25, dtype=object)
SRC_LENGTHS = np.random.default_rng(1).integers(1, 60, size=len(SOURCES))


def test_every_batch_is_one_source_and_one_group_of_the_tables_size():
    s = LengthGroupBatchSampler(SRC_LENGTHS, GROUPS, sources=SOURCES, seed=3)
    which = assign_groups(SRC_LENGTHS, GROUPS)
    for _ in range(300):
        b = s.next_global()
        assert set(SOURCES[b.indices]) == {b.source}
        members = {int(which[i]) for i in b.indices}
        bucket = next(k for k in s.buckets[b.source] if k.group == b.group)
        assert members <= set(range(bucket.first, bucket.group + 1))
        assert len(b.indices) == GROUPS[b.group].batch_size  # every group here fills its batches


def test_each_row_at_most_once_per_source_epoch_and_all_but_a_remainder():
    s = LengthGroupBatchSampler(SRC_LENGTHS, GROUPS, sources=SOURCES, seed=4)
    seen: dict[tuple[str, int], list[int]] = {}
    for _ in range(400):
        b = s.next_global()
        seen.setdefault((b.source, s.epoch[b.source]), []).extend(b.indices.tolist())
    for (source, epoch), rows in seen.items():
        assert len(rows) == len(set(rows))
        if epoch < s.epoch[source]:  # a finished epoch: every bucket gave all its full batches
            buckets = s.buckets[source]
            assert len(rows) == sum(k.batches * k.batch_size for k in buckets)
            assert sum(len(k.rows) for k in buckets) - len(rows) < sum(k.batch_size for k in buckets)


def test_sources_follow_eq1_in_the_long_run():
    """Chi-square of 6,000 seeded draws against eq. 1's q (alpha 0.5 and 1.0): under the 0.999
    quantile of chi2 with 2 degrees of freedom (13.8)."""
    sizes = {"big": 400, "mid": 100, "small": 25}
    for alpha in (0.5, 1.0):
        s = LengthGroupBatchSampler(SRC_LENGTHS, GROUPS, sources=SOURCES, seed=11, alpha=alpha)
        draws = [s.next_global().source for _ in range(6000)]
        q = eq1_weights(sizes, alpha)
        observed = np.array([draws.count(k) for k in sorted(sizes)])
        expected = np.array([q[k] * len(draws) for k in sorted(sizes)])
        assert ((observed - expected) ** 2 / expected).sum() < 13.8, (alpha, observed, expected)
    assert q["small"] < eq1_weights(sizes, 0.5)["small"]  # alpha < 1 lifts the small source


def test_groups_within_a_source_drawn_in_proportion_to_rows():
    lengths = np.array([5] * 800 + [15] * 200)
    groups = (LengthGroup(max_length=10, batch_size=1, sub_batch=1),
              LengthGroup(max_length=20, batch_size=1, sub_batch=1))
    s = LengthGroupBatchSampler(lengths, groups, seed=1)
    first = [s.next_global().group for _ in range(300)]
    assert np.mean(np.array(first) == 1) == pytest.approx(0.2, abs=0.06)


def test_a_group_too_small_for_a_batch_joins_the_next_longer_one_with_its_table_row():
    groups = (LengthGroup(max_length=10, batch_size=8, sub_batch=32),
              LengthGroup(max_length=20, batch_size=4, sub_batch=16),
              LengthGroup(max_length=40, batch_size=2, sub_batch=8))
    lengths = np.array([5] * 3 + [15] * 6 + [30] * 5)  # group 0 has 3 rows < 8: joins group 1 (9 rows >= 4)
    (a, b) = source_buckets("s", np.arange(len(lengths)), assign_groups(lengths, groups), groups, 1)
    assert (a.first, a.group, len(a.rows), a.batch_size) == (0, 1, 9, 4)
    assert (b.first, b.group, len(b.rows), b.batch_size) == (2, 2, 5, 2)
    # the last group too small: joins the previous one, and the merged group takes the last's row
    lengths = np.array([5] * 20 + [30] * 1)
    (only,) = source_buckets("s", np.arange(len(lengths)), assign_groups(lengths, groups), groups, 1)
    assert (only.first, only.group, len(only.rows), only.batch_size) == (0, 2, 21, 2)
    s = LengthGroupBatchSampler(lengths, groups, seed=0)
    assert all(len(s.next_global().indices) == 2 and s.last_group == 2 for _ in range(30))
    # a source smaller than its only group's batch: one batch of all its rows, rounded to the world size
    (tiny,) = source_buckets("t", np.arange(3), np.array([2, 2, 2]), groups, 2)
    assert tiny.batch_size == 2 and tiny.batches == 1


@pytest.mark.parametrize("world_size", [1, 2])
def test_state_round_trip_across_epoch_boundaries(world_size):
    """docs/reliability.md row 8: take N, save, rebuild, load: the next K batches are identical per rank."""
    def make(rank):
        return LengthGroupBatchSampler(SRC_LENGTHS, GROUPS, sources=SOURCES, seed=9, rank=rank, world_size=world_size)

    for rank in range(world_size):
        ref = make(rank)
        batches = [next(ref) for _ in range(400)]
        assert min(ref.epoch.values()) >= 1  # every source crossed an epoch boundary
        s = make(rank)
        for _ in range(170):
            next(s)
        state = s.state_dict()
        t = make(rank)
        t.load_state_dict(state)
        assert [next(t) for _ in range(230)] == batches[170:]


def test_ranks_disjoint_and_agree_on_source_and_group():
    ranks = [LengthGroupBatchSampler(SRC_LENGTHS, GROUPS, sources=SOURCES, seed=5, rank=r, world_size=2)
             for r in range(2)]
    for _ in range(80):
        a, b = next(ranks[0]), next(ranks[1])
        assert (ranks[0].last_source, ranks[0].last_group) == (ranks[1].last_source, ranks[1].last_group)
        assert len(a) == len(b) and a and not set(a) & set(b)


def test_refusals():
    with pytest.raises(ValueError, match="does not divide by the world size 4"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0, world_size=4)
    s = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="seed"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=1, world_size=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="alpha"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0, alpha=1.0, world_size=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="buckets"):
        LengthGroupBatchSampler(LENGTHS[:-3], GROUPS, seed=0, world_size=2).load_state_dict(s.state_dict())
