"""The one token-budget batcher gives exactly the batches of the three it replaced.

The reference implementations below are the old copies, verbatim: `training.mlm.data.micro_batches`
(packed MLM micro-batches), `model.modeling._token_budget_batches` (MGTEForEmbedding.encode) and
`pipelines.embedder.token_budget_batches` (padded HF embedders and cross-encoders).
"""
import random

import pytest

from model.batching import token_budget_batches


def old_micro_batches(lengths, micro_tokens):
    groups, current, used = [], [], 0
    for i, n in enumerate(lengths):
        if current and micro_tokens and used + n > micro_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        groups.append(current)
    return groups


def old_modeling_batches(order, lengths, max_tokens):
    batches, current, used = [], [], 0
    for i in order:
        if current and used + lengths[i] > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(current)
    return batches


def old_embedder_batches(lengths, max_tokens, max_batch):
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (longest * (len(batch) + 1) > max_tokens or len(batch) >= max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _cases(seed=0, n_cases=300):
    rng = random.Random(seed)
    for _ in range(n_cases):
        n = rng.randint(0, 40)
        top = rng.choice([4, 50, 600])
        lengths = [rng.randint(1, top) for _ in range(n)]
        yield lengths, rng.choice([1, 7, 64, 300, 1000]), rng.choice([1, 2, 5, 64])


def test_same_batches_as_the_mlm_micro_batches():
    for lengths, budget, _ in _cases(1):
        assert token_budget_batches(lengths, budget) == old_micro_batches(lengths, budget)
        assert token_budget_batches(lengths, None) == old_micro_batches(lengths, 0)


def test_same_batches_as_mgte_encode():
    for lengths, budget, _ in _cases(2):
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # as encode sorted them
        assert token_budget_batches(lengths, budget, longest_first=True) == old_modeling_batches(order, lengths, budget)


def test_same_batches_as_the_padded_embedders():
    for lengths, budget, max_batch in _cases(3):
        want = list(old_embedder_batches(lengths, budget, max_batch))
        assert token_budget_batches(lengths, budget, longest_first=True, padded=True, max_batch=max_batch) == want


def test_edge_cases():
    assert token_budget_batches([], 10) == [] and token_budget_batches([], None, padded=True, max_batch=2) == []
    # one item over the budget forms its own batch, whichever variant
    assert token_budget_batches([3, 100, 3], 10) == [[0], [1], [2]]
    assert token_budget_batches([3, 100, 3], 10, longest_first=True) == [[1], [0, 2]]
    assert token_budget_batches([3, 100, 3], 10, longest_first=True, padded=True) == [[1], [0, 2]]
    # the budget may be reached exactly, not passed
    assert token_budget_batches([4, 4, 4, 9, 1], 8) == [[0, 1], [2], [3], [4]]
    assert token_budget_batches([5, 5, 5], 10, padded=True) == [[0, 1], [2]]
    assert token_budget_batches([5, 2, 2], 10, padded=True) == [[0, 1], [2]]  # padded: 5 x 3 = 15 > 10
    assert token_budget_batches([5, 2, 3], 10) == [[0, 1, 2]]  # packed: 5 + 2 + 3 = 10 == budget, one batch
    assert token_budget_batches([5, 2, 4], 10) == [[0, 1], [2]]
    # max_batch alone, and no limit at all
    assert token_budget_batches([1] * 5, None, max_batch=2) == [[0, 1], [2, 3], [4]]
    assert token_budget_batches([7, 1, 9], None) == [[0, 1, 2]]


@pytest.mark.parametrize("kwargs", [{"max_tokens": 0}, {"max_tokens": 5, "max_batch": 0}])
def test_nonsense_limits_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be >= 1"):
        token_budget_batches([1, 2], **kwargs)
