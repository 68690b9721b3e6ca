import pytest

from foundation.sampling import eq1, eq1_weights


def test_eq1_table():
    probs = eq1({"en": 900, "yo": 100, "zz": 0}, alpha=0.5)
    p_en, p_yo = 0.9, 0.1
    z = p_en ** 0.5 + p_yo ** 0.5
    assert probs["en"] == pytest.approx((p_en, p_en ** 0.5 / z))
    assert probs["yo"] == pytest.approx((p_yo, p_yo ** 0.5 / z))
    assert "zz" not in probs  # a group without items gets no probability
    assert sum(q for _, q in probs.values()) == pytest.approx(1.0)
    assert eq1({}, 0.5) == {} and eq1({"a": 0}, 0.5) == {}


def test_eq1_weights():
    q = eq1_weights({"en": 900, "sw": 100}, alpha=0.5)
    assert q["en"] == pytest.approx(0.75) and q["sw"] == pytest.approx(0.25)
    assert eq1_weights({"a": 1, "b": 3}, alpha=1.0) == pytest.approx({"a": 0.25, "b": 0.75})


def test_eq1_does_not_depend_on_the_groups_order():
    # a resumed corpus build aggregates languages in another order; its q must be bit-identical
    counts = {f"l{i}": n for i, n in enumerate([26, 25, 25, 25, 25, 24, 24, 1, 1, 1, 3, 7, 11, 2])}
    forward = eq1(counts, 0.5)
    backward = eq1(dict(reversed(list(counts.items()))), 0.5)
    assert forward == backward
