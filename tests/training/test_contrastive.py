"""InfoNCE against the direct formula, fp16/autocast inputs, duplicate masking, the cross-rank gather."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.contrastive import duplicate_mask, gather_no_grad, gather_with_grad, in_batch_loss, info_nce


def formula(q, d, t, labels=None, mask=None):
    """-log( exp(s(q,d+)/t) / sum_j exp(s(q,d_j)/t) ) with cosine s, in float64, one query at a time."""
    q, d = q.double(), d.double()
    labels = range(q.shape[0]) if labels is None else labels.tolist()
    total = 0.0
    for i, pos in enumerate(labels):
        s = [float(q[i] @ d[j] / (q[i].norm() * d[j].norm())) for j in range(d.shape[0])]
        denom = sum(math.exp(s[j] / t) for j in range(d.shape[0]) if mask is None or not mask[i, j])
        total += -math.log(math.exp(s[pos] / t) / denom)
    return total / q.shape[0]


def test_info_nce_equals_formula():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(6, 16, generator=g), torch.randn(9, 16, generator=g)
    labels = torch.tensor([0, 2, 4, 5, 7, 8])
    for t in (0.01, 0.05, 1.0):
        assert info_nce(q, d, t, labels=labels).item() == pytest.approx(formula(q, d, t, labels), rel=1e-5, abs=1e-5)


def test_fp16_inputs_and_overflow_equal_the_fp32_formula():
    """docs/reliability.md row 18: fp16 embeddings with huge norms, t = 0.01 (|logits| up to 100)."""
    g = torch.Generator().manual_seed(1)
    q = (torch.randn(8, 32, generator=g) * 2000).half()  # squared norms overflow fp16
    d = (q.float() + torch.randn(8, 32, generator=g) * 300).half()
    ref = formula(q.float(), d.float(), 0.01)
    ours = info_nce(q, d, 0.01)
    assert ours.dtype == torch.float32
    # a straight fp16 computation of the same formula is not finite: what the fp32 path avoids
    naive = -torch.log_softmax((q @ d.T) / (q.norm(dim=1, keepdim=True) * d.norm(dim=1)) / 0.01, dim=1).diag().mean()
    assert not torch.isfinite(naive)
    assert ours.item() == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_autocast_does_not_lower_the_loss_precision():
    g = torch.Generator().manual_seed(2)
    q, d = torch.randn(8, 64, generator=g), torch.randn(8, 64, generator=g)
    ref = formula(q, d, 0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = info_nce(q, d, 0.01)
        bf16 = torch.nn.functional.cross_entropy(
            torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T / 0.01,
            torch.arange(8))
    assert ours.dtype == torch.float32
    assert abs(ours.item() - ref) <= 1e-4
    assert abs(bf16.item() - ref) > abs(ours.item() - ref)  # autocast alone would have lost precision


def test_nan_embeddings_give_a_nan_loss():
    q = torch.randn(4, 8)
    q[2, 3] = float("nan")
    assert torch.isnan(info_nce(q, torch.randn(4, 8), 0.01))


def test_duplicate_mask_by_text_hash():
    # pairs: 0 (qA, dX), 1 (qB, dX) duplicate positive text, 2 (qA, dY) duplicate query, 3 (qC, dZ)
    query_hash = torch.tensor([10, 11, 10, 12])
    doc_hash = torch.tensor([20, 20, 21, 22])
    labels = torch.arange(4)
    mask = duplicate_mask(query_hash, doc_hash, query_hash, labels)
    expected = torch.tensor([[0, 1, 1, 0],   # d1 = same text as d0; d2 is another positive of qA
                             [1, 0, 0, 0],   # d0 = same text as d1
                             [1, 0, 0, 0],   # d0 is another positive of qA
                             [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert not mask[labels, labels].any()

    g = torch.Generator().manual_seed(3)
    q, d = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    d[1] = d[0]  # the same text embeds the same
    masked = info_nce(q, d, 0.05, mask=mask)
    assert masked.item() == pytest.approx(formula(q, d, 0.05, mask=mask), rel=1e-5)
    assert masked.item() < info_nce(q, d, 0.05).item()  # unmasked, the duplicate competes with the positive


def test_gather_is_a_no_op_without_a_process_group():
    assert not dist.is_initialized()
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    assert gather_no_grad(x) is x
    d = torch.randn(3, 4)
    assert torch.equal(in_batch_loss(x, d, 0.05), info_nce(x, d, 0.05))


def _rank_main(rank: int, world: int, init_file: str, q_all, d_all, qh_all, dh_all, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        b = q_all.shape[0] // world
        q = q_all[rank * b:(rank + 1) * b].clone().requires_grad_()
        d = d_all[rank * b:(rank + 1) * b].clone().requires_grad_()
        loss = in_batch_loss(q, d, 0.05, query_hash=qh_all[rank * b:(rank + 1) * b],
                             doc_hash=dh_all[rank * b:(rank + 1) * b])
        loss.backward()
        out[rank] = (loss.detach(), q.grad, d.grad)
    finally:
        dist.destroy_process_group()


def test_gather_across_two_gloo_ranks_matches_one_full_batch(tmp_path):
    """Local queries against all ranks' documents; grads (summed by the gather) equal the full batch's."""
    g = torch.Generator().manual_seed(4)
    q_all, d_all = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    qh = torch.tensor([1, 2, 3, 4, 5, 1, 7, 8])
    dh = torch.tensor([11, 12, 13, 14, 12, 16, 17, 18])
    out = mp.Manager().dict()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), q_all, d_all, qh, dh, out), nprocs=2, join=True)

    q = q_all.clone().requires_grad_()
    d = d_all.clone().requires_grad_()
    mask = duplicate_mask(qh, dh, qh, torch.arange(8))
    full = info_nce(q, d, 0.05, mask=mask)
    full.backward()
    # each rank's loss is the mean over its 4 queries; data parallel averages over the 2 ranks
    mean_loss = (out[0][0] + out[1][0]) / 2
    assert mean_loss.item() == pytest.approx(full.item(), rel=1e-6)
    for r in range(2):
        torch.testing.assert_close(out[r][1] / 2, q.grad[r * 4:(r + 1) * 4], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(out[r][2] / 2, d.grad[r * 4:(r + 1) * 4], rtol=1e-5, atol=1e-7)
