import importlib.util
import math
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import model.attention as attention_module
from model import MGTEConfig, MGTEModel
from model.attention import backend_available
from model.encoder import apply_rope, rope_inv_freq
from model.unpad import unpad_input

CPU_BACKENDS = ["sdpa", "njt"]
if shutil.which("g++") or shutil.which("c++"):
    CPU_BACKENDS.append("flex")  # forward only on CPU; needs a C++ compiler for torch.compile


def _model(config, seed=0, backend="eager"):
    torch.manual_seed(seed)
    config.attn_backend = backend
    return MGTEModel(config).eval()


def padded_reference(m: MGTEModel, input_ids, attention_mask):
    """A plain padded BERT+RoPE+GLU forward (masking pad keys), written independently of model/."""
    cfg = m.config
    batch, seqlen = input_ids.shape
    heads, d = cfg.num_attention_heads, cfg.head_dim
    x = m.embeddings.word_embeddings(input_ids) + m.embeddings.token_type_embeddings.weight[0]
    x = m.embeddings.LayerNorm(x)
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2).float() / d)
    angles = torch.arange(seqlen).float()[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1)[:, None], torch.cat([angles.sin()] * 2, -1)[:, None]  # (L, 1, d)

    def rotate(t):
        t1, t2 = t.chunk(2, dim=-1)
        return t * cos + torch.cat([-t2, t1], dim=-1) * sin

    key_bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in m.encoder.layer:
        q, k, v = layer.attention.qkv_proj(x).view(batch, seqlen, 3, heads, d).unbind(2)
        scores = torch.einsum("blhd,bmhd->bhlm", rotate(q), rotate(k)) / math.sqrt(d) + key_bias
        ctx = torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v).reshape(batch, seqlen, -1)
        x = layer.attn_ln(x + layer.attention.o_proj(ctx))
        up, gate = layer.mlp.up_gate_proj(x).chunk(2, dim=-1)
        x = layer.mlp_ln(x + layer.mlp.down_proj(F.gelu(gate) * up))
    return x


def test_unpadded_equals_independent_padded_forward(tiny_config, ragged_batch):
    input_ids, attention_mask = ragged_batch
    m = _model(tiny_config, backend="sdpa")
    with torch.no_grad():
        ours = m(input_ids, attention_mask).last_hidden_state
        ref = padded_reference(m, input_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=2e-5, rtol=1e-5)
    assert torch.count_nonzero(ours[~real]) == 0


def test_packed_and_padded_modes_agree(tiny_config, ragged_batch):
    input_ids, attention_mask = ragged_batch
    m = _model(tiny_config, backend="sdpa")
    ids, indices, cu_seqlens, max_seqlen = unpad_input(input_ids, attention_mask)
    with torch.no_grad():
        packed = m(ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        padded = m(input_ids, attention_mask).last_hidden_state
    assert packed.shape == (int(attention_mask.sum()), tiny_config.hidden_size)
    torch.testing.assert_close(packed, padded.flatten(0, 1)[indices], atol=0, rtol=0)


def test_each_sequence_alone_equals_packed(tiny_config, ragged_batch):
    input_ids, attention_mask = ragged_batch
    m = _model(tiny_config, backend="sdpa")
    with torch.no_grad():
        batch_out = m(input_ids, attention_mask).last_hidden_state
        for row in range(input_ids.shape[0]):
            n = int(attention_mask[row].sum())
            alone = m(input_ids[row : row + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(alone, batch_out[row, :n], atol=1e-5, rtol=1e-5)


def _forward_backward(m, ids, cu, weight):
    m.zero_grad()
    out = m(ids, cu_seqlens=cu)
    (out * weight).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _long_ragged_packed(vocab=1000):
    g = torch.Generator().manual_seed(1)
    lengths = [700, 33, 1, 130]  # a long document spans several kernel blocks
    ids = torch.randint(4, vocab, (sum(lengths),), generator=g)
    return ids, torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


@pytest.mark.parametrize("backend", ["sdpa", "njt"])
def test_backend_matches_eager_fp32_forward_and_gradients(tiny_config, backend):
    ids, cu = _long_ragged_packed()
    m = _model(tiny_config, backend="eager")
    weight = torch.randn(ids.numel(), tiny_config.hidden_size, generator=torch.Generator().manual_seed(2))
    ref_out, ref_grads = _forward_backward(m, ids, cu, weight)
    m.config.attn_backend = backend
    out, grads = _forward_backward(m, ids, cu, weight)
    assert m.attn_backend_used == backend
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=5e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_eager_fp32_forward(tiny_config, backend):
    ids, cu = _long_ragged_packed()
    m = _model(tiny_config, backend="eager")
    with torch.no_grad():
        ref = m(ids, cu_seqlens=cu)
        m.config.attn_backend = backend
        out = m(ids, cu_seqlens=cu)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


def test_sdpa_bf16_error_within_3x_of_eager_bf16(tiny_config):
    """STYLE.md: max|ours - fp32 ref| <= 3 x max|trusted - fp32 ref| in low precision."""
    ids, cu = _long_ragged_packed()
    m = _model(tiny_config, backend="eager")
    with torch.no_grad():
        ref = m(ids, cu_seqlens=cu)
        m.to(torch.bfloat16)
        trusted = m(ids, cu_seqlens=cu).float()
        m.config.attn_backend = "sdpa"
        ours = m(ids, cu_seqlens=cu).float()
    trusted_err = (trusted - ref).abs().max()
    assert 0 < trusted_err < 1.0
    assert (ours - ref).abs().max() <= 3 * trusted_err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["sdpa", "njt", "varlen", "flex", "xformers", "flash"])
def test_gpu_backend_matches_eager_in_bf16_forward_and_gradients(tiny_config, backend):
    """bf16 on the GPU: max|ours - fp32 eager| <= 3 x max|bf16 eager - fp32 eager|, outputs and grads."""
    if not backend_available(backend):
        pytest.skip(f"optional: the {backend} package is not installed (pip install mgte[gpu])")
    ids, cu = _long_ragged_packed()
    ids, cu = ids.cuda(), cu.cuda()
    m = _model(tiny_config, backend="eager").cuda()
    weight = torch.randn(ids.numel(), tiny_config.hidden_size, device="cuda")
    ref_out, ref_grads = _forward_backward(m, ids, cu, weight)
    m.to(torch.bfloat16)
    trusted_out, trusted_grads = _forward_backward(m, ids, cu, weight.bfloat16())
    m.config.attn_backend = backend
    out, grads = _forward_backward(m, ids, cu, weight.bfloat16())
    assert m.attn_backend_used == backend
    assert (out.float() - ref_out).abs().max() <= 3 * (trusted_out.float() - ref_out).abs().max()
    for name in ref_grads:
        ours_err = (grads[name].float() - ref_grads[name]).abs().max()
        assert ours_err <= 3 * (trusted_grads[name].float() - ref_grads[name]).abs().max() + 1e-6, name


@pytest.mark.skipif(
    not (torch.cuda.is_available() and backend_available("xformers")), reason="needs a CUDA GPU and xformers"
)
def test_xformers_matches_eager_in_fp32_on_gpu(tiny_config):
    ids, cu = _long_ragged_packed()
    ids, cu = ids.cuda(), cu.cuda()
    m = _model(tiny_config, backend="eager").cuda()
    with torch.no_grad():
        ref = m(ids, cu_seqlens=cu)
        m.config.attn_backend = "auto"
        out = m(ids, cu_seqlens=cu)
    assert m.attn_backend_used == "xformers"
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_missing_backend_raises_at_construction_naming_the_extra(tiny_config, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "xformers" else real_find_spec(name, *a)
    )
    tiny_config.attn_backend = "xformers"
    with pytest.raises(ImportError, match=r"pip install mgte\[gpu\]"):
        MGTEModel(tiny_config)


@pytest.mark.parametrize("installed,device,dtype,expected", [
    ({"flash", "varlen", "xformers"}, "cuda", torch.bfloat16, "flash"),
    ({"varlen", "xformers"}, "cuda", torch.bfloat16, "varlen"),
    ({"varlen", "xformers"}, "cuda", torch.float16, "varlen"),
    ({"flash", "varlen", "xformers"}, "cuda", torch.float32, "xformers"),  # flash kernels: half precision only
    ({"xformers"}, "cuda", torch.bfloat16, "xformers"),
    ({"varlen"}, "cuda", torch.float32, "njt"),
    (set(), "cuda", torch.bfloat16, "njt"),  # never the per-document loop on a GPU
    ({"flash", "varlen", "xformers"}, "cpu", torch.float32, "sdpa"),
    ({"flash", "varlen", "xformers"}, "cpu", torch.bfloat16, "sdpa"),
])
def test_auto_picks_in_order(installed, device, dtype, expected, monkeypatch):
    monkeypatch.setattr(attention_module, "backend_available", lambda name: name in installed or name in ("sdpa", "njt"))
    assert attention_module.resolve_backend("auto", torch.device(device), dtype) == expected
    assert attention_module.resolve_backend("eager", torch.device(device), dtype) == "eager"  # a named one is kept


def test_auto_sees_the_autocast_dtype():
    hidden = torch.zeros(3, 4)
    assert MGTEModel._attention_dtype(hidden) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # q, k, v come out of autocast's linear in bf16
        assert MGTEModel._attention_dtype(hidden) == torch.bfloat16
        assert attention_module.resolve_backend("auto", hidden.device, torch.bfloat16) == "sdpa"  # CPU path kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_varlen_without_a_gpu_says_why_at_construction(tiny_config):
    tiny_config.attn_backend = "varlen"
    with pytest.raises(RuntimeError, match="'varlen' runs on CUDA GPUs only and this machine has none"):
        MGTEModel(tiny_config)


def test_varlen_on_cpu_tensors_or_fp32_is_one_line(tiny_config):
    from model.attention import Varlen, varlen_attention

    q = torch.zeros(5, 2, 8)
    with pytest.raises(RuntimeError, match="CUDA GPUs only; on CPU use 'sdpa' or 'njt'"):
        varlen_attention(q, q, q, Varlen.from_cu_seqlens(torch.tensor([0, 2, 5])))


def test_varlen_needs_a_torch_that_has_it(tiny_config, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch.nn.attention.varlen" else real_find_spec(name, *a))
    tiny_config.attn_backend = "varlen"
    with pytest.raises(ImportError, match=r"needs torch >= 2.10"):
        MGTEModel(tiny_config)


@pytest.mark.parametrize("lengths", [[128, 256, 100, 28, 512], [700, 33, 1, 130], [1000], [64] * 8, [5, 3],
                                     [300, 5, 1, 206, 256, 256]])
def test_flex_document_block_mask_equals_create_block_mask(lengths):
    """Built from the boundaries (blocks x blocks), the same partial and full blocks as
    create_block_mask, which evaluates the mask over every (query, key) pair."""
    from torch.nn.attention.flex_attention import create_block_mask

    total = sum(lengths)
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    ref = create_block_mask(lambda b, h, q, k: doc[q] == doc[k], None, None, total, total, device="cpu")
    ours = attention_module.document_block_mask(lengths, "cpu")

    def rows(num, idx):
        return [sorted(idx[0, 0, i, :num[0, 0, i]].tolist()) for i in range(num.shape[-1])]

    assert rows(ours.kv_num_blocks, ours.kv_indices) == rows(ref.kv_num_blocks, ref.kv_indices)
    assert rows(ours.full_kv_num_blocks, ours.full_kv_indices) == rows(ref.full_kv_num_blocks, ref.full_kv_indices)
    assert ours.seq_lengths == (total, total)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ValueError, match="attn_backend"):
        MGTEConfig.tiny(attn_backend="magic")


def test_auto_records_the_backend_that_ran(tiny_config, ragged_batch):
    m = _model(tiny_config, backend="auto")
    assert m.attn_backend_used is None
    with torch.no_grad():
        m(*ragged_batch)
    assert m.attn_backend_used == attention_module.resolve_backend("auto", torch.device("cpu")) == "sdpa"


def test_import_model_without_gpu_packages():
    """`import model` and a forward pass work when xformers / flash-attn / triton cannot be imported."""
    code = (
        "import sys\n"
        "for name in ('xformers', 'flash_attn', 'triton', 'deepspeed'):\n"
        "    sys.modules[name] = None  # import raises ImportError, find_spec returns None: as if absent\n"
        "import torch, model\n"
        "m = model.MGTEModel(model.MGTEConfig.tiny(vocab_size=100))\n"
        "ids = torch.randint(4, 100, (2, 5))\n"
        "assert m(ids).last_hidden_state.shape == (2, 5, 64)\n"
        "assert m.attn_backend_used == 'sdpa'\n"
        "assert sys.modules['xformers'] is None and sys.modules['flash_attn'] is None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _rotate(x, positions, inv_freq):
    angles = positions.float()[:, None] * inv_freq[None, :]
    return apply_rope(x, angles.cos(), angles.sin())


def test_rope_score_depends_only_on_relative_offset():
    g = torch.Generator().manual_seed(0)
    d = 64
    inv_freq = rope_inv_freq(d, 10_000.0)
    q, k = torch.randn(1, d, generator=g), torch.randn(1, d, generator=g)

    def score(m, n):
        return (_rotate(q, torch.tensor([m]), inv_freq) * _rotate(k, torch.tensor([n]), inv_freq)).sum()

    base = score(7, 3)
    for shift in (1, 100, 5000):
        torch.testing.assert_close(score(7 + shift, 3 + shift), base, atol=2e-4, rtol=2e-5)
    assert not torch.allclose(score(7, 4), base, atol=1e-3)
    # rotation keeps norms
    torch.testing.assert_close(_rotate(q, torch.tensor([1234]), inv_freq).norm(), q.norm())


def test_ntk_scaling_matches_the_released_formula():
    d, theta, factor = 64, 20_000.0, 8.0
    i = torch.arange(0, d, 2, dtype=torch.float64)
    expected = (theta * factor) ** (-i / d) / factor ** (2 / d)
    got = rope_inv_freq(d, theta, {"type": "ntk", "factor": factor})
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(rope_inv_freq(d, theta).double(), theta ** (-i / d), rtol=1e-6, atol=0)


def test_reversed_ntk_override_trains_at_scaled_base_and_restores(tiny_config, ragged_batch):
    tiny_config.rope_theta = 160_000.0
    m = _model(tiny_config, backend="sdpa")
    scaled_config = MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.0, rope_theta=20_000.0, attn_backend="sdpa")
    scaled = MGTEModel(scaled_config).eval()
    scaled.load_state_dict(m.state_dict())
    with torch.no_grad():
        original = m(*ragged_batch).last_hidden_state
        with m.rope_theta_override(m.config.rope_theta / 8):
            during = m(*ragged_batch).last_hidden_state
        after = m(*ragged_batch).last_hidden_state
        expected = scaled(*ragged_batch).last_hidden_state
    torch.testing.assert_close(during, expected, atol=0, rtol=0)
    assert (during - original).abs().max() > 1e-5
    torch.testing.assert_close(after, original, atol=0, rtol=0)
    assert m.config.rope_theta == 160_000.0


def test_gradient_checkpointing_gives_identical_gradients(ragged_batch):
    config = MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.1)
    m = _model(config, backend="sdpa").train()
    grads = []
    for enabled in (False, True):
        m.encoder.gradient_checkpointing = enabled
        m.zero_grad()
        torch.manual_seed(3)
        m(*ragged_batch).last_hidden_state.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)
    m.gradient_checkpointing_disable()
    assert m.encoder.gradient_checkpointing is False
    m.gradient_checkpointing_enable()
    assert m.encoder.gradient_checkpointing is True


def test_config_presets_and_vocab_padding():
    base = MGTEConfig.base()
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (12, 768, 12, 3072)
    assert base.vocab_size == 250_002 and base.padded_vocab_size == 250_048
    assert base.hidden_dropout_prob == 0.1
    with pytest.raises(ValueError, match="rope_scaling"):
        MGTEConfig.tiny(rope_scaling={"type": "linear", "factor": 2.0})
    m = MGTEModel(MGTEConfig.tiny(vocab_size=1000))
    assert m.embeddings.word_embeddings.weight.shape == (1024, 64)
    names = set(dict(m.named_parameters()))
    for expected in (
        "embeddings.word_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.qkv_proj.weight",
        "encoder.layer.0.attention.qkv_proj.bias",
        "encoder.layer.0.attention.o_proj.weight",
        "encoder.layer.1.mlp.up_gate_proj.weight",
        "encoder.layer.1.mlp.down_proj.bias",
        "encoder.layer.1.attn_ln.weight",
        "encoder.layer.1.mlp_ln.bias",
    ):
        assert expected in names
    assert "encoder.layer.0.mlp.up_gate_proj.bias" not in names
    assert len(names) == 4 + 11 * 2  # 136 at 12 layers, as the released checkpoint
