"""TRM losses against direct formulas: Matryoshka InfoNCE, sparse InfoNCE over max-pooled term
weights (no batch x length x vocab tensor), the candidate and false-negative masks, L_TRM; and the
sub-batched cached-gradient step's gradient equals the one-pass gradient on a real encoder."""

import math

import pytest
import torch

from model import MGTEConfig, MGTEModel
from model.heads import batch_vocab, mean_pool, sparse_term_matrix
from model.unpad import pack_sequences
from training.gradcache import cached_step, full_batch_step
from training.trm.matryoshka import dim_weights, matryoshka_dims, matryoshka_info_nce
from training.trm.sparse import sparse_info_nce, sparsity_health
from training.trm.model import TRMEmbedder
from training.trm.loss import (LossSettings, candidate_mask, encode_row, false_negative_mask, own_candidates,
                               split_row, trm_loss)


def direct_info_nce(q, d, t, labels, mask=None, cosine=True):
    """-log softmax, one query at a time, in float64 Python-level math."""
    total = 0.0
    for i in range(q.shape[0]):
        scores = []
        for j in range(d.shape[0]):
            if mask is not None and mask[i, j]:
                continue
            a, b = q[i].double(), d[j].double()
            s = float(a @ b / (a.norm() * b.norm())) if cosine else float(a @ b)
            scores.append((j, s / t))
        top = max(s for _, s in scores)
        log_z = top + math.log(sum(math.exp(s - top) for _, s in scores))
        total += log_z - dict(scores)[int(labels[i])]
    return total / q.shape[0]


def test_matryoshka_dims_and_weights():
    assert matryoshka_dims(768) == tuple(range(32, 769, 32))
    assert matryoshka_dims(384)[-1] == 384 and len(matryoshka_dims(384)) == 12
    assert matryoshka_dims(100) == (32, 64, 96)
    assert dim_weights((32, 64)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="one non-negative weight per size"):
        dim_weights((32, 64), (1.0,))


def test_matryoshka_info_nce_equals_direct_sum():
    torch.manual_seed(0)
    q, d = torch.randn(3, 96), torch.randn(9, 96)
    labels = torch.tensor([0, 3, 6])
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 0] = True
    dims, weights = (32, 64, 96), (0.5, 1.0, 2.0)
    got = matryoshka_info_nce(q.half(), d.half(), 0.05, dims, weights, labels=labels, mask=mask)
    want = sum(w * direct_info_nce(q.half().float()[:, :k], d.half().float()[:, :k], 0.05, labels, mask)
               for k, w in zip(dims, weights))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(want, rel=1e-4)


def dict_terms(ids, weights, special=(0,)):
    """{token: max weight} of one text, the way the paper defines it."""
    out = {}
    for t, w in zip(ids, weights):
        if t in special or w <= 0:
            continue
        out[t] = max(out.get(t, 0.0), w)
    return out


def test_sparse_info_nce_equals_direct_formula_over_token_dicts():
    torch.manual_seed(1)
    queries = [[5, 7, 7, 9], [11, 5]]
    docs = [[5, 5, 8, 7], [9, 12, 12], [11, 13, 5, 0], [14, 15]]
    q_ids, q_cu, _ = pack_sequences(queries)
    d_ids, d_cu, _ = pack_sequences(docs)
    q_w, d_w = torch.rand(q_ids.numel()) * 2, torch.rand(d_ids.numel()) * 2
    d_w[3] = 0.0  # a zero weight stays out
    vocab = batch_vocab(q_ids)  # the queries' tokens only
    q_terms = sparse_term_matrix(q_ids, q_w, q_cu, vocab, (0,), drop_outside=True)
    d_terms = sparse_term_matrix(d_ids, d_w, d_cu, vocab, (0,), drop_outside=True)
    labels = torch.tensor([0, 2])
    got = sparse_info_nce(q_terms, d_terms, 0.01, labels=labels)
    qd = [dict_terms(s, q_w[q_cu[i]:q_cu[i + 1]].tolist()) for i, s in enumerate(queries)]
    dd = [dict_terms(s, d_w[d_cu[i]:d_cu[i + 1]].tolist()) for i, s in enumerate(docs)]
    scores = torch.tensor([[sum(w * b.get(t, 0.0) for t, w in a.items()) for b in dd] for a in qd])
    logits = scores.double() / 0.01
    want = float((torch.logsumexp(logits, 1) - logits[torch.arange(2), labels]).mean())
    assert float(got) == pytest.approx(want, rel=1e-5)
    # scores through the restricted vocabulary equal scores over each text's full vocabulary
    full = batch_vocab(q_ids, d_ids)
    full_scores = sparse_term_matrix(q_ids, q_w, q_cu, full, (0,)) @ sparse_term_matrix(d_ids, d_w, d_cu, full, (0,)).T
    torch.testing.assert_close(q_terms @ d_terms.T, full_scores)


def test_candidate_mask_by_text_hash():
    # query 0: docs 0 (pos) 1 2; query 1: docs 3 (pos) 4 5; doc 4 repeats query 0's positive text;
    # query 2 has the same text as query 0, its positive (doc 6) is another positive of that query
    query_hash = torch.tensor([10, 20, 10])
    doc_hash = torch.tensor([100, 101, 102, 200, 100, 201, 300, 301, 302])
    doc_query_hash = torch.tensor([10, 10, 10, 20, 20, 20, 10, 10, 10])
    is_pos = torch.tensor([True, False, False, True, False, False, True, False, False])
    labels = torch.tensor([0, 3, 6])
    mask = candidate_mask(query_hash, doc_hash, doc_query_hash, is_pos, labels)
    want = torch.zeros(3, 9, dtype=torch.bool)
    want[0, 4] = want[0, 6] = True  # same text as its positive; the other positive of the same query
    want[2, 0] = True  # query 2's view: query 0's positive is a positive of the same query text
    assert torch.equal(mask, want)
    assert not mask[torch.arange(3), labels].any()


def test_false_negative_mask_ignores_own_candidates():
    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[0.8, 0.6], [1.0, 0.0], [1.0, 0.05], [0.0, 1.0]])  # pos, own neg, in-batch, in-batch
    own = own_candidates(1, 2, 0, 4, q.device)
    assert own.tolist() == [[True, True, False, False]]
    fn = false_negative_mask(q, d, torch.tensor([0]), own, margin=0.1)
    assert fn.tolist() == [[False, False, True, False]]  # 0.999 > 0.8 + 0.1; its own negative is not touched


def test_trm_loss_is_lambda_sparse_plus_matryoshka():
    torch.manual_seed(2)
    q, d = torch.randn(2, 64), torch.randn(6, 64)
    qt, dt = torch.rand(2, 5), torch.rand(6, 5)
    labels = torch.tensor([0, 3])
    s = LossSettings(dims=(32, 64), dim_weights=(1.0, 1.0), sparse_weight=0.3, sparse_l1=0.01)
    l1 = torch.rand(8)
    parts = trm_loss(q, d, qt, dt, s, labels=labels, mask=None, l1=l1)
    dense = matryoshka_info_nce(q, d, 0.05, (32, 64), (1.0, 1.0), labels=labels)
    sparse = sparse_info_nce(qt, dt, 0.01, labels=labels)
    torch.testing.assert_close(parts["loss"], 0.3 * sparse + dense + 0.01 * l1.mean())


def test_encode_row_layout_and_health():
    ids, cu, _ = pack_sequences([[0, 5, 6, 5, 2], [0, 9, 2], [0, 2]])
    w = torch.tensor([1.0, 0.5, 0.0, 0.7, 1.0, 1.0, 0.3, 1.0, 1.0, 1.0])
    dense = torch.randn(3, 4)
    row = encode_row(dense, w, ids, cu, torch.tensor([5, 9]), special_token_ids=(0, 2))
    d, terms, l1, nz = split_row(row, 4)
    torch.testing.assert_close(d, dense)
    torch.testing.assert_close(terms, torch.tensor([[0.7, 0.0], [0.0, 0.3], [0.0, 0.0]]))
    torch.testing.assert_close(l1, torch.tensor([0.7, 0.3, 0.0]))  # token 5 keeps its max 0.7; 6 is 0
    assert nz.tolist() == [1.0, 1.0, 0.0]
    h = sparsity_health(nz, l1)
    assert h == {"zero": 1.0, "terms": 2.0, "mass": pytest.approx(1.0), "count": 3.0}


def test_mean_pool_packed():
    hidden = torch.arange(10, dtype=torch.float32).view(5, 2)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    torch.testing.assert_close(mean_pool(hidden, cu), torch.tensor([[1.0, 2.0], [6.0, 7.0]]))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sub_batched_gradient_equals_one_pass_gradient(pooling):
    """Sub-batches of 2 texts with checkpointing vs one graph over the whole batch: same loss and grads."""
    torch.manual_seed(3)
    enc = MGTEModel(MGTEConfig.tiny(vocab_size=64, hidden_dropout_prob=0.0, num_hidden_layers=2))
    model = TRMEmbedder(enc, pooling, special_token_ids=(0, 1, 2))
    gen = torch.Generator().manual_seed(4)
    texts = [[0, *torch.randint(3, 64, (int(n),), generator=gen).tolist(), 2] for n in torch.randint(3, 9, (8,))]
    queries, docs = texts[:2], texts[2:]  # 2 queries x (1 positive + 2 negatives)
    labels = torch.tensor([0, 3])
    vocab = batch_vocab(*[torch.tensor(t) for t in queries])
    s = LossSettings(dims=(16, 32, 64), dim_weights=(1.0, 1.0, 1.0), sparse_weight=0.5, sparse_l1=0.01)
    hidden = enc.config.hidden_size

    def chunks(items, size):
        out = []
        for i in range(0, len(items), size):
            ids, cu, longest = pack_sequences(items[i:i + size])
            out.append({"input_ids": ids, "cu_seqlens": cu, "max_seqlen": longest})
        return out

    def encode(chunk):
        dense, w = model(chunk["input_ids"], chunk["cu_seqlens"], chunk["max_seqlen"])
        return encode_row(dense, w, chunk["input_ids"], chunk["cu_seqlens"], vocab, model.special_token_ids)

    def loss_fn(qr, dr):
        q, qt, ql1, _ = split_row(qr, hidden)
        d, dt, dl1, _ = split_row(dr, hidden)
        return trm_loss(q, d, qt, dt, s, labels=labels, mask=None, l1=torch.cat([ql1, dl1]))["loss"]

    model.zero_grad()
    ref = full_batch_step(encode, chunks(queries, 8), chunks(docs, 8), loss_fn)
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model.train()
    got = cached_step(encode, chunks(queries, 2), chunks(docs, 2), loss_fn, device="cpu")
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    assert ref_grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    assert "sparse_head.weight" in ref_grads and ref_grads["sparse_head.weight"].abs().sum() > 0
    for name, g in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, g, rtol=1e-4, atol=1e-6)
