import numpy as np
import pytest

from training.mlm.masking import IGNORE_INDEX, MaskingSpec, mask_tokens, sequence_rng

SPEC = MaskingSpec(mask_token_id=250001, vocab_size=250002, special_ids=(0, 1, 2, 3, 250001))


def _seq(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([[0], rng.integers(5, 250000, size=n), [2]])


def test_rates_80_10_10_and_labels_only_at_masked():
    ids = _seq(200_000)
    inputs, labels = mask_tokens(ids, sequence_rng(1, 0), SPEC)
    selected = labels != IGNORE_INDEX
    assert selected.mean() == pytest.approx(0.30 * 200_000 / len(ids), abs=0.005)
    assert np.array_equal(labels[selected], ids[selected])
    assert np.array_equal(inputs[~selected], ids[~selected])  # unselected tokens untouched
    as_mask = (inputs[selected] == SPEC.mask_token_id).mean()
    kept = (inputs[selected] == ids[selected]).mean()
    assert as_mask == pytest.approx(0.8, abs=0.01) and kept == pytest.approx(0.1, abs=0.01)
    random_ones = inputs[selected & (inputs != SPEC.mask_token_id) & (inputs != ids)]
    assert random_ones.size and not np.isin(random_ones, SPEC.special_ids).any()


def test_special_tokens_never_masked():
    ids = np.array([0, 5, 6, 250001, 7, 2])
    for draw in range(200):
        _, labels = mask_tokens(ids, sequence_rng(0, draw), SPEC)
        assert (labels[[0, 3, 5]] == IGNORE_INDEX).all()
        assert (labels != IGNORE_INDEX).any()  # at least one position predicted


def test_deterministic_by_seed_and_draw():
    ids = _seq(500)
    a = mask_tokens(ids, sequence_rng(3, 17), SPEC)
    b = mask_tokens(ids, sequence_rng(3, 17), SPEC)
    c = mask_tokens(ids, sequence_rng(3, 18), SPEC)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
