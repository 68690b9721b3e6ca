"""`mgte train reranker`, the parts: the group loss against its formula, random negatives that are
never a positive (by id or duplicate text), the groups and pair encoding, inputs (a mine output or
parquet files), sub-batches of whole groups = the one-pass gradient (with gradient checkpointing),
and paper.yaml against the paper's text (tests/paper.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from foundation.config import load_config, replace
from foundation.errors import BadInputError
from foundation.ledger import StageOutput
from foundation.text import text_id
from storage_schemas.mine import HARD_NEGATIVES
from training import reranker, trm
from training.distributed import World
from tests import paper
from training.length_groups import PAPER_RERANKER_GROUPS, LengthGroupBatchSampler
from training.loop import _default_train_step
from training.model_builder import is_random
from training.reranker.data import (CandidatePool, RerankBatches, build_groups, draw_random_negatives, encode_pairs,
                                  read_hard_negatives, row_lengths, split_usable)
from training.reranker.loss import group_info_nce, positive_ranked_first
from training.steppers import StepContext, TorchStepper

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "dags" / "configs" / "reranker"
TOPICS = ["rivers", "volcanoes", "bread", "chess", "bicycles", "orchids", "glaciers", "violins", "comets", "bees",
          "tea", "lighthouses", "maps", "owls", "salt", "kites"]


def doc(t: str) -> str:
    return f"This article explains {t}: their history, how {t} work and why people care about {t}."


def hn_row(i: int, query: str, positive: str, negatives: list[str], *, query_id=None, positive_id=None,
           negative_ids=None) -> dict:
    n = len(negatives)
    return dict(query_id=query_id or f"q{i}", query=query, positive_id=positive_id, positive=positive,
                positive_score=0.9, negative_ids=negative_ids or [f"n{i}-{j}" for j in range(n)], negatives=negatives,
                negative_ranks=list(range(1, n + 1)), negative_scores=[0.5 - 0.01 * j for j in range(n)], source="s",
                lang="en", miner="test-miner")


def topic_rows(n_neg: int = 8) -> list[dict]:
    """One query per topic; its mined negatives are the next topics' documents."""
    rows = []
    for i, t in enumerate(TOPICS):
        others = [TOPICS[(i + k) % len(TOPICS)] for k in range(1, n_neg + 1)]
        rows.append(hn_row(i, f"All about {t}", doc(t), [doc(u) for u in others], positive_id=f"d{i}",
                           negative_ids=[f"d{TOPICS.index(u)}" for u in others]))
    return rows


def xlmr_tokenizer() -> str:
    from model.tokenizer import bundled_xlmr_tokenizer_json

    return str(bundled_xlmr_tokenizer_json())


def tiny_cfg(tmp_path, inputs, *sets):
    return load_config(reranker.Config, CONFIGS / "tiny.yaml", [
        "input=" + json.dumps([str(p) for p in inputs]), f"output={tmp_path / 'out'}", "engine=local",
        f"tokenizer={xlmr_tokenizer()}", "loop.max_steps=4", "loop.ckpt_every=2", "loop.log_every=1",
        "loop.progress=false", "loop.tensorboard=false", "data.max_length=96", "data.query_max_tokens=16",
        "data.groups=[{max_length: 40, batch_size: 4, sub_batch: 22}, {max_length: 96, batch_size: 4, sub_batch: 22}]",
        *sets])


# -- the loss ----------------------------------------------------------------------------------


def test_group_info_nce_equals_the_direct_formula_in_fp32():
    torch.manual_seed(0)
    scores = torch.randn(5, 11) * 4
    for t in (1.0, 0.05):
        s = scores.double() / t
        direct = -(s[:, 0] - torch.log(torch.exp(s).sum(dim=1)))  # -log(exp(s+)/sum_j exp(s_j))
        torch.testing.assert_close(group_info_nce(scores, t, reduction="none").double(), direct)
        assert group_info_nce(scores, t).item() == pytest.approx(direct.sum().item(), rel=1e-5)
        assert group_info_nce(scores, t, reduction="mean").item() == pytest.approx(direct.mean().item(), rel=1e-5)
    # fp16 scores at t = 0.01 (|logits| up to ~6,000): still the fp32 value, finite
    half = (scores * 15).half()
    ref = group_info_nce(half.float(), 0.01)
    got = group_info_nce(half, 0.01)
    assert got.dtype == torch.float32 and torch.isfinite(got) and got.item() == pytest.approx(ref.item(), rel=1e-6)
    assert positive_ranked_first(torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])).item() == 1
    with pytest.raises(ValueError, match="group"):
        group_info_nce(torch.zeros(3, 1))


# -- random negatives ----------------------------------------------------------------------------


def tricky_table():
    """q0 has two positives (two rows); the pool holds a whitespace/NFC variant of one of them under
    another id, and another text under the id of the other; q1 shares q0's text under another id."""
    p_a, p_b = doc("owls"), doc("salt")
    rows = [hn_row(0, "Tell me about owls", p_a, [doc("maps"), doc("kites")], query_id="q0", positive_id="pa"),
            hn_row(1, "Tell me about owls", p_b, [doc("maps"), doc("tea")], query_id="q0", positive_id="pb"),
            hn_row(2, "Bees?", doc("bees"), ["  This article explains owls:  their history, how owls work and "
                                             "why people care about owls.", doc("kites")],
                   positive_id="pbees", negative_ids=["variant-of-pa", "k"]),
            hn_row(3, "Tea?", doc("tea"), ["An unrelated text that reuses the id pb.", doc("comets")],
                   positive_id="ptea", negative_ids=["pb", "c"])]
    rows += [hn_row(10 + i, f"All about {t}", doc(t), [doc("rivers")], positive_id=f"x{i}")
             for i, t in enumerate(["chess", "bread", "glaciers", "violins", "orchids", "lighthouses"])]
    return HARD_NEGATIVES.from_rows(rows)


def test_random_negatives_are_never_a_positive_its_duplicate_or_a_hard_negative():
    table = tricky_table()
    pool = CandidatePool(table)
    assert len(pool) == len({text_id(t) for t in pool.texts})  # distinct by normalised text
    assert text_id(doc("owls")) in {text_id(t) for t in pool.texts}
    banned = {text_id(doc("owls")), text_id(doc("salt")), text_id("An unrelated text that reuses the id pb.")}
    seen = set()
    for step in range(200):
        rng = np.random.default_rng([7, step])
        for row in (0, 1):
            hard = table["negatives"][row].as_py()[:1]
            got = pool.sample("q0", 4, rng, exclude_hashes=[text_id(t) for t in hard])
            hashes = [text_id(t) for t in got]
            assert len(set(hashes)) == 4
            assert not set(hashes) & banned, got  # by text (the variant too) and by id (pb)
            assert text_id(hard[0]) not in hashes and text_id("Tell me about owls") not in hashes
            seen.update(hashes)
    allowed = {text_id(t) for t in pool.texts} - banned - {text_id(doc("maps"))}
    assert seen == allowed  # every other text does get drawn: the filter is not vacuous
    # another query may get q0's positives
    other = {text_id(t) for s in range(50) for t in pool.sample("q3", 4, np.random.default_rng(s))}
    assert banned & other


def test_a_positive_of_a_dropped_row_stays_forbidden_for_the_kept_rows_of_its_query(tmp_path):
    rows = topic_rows()
    rows.insert(0, hn_row(99, "All about chess", "Chess is a board game for two players.", [doc("tea")],
                          query_id="q3"))  # a second positive of q3, in a row dropped for too few negatives
    table = HARD_NEGATIVES.from_rows(rows)
    kept, info = split_usable(table, 6)
    assert info["dropped_by_reason"] == {"too_few_negatives": 1}
    assert (table["query_id"][3].as_py(), kept["query_id"][3].as_py()) == ("q2", "q3")  # rows shifted
    pool = CandidatePool(table)
    cfg = tiny_cfg(tmp_path, []).data
    q3 = kept["query_id"].to_pylist().index("q3")
    drawn = {d for seed in range(60) for d in draw_random_negatives(kept, pool, replace(cfg, seed=seed))[q3]}
    assert "Chess is a board game for two players." not in drawn and doc("chess") not in drawn
    assert len(drawn) > 6  # the other texts are drawn


def test_a_pool_without_enough_candidates_fails_naming_the_query():
    rows = [hn_row(i, f"q {t}", doc(t), [doc(TOPICS[i + 1])]) for i, t in enumerate(TOPICS[:3])]
    pool = CandidatePool(HARD_NEGATIVES.from_rows(rows))
    with pytest.raises(BadInputError, match="q0.*random negatives"):
        pool.sample("q0", 4, np.random.default_rng(0))  # 3 of the 4 texts are not its positive


def test_groups_are_positive_hard_random_and_deterministic_per_step(tmp_path):
    table = HARD_NEGATIVES.from_rows(topic_rows())
    cfg = tiny_cfg(tmp_path, []).data
    pool = CandidatePool(table)
    randoms = draw_random_negatives(table, pool, cfg)
    assert randoms == draw_random_negatives(table, pool, cfg)  # seeded
    g = build_groups(table, randoms, [3, 5], step=4, cfg=cfg)
    assert g.queries == ["All about chess", "All about orchids"]
    for r, docs in zip([3, 5], g.documents):
        assert len(docs) == 11 and docs[0] == doc(TOPICS[r])
        assert docs[1:7] == table["negatives"][r].as_py()[:6]  # the best-ranked six
        assert docs[7:] == randoms[r] and len({text_id(d) for d in docs}) == 11
    assert build_groups(table, randoms, [3, 5], step=4, cfg=cfg) == g
    assert build_groups(table, randoms, [3, 5], step=5, cfg=cfg) == g  # random negatives: drawn once per row
    sample_cfg = load_config(reranker.Config, CONFIGS / "tiny.yaml", ["data.hard_select=sample"]).data
    sample_randoms = draw_random_negatives(table, pool, sample_cfg)
    sampled = [build_groups(table, sample_randoms, [3], step=s, cfg=sample_cfg).documents[0] for s in range(4)]
    assert all(set(d[1:7]) <= set(table["negatives"][3].as_py()) for d in sampled)
    assert len({tuple(d[1:7]) for d in sampled}) > 1  # sampled hard negatives: redrawn per step
    # with `sample`, a random negative is none of the row's mined negatives (any may be a hard one)
    assert not set(sample_randoms[3]) & set(table["negatives"][3].as_py())


def test_a_long_random_negative_puts_its_row_in_a_long_group_and_is_never_cut(tmp_path):
    """Issue 24 item 6: the length group counts the random negatives, so a short row that draws a
    long random negative is batched (and cut) by a group whose bound fits that pair."""
    from model.tokenizer import load_tokenizer

    long = " ".join(f"A long essay on cartography, paragraph {k}, with a good many words." for k in range(9))
    rows = topic_rows() + [hn_row(50, "All about essays", long, [doc(t) for t in TOPICS[:8]], positive_id="long")]
    table = HARD_NEGATIVES.from_rows(rows)
    cfg = tiny_cfg(tmp_path, [], "data.max_length=192", "data.groups=[{max_length: 64, batch_size: 2, sub_batch: 22}, "
                   "{max_length: 192, batch_size: 2, sub_batch: 22}]").data
    tok = load_tokenizer(xlmr_tokenizer())
    data = RerankBatches(table, CandidatePool(table), tok, cfg, max_length=192, rank=0, world_size=1)
    with_long = [r for r, rand in enumerate(data.randoms) if long in rand]
    assert with_long and 50 not in with_long  # short rows that drew it as a random negative
    pair = len(tok("All about " + TOPICS[with_long[0]], long)["input_ids"])
    assert 64 < pair <= 192  # the short group would have cut it
    lengths = row_lengths(tok, table, data.randoms, cfg, 192)
    assert all(lengths[r] >= pair - 8 and lengths[r] > 64 for r in with_long)
    group_of = {int(r): b.group for bs in data.sampler.buckets.values() for b in bs for r in b.rows}
    assert all(group_of[r] == 1 for r in with_long)  # batched (and cut) by the 192-token group
    seen = 0
    for _ in range(40):
        for mb in next(data):
            for ids, mask in zip(mb["input_ids"], mb["attention_mask"]):
                text = tok.decode(ids[mask.bool()], skip_special_tokens=True)
                if "paragraph 0," in text:
                    seen += 1
                    assert "paragraph 8, with a good many words." in text  # the whole document
    assert seen > len(with_long)


def test_pair_encoding_cuts_the_query_first_then_the_document():
    from model.tokenizer import load_tokenizer

    tok = load_tokenizer(xlmr_tokenizer())
    long_query = " ".join(["question"] * 80)
    enc = encode_pairs(tok, ["short query", long_query], [doc("bees") * 5, doc("tea") * 3], max_length=48,
                       query_max_tokens=16)
    ids = enc["input_ids"].tolist()
    assert [sum(m) for m in enc["attention_mask"].tolist()] == [48, 48]
    direct = tok("short query", doc("bees") * 5, truncation="only_second", max_length=48)["input_ids"]
    assert ids[0] == direct  # a short query: the tokenizer's own pair encoding, document cut
    sep = tok.sep_token_id
    first_sep = ids[1].index(sep)
    assert first_sep == 1 + 16  # the long query kept its 16-token budget (min(16, 48 // 2)) ...
    assert len(ids[1]) - first_sep > 20  # ... and the document the rest


# -- inputs ------------------------------------------------------------------------------------


def test_mine_output_or_parquet_files_and_too_few_negatives(tmp_path):
    rows = topic_rows()
    rows[2] = hn_row(2, "All about bread", doc("bread"), [doc("tea")] * 3)  # 3 < 6 mined negatives
    out = StageOutput(tmp_path / "mine", "mine", {"k": 1})
    out.begin()
    files = [out.write_rows("data/part-0.parquet", rows[:8], HARD_NEGATIVES),
             out.write_rows("data/part-1.parquet", rows[8:], HARD_NEGATIVES)]
    out.mark_task("t0", {"input": 8, "kept": 8, "dropped": 0, "quarantined": 0}, files[:1])
    out.mark_task("t1", {"input": 8, "kept": 8, "dropped": 0, "quarantined": 0}, files[1:])
    out.write_rows("data/part-9.parquet", rows[:2], HARD_NEGATIVES)  # a stray file of no marked task
    out.finish(counts={"input": 16, "kept": 16, "dropped": 0, "quarantined": 0}, dropped_by_reason={},
               inputs=[], outputs={"data": files})
    from_stage = read_hard_negatives([str(tmp_path / "mine")])
    pq.write_table(HARD_NEGATIVES.from_rows(rows[:8]), tmp_path / "a.parquet")
    pq.write_table(HARD_NEGATIVES.from_rows(rows[8:]), tmp_path / "b.parquet")
    from_files = read_hard_negatives([str(tmp_path / "*.parquet")])
    assert from_stage.num_rows == from_files.num_rows == 16 and from_stage.equals(from_files)
    kept, info = split_usable(from_stage, 6)
    assert kept.num_rows == 15 and info["counts"] == {"input": 16, "kept": 15, "dropped": 1, "quarantined": 0}
    assert info["dropped_by_reason"] == {"too_few_negatives": 1}
    bad = HARD_NEGATIVES.from_rows(rows).drop_columns(["negatives"])
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(BadInputError, match="bad.parquet.*'negatives'"):
        read_hard_negatives([str(tmp_path / "bad.parquet")])
    (tmp_path / "mine" / "_SUCCESS").unlink()
    with pytest.raises(BadInputError, match="unfinished"):
        read_hard_negatives([str(tmp_path / "mine")])


# -- sub-batches = one pass ------------------------------------------------------------------------


def _one_step_grads(cfg, table):
    task = reranker.RerankerTask(cfg, (table, CandidatePool(table)))
    torch.manual_seed(0)
    model = task.build_model()
    stepper = TorchStepper(model, cfg.loop, torch.device("cpu"), "fp32")
    data = task.build_data(0, 1)
    micro = next(data)
    ctx = StepContext(stepper, torch.device("cpu"), "fp32", World())
    loss_sum, units, sums, _ = _default_train_step(task, ctx, model, micro)
    return len(micro), loss_sum, units, sums, {n: p.grad.clone() for n, p in model.named_parameters()
                                                if p.grad is not None}


def test_sub_batches_with_checkpointing_give_the_one_pass_gradient(tmp_path):
    table = HARD_NEGATIVES.from_rows(topic_rows())
    groups = ("data.groups=[{{max_length: 40, batch_size: 4, sub_batch: {s}}}, "
              "{{max_length: 96, batch_size: 4, sub_batch: {s}}}]")
    base = ["model.hidden_dropout_prob=0.0"]
    one = _one_step_grads(tiny_cfg(tmp_path, [], *base, groups.format(s=1000), "gradient_checkpointing=false"), table)
    sub = _one_step_grads(tiny_cfg(tmp_path, [], *base, groups.format(s=11), "gradient_checkpointing=true"), table)
    assert one[0] == 1 and sub[0] == 4  # one micro-batch of 44 pairs vs four of one query group each
    assert sub[2] == one[2] == 4 and sub[3] == one[3]
    assert sub[1] == pytest.approx(one[1], rel=1e-5) and math.isfinite(one[1])
    assert one[4].keys() == sub[4].keys() and len(one[4]) > 10 and "classifier.weight" in one[4]
    for name in one[4]:
        torch.testing.assert_close(sub[4][name], one[4][name], rtol=1e-4, atol=1e-6, msg=name)


# -- paper.yaml --------------------------------------------------------------------------------------


def test_paper_yaml_carries_the_paper_reranker_numbers():
    """paper.yaml against the paper's text (tests/paper.py): B.4's negatives, Table 12's S-BS(R), and
    "all training parameters except batch size ... consistent with ... the TRM" (B.3's CPT settings)."""
    b3 = paper.section("B.3 TRM Training Setup", "B.4 Reranker Training Setup")
    b4 = paper.section("B.4 Reranker Training Setup", "Appendix C NLU Evaluation")
    cfg = load_config(reranker.Config, CONFIGS / "paper.yaml")
    d = cfg.data
    total, hard, random = (int(x) for x in paper.find(r"(\d+) negative samples, comprising (\d+) hard negatives and "
                                                      r"(\d+) randomly", b4))
    assert (d.hard_negatives, d.random_negatives, d.group_size) == (hard, random, 1 + total)
    assert d.groups == PAPER_RERANKER_GROUPS and d.alpha == 0.5
    assert [(g.max_length, g.batch_size, g.sub_batch) for g in d.groups] == \
        [(r["hi"], r["bs_r"], r["sbs_r"]) for r in paper.table12()]  # Table 12: BS(R), S-BS(R)
    lengths = np.repeat([g.max_length for g in d.groups], 3000)  # every group of every source fills its batches
    sources = np.array(["miracl", "t2ranking", "msmarco"] * (len(lengths) // 3), dtype=object)
    s = LengthGroupBatchSampler(lengths, d.groups, sources=sources, alpha=d.alpha, seed=0,
                                world_size=cfg.scaling.num_workers)
    sizes = {}
    for _ in range(300):
        b = s.next_global()
        assert len(set(sources[b.indices])) == 1  # one dataset per batch
        sizes[b.group] = len(b.indices)
    assert [sizes[g] for g in range(len(d.groups))] == [r["bs_r"] for r in paper.table12()]
    trm_cfg = load_config(trm.Config, REPO / "dags/configs/trm/paper.yaml")
    assert cfg.epochs == trm_cfg.epochs == 10  # "all training parameters except batch size" as the TRM
    assert cfg.gradient_checkpointing and d.max_length == 8192
    assert is_random(cfg.init) and cfg.model.preset == "base"
    assert cfg.model.rope_theta is None  # the MLM-8192 model's own
    o = cfg.loop.optim
    paper.assert_b3_training_settings(cfg.loop, b3)
    assert cfg.scaling.num_workers == int(paper.find(r"epochs with (\d+) A100", b3)[0])
    tiny = load_config(reranker.Config, CONFIGS / "tiny.yaml")
    assert (tiny.data.hard_negatives, tiny.data.random_negatives) == (hard, random) and tiny.loop.device == "cpu"


def test_epochs_set_max_steps_from_the_batches_of_one_pass(tmp_path):
    """`epochs` (10 in paper.yaml, as the TRM) -> loop.max_steps = epochs x the full batches of one
    pass over every source, counted as training batches them."""
    from model.tokenizer import load_tokenizer
    from training.reranker.data import read_input

    table = HARD_NEGATIVES.from_rows(topic_rows())
    pq.write_table(table, tmp_path / "hn.parquet")
    cfg = tiny_cfg(tmp_path, [tmp_path / "hn.parquet"], "epochs=2.5")
    got = read_input(cfg)
    data = RerankBatches(table, CandidatePool(table), load_tokenizer(xlmr_tokenizer()), cfg.data, max_length=96,
                         rank=0, world_size=1)
    per_epoch = data.sampler.batches_per_epoch()
    steps = math.ceil(2.5 * per_epoch)
    assert got.extra["steps"] == {"epochs": 2.5, "max_steps": steps, "batches_per_epoch": per_epoch}
    assert got.cfg.loop.max_steps == math.ceil(2.5 * per_epoch) and got.extra["sources"] == {"s": 16}
