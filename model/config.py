"""Configuration of the mGTE text encoder (mGTE paper section 2.1, Table 8).

A `transformers` config so that a saved model directory loads with
`AutoConfig.from_pretrained(dir, trust_remote_code=True)`. Field names follow the
released gte-multilingual-base `config.json` where the two overlap; `model.hf` translates
the released config (model_type "new") into this one.

RoPE:
- `rope_theta` is the base of the rotary frequencies: 10,000 for MLM-2048, 160,000 for
  MLM-8192 (PAPER_FACTS).
- `rope_scaling={"type": "ntk", "factor": f}` is the fixed NTK scaling of the released
  checkpoints (gte-multilingual-base ships `rope_theta=20000` and factor 8): the base
  becomes `rope_theta * f` and every frequency is further divided by `f ** (2 / head_dim)`,
  i.e. `inv_freq[i] = (rope_theta * f) ** (-2i / head_dim) / f ** (2 / head_dim)`.
- The *reversed* NTK of contrastive pre-training (train at length 1024 with the base scaled
  from 160,000 down to 20,000) is not a config change: the trainer wraps its steps in
  `MGTEModel.rope_theta_override(20_000)`, so the saved config keeps the original base.
"""
from __future__ import annotations

from transformers import PretrainedConfig

ATTN_BACKENDS = ("auto", "eager", "sdpa", "njt", "flex", "varlen", "xformers", "flash")
FUSED_LAYERS = ("auto", "compile", "off")  # model/fused.py
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")


class MGTEConfig(PretrainedConfig):
    """Hyper-parameters of the encoder; `MGTEConfig.base()` is the paper's base size."""

    model_type = "mgte"
    # transformers 5 exposes `rope_scaling` as a deprecated alias of `rope_parameters` on the
    # base class; declaring it here keeps it a plain field with the released meaning.
    rope_scaling: dict | None = None

    def __init__(
        self,
        vocab_size: int = 250_002,
        pad_vocab_multiple: int = 64,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        type_vocab_size: int = 1,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        max_position_embeddings: int = 8192,
        rope_theta: float = 10_000.0,
        rope_scaling: dict | None = None,
        attn_backend: str = "auto",
        fused_layers: str = "auto",
        initializer_range: float = 0.02,
        classifier_pooler: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.pad_vocab_multiple = pad_vocab_multiple
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.type_vocab_size = type_vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = float(rope_theta)
        self.rope_scaling = dict(rope_scaling) if rope_scaling else None
        self.attn_backend = attn_backend
        self.fused_layers = fused_layers
        self.initializer_range = initializer_range
        # The released reranker puts BERT's pooler (dense + tanh) before its classifier.
        self.classifier_pooler = classifier_pooler
        if "id2label" not in kwargs:
            kwargs.setdefault("num_labels", 1)  # the reranker's single score (transformers defaults to 2)
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )
        self._check()

    def _check(self) -> None:
        def fail(field: str, why: str):
            raise ValueError(f"MGTEConfig.{field}: {why}")

        if self.hidden_size % self.num_attention_heads:
            fail("hidden_size", f"{self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            fail("num_attention_heads", f"head_dim={self.head_dim} must be even for RoPE")
        if self.attn_backend not in ATTN_BACKENDS:
            fail("attn_backend", f"{self.attn_backend!r} is not one of {ATTN_BACKENDS}")
        if self.fused_layers not in FUSED_LAYERS:
            fail("fused_layers", f"{self.fused_layers!r} is not one of {FUSED_LAYERS}")
        if self.hidden_act not in HIDDEN_ACTS:
            fail("hidden_act", f"{self.hidden_act!r} is not one of {HIDDEN_ACTS}")
        if self.rope_theta <= 0:
            fail("rope_theta", f"must be positive, got {self.rope_theta}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            if kind != "ntk" or set(self.rope_scaling) - {"type", "rope_type", "factor"}:
                fail("rope_scaling", f"only None or {{'type': 'ntk', 'factor': f}} is supported, got {self.rope_scaling}")
            if not float(self.rope_scaling.get("factor", 0)) > 0:
                fail("rope_scaling", f"factor must be positive, got {self.rope_scaling.get('factor')}")
        if not 0.0 <= self.hidden_dropout_prob < 1.0:
            fail("hidden_dropout_prob", f"must be in [0, 1), got {self.hidden_dropout_prob}")
        if self.pad_vocab_multiple < 1:
            fail("pad_vocab_multiple", f"must be >= 1, got {self.pad_vocab_multiple}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the word-embedding matrix: `vocab_size` rounded up to `pad_vocab_multiple`."""
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def base(cls, **overrides) -> "MGTEConfig":
        """The paper's base encoder: 12 layers, hidden 768, 12 heads of 64, GLU inner 3072."""
        return cls(**{**dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072), **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "MGTEConfig":
        """A 2-layer, 64-wide encoder with the real vocabulary: runs on a laptop CPU in seconds."""
        return cls(**{**dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128), **overrides})
