"""One notion of "the same text" (foundation/text.py) in all five places that compare texts: pairs
dedup, mining, CPT, the TRM and the reranker. Texts that differ only by Unicode form (NFC / NFD)
and whitespace (tabs, NBSP, newlines, double, leading and trailing spaces) are one text
everywhere; texts that differ otherwise (a letter, case, an inner space removed) are not."""

import unicodedata

import numpy as np
import pyarrow as pa
import torch

from foundation.text import hash_to_int64, text_hash, text_id, text_key

BASE = "Café résumé: naïve façade\tand more"
SAME = [
    BASE,
    unicodedata.normalize("NFD", BASE),  # decomposed accents
    "  Café  résumé:\u00a0naïve façade and\n\nmore ",  # double, leading, trailing spaces, NBSP, newlines
    "Café résumé: naïve\tfaçade \r\n and  more\u3000",  # tab, CRLF, ideographic space
    "\ufeffCafé résumé: naïve façade and more\x00",  # BOM and NUL: removed like the corpus normaliser does
]
DIFFERENT = ["Cafe résumé: naïve façade and more", "café résumé: naïve façade and more",
             "Café résumé: naïve façadeand more", "Café résumé: naïve façade and more!"]


def test_key_hash_and_int64_agree_on_variants_and_separate_other_texts():
    assert {text_key(t) for t in SAME} == {"Café résumé: naïve façade and more"}
    assert len({text_hash(t) for t in SAME}) == 1 and len({text_id(t) for t in SAME}) == 1
    assert text_id(BASE) == hash_to_int64(text_hash(BASE))
    assert len({text_id(t) for t in [BASE, *DIFFERENT]}) == 1 + len(DIFFERENT)


def test_key_equals_the_corpus_normaliser_then_collapsed_so_stored_hashes_stay_valid():
    from pipelines.corpus.normalize import normalize_text

    texts = [*SAME, *DIFFERENT, "a\x1fb", "a\x0bb\x0cc", "x\u2028y\u2029z", "\x85lead", "ﬁ ½ ＡＢ", " \t\n "]
    for t in texts:
        assert text_key(t) == " ".join(normalize_text(t).split()), repr(t)


def test_pairs_stage_dedups_the_variants_as_one_pair():
    from pipelines.pairs.records import norm_key, pair_hash
    from pipelines.pairs.records import text_hash as pairs_text_hash

    assert len({pair_hash(q, "the positive") for q in SAME}) == 1
    assert {pairs_text_hash(t) for t in SAME} == {text_hash(BASE)}
    assert {norm_key(t) for t in SAME} == {text_key(BASE)}
    assert pair_hash(BASE, "the positive") not in {pair_hash(t, "the positive") for t in DIFFERENT}


def test_mine_gives_the_variants_one_query_id_and_positive_hash():
    from pipelines.mine.inputs import parse_pair
    from pipelines.readers import Record

    rows = [row for i, t in enumerate(SAME)  # one row per positive
            for row in parse_pair(Record(path="p.jsonl", line=i, data={"query": t, "positive": t}))]
    assert {r["query_id"] for r in rows} == {text_hash(BASE)}
    assert {r["positive_hash"] for r in rows} == {text_hash(BASE)}


def test_cpt_batches_carry_the_same_int64_as_computed_elsewhere():
    from training.pair_sampler import BatchIndices, take_batch

    n = len(SAME)
    table = pa.table({"query": SAME, "positive": SAME, "query_hash": [text_hash(t) for t in SAME],
                      "positive_hash": [text_hash(t) for t in SAME], "pair_id": [f"p{i}" for i in range(n)]})
    batch = take_batch({"s": table}, BatchIndices(0, "s", np.arange(n)))
    assert set(batch.query_hash.tolist()) == set(batch.doc_hash.tolist()) == {text_id(BASE)}


def test_trm_batches_mask_the_variants_as_one_text():
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer
    from training.length_groups import LengthGroup
    from training.trm.data import HardNegativeBatches

    n = len(SAME)
    rows = {"query_id": [f"q{i}" for i in range(n)], "query": SAME, "positive": SAME,
            "negatives": [[d] for d in DIFFERENT[:1] * n], "source": ["s"] * n}
    tok = load_tokenizer(str(bundled_xlmr_tokenizer_json()))
    groups = (LengthGroup(max_length=64, batch_size=n, sub_batch=4),)
    data = HardNegativeBatches(rows, np.full(n, 8), tok, groups, query_max_tokens=16, doc_max_tokens=16,
                               seed=0, rank=0, world_size=1)
    mb = data.batch(list(range(n)), 0)
    assert set(mb["query_hash"].tolist()) == {text_id(BASE)}
    assert set(mb["doc_hash"][mb["doc_is_positive"]].tolist()) == {text_id(BASE)}
    assert set(mb["doc_hash"][~mb["doc_is_positive"]].tolist()) == {text_id(DIFFERENT[0])}


def test_reranker_pool_holds_the_variants_once_and_never_draws_them_for_their_query():
    from training.reranker.data import CandidatePool

    n = len(SAME)
    rows = [dict(query_id="q", query="a question", positive_id=None, positive=t, negative_ids=[f"n{i}"],
                 negatives=[DIFFERENT[i % len(DIFFERENT)]]) for i, t in enumerate(SAME)]
    pool = CandidatePool(pa.Table.from_pylist(rows))
    assert sum(text_key(t) == text_key(BASE) for t in pool.texts) == 1
    assert len(pool) == 1 + len({DIFFERENT[i % len(DIFFERENT)] for i in range(n)})
    drawn = {t for s in range(30) for t in pool.sample("q", 2, np.random.default_rng(s))}
    assert not {text_key(t) for t in drawn} & {text_key(BASE)}


def test_in_batch_mask_treats_the_variants_as_duplicates():
    from training.contrastive import duplicate_mask

    q = torch.tensor([text_id(SAME[1]), text_id(DIFFERENT[0])])  # (B,)
    d = torch.tensor([text_id(SAME[2]), text_id(DIFFERENT[1]), text_id(SAME[3])])  # (N,) doc 2: query 1's
    mask = duplicate_mask(q, d, torch.tensor([q[0], q[1], q[1]]), torch.tensor([0, 1]))
    assert mask.tolist() == [[False, False, True], [False, False, True]]  # q0: its positive again; q1: its pair
