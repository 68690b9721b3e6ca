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
import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .attention import ATTENTION_BACKENDS, Varlen, check_backend, resolve_backend
from .config import MGTEConfig
from .fused import LayerOps, apply_rope, check_fused, glu, layer_ops, resolve_fused  # noqa: F401 (apply_rope re-exported)
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


class RotaryEmbedding(nn.Module):
    """cos/sin of the rotary angle at every packed token's position inside its own document.

    The tables (positions, head_dim/2) are computed once per (base, device, dtype) -- in fp32,
    then cast once to the dtype attention runs in -- grown to the longest position seen, and
    indexed per forward: no per-layer fp32 table or cast. No buffers, so the base can change
    during training (reversed NTK): another base is another table.
    """

    _MIN_TABLE = 512

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.theta = config.rope_theta
        self.scaling = config.rope_scaling
        self.theta_override: float | None = None  # set by MGTEModel.rope_theta_override
        self._tables: dict = {}

    def inv_freq(self, device=None) -> torch.Tensor:
        if self.theta_override is not None:
            return rope_inv_freq(self.head_dim, self.theta_override, None, device)
        return rope_inv_freq(self.head_dim, self.theta, self.scaling, device)

    def tables(self, length: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (>= length, head_dim/2) in `dtype`, cached."""
        base = (self.theta_override, None) if self.theta_override is not None else (self.theta, str(self.scaling))
        key = (base, torch.device(device), dtype)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < length:
            size = max(self._MIN_TABLE, 1 << max(length - 1, 0).bit_length())  # powers of two: few regrowths
            angles = torch.arange(size, device=device).float()[:, None] * self.inv_freq(device)[None, :]
            if len(self._tables) >= 8:  # bases come and go (reversed NTK on and off): keep a few
                self._tables.clear()
            cached = self._tables[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return cached

    def forward(self, position_ids: torch.Tensor, max_position: int | None = None, dtype=torch.float32):
        """position_ids (total,) -> cos, sin (total, 1, 1, head_dim/2) in `dtype`; `max_position`
        (> every position id) saves a device sync when the caller knows it."""
        if max_position is None:
            max_position = int(position_ids.max()) + 1 if position_ids.numel() else 1
        cos, sin = self.tables(max_position, position_ids.device, dtype)
        # (total, 1, 1, head_dim/2): broadcasts over the (q, k) and heads dims of (total, 2, heads, head_dim/2)
        return cos[position_ids][:, None, None, :], sin[position_ids][:, None, None, :]


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
# The backends, `Varlen` and the `auto` rule live in model/attention.py.
class MGTEAttention(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # one matmul for q, k, v
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden, cos, sin, varlen: Varlen, ops: LayerOps) -> torch.Tensor:
        q, k, v = ops.rope_qkv(self.qkv_proj(hidden), cos, sin, self.num_heads, self.head_dim)  # (total, heads, hd)
        out = ops.attention(q, k, v, varlen)  # (total, heads, head_dim)
        return self.o_proj(out.reshape(-1, self.num_heads * self.head_dim))  # (total, hidden)


# ----------------------------------------------------------------------------- GLU, layer, encoder
class GatedMLP(nn.Module):
    """GLU feed-forward: down(dropout(act(gate) * up)), with up and gate from one fused projection."""

    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act_name = config.hidden_act
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, ops: LayerOps | None = None) -> torch.Tensor:
        glu_fn = glu if ops is None else ops.glu
        return self.down_proj(glu_fn(self.up_gate_proj(hidden), self.act_name, self.dropout.p, self.training))


class MGTELayer(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.attention = MGTEAttention(config)
        self.mlp = GatedMLP(config)
        self.attn_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, cos, sin, varlen: Varlen, ops: LayerOps) -> torch.Tensor:
        p, ln1, ln2 = self.dropout.p, self.attn_ln, self.mlp_ln
        attended = self.attention(hidden, cos, sin, varlen, ops)
        hidden = ops.add_norm(hidden, attended, ln1.weight, ln1.bias, ln1.eps, p, self.training)
        return ops.add_norm(hidden, self.mlp(hidden, ops), ln2.weight, ln2.bias, ln2.eps, p, self.training)


class MGTEEncoder(nn.Module):
    def __init__(self, config: MGTEConfig):
        super().__init__()
        self.layer = nn.ModuleList(MGTELayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # recompute each layer in backward (TRM sub-batches)

    def forward(self, hidden, cos, sin, varlen: Varlen, ops: LayerOps) -> torch.Tensor:
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, cos, sin, varlen, ops, use_reentrant=False)
            else:
                hidden = layer(hidden, cos, sin, varlen, ops)
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

    # the heads of a TRM / MLM / reranker directory loaded as the bare encoder (`AutoModel`): not used
    # here, so not reported as unexpected weights
    _keys_to_ignore_on_load_unexpected = [r"^classifier\.", r"^lm_head\."]

    def __init__(self, config: MGTEConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        check_backend(config.attn_backend)
        check_fused(config.fused_layers)
        self.embeddings = MGTEEmbeddings(config)
        self.rotary = RotaryEmbedding(config)
        self.encoder = MGTEEncoder(config)
        self.pooler = MGTEPooler(config) if add_pooling_layer else None
        self.attn_backend_used: str | None = None  # what `auto` (or the named backend) last ran
        self.fused_layers_used: bool | None = None  # whether the last forward ran the fused elementwise stretches
        self._plans: dict = {}  # (device, dtype, settings) -> (backend, fuse): resolved once, not per forward
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
        known_max = varlen.max_seqlen if position_ids is None else None
        if position_ids is None:
            position_ids = position_ids_from_cu_seqlens(cu_seqlens, varlen.total)  # (total,)
        hidden = self.embeddings(input_ids, token_type_ids)  # (total, hidden)
        dtype = self._attention_dtype(hidden)
        cos, sin = self.rotary(position_ids, known_max, dtype)  # (total, 1, 1, head_dim/2) in attention's dtype
        backend, fuse = self._plan(hidden.device, dtype)
        self.attn_backend_used, self.fused_layers_used = backend, fuse
        return self.encoder(hidden, cos, sin, varlen, layer_ops(ATTENTION_BACKENDS[backend], fuse))

    def _plan(self, device: torch.device, dtype: torch.dtype) -> tuple[str, bool]:
        """The attention backend and whether to fuse, for this device, dtype and config; resolved
        once per key (resolving looks for installed packages on disk)."""
        key = (device, dtype, self.config.attn_backend, self.config.fused_layers)
        if key not in self._plans:
            backend = resolve_backend(self.config.attn_backend, device, dtype)
            fuse = resolve_fused(self.config.fused_layers, device)
            logger.info("mgte encoder on %s/%s: attention backend %r (config: %r), fused layers %s (config: %r)",
                        device, dtype, backend, self.config.attn_backend, fuse, self.config.fused_layers)
            self._plans[key] = (backend, fuse)
        return self._plans[key]

    @staticmethod
    def _attention_dtype(hidden: torch.Tensor) -> torch.dtype:
        """The dtype attention will see: autocast's when it is on for this device, else the tensor's."""
        if torch.is_autocast_enabled(hidden.device.type):
            return torch.get_autocast_dtype(hidden.device.type)
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
