"""Any Hugging Face encoder (XLM-R, MiniLM/BERT, e5, ...) behind the packed interface of our encoder.

The trainers feed our unpadded encoder packed batches: ``input_ids`` (total,) + ``cu_seqlens``
(batch + 1,) and read back packed hidden states (total, H). :class:`HFEncoder` gives another
encoder family that same interface, so ``init`` of a train stage may name any HF encoder: it
scatters the packed tokens into a right-padded (batch, seqlen) layout filled with the model's
pad id, runs the model with an attention mask, and gathers the real tokens back.

Positions are the model's own, computed from the padded layout (absolute positions for
BERT/XLM-R, with XLM-R's offset past the pad id): RoPE settings do not apply. A document longer
than the model's position table is cut into consecutive windows of at most :attr:`max_tokens`
tokens (packed order and so MLM labels unchanged); the trainers clip their token lengths so that
CPT never needs it.

The MLM form wraps ``AutoModelForMaskedLM``: its base model gives the hidden states, and its head
(the one child module holding the tied output embeddings: BERT ``cls``, RoBERTa/XLM-R
``lm_head``) gives the logits, so the trainers can evaluate the head at the masked positions only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from .unpad import position_ids_from_cu_seqlens

logger = logging.getLogger(__name__)

# config keys of the dropout probabilities of the common encoder families (BERT/RoBERTa/XLM-R,
# DistilBERT, ...); the dropout override sets every one the config has
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")
# our attention backends that Hugging Face models also implement
_ATTN = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}


def max_positions(config, model: nn.Module) -> int | None:
    """Tokens per document the model can take: its position table less the pad offset (XLM-R: 514 - 2)."""
    table = getattr(config, "max_position_embeddings", None)
    if not table:
        return None
    positions = getattr(getattr(model.base_model, "embeddings", None), "position_embeddings", None)
    pad = getattr(positions, "padding_idx", None)
    offset = pad + 1 if pad is not None else 0  # RoBERTa-style positions start past the pad id; BERT's at 0
    return int(table) - offset


def split_windows(cu_seqlens: torch.Tensor, limit: int) -> torch.Tensor:
    """Boundaries that cut every document into consecutive windows of at most ``limit`` tokens.

    cu_seqlens (batch + 1,) -> (windows + 1,) int32; the packed tokens keep their order.
    """
    total = int(cu_seqlens[-1])
    pos = position_ids_from_cu_seqlens(cu_seqlens, total)  # (total,) position inside its document
    starts = torch.nonzero(pos % limit == 0).flatten()  # (windows,) first token of every window
    end = torch.tensor([total], device=starts.device, dtype=starts.dtype)
    return torch.cat([starts, end]).to(torch.int32)  # (windows + 1,)


class MLMHeadAdapter(nn.Module):
    """An HF MLM head with our head's call signature ``head(hidden, embeddings)``.

    The HF head holds the (tied) decoder itself, so ``embeddings`` is not needed.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(hidden)  # (n, H) -> (n, vocab)


def _mlm_head(model: nn.Module) -> nn.Module:
    """The child of an ``...ForMaskedLM`` model that holds the output embeddings (BERT cls, XLM-R lm_head)."""
    decoder = model.get_output_embeddings()
    heads = [child for name, child in model.named_children()
             if name != model.base_model_prefix and any(m is decoder for m in child.modules())]
    if decoder is None or len(heads) != 1:
        raise ValueError(f"{type(model).__name__}: no single MLM head module holding the output embeddings "
                         "(supported: BERT/RoBERTa/XLM-R-style heads)")
    return heads[0]


class HFEncoder(nn.Module):
    """Packed in, packed out, around ``hf`` (an ``AutoModel`` or an ``AutoModelForMaskedLM``)."""

    def __init__(self, hf: nn.Module, tokenizer=None, *, mlm: bool = False):
        super().__init__()
        self.hf = hf
        self.tokenizer = tokenizer
        self.is_mlm = mlm
        self.max_tokens = max_positions(hf.config, hf)
        self.mlm_head = MLMHeadAdapter(_mlm_head(hf)) if mlm else None
        pooler = getattr(hf.base_model, "pooler", None)
        if isinstance(pooler, nn.Module):  # no loss reaches it: frozen (DDP), saved as loaded
            pooler.requires_grad_(False)

    @property
    def config(self):
        return self.hf.config

    @property
    def model_type(self) -> str:
        return str(getattr(self.hf.config, "model_type", type(self.hf).__name__))

    @property
    def output_embeddings(self) -> torch.Tensor:
        """The MLM decoder weight (vocab, H), tied to the word embeddings."""
        return self.hf.get_output_embeddings().weight

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int | None = None,
                **_: object) -> torch.Tensor:
        """input_ids (total,) + cu_seqlens (batch + 1,) -> last hidden states (total, H) of the real tokens."""
        windows = cu_seqlens
        if self.max_tokens is not None and (max_seqlen is None or max_seqlen > self.max_tokens):
            windows = split_windows(cu_seqlens, self.max_tokens)
        lengths = (windows[1:] - windows[:-1]).long()  # (batch,)
        batch, seqlen = lengths.numel(), int(lengths.max())
        total = input_ids.shape[0]
        pos = position_ids_from_cu_seqlens(windows, total)  # (total,) position inside its window
        rows = torch.repeat_interleave(torch.arange(batch, device=input_ids.device), lengths, output_size=total)
        flat = rows * seqlen + pos  # (total,) index into the flattened (batch * seqlen,) padded layout
        pad_id = getattr(self.hf.config, "pad_token_id", None)
        padded = input_ids.new_full((batch * seqlen,), 0 if pad_id is None else int(pad_id))
        padded = padded.index_copy(0, flat, input_ids).view(batch, seqlen)  # (batch, seqlen), right-padded
        mask = torch.zeros(batch * seqlen, dtype=torch.long, device=input_ids.device)
        mask = mask.index_fill(0, flat, 1).view(batch, seqlen)  # (batch, seqlen) 1 = real token
        hidden = self.hf.base_model(input_ids=padded, attention_mask=mask).last_hidden_state  # (batch, seqlen, H)
        return hidden.flatten(0, 1).index_select(0, flat)  # (total, H)

    forward_packed = forward

    def set_rope_theta(self, theta: float | None) -> None:
        """No RoPE here: only ``None`` (the model's own positions) is accepted."""
        if theta is not None:
            raise ValueError(f"{self.model_type} uses its own positions; a RoPE base does not apply")


def load_hf_encoder(path: str | os.PathLike, *, mlm: bool = False, dropout: float | None = None,
                    attn_backend: str = "auto", with_tokenizer: bool = True, verify: bool = True) -> HFEncoder:
    """The HF model in local directory ``path`` (AutoModel, or AutoModelForMaskedLM with ``mlm``).

    ``dropout`` (not None) is set on every dropout key of the config before the model is built, so
    it reaches every dropout module (also those that keep a float, like SDPA attention) and the
    saved config. A config with ``auto_map`` (remote code) is loaded with ``trust_remote_code``.
    ``verify``: check the files against ``checksums.json`` first, when the directory has one.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    from .files import read_config, verify_checksums

    path = Path(path)
    if verify:
        verify_checksums(path)
    remote = "auto_map" in read_config(path)
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=remote, local_files_only=True)
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, float(dropout))
    kwargs = {"config": config, "trust_remote_code": remote, "local_files_only": True}
    if attn_backend in _ATTN:
        kwargs["attn_implementation"] = _ATTN[attn_backend]
    hf = (AutoModelForMaskedLM if mlm else AutoModel).from_pretrained(str(path), **kwargs)
    if dropout is not None:
        for module in hf.modules():
            if isinstance(module, nn.Dropout):
                module.p = float(dropout)
    tokenizer = None
    if with_tokenizer and any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path)
    return HFEncoder(hf, tokenizer, mlm=mlm)


def save_hf_encoder(model: HFEncoder, directory: str | os.PathLike, tokenizer=None) -> Path:
    """A normal HF directory of the model's family (``save_pretrained`` + tokenizer), written atomically."""
    from .hf import write_model_dir

    return write_model_dir(directory, lambda tmp: write_hf_encoder(model, tmp, tokenizer))


def write_hf_encoder(model: HFEncoder, tmp: Path, tokenizer=None) -> None:
    """The files of :func:`save_hf_encoder` into the directory being written (inside ``write_model_dir``)."""
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    model.hf.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
