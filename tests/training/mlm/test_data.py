"""Sampler state (docs/reliability.md row 8), eq. 1 sampling, packing without pads, re-sharding (row 23)."""

import numpy as np
import pytest
import torch

from storage_schemas.mlm import MLM_CHUNK
from training.mlm.masking import IGNORE_INDEX, MaskingSpec
from training.mlm.data import (
    LanguageSampler,
    LanguageStream,
    PackedMLMBatches,
    ShardFile,
    deal_to_ranks,
    shard_files,
)

SPEC = MaskingSpec(mask_token_id=99, vocab_size=100, special_ids=(0, 1, 2, 3, 99))


def _write_shards(root, sizes: dict[str, list[int]], seed=0):
    """lang -> list of rows per part file; sequence lengths vary 4..40."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    paths = []
    for lang, parts in sizes.items():
        for p, rows in enumerate(parts):
            records = []
            for r in range(rows):
                n = int(rng.integers(2, 39))
                ids = [0] + rng.integers(4, 99, size=n).tolist() + [2]
                records.append(dict(id=f"{lang}-{p}-{r}#0", doc_id=f"{lang}-{p}-{r}", lang=lang, chunk=0, n_chunks=1,
                                    n_tokens=len(ids), doc_tokens=n, input_ids=ids, source="t"))
            path = root / f"lang={lang}" / f"part-{p}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(MLM_CHUNK.from_rows(records), path)
            paths.append(path)
    return shard_files(paths)


@pytest.fixture
def shards(tmp_path):
    return _write_shards(tmp_path, {"en": [30, 25], "de": [12], "sw": [5]})


Q = {"en": 0.5, "de": 0.3, "sw": 0.2}


def _source(shards, rank=0, world=1, **kw):
    args = dict(seed=7, max_sequences=16, max_tokens=300, micro_tokens=120, masking=SPEC)
    args.update(kw)
    return PackedMLMBatches(shards, Q, rank=rank, world_size=world, **args)


def _key(batches):
    return [(mb.ids, mb.input_ids.tolist(), mb.labels.tolist(), mb.cu_seqlens.tolist()) for mb in batches]


def test_language_sampler_frequencies_and_state():
    s = LanguageSampler({"en": 0.75, "sw": 0.25}, seed=3)
    first = [s.draw() for _ in range(200)]
    state = s.state_dict()
    nxt = [s.draw() for _ in range(50)]
    t = LanguageSampler({"en": 0.75, "sw": 0.25}, seed=3)
    t.load_state_dict(state)
    assert [t.draw() for _ in range(50)] == nxt
    draws = first + [s.draw() for _ in range(4000)]
    assert draws.count("sw") / len(draws) == pytest.approx(0.25, abs=0.03)
    assert LanguageSampler({"en": 0.75, "sw": 0.25}, seed=3).draw() == first[0]


def test_stream_epochs_visit_every_row_once(tmp_path):
    files = _write_shards(tmp_path, {"xx": [4, 3]})["xx"]
    stream = LanguageStream("xx", files, seed=1)
    epoch0 = [stream.next() for _ in range(7)]
    assert sorted(epoch0) == sorted([(0, r) for r in range(4)] + [(1, r) for r in range(3)])
    assert stream.epoch == 1
    epoch1 = [stream.next() for _ in range(7)]
    assert sorted(epoch1) == sorted(epoch0) and epoch1 != epoch0


def test_batches_are_packed_without_pads_and_within_budget(shards):
    source = _source(shards)
    for _ in range(6):
        mbs = next(source)
        assert sum(mb.n_tokens for mb in mbs) <= 300
        assert sum(len(mb.ids) for mb in mbs) <= 16
        for mb in mbs:
            assert mb.n_tokens <= 120 or len(mb.ids) == 1
            cu = mb.cu_seqlens.tolist()
            assert cu[0] == 0 and cu[-1] == mb.input_ids.numel() and mb.cu_seqlens.dtype == torch.int32
            assert mb.max_seqlen == max(b - a for a, b in zip(cu, cu[1:]))
            assert not (mb.input_ids == 1).any()  # no <pad> anywhere
            starts = mb.input_ids[torch.tensor(cu[:-1])]
            assert (starts == 0).all()  # every sequence keeps its own <s>
            masked = mb.labels != IGNORE_INDEX
            assert masked.any() and not torch.isin(mb.labels[masked], torch.tensor(SPEC.special_ids)).any()


def test_state_round_trip_across_epoch_boundary(shards):
    """docs/reliability.md row 8: take N batches, save, rebuild, load, the next K are identical per rank."""
    for world in (1, 2):
        for rank in range(world):
            source = _source(shards, rank, world)
            for _ in range(5):
                next(source)
            state = source.state_dict()
            expected = [_key(next(source)) for _ in range(8)]
            assert source.streams["sw"].epoch >= 2  # 'sw' (5 rows) wrapped around several times
            fresh = _source(shards, rank, world)
            fresh.load_state_dict(state)
            assert [_key(next(fresh)) for _ in range(8)] == expected


def test_world_size_reshards_the_same_global_batch(shards):
    """docs/reliability.md row 23: 2 ranks see exactly the 1-rank batch, split, with identical masks."""
    one = _source(shards)
    two = [_source(shards, r, 2) for r in range(2)]
    for _ in range(6):
        ref = {}
        for mb in next(one):
            for i, name in enumerate(mb.ids):
                a, b = mb.cu_seqlens[i], mb.cu_seqlens[i + 1]
                ref[name] = (mb.input_ids[a:b].tolist(), mb.labels[a:b].tolist())
        got = {}
        for source in two:
            for mb in next(source):
                for i, name in enumerate(mb.ids):
                    a, b = mb.cu_seqlens[i], mb.cu_seqlens[i + 1]
                    assert name not in got
                    got[name] = (mb.input_ids[a:b].tolist(), mb.labels[a:b].tolist())
        assert got == ref


def test_language_mix_follows_q(shards):
    source = _source(shards, max_sequences=64, max_tokens=4000, micro_tokens=0)
    langs = []
    for _ in range(20):
        for mb in next(source):
            langs += [name.split("-")[0] for name in mb.ids]
    assert langs.count("en") / len(langs) == pytest.approx(0.5, abs=0.05)
    assert langs.count("sw") / len(langs) == pytest.approx(0.2, abs=0.05)


def test_deal_to_ranks():
    assert deal_to_ranks([5, 9, 1, 7], 2) == [[1, 2], [0, 3]]


def test_shard_files_needs_lang_dirs(tmp_path):
    with pytest.raises(ValueError, match="lang=xx"):
        shard_files([tmp_path / "part-0.parquet"])
    assert isinstance(ShardFile("a", 1), ShardFile)
