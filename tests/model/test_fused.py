"""Fused packed layers (issue 11 item 2) and the bf16 autocast paths of MLM and CPT (item 5).

References: the eager layer (fused == eager, forward and gradients), the RoPE formula (cached
tables == direct computation), fp32 (bf16 autocast within bf16's resolution).
"""
import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

import model.fused as fused_module
from model import MGTEConfig, MGTEModel
from model.encoder import RotaryEmbedding, rope_inv_freq
from model.modeling import MGTEForMaskedLM
from training.contrastive import in_batch_loss
from training.gradcache import cached_step, full_batch_step

HAS_CXX = bool(shutil.which("g++") or shutil.which("c++"))


def packed(lengths, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.randint(4, vocab, (sum(lengths),), generator=g), cu


# ----------------------------------------------------------------------------- RoPE tables
def test_rope_tables_equal_the_formula_are_cached_and_follow_the_base():
    config = MGTEConfig.tiny(vocab_size=1000, rope_theta=20_000.0, rope_scaling={"type": "ntk", "factor": 8})
    rotary = RotaryEmbedding(config)
    positions = torch.tensor([0, 1, 2, 700, 3, 0, 5])
    cos, sin = rotary(positions)
    angles = positions.float()[:, None] * rope_inv_freq(config.head_dim, 20_000.0, config.rope_scaling)[None, :]
    assert torch.equal(cos[:, 0, 0], angles.cos()) and torch.equal(sin[:, 0, 0], angles.sin())
    table = rotary.tables(1, "cpu")[0]
    assert table.shape[0] == 1024  # grown to a power of two over the longest position (700)
    rotary(torch.tensor([3, 4]), max_position=5)
    assert rotary.tables(1, "cpu")[0] is table  # reused, not recomputed
    cos16, _ = rotary(positions, dtype=torch.bfloat16)
    assert cos16.dtype == torch.bfloat16 and torch.equal(cos16, cos.to(torch.bfloat16))  # one cast, same values
    rotary.theta_override = 2_500.0  # reversed NTK: another base, another table
    cos_r, _ = rotary(positions)
    angles_r = positions.float()[:, None] * rope_inv_freq(config.head_dim, 2_500.0)[None, :]
    assert torch.equal(cos_r[:, 0, 0], angles_r.cos())


# ----------------------------------------------------------------------------- fused layers
def test_fused_layers_setting_is_checked_and_auto_stays_eager_on_cpu(monkeypatch):
    with pytest.raises(ValueError, match="fused_layers"):
        MGTEConfig.tiny(vocab_size=1000, fused_layers="triton")
    model = MGTEModel(MGTEConfig.tiny(vocab_size=1000))
    ids, cu = packed([5, 3])
    model.eval()(ids, cu_seqlens=cu)
    assert model.fused_layers_used is False and fused_module.resolve_fused("auto", torch.device("cpu")) is False
    assert fused_module.resolve_fused("compile", torch.device("cpu")) is True
    assert fused_module.resolve_fused("off", torch.device("cuda")) is False
    monkeypatch.setattr(fused_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        MGTEModel(MGTEConfig.tiny(vocab_size=1000, fused_layers="compile"))


def eager_and_fused(seed: int, config: MGTEConfig | None = None):
    """The same weights twice: fused_layers 'off' and 'compile' (dropout 0, so they can agree)."""
    torch.manual_seed(seed)
    config = config or MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.0, attn_backend="sdpa")
    config.fused_layers = "off"
    eager = MGTEModel(config).train()
    fused = copy.deepcopy(eager)
    fused.config.fused_layers = "compile"
    return eager, fused


def backward_both_and_compare(eager, fused, ids, cu) -> None:
    """Outputs equal; one random projection of them backpropagated in both; every gradient equal."""
    out_e, out_f = eager(ids, cu_seqlens=cu), fused(ids, cu_seqlens=cu)
    assert fused.fused_layers_used is True and eager.fused_layers_used is False
    torch.testing.assert_close(out_f, out_e, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out_e)
    (out_e * weights).sum().backward()
    (out_f * weights).sum().backward()
    for (name, p_e), p_f in zip(eager.named_parameters(), fused.parameters()):
        if p_e.grad is not None:
            torch.testing.assert_close(p_f.grad, p_e.grad, rtol=1e-4, atol=1e-5, msg=name)
    eager.zero_grad(), fused.zero_grad()


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile's CPU backend needs a C++ compiler")
def test_fused_layers_equal_eager_forward_and_gradients_without_recompiling():
    import torch._dynamo.utils as dynamo_utils

    eager, fused = eager_and_fused(0)
    torch._dynamo.reset()  # a fresh compile in this test, whatever ran before
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    graphs = []
    for lengths in ([5, 7, 9], [3, 11], [20, 2, 4, 6], [8]):  # new packed lengths every batch
        backward_both_and_compare(eager, fused, *packed(lengths, seed=len(lengths)))
        graphs.append(dynamo_utils.counters["stats"]["unique_graphs"])
    assert graphs[1:] == graphs[:1] * 3  # no recompile for new lengths
    with torch.no_grad():  # inference: the in-place GLU path
        ids, cu = packed([6, 2, 9])
        torch.testing.assert_close(fused.eval()(ids, cu_seqlens=cu), eager.eval()(ids, cu_seqlens=cu),
                                   rtol=1e-5, atol=1e-5)
    assert before < graphs[0]  # the first batch did compile (the fused path is not eager in disguise)


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile's CPU backend needs a C++ compiler")
def test_fused_layers_under_gradient_checkpointing_give_the_eager_gradients():
    """TRM and the reranker recompute each layer in backward: the fused stretches run twice."""
    eager, fused = eager_and_fused(1)
    fused.encoder.gradient_checkpointing = True
    backward_both_and_compare(eager, fused, *packed([12, 5, 30]))


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile's CPU backend needs a C++ compiler")
def test_fused_dropout_is_dropout():
    """In training the fused stretches drop at rate p and scale by 1 / (1 - p), as eager does."""
    torch.manual_seed(0)
    fused = fused_module.fused_ops()[1]  # glu
    up_gate = torch.ones(4000, 8)
    out = fused(up_gate, "relu", 0.25, True)
    kept = out != 0
    assert 0.70 < kept.float().mean() < 0.80
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))


# ----------------------------------------------------------------------------- bf16 autocast
def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def test_mlm_step_under_bf16_autocast_matches_fp32():
    torch.manual_seed(0)
    model = MGTEForMaskedLM(MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.0)).train()
    ids, cu = packed([40, 25, 60])
    labels = torch.full_like(ids, -100)
    labels[::4] = ids[::4]
    ref = model(ids, cu_seqlens=cu, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, cu_seqlens=cu, labels=labels)
    assert out.loss.dtype == torch.float32 and out.logits.dtype == torch.bfloat16
    rotary = model.new.rotary
    assert any(key[2] == torch.bfloat16 for key in rotary._tables)  # RoPE tables in attention's dtype
    out.loss.backward()
    assert abs(out.loss.item() - ref.item()) < 0.02 * ref.item()
    for name, grad in ref_grads.items():
        got = dict(model.named_parameters())[name].grad
        assert torch.isfinite(got).all() and _cosine(got, grad) > 0.98, name


def test_cpt_cached_step_under_bf16_autocast_matches_fp32_full_batch():
    torch.manual_seed(0)
    model = MGTEModel(MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.0)).train()
    chunks = [dict(zip(("input_ids", "cu_seqlens"), packed(lengths, seed=i)))
              for i, lengths in enumerate(([9, 14, 6], [11, 8, 20], [30, 12, 7], [16, 5, 22]))]

    def encoder(autocast: bool):
        def encode(chunk):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                hidden = model(chunk["input_ids"], cu_seqlens=chunk["cu_seqlens"])
            return hidden[chunk["cu_seqlens"][:-1].long()]  # [CLS]
        return encode

    def loss_fn(q, d):
        return in_batch_loss(q, d, 0.05)

    ref = full_batch_step(encoder(False), chunks[:2], chunks[2:], loss_fn)
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    loss = cached_step(encoder(True), chunks[:2], chunks[2:], loss_fn, device="cpu")
    assert abs(loss.item() - ref.item()) < 0.02 * ref.item()
    for name, grad in ref_grads.items():
        got = dict(model.named_parameters())[name].grad
        assert got is not None and torch.isfinite(got).all() and _cosine(got, grad) > 0.98, name
