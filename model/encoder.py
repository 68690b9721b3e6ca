"""The mGTE text encoder: BERT with RoPE and a GLU feed-forward, run on packed tokens.

Read top to bottom: RoPE -> embeddings -> attention (one module, a dict of backends) ->
GLU -> layer -> encoder -> `MGTEModel`. Every tensor inside the encoder is *packed*:
(total_tokens, ...) for all documents of the batch back to back, with `cu_seqlens`
(batch + 1,) marking where each document starts (see `model.unpad`). Pad tokens are
never computed on.

The layer is post-norm, as in the released gte-multilingual-base:
    h = attn_ln(h + dropout(o_proj(attention(qkv_proj(h)))))
    h = mlp_ln(h + dropout(down_proj(dropout(act(gate) * up))))   # up, gate = up_gate_proj(h)
Hidden dropout 0.1, no dropout on attention probabilities (mGTE A.2).

Parameter names equal the released checkpoints' (`embeddings.word_embeddings`,
`encoder.layer.{i}.attention.qkv_proj`, `...o_proj`, `...mlp.up_gate_proj`,
`...mlp.down_proj`, `...attn_ln`, `...mlp_ln`); the full mapping is in docs/model.md.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .config import MGTEConfig
from .heads import cls_pool
from .unpad import pad_input, position_ids_from_cu_seqlens, unpad_input

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- RoPE
def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None, device=None) -> torch.Tensor:
    """Rotary frequencies (head_dim // 2,) in fp32: theta ** (-2i / head_dim).

    With NTK scaling (factor f, the released gte-multilingual-base convention) the base is
    theta * f and every frequency is divided once more by f ** (2 / head_dim).
    """
    exponent = torch.arange(0, head_dim, 2, device=device).float() / head_dim  # (head_dim/2,)
    if scaling is None:
        return 1.0 / (theta**exponent)
    factor = float(scaling["factor"])
    return 1.0 / ((theta * factor) ** exponent) / factor ** (2.0 / head_dim)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the last dim: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., head_dim/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin of the rotary angle at every packed token's position inside its own document.

    Holds no buffers: the (total_tokens, head_dim/2) table is recomputed per forward, which
    costs nothing next to one matmul and lets the base change during training (reversed NTK).
    """

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.theta = config.rope_theta
        self.scaling = config.rope_scaling
        self.theta_override: float | None = None  # set by MGTEModel.rope_theta_override

    def inv_freq(self, device=None) -> torch.Tensor:
        if self.theta_override is not None:
            return rope_inv_freq(self.head_dim, self.theta_override, None, device)
        return rope_inv_freq(self.head_dim, self.theta, self.scaling, device)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids.float()[:, None] * self.inv_freq(position_ids.device)[None, :]  # (total, head_dim/2)
        # (total, 1, 1, head_dim/2): broadcasts over the (q, k) and heads dims of (total, 2, heads, head_dim/2)
        return angles.cos()[:, None, None, :], angles.sin()[:, None, None, :]


# ----------------------------------------------------------------------------- embeddings
class MGTEEmbeddings(nn.Module):
    """Word + token-type embeddings, LayerNorm, dropout. No absolute positions (RoPE)."""

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # name as in the checkpoints
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word_embeddings(input_ids)  # (total, hidden)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]  # every token is type 0: skip the gather
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


# ----------------------------------------------------------------------------- attention
@dataclass
class Varlen:
    """Where each document sits in the packed sequence; built once per forward, shared by all layers."""

    cu_seqlens: torch.Tensor  # (batch + 1,) int32, on the model's device
    max_seqlen: int
    bounds: list[tuple[int, int]]  # host copy of [(start, end)] per document
    cache: dict = field(default_factory=dict)  # per-backend masks, built on first use

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, max_seqlen: int | None = None) -> "Varlen":
        starts = cu_seqlens.tolist()
        bounds = list(zip(starts[:-1], starts[1:]))
        if not bounds or any(end <= start for start, end in bounds):
            raise ValueError(f"cu_seqlens must be increasing and describe >= 1 non-empty document, got {starts[:8]}...")
        longest = max(end - start for start, end in bounds)
        if max_seqlen is not None and max_seqlen < longest:
            raise ValueError(f"max_seqlen={max_seqlen} but the longest document has {longest} tokens")
        return cls(cu_seqlens=cu_seqlens.to(torch.int32), max_seqlen=longest, bounds=bounds)

    @property
    def total(self) -> int:
        return self.bounds[-1][1]

    @property
    def seqlens(self) -> list[int]:
        return [end - start for start, end in self.bounds]


# Every backend: q, k, v (total, heads, head_dim) packed -> (total, heads, head_dim); each
# token attends to exactly the tokens of its own document.
def _per_document(q, k, v, varlen: Varlen):
    """Per-document views. `split` (not slicing) so backward joins the gradients in one cat
    instead of zero-filling a full (total, heads, head_dim) tensor per document."""
    seqlens = varlen.seqlens
    return zip(q.split(seqlens), k.split(seqlens), v.split(seqlens))


def eager_attention(q, k, v, varlen: Varlen):
    """The reference: softmax(q k^T / sqrt(d)) v, document by document, softmax in fp32."""
    scale = q.shape[-1] ** -0.5
    outs = []
    for qd, kd, vd in _per_document(q, k, v, varlen):
        qd, kd, vd = (x.transpose(0, 1) for x in (qd, kd, vd))  # (heads, len, head_dim)
        probs = (torch.matmul(qd, kd.transpose(1, 2)) * scale).float().softmax(dim=-1)  # (heads, len, len)
        outs.append(torch.matmul(probs.to(vd.dtype), vd).transpose(0, 1))  # (len, heads, head_dim)
    return torch.cat(outs)


def sdpa_attention(q, k, v, varlen: Varlen):
    """PyTorch SDPA per document on (1, heads, len, head_dim) views of the packed tensors.

    The views cost no copy, and the 4-D call takes PyTorch's fused kernels (flash on CPU);
    this is the fastest CPU path measured (benchmarks/RESULTS.md).
    """
    outs = []
    for qd, kd, vd in _per_document(q, k, v, varlen):
        qd, kd, vd = (x.transpose(0, 1).unsqueeze(0) for x in (qd, kd, vd))  # (1, heads, len, head_dim)
        outs.append(F.scaled_dot_product_attention(qd, kd, vd)[0].transpose(0, 1))  # (len, heads, head_dim)
    return torch.cat(outs)


_compiled_flex_attention = None
FLEX_BLOCK = 128  # FlexAttention's default block size


def document_block_mask(seqlens: list[int], device, block: int = FLEX_BLOCK):
    """FlexAttention's block mask of "same document" over a packed sequence, built from the
    document boundaries: (blocks x blocks) booleans, never a (total x total) tensor (what
    ``create_block_mask`` evaluates), so memory stays flat in the packed length.

    A query block attends to the key blocks that hold its documents, a contiguous range; a pair of
    blocks is *full* (no mask evaluated inside) when both lie inside one and the same document."""
    from torch.nn.attention.flex_attention import BlockMask

    lengths = torch.tensor(seqlens, device=device)
    total, n_blocks = int(lengths.sum()), -(-int(lengths.sum()) // block)
    doc = torch.repeat_interleave(torch.arange(len(seqlens), device=device), lengths)  # (total,)
    ends = lengths.cumsum(0)
    starts = ends - lengths
    first_tok = torch.arange(n_blocks, device=device) * block
    last_tok = torch.clamp(first_tok + block, max=total) - 1
    doc_first, doc_last = doc[first_tok], doc[last_tok]
    lo = (starts[doc_first] // block)[:, None]  # (blocks, 1): the key blocks each query block needs
    hi = ((ends[doc_last] - 1) // block)[:, None]
    cols = torch.arange(n_blocks, device=device)[None, :]
    touched = (cols >= lo) & (cols <= hi)
    whole = (doc_first == doc_last) & (last_tok - first_tok + 1 == block)  # one document, a whole block
    full = touched & whole[:, None] & whole[None, :] & (doc_first[:, None] == doc_first[None, :])
    partial = touched & ~full

    def as_indices(m):  # (blocks, blocks) bool -> counts (1, 1, blocks), indices (1, 1, blocks, blocks)
        order = torch.where(m, cols, n_blocks).sort(dim=-1).values
        return m.sum(-1).to(torch.int32)[None, None], torch.where(order < n_blocks, order, 0).to(torch.int32)[None, None]

    def same_doc(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    kv_num, kv_idx = as_indices(partial)
    full_num, full_idx = as_indices(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=same_doc,
                                    seq_lengths=(total, total))


def flex_attention(q, k, v, varlen: Varlen):
    """FlexAttention over the whole packed sequence with a per-document block mask."""
    global _compiled_flex_attention
    from torch.nn.attention.flex_attention import flex_attention as flex

    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        raise RuntimeError("attn_backend='flex' has no CPU backward in this torch; train on CPU with 'sdpa'")
    if "flex" not in varlen.cache:
        varlen.cache["flex"] = document_block_mask(varlen.seqlens, q.device)
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex, dynamic=True)  # one compile for all lengths
    qd, kd, vd = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, heads, total, head_dim)
    return _compiled_flex_attention(qd, kd, vd, block_mask=varlen.cache["flex"])[0].transpose(0, 1)


def xformers_attention(q, k, v, varlen: Varlen):
    """xFormers memory-efficient attention with a block-diagonal mask (the paper's kernel; GPU)."""
    try:
        from xformers.ops import fmha
    except ImportError as err:
        raise ImportError(_missing_message("xformers")) from err
    if "xformers" not in varlen.cache:
        varlen.cache["xformers"] = fmha.attn_bias.BlockDiagonalMask.from_seqlens(varlen.seqlens)
    # xformers takes (batch, tokens, heads, head_dim): the packed layout with a leading 1
    return fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=varlen.cache["xformers"])[0]


def flash_attention(q, k, v, varlen: Varlen):
    """flash-attn's varlen kernel (GPU, fp16/bf16)."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise ImportError(_missing_message("flash")) from err
    cu, n = varlen.cu_seqlens, varlen.max_seqlen
    return flash_attn_varlen_func(q, k, v, cu, cu, n, n, dropout_p=0.0, causal=False)


_HALF = (torch.float16, torch.bfloat16)


def varlen_attention(q, k, v, varlen: Varlen):
    """PyTorch's own flash varlen kernel (``torch.nn.attention.varlen``, torch >= 2.10; CUDA,
    fp16/bf16): the whole packed batch in one call, no extra package."""
    from torch.nn.attention.varlen import varlen_attn

    if q.device.type != "cuda":
        raise RuntimeError("attn_backend='varlen' runs on CUDA GPUs only; on CPU use 'sdpa' or 'njt'")
    if q.dtype not in _HALF:
        raise RuntimeError(f"attn_backend='varlen' needs float16 or bfloat16 (flash kernels), got {q.dtype}: "
                           "run the model in bf16 (or under autocast) or use 'njt'")
    cu, n = varlen.cu_seqlens, varlen.max_seqlen
    return varlen_attn(q, k, v, cu, cu, n, n)


def njt_attention(q, k, v, varlen: Varlen):
    """SDPA on nested jagged tensors: one call for the whole packed batch (the packed tensors are
    the jagged values); forward and backward on CPU and CUDA, any dtype. On CPU PyTorch runs it
    as its math kernel document by document, so `sdpa` stays the CPU default."""
    if "njt" not in varlen.cache:
        varlen.cache["njt"] = varlen.cu_seqlens.to(device=q.device, dtype=torch.int64)
    offsets = varlen.cache["njt"]

    def nest(x):  # (total, heads, d) -> (batch, heads, jagged len, d); the kernels want dense values
        nested = torch.nested.nested_tensor_from_jagged(x.contiguous(), offsets, max_seqlen=varlen.max_seqlen)
        return nested.transpose(1, 2)

    out = F.scaled_dot_product_attention(nest(q), nest(k), nest(v))
    return out.transpose(1, 2).values()


ATTENTION_BACKENDS = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "njt": njt_attention,
    "flex": flex_attention,
    "varlen": varlen_attention,
    "xformers": xformers_attention,
    "flash": flash_attention,
}
_BACKEND_PACKAGES = {"xformers": "xformers", "flash": "flash_attn", "flex": "torch.nn.attention.flex_attention",
                     "varlen": "torch.nn.attention.varlen"}


def _missing_message(backend: str) -> str:
    if backend == "varlen":
        return (f"attn_backend='varlen' needs torch >= 2.10 (torch.nn.attention.varlen); this is torch "
                f"{torch.__version__}: upgrade torch, or use 'flash', 'xformers' or 'njt'")
    install = "pip install mgte[gpu]" if backend == "xformers" else "pip install flash-attn --no-build-isolation"
    return f"attn_backend={backend!r} needs the {_BACKEND_PACKAGES[backend]} package, which is not installed: {install}"


def backend_available(backend: str) -> bool:
    package = _BACKEND_PACKAGES.get(backend)
    if package is None:
        return backend in ATTENTION_BACKENDS
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


def check_backend(backend: str) -> None:
    """Raise at construction when a requested backend cannot run here (RELIABILITY row 24)."""
    if backend == "auto":
        return
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attn_backend {backend!r}; choose from {['auto', *ATTENTION_BACKENDS]}")
    if not backend_available(backend):
        raise ImportError(_missing_message(backend))
    if backend == "varlen" and not torch.cuda.is_available():
        raise RuntimeError("attn_backend='varlen' runs on CUDA GPUs only and this machine has none; "
                           "use 'auto', 'sdpa' or 'njt'")


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """`auto` on CUDA: flash-attn's varlen kernel (if installed), PyTorch's ``varlen_attn`` (torch
    >= 2.10) -- both in fp16/bf16 only --, xformers (if installed), else SDPA on nested jagged
    tensors; never the per-document loop, which pays a launch per document and layer on a GPU.
    On CPU: the per-document SDPA loop, the fastest CPU path measured (benchmarks/RESULTS.md)."""
    if backend != "auto":
        return backend
    if device.type != "cuda":
        return "sdpa"
    half = dtype in _HALF
    for name, ok in (("flash", half), ("varlen", half), ("xformers", True)):
        if ok and backend_available(name):
            return name
    return "njt"


class MGTEAttention(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # one matmul for q, k, v
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden, cos, sin, varlen: Varlen, attn_fn) -> torch.Tensor:
        qkv = self.qkv_proj(hidden).view(-1, 3, self.num_heads, self.head_dim)  # (total, 3, heads, head_dim)
        # split/unbind rather than indexing: their backward is one cat/stack, not zero-fill + copy
        qk, v = qkv.split([2, 1], dim=1)  # (total, 2, heads, head_dim), (total, 1, heads, head_dim)
        q, k = apply_rope(qk, cos, sin).unbind(1)  # (total, heads, head_dim) each
        out = attn_fn(q, k, v.squeeze(1), varlen)  # (total, heads, head_dim)
        return self.o_proj(out.reshape(-1, self.num_heads * self.head_dim))  # (total, hidden)


# ----------------------------------------------------------------------------- GLU, layer, encoder
class GatedMLP(nn.Module):
    """GLU feed-forward: down(act(gate) * up), with up and gate from one fused projection."""

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        up, gate = self.up_gate_proj(hidden).split(self.intermediate_size, dim=-1)  # (total, inner) each
        if torch.is_grad_enabled() and up.requires_grad:
            return self.down_proj(self.dropout(self.act(gate) * up))
        return self.down_proj(self.dropout(self.act(gate).mul_(up)))  # inference: no extra (total, inner) buffer


class MGTELayer(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.attention = MGTEAttention(config)
        self.mlp = GatedMLP(config)
        self.attn_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, cos, sin, varlen: Varlen, attn_fn) -> torch.Tensor:
        hidden = self.attn_ln(hidden + self.dropout(self.attention(hidden, cos, sin, varlen, attn_fn)))
        return self.mlp_ln(hidden + self.dropout(self.mlp(hidden)))


class MGTEEncoder(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.layer = nn.ModuleList(MGTELayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # recompute each layer in backward (TRM sub-batches)

    def forward(self, hidden, cos, sin, varlen: Varlen, attn_fn) -> torch.Tensor:
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, cos, sin, varlen, attn_fn, use_reentrant=False)
            else:
                hidden = layer(hidden, cos, sin, varlen, attn_fn)
        return hidden


class MGTEPooler(nn.Module):
    """BERT's pooler (dense + tanh on [CLS]); only the released reranker uses it."""

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls_hidden))


# ----------------------------------------------------------------------------- models
class MGTEPreTrainedModel(PreTrainedModel):
    config_class = MGTEConfig
    base_model_prefix = "new"  # the released checkpoints keep the encoder under "new."
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(getattr(module, "bias", None), nn.Parameter):  # the MLM decoder bias
            nn.init.zeros_(module.bias)


class MGTEModel(MGTEPreTrainedModel):
    """The encoder. Packed mode when `cu_seqlens` is given, padded (Hugging Face) mode otherwise."""

    def __init__(self, config: MGTEConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        check_backend(config.attn_backend)
        self.embeddings = MGTEEmbeddings(config)
        self.rotary = RotaryEmbedding(config)
        self.encoder = MGTEEncoder(config)
        self.pooler = MGTEPooler(config) if add_pooling_layer else None
        self.attn_backend_used: str | None = None  # what `auto` (or the named backend) last ran
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ):
        """Packed: input_ids (total,) + cu_seqlens -> hidden (total, hidden).

        Padded: input_ids (batch, seqlen) + attention_mask -> BaseModelOutputWithPooling with
        last_hidden_state (batch, seqlen, hidden), zeros at pads; computed unpadded inside.
        """
        if cu_seqlens is not None:
            return self.forward_packed(input_ids, cu_seqlens, max_seqlen, position_ids, token_type_ids)
        hidden, _, cu_seqlens, unpad = self.packed_hidden_states(
            input_ids, attention_mask, token_type_ids, position_ids=position_ids
        )
        last = pad_input(hidden, *unpad)  # (batch, seqlen, hidden)
        pooled = self.pooler(cls_pool(hidden, cu_seqlens)) if self.pooler is not None else None
        if return_dict is False:
            return (last,) if pooled is None else (last, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled)

    def packed_hidden_states(
        self, input_ids, attention_mask=None, token_type_ids=None, *, cu_seqlens=None, max_seqlen=None, position_ids=None
    ):
        """Packed or padded input -> (hidden (total, H), packed ids (total,), cu_seqlens, unpad).

        `unpad` is (indices, batch, seqlen) for `pad_input` when the input was padded, else None.
        """
        if cu_seqlens is not None:
            hidden = self.forward_packed(input_ids, cu_seqlens, max_seqlen, position_ids, token_type_ids)
            return hidden, input_ids, cu_seqlens, None
        if input_ids.dim() != 2:
            raise ValueError(
                f"padded input_ids must be (batch, seqlen), got {tuple(input_ids.shape)}; pass cu_seqlens for packed input"
            )
        batch, seqlen = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, indices, cu_seqlens, max_seqlen = unpad_input(input_ids, attention_mask)  # ids (total,)
        token_type_ids = None if token_type_ids is None else token_type_ids.flatten()[indices]
        position_ids = None if position_ids is None else position_ids.flatten()[indices]
        hidden = self.forward_packed(ids, cu_seqlens, max_seqlen, position_ids, token_type_ids)  # (total, hidden)
        return hidden, ids, cu_seqlens, (indices, batch, seqlen)

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids.dim() != 1:
            raise ValueError(f"packed input_ids must be 1-D (total_tokens,), got {tuple(input_ids.shape)}")
        varlen = Varlen.from_cu_seqlens(cu_seqlens, max_seqlen)
        if varlen.total != input_ids.numel():
            raise ValueError(f"cu_seqlens covers {varlen.total} tokens but input_ids has {input_ids.numel()}")
        if position_ids is None:
            position_ids = position_ids_from_cu_seqlens(cu_seqlens, varlen.total)  # (total,)
        hidden = self.embeddings(input_ids, token_type_ids)  # (total, hidden)
        cos, sin = self.rotary(position_ids)
        backend = resolve_backend(self.config.attn_backend, hidden.device, self._attention_dtype(hidden))
        if backend != self.attn_backend_used:
            logger.info("mgte encoder: attention backend %r (config: %r)", backend, self.config.attn_backend)
            self.attn_backend_used = backend
        return self.encoder(hidden, cos, sin, varlen, ATTENTION_BACKENDS[backend])

    @staticmethod
    def _attention_dtype(hidden: torch.Tensor) -> torch.dtype:
        """The dtype attention will see: autocast's when it is on for this device, else the tensor's."""
        if hidden.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
            return torch.get_autocast_dtype("cuda")
        return hidden.dtype

    def set_rope_theta(self, theta: float | None) -> None:
        """Run RoPE with base `theta` (no NTK scaling) until reset with None; the config is untouched."""
        self.rotary.theta_override = None if theta is None else float(theta)

    @contextlib.contextmanager
    def rope_theta_override(self, theta: float):
        """Reversed NTK for CPT: `with model.rope_theta_override(config.rope_theta / 8): train(...)`.

        The saved config keeps the original `rope_theta`, restored on exit.
        """
        previous = self.rotary.theta_override
        self.set_rope_theta(theta)
        try:
            yield self
        finally:
            self.rotary.theta_override = previous

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value
