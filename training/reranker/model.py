"""The cross-encoder the reranker stage trains: score = W h_[CLS] over ``[CLS] q [SEP] d``.

``init: random`` (or null), one of our model directories (the MLM-8192 encoder, as the paper: no CPT) or a
released gte-multilingual checkpoint: :class:`model.MGTEForSequenceClassification` (its
``classifier`` is :class:`model.heads.RerankerHead`, freshly initialised when ``init`` has none).
``init`` naming any other Hugging Face encoder (all-MiniLM-L6-v2, XLM-R, e5, an existing
cross-encoder): that family's ``AutoModelForSequenceClassification`` with one label. Both take the
padded pair encoding (ours unpads inside) and return ``logits`` (pairs, 1).

The saved directory is a normal HF sequence-classification directory (ours with ``auto_map``,
:func:`model.hf.save_pretrained`) whose ``config.json`` tells sentence-transformers' ``CrossEncoder``
to return the raw score (``activation_fn`` Identity), the number :func:`pipelines.embedding.load_reranker`
gives.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from foundation.errors import BadInputError
from training.model_builder import ModelConfig, build_encoder, check_init, resolve_init

log = logging.getLogger(__name__)

CROSS_ENCODER_CONFIG = {"activation_fn": "torch.nn.modules.linear.Identity"}  # CrossEncoder.predict = raw score


def is_ours(model: torch.nn.Module) -> bool:
    from model import MGTEForSequenceClassification

    return isinstance(model, MGTEForSequenceClassification)


def build_reranker(m: ModelConfig, init: str | None, *, verify: bool = True) -> torch.nn.Module:
    """Ours (random or from ``init``) or another family's sequence classifier with one label."""
    from model import MGTEForSequenceClassification

    if check_init(m, init, verify=verify) is None:
        model = build_encoder(m, init, cls=MGTEForSequenceClassification, verify=verify)
        if model.config.num_labels != 1:
            raise BadInputError(f"init={init}: a sequence classifier with {model.config.num_labels} labels; the "
                                "reranker trains one score")
        return model
    return _load_hf_classifier(init, m)


def _load_hf_classifier(init: str, m: ModelConfig) -> torch.nn.Module:
    from pipelines.embedding.resolve import loading

    path = resolve_init(init)  # its checksums were verified by check_init
    try:
        with loading(path, f"init={init}"):
            return _hf_classifier(init, path, m)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"init={init}: cannot be loaded as a Hugging Face sequence classifier "
                            f"({type(exc).__name__}: {exc})") from None


def _hf_classifier(init: str, path: Path, m: ModelConfig) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from model.files import read_config
    from model.hf_encoder import DROPOUT_KEYS
    from model.tokenizer import load_tokenizer

    remote = "auto_map" in read_config(path)
    config = AutoConfig.from_pretrained(str(path), num_labels=1, trust_remote_code=remote, local_files_only=True)
    if m.hidden_dropout_prob is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, float(m.hidden_dropout_prob))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), config=config, trust_remote_code=remote, local_files_only=True, ignore_mismatched_sizes=True)
    model.tokenizer = load_tokenizer(path)
    log.info("reranker: starting from %s, a %s model (%s, one label)", init, config.model_type, type(model).__name__)
    return model


def max_pair_tokens(model: torch.nn.Module) -> int | None:
    """Tokens per pair the model's positions take (None: RoPE, no table)."""
    if is_ours(model):
        return None
    from model.hf_encoder import max_positions

    return max_positions(model.config, model)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each encoder layer in the backward (activation memory of one layer per sub-batch)."""
    if is_ours(model):
        model.new.encoder.gradient_checkpointing = True
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def pair_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """(pairs, labels) logits of a padded pair encoding (``input_ids``, ``attention_mask``, ...)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    return model(**inputs).logits


def save_reranker(model: torch.nn.Module, directory: Path, tokenizer) -> Path:
    """A HF directory that loads as ``AutoModelForSequenceClassification`` and as a ``CrossEncoder``."""
    model.config.sentence_transformers = dict(CROSS_ENCODER_CONFIG)
    if is_ours(model):
        from model.hf import save_pretrained

        return save_pretrained(model, directory, tokenizer=tokenizer)
    from model.hf import write_model_dir

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    return write_model_dir(directory, write)
