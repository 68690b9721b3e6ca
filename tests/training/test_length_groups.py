"""Length-grouped batches: one group per batch, every row once per epoch, exact resume, disjoint ranks."""

import numpy as np
import pytest

from tests import paper
from training.length_groups import (PAPER_EMBEDDER_GROUPS, PAPER_RERANKER_SUB_BATCH, LengthGroup,
                                    LengthGroupBatchSampler, assign_groups)

GROUPS = (LengthGroup(max_length=10, batch_size=4), LengthGroup(max_length=20, batch_size=2),
          LengthGroup(max_length=40, batch_size=2))
LENGTHS = np.random.default_rng(0).integers(1, 60, size=37)


def test_paper_tables_are_table12_of_the_paper():
    """The constants against Table 12 as the paper's text has it (tests/paper.py), bounds included."""
    table = paper.table12()
    assert [r["lo"] for r in table] == [0] + [r["hi"] for r in table[:-1]]  # contiguous length spans
    assert [(g.max_length, g.batch_size) for g in PAPER_EMBEDDER_GROUPS] == [(r["hi"], r["bs_e"]) for r in table]
    assert [(g.max_length, g.batch_size) for g in PAPER_RERANKER_SUB_BATCH] == [(r["hi"], r["sbs_r"]) for r in table]


def test_assign_groups_bounds():
    got = assign_groups([1, 10, 11, 20, 21, 40, 41, 10_000], GROUPS)
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="increase"):
        assign_groups([1], (GROUPS[1], GROUPS[0]))


def test_one_group_per_batch_and_every_row_once_per_epoch():
    s = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=3)
    which = assign_groups(LENGTHS, GROUPS)
    epochs = []
    for _ in range(3):
        seen = []
        while not seen or (s.usable - s.offset).sum():
            batch = next(s)
            assert len({int(which[i]) for i in batch}) == 1  # one group
            assert {int(which[i]) for i in batch} == {s.last_group}
            assert len(batch) <= GROUPS[s.last_group].batch_size
            seen += batch
        assert sorted(seen) == list(range(len(LENGTHS)))  # each row exactly once
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled


def test_groups_drawn_in_proportion_to_rows():
    lengths = np.array([5] * 800 + [15] * 200)
    s = LengthGroupBatchSampler(lengths, (LengthGroup(max_length=10, batch_size=1),
                                          LengthGroup(max_length=20, batch_size=1)), seed=1)
    first = [s.next_global()[1] for _ in range(300)]
    assert np.mean(np.array(first) == 1) == pytest.approx(0.2, abs=0.06)


@pytest.mark.parametrize("world_size", [1, 2])
def test_state_round_trip_across_epoch_boundary(world_size):
    """docs/reliability.md row 8: take N, save, rebuild, load: the next K batches are identical per rank."""
    for rank in range(world_size):
        ref = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=9, rank=rank, world_size=world_size)
        batches = [next(ref) for _ in range(60)]  # ~4 epochs
        assert ref.epoch >= 2
        s = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=9, rank=rank, world_size=world_size)
        for _ in range(17):
            next(s)
        state = s.state_dict()
        t = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=9, rank=rank, world_size=world_size)
        t.load_state_dict(state)
        assert [next(t) for _ in range(43)] == batches[17:]


def test_ranks_disjoint_and_agree_on_group():
    ranks = [LengthGroupBatchSampler(LENGTHS, GROUPS, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(40):
        a, b = next(ranks[0]), next(ranks[1])
        assert ranks[0].last_group == ranks[1].last_group
        assert len(a) == len(b) and a and not set(a) & set(b)


def test_refusals():
    with pytest.raises(ValueError, match="does not divide by the world size 4"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0, world_size=4)
    s = LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=0).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="seed"):
        LengthGroupBatchSampler(LENGTHS, GROUPS, seed=1, world_size=2).load_state_dict(s.state_dict())
