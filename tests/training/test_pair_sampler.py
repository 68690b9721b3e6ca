"""Single-source batches, eq. 1 source frequencies, deterministic resume across epoch boundaries."""

import numpy as np
import pyarrow as pa
import pytest

from foundation.sampling import eq1_weights
from training.pair_sampler import SourceBatchSampler, hash_to_int64, take_batch

SIZES = {"title_body": 23, "qa": 11, "translation": 6}


def test_every_batch_comes_from_one_source_and_ranks_agree():
    ranks = [SourceBatchSampler(SIZES, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(50):
        a, b = next(ranks[0]), next(ranks[1])
        assert a.source == b.source and a.step == b.step
        assert len(a.indices) == len(b.indices) == 2
        assert not set(a.indices) & set(b.indices)
        assert all(0 <= i < SIZES[a.source] for i in [*a.indices, *b.indices])


def test_each_source_epoch_is_a_permutation():
    s = SourceBatchSampler({"only": 12}, 4, seed=0)
    epochs = [np.concatenate([next(s).indices for _ in range(3)]) for _ in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(12))
    assert not np.array_equal(epochs[0], epochs[1])


def test_sources_follow_eq1():
    sizes = {"a": 9000, "b": 900, "c": 100}
    probs = eq1_weights(sizes, 0.5)
    p = np.array([9000, 900, 100]) / 10000
    np.testing.assert_allclose([probs[k] for k in "abc"], p ** 0.5 / (p ** 0.5).sum())
    s = SourceBatchSampler(sizes, 10, seed=1)
    counts = {k: 0 for k in sizes}
    for _ in range(4000):
        counts[next(s).source] += 1
    for k in sizes:
        assert counts[k] / 4000 == pytest.approx(probs[k], abs=0.03)


def test_small_source_gives_its_whole_rounded_size():
    s = SourceBatchSampler({"big": 100, "tiny": 5}, 8, seed=0, world_size=2)
    assert s.source_batch == {"big": 8, "tiny": 4}
    with pytest.raises(ValueError, match="no source"):
        SourceBatchSampler({"a": 1}, 4, world_size=2)


@pytest.mark.parametrize("world_size", [1, 2])
def test_state_round_trip_across_epoch_boundaries(world_size):
    """docs/reliability.md row 8: take N, save, rebuild, load, the next K are identical on every rank."""
    for rank in range(world_size):
        ref = SourceBatchSampler(SIZES, 4, seed=9, rank=rank, world_size=world_size)
        batches = [next(ref) for _ in range(40)]
        s = SourceBatchSampler(SIZES, 4, seed=9, rank=rank, world_size=world_size)
        for _ in range(13):
            next(s)
        state = s.state_dict()
        assert any(e > 0 for e in state["epoch"].values())  # at least one source has wrapped around
        resumed = SourceBatchSampler(SIZES, 4, seed=9, rank=rank, world_size=world_size)
        resumed.load_state_dict(state)
        for want in batches[13:]:
            got = next(resumed)
            assert (got.step, got.source) == (want.step, want.source)
            np.testing.assert_array_equal(got.indices, want.indices)


def test_resume_with_another_world_size_continues_the_global_sequence():
    one = SourceBatchSampler(SIZES, 4, seed=5)
    for _ in range(10):
        next(one)
    state = one.state_dict()
    want = [next(one) for _ in range(10)]
    halves = []
    for rank in range(2):
        s = SourceBatchSampler(SIZES, 4, seed=5, rank=rank, world_size=2)
        s.load_state_dict(state)
        halves.append([next(s) for _ in range(10)])
    for w, a, b in zip(want, *halves):
        assert a.source == b.source == w.source
        np.testing.assert_array_equal(np.concatenate([a.indices, b.indices]), w.indices)


def test_load_refuses_other_data_or_batch():
    state = SourceBatchSampler(SIZES, 4, seed=5).state_dict()
    for kwargs in ({"seed": 6}, {"batch_size": 2}):
        with pytest.raises(ValueError, match="resuming would not continue"):
            SourceBatchSampler(SIZES, **{"batch_size": 4, "seed": 5, **kwargs}).load_state_dict(state)
    with pytest.raises(ValueError, match="sizes"):
        SourceBatchSampler({**SIZES, "qa": 12}, 4, seed=5).load_state_dict(state)
    small = SourceBatchSampler({"a": 20, "b": 5}, 8, seed=0).state_dict()
    with pytest.raises(ValueError, match="source_batch"):
        SourceBatchSampler({"a": 20, "b": 5}, 8, seed=0, world_size=2).load_state_dict(small)


def test_take_batch_reads_texts_and_hashes():
    table = pa.table({"query": ["q0", "q1", "q2"], "positive": ["d0", "d1", "d2"],
                      "query_hash": ["ff" * 16, "00" * 16, "7f" + "ff" * 15], "positive_hash": ["01" * 16] * 3,
                      "pair_id": ["a", "b", "c"]})
    s = SourceBatchSampler({"src": 3}, 2, seed=0)
    item = next(s)
    batch = take_batch({"src": table}, item)
    assert batch.queries == [f"q{i}" for i in item.indices]
    assert batch.documents == [f"d{i}" for i in item.indices]
    assert hash_to_int64("ff" * 16) == -1 and hash_to_int64("7f" + "ff" * 15) == 2 ** 63 - 1
    assert batch.doc_hash.tolist() == [hash_to_int64("01" * 16)] * 2
