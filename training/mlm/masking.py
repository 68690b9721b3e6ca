"""MLM masking (mGTE: 30 % of the tokens; BERT's 80/10/10 replacement).

Each sequence is masked with its own generator, seeded by ``(seed, draw index)``: the mask of a
training sequence depends on nothing else (not on the rank, the world size or the micro-batch it
lands in), so a resumed run and a run on another number of workers mask identically, and a
sequence seen again in a later epoch gets a fresh mask (dynamic masking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100  # label of every position that is not predicted
_SALT = 0x4D4C4D  # separates the masking stream from other users of the same seed


@dataclass(frozen=True)
class MaskingSpec:
    """Which ids may be masked and what they are replaced with."""

    mask_token_id: int
    vocab_size: int  # real vocabulary (random replacements are drawn below it)
    special_ids: tuple[int, ...]  # never masked, never drawn as random replacements
    probability: float = 0.30
    mask_fraction: float = 0.8  # of the selected positions -> <mask>
    random_fraction: float = 0.1  # -> a random token; the rest keep their token

    @classmethod
    def from_tokenizer(cls, tokenizer, probability: float = 0.30) -> "MaskingSpec":
        return cls(mask_token_id=int(tokenizer.mask_token_id), vocab_size=len(tokenizer),
                   special_ids=tuple(sorted(int(i) for i in tokenizer.all_special_ids)), probability=probability)


def sequence_rng(seed: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SALT, int(draw)])


def _random_tokens(rng: np.random.Generator, n: int, spec: MaskingSpec) -> np.ndarray:
    out = rng.integers(0, spec.vocab_size, size=n)
    specials = np.asarray(spec.special_ids)
    bad = np.isin(out, specials)
    while bad.any():  # resample the (rare) special ids
        out[bad] = rng.integers(0, spec.vocab_size, size=int(bad.sum()))
        bad = np.isin(out, specials)
    return out


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, spec: MaskingSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` for one sequence; labels are ``IGNORE_INDEX`` except at masked positions.

    Each non-special token is selected with ``spec.probability``; a sequence with at least one
    maskable token always gets at least one selected (so every micro-batch predicts something).
    Selected tokens become <mask> (80 %), a random non-special token (10 %) or stay (10 %).
    """
    ids = np.asarray(ids, dtype=np.int64)
    candidates = ~np.isin(ids, np.asarray(spec.special_ids))
    selected = (rng.random(ids.shape[0]) < spec.probability) & candidates
    if candidates.any() and not selected.any():
        selected[rng.choice(np.flatnonzero(candidates))] = True
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    labels[selected] = ids[selected]
    inputs = ids.copy()
    where = np.flatnonzero(selected)
    action = rng.random(where.shape[0])
    to_mask = where[action < spec.mask_fraction]
    to_random = where[(action >= spec.mask_fraction) & (action < spec.mask_fraction + spec.random_fraction)]
    inputs[to_mask] = spec.mask_token_id
    inputs[to_random] = _random_tokens(rng, to_random.shape[0], spec)
    return inputs, labels
