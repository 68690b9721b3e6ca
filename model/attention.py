"""Attention over packed documents: each token attends to exactly the tokens of its own document.

Every backend takes q, k, v packed as (total_tokens, heads, head_dim) and a :class:`Varlen`
(where each document sits) and returns (total_tokens, heads, head_dim). `ATTENTION_BACKENDS`
is the dict `MGTEModel` picks from (`config.attn_backend`); :func:`resolve_backend` says what
`auto` runs on a device and dtype; GPU packages are imported only inside their backend.
docs/model.md has the table.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


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
    """Raise at construction when a requested backend cannot run here (docs/reliability.md row 24)."""
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
