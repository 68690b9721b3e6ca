"""The one model config and builder every ``mgte train X`` stage starts from.

``init: random`` (or null): a random encoder of ``preset`` (``tiny``/``base``) with ``overrides``; an
empty ``init`` is refused (write ``random``). ``init`` set: an encoder (a decoder-only, causal-LM
architecture is refused by :func:`check_init`, naming it):
one of our model directories (``model/`` of an earlier train stage) or a released gte-multilingual
checkpoint (directory or Hugging Face name), loaded as the class the stage trains (the encoder,
the MLM model, ...; missing heads are freshly initialised by :func:`model.hf.load_pretrained`).
Then what the stage forces on any model: the RoPE base (``rope_theta``: MLM-8192 continues
MLM-2048's model at 160,000) and the dropout (``hidden_dropout_prob``), both kept in the saved
config.

``init`` naming any other Hugging Face encoder (XLM-R, MiniLM/BERT, e5; a directory, or a name
resolved offline through the bundled copies and the HF cache) gives a :class:`model.hf_encoder.HFEncoder`:
the same packed interface over ``AutoModel`` / ``AutoModelForMaskedLM``, trained in the model's
own family and saved as a normal HF directory of it (:func:`save_model`). The family is told by
``config.json``: model_type ``mgte`` / ``new`` is ours, anything else is the adapter. Such a model
keeps its own positions: ``rope_theta`` set with it is a ConfigError; the dropout override is
set on every dropout of its config (hidden and attention) before it is built.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import torch

from foundation.config import frozen
from foundation.errors import BadInputError, ConfigError, ModelLoadError

log = logging.getLogger(__name__)

MGTE_MODEL_TYPES = ("mgte", "new")  # ours, and the released gte-multilingual checkpoints


@frozen
class ModelConfig:
    """The encoder built when ``init`` is null, and what is forced on an ``init`` model."""

    preset: Literal["tiny", "base"] = "base"  # random init only
    # the RoPE base: random init uses it (null: the preset's 10,000); an init model is set to it and
    # saved with it (null: the init model's own, e.g. 160,000 for MLM-8192)
    rope_theta: float | None = None
    attn_backend: str = "auto"
    fused_layers: str = "auto"  # ours only: fuse each layer's elementwise work (auto: on CUDA; model/fused.py)
    hidden_dropout_prob: float | None = None  # null = the preset's / init model's value; else set and saved
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # random init only: other MGTEConfig fields

    def validate(self) -> None:
        from model.config import FUSED_LAYERS

        if self.fused_layers not in FUSED_LAYERS:
            raise ValueError(f"model.fused_layers must be one of {list(FUSED_LAYERS)}, got {self.fused_layers!r}")
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


RANDOM_INIT = "random"  # `init: random` (or null): random weights of `model.preset`


def is_random(init: str | None) -> bool:
    return init is None or init == RANDOM_INIT


def training_tokenizer(init: str | None, fallback: str):
    """The tokenizer a run sees: the init's when its directory has tokenizer files, else ``fallback``
    (the config's ``tokenizer``)."""
    from model.tokenizer import load_tokenizer

    if not is_random(init):
        init_dir = resolve_init(init)
        if any((init_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            return load_tokenizer(init_dir)
    return load_tokenizer(fallback)


def resolve_init(init: str) -> Path:
    """``init`` as a local model directory (itself, a ``mgte train`` output's ``model/``, the bundled
    all-MiniLM-L6-v2, or the HF cache), or a one-line ModelLoadError naming it."""
    from pipelines.embedding.resolve import resolve_model_dir

    try:
        path = resolve_model_dir(init)
    except ModelLoadError as exc:
        raise ModelLoadError(f"init={init}: {exc}") from None
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"init={init}: {path} has no config.json; give a model directory or a HF model name")
    return path


def init_model_type(path: Path) -> str:
    from model.files import ModelFileError, read_config

    try:
        return str(read_config(path).get("model_type"))
    except ModelFileError as exc:
        raise ModelLoadError(f"init: {exc}") from None


def check_init(m: ModelConfig, init: str | None, *, verify: bool = True) -> str | None:
    """Before any worker starts: ``init`` is ``random`` (or null) or resolves to an encoder whose files
    match its checksums (``verify``), and RoPE is not forced on another family. Returns that family's
    model_type, or None for ours / a random init."""
    from pipelines.embedding.resolve import check_model

    if init == "":
        raise ConfigError("init is empty: write `init: random` for random weights, or name a model directory or "
                          "a Hugging Face encoder")
    if is_random(init):
        return None
    model_type = init_model_type(check_model("init", init, verify=verify, encoder_only=True))
    if model_type in MGTE_MODEL_TYPES:
        return None
    if m.rope_theta is not None:
        raise ConfigError(f"model.rope_theta={m.rope_theta:g}: init={init} is a {model_type!r} model with its own "
                          "positions, RoPE does not apply; set model.rope_theta: null")
    return model_type


def is_hf_encoder(model: torch.nn.Module) -> bool:
    """Another family's encoder behind the adapter (own positions, no RoPE), not ours."""
    from model.hf_encoder import HFEncoder

    return isinstance(model, HFEncoder)


def build_encoder(m: ModelConfig, init: str | None, cls: type | None = None, *, with_tokenizer: bool = True,
                  verify: bool = True):
    """``cls`` (default ``model.MGTEModel``) from ``init`` or at random, with ``m``'s forced settings;
    an ``init`` of another HF family gives its :class:`model.hf_encoder.HFEncoder` (encoder or MLM).
    ``verify``: check ``init``'s files against its ``checksums.json`` (when it has one)."""
    from model import MGTEConfig, MGTEModel, load_pretrained
    from pipelines.embedding.resolve import loading

    cls = cls or MGTEModel
    if not is_random(init):
        path = resolve_init(init)
        model_type = init_model_type(path)
        if model_type not in MGTE_MODEL_TYPES:
            return _build_hf(m, init, path, model_type, cls, with_tokenizer, verify)
        try:
            with loading(path, f"init={init}"):
                model = load_pretrained(path, cls=cls, attn_backend=m.attn_backend, fused_layers=m.fused_layers,
                                        with_tokenizer=with_tokenizer, verify=verify)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"init={init}: cannot be loaded as an mGTE model ({exc}); give one of our model "
                                "directories or a released gte-multilingual checkpoint") from exc
        log.info("starting from %s", init)
        if m.rope_theta is not None:
            set_rope_theta(model, m.rope_theta)
    else:
        fields = dict(attn_backend=m.attn_backend, fused_layers=m.fused_layers, **dict(m.overrides))
        if m.rope_theta is not None:
            fields["rope_theta"] = m.rope_theta
        model = cls(getattr(MGTEConfig, m.preset)(**fields))
    if m.hidden_dropout_prob is not None:
        set_dropout(model, m.hidden_dropout_prob)
    return model


def _build_hf(m: ModelConfig, init: str, path: Path, model_type: str, cls: type, with_tokenizer: bool,
              verify: bool):
    from model import MGTEForMaskedLM, MGTEModel
    from model.hf_encoder import load_hf_encoder
    from pipelines.embedding.resolve import loading

    check_init(m, init, verify=verify)
    if cls not in (MGTEModel, MGTEForMaskedLM):
        raise BadInputError(f"init={init}: a {model_type!r} model cannot start a {cls.__name__} stage; give one of "
                            "our model directories")
    mlm = cls is MGTEForMaskedLM
    try:
        with loading(path, f"init={init}"):
            model = load_hf_encoder(path, mlm=mlm, dropout=m.hidden_dropout_prob, attn_backend=m.attn_backend,
                                    with_tokenizer=with_tokenizer, verify=verify)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"init={init}: cannot be loaded as a Hugging Face {'MLM ' if mlm else ''}encoder "
                            f"({type(exc).__name__}: {exc})") from None
    log.info("starting from %s: a %s model (%s) behind the packed adapter; its own positions, at most %s tokens "
             "per sequence", init, model_type, type(model.hf).__name__, model.max_tokens)
    return model


def save_model(model: torch.nn.Module, directory: Path, tokenizer=None) -> Path:
    """The final model directory: ours with ``auto_map`` (:func:`model.hf.save_pretrained`), or the
    adapter's model as a normal HF directory of its own family; written atomically, checksums last."""
    from model.hf import write_model_dir

    return write_model_dir(directory, lambda tmp: write_model(model, tmp, tokenizer))


def write_model(model: torch.nn.Module, tmp: Path, tokenizer=None) -> None:
    """The files of :func:`save_model` into the directory being written (inside ``write_model_dir``)."""
    if is_hf_encoder(model):
        from model.hf_encoder import write_hf_encoder

        write_hf_encoder(model, tmp, tokenizer=tokenizer)
    else:
        from model.hf import write_pretrained

        write_pretrained(model, tmp, tokenizer=tokenizer)
