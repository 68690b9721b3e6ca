"""The one model config and builder every ``mgte train X`` stage starts from.

``init`` null: a random encoder of ``preset`` (``tiny``/``base``) with ``overrides``. ``init`` set:
one of our model directories (``model/`` of an earlier train stage) or a released gte-multilingual
checkpoint (directory or Hugging Face name), loaded as the class the stage trains (the encoder,
the MLM model, ...; missing heads are freshly initialised by :func:`model.hf.load_pretrained`).
Then what the stage forces on any model: the RoPE base (``rope_theta``: MLM-8192 continues
MLM-2048's model at 160,000) and the dropout (``hidden_dropout_prob``), both kept in the saved
config. Other Hugging Face encoder families (XLM-R, MiniLM, e5) are refused with a one-line error:
the trainers run the packed varlen mGTE encoder.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import torch

from foundation.config import frozen
from foundation.errors import BadInputError

log = logging.getLogger(__name__)


@frozen
class ModelConfig:
    """The encoder built when ``init`` is null, and what is forced on an ``init`` model."""

    preset: Literal["tiny", "base"] = "base"  # random init only
    # the RoPE base: random init uses it (null: the preset's 10,000); an init model is set to it and
    # saved with it (null: the init model's own, e.g. 160,000 for MLM-8192)
    rope_theta: float | None = None
    attn_backend: str = "auto"
    hidden_dropout_prob: float | None = None  # null = the preset's / init model's value; else set and saved
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # random init only: other MGTEConfig fields

    def validate(self) -> None:
        if self.hidden_dropout_prob is not None and not 0.0 <= self.hidden_dropout_prob < 1.0:
            raise ValueError("model.hidden_dropout_prob must be in [0, 1) or null")
        if self.rope_theta is not None and self.rope_theta <= 0:
            raise ValueError("model.rope_theta must be > 0 or null")


def _encoder(model: torch.nn.Module):
    from model import MGTEModel

    return model if isinstance(model, MGTEModel) else model.new


def set_rope_theta(model: torch.nn.Module, theta: float) -> None:
    """Make ``theta`` the model's RoPE base, for training AND in its saved config."""
    encoder = _encoder(model)
    model.config.rope_theta = float(theta)
    encoder.config.rope_theta = float(theta)
    encoder.rotary.theta = float(theta)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    model.config.hidden_dropout_prob = p
    _encoder(model).config.hidden_dropout_prob = p


def build_encoder(m: ModelConfig, init: str | None, cls: type | None = None, *, with_tokenizer: bool = True):
    """``cls`` (default ``model.MGTEModel``) from ``init`` or at random, with ``m``'s forced settings."""
    from model import MGTEConfig, MGTEModel, load_pretrained

    cls = cls or MGTEModel
    if init:
        try:
            model = load_pretrained(init, cls=cls, attn_backend=m.attn_backend, with_tokenizer=with_tokenizer)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"init={init}: cannot be loaded as an mGTE model ({exc}); give one of our model "
                                "directories or a released gte-multilingual checkpoint") from exc
        log.info("starting from %s", init)
        if m.rope_theta is not None:
            set_rope_theta(model, m.rope_theta)
    else:
        fields = dict(attn_backend=m.attn_backend, **dict(m.overrides))
        if m.rope_theta is not None:
            fields["rope_theta"] = m.rope_theta
        model = cls(getattr(MGTEConfig, m.preset)(**fields))
    if m.hidden_dropout_prob is not None:
        set_dropout(model, m.hidden_dropout_prob)
    return model
