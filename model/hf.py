"""Model directories in the Hugging Face layout, and loading the released gte-multilingual weights.

`save_pretrained` writes a self-contained directory: `config.json` (with `auto_map`),
`model.safetensors`, the tokenizer files, and copies of the modelling sources, so that
`transformers.AutoModel.from_pretrained(dir, trust_remote_code=True)` loads it offline with
no mgte install. `load_pretrained` reads such a directory, or a released
gte-multilingual-base / -reranker-base checkpoint (model_type "new", by path or hub name).

Released -> ours (everything else has the same name):
    config model_type "new"               -> "mgte" (`config_from_released`)
    lm_head.decoder.weight                 -> dropped: tied to new.embeddings.word_embeddings
    lm_head.decoder.bias                   -> lm_head.bias
    NewForSequenceClassification           -> classifier_pooler=True (new.pooler.dense kept)
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from .config import MGTEConfig
from .encoder import MGTEModel
from .files import ModelFileError, read_config, verify_checksums, write_checksums

logger = logging.getLogger(__name__)

SOURCE_FILES = ("config.py", "unpad.py", "attention.py", "fused.py", "encoder.py", "heads.py", "batching.py", "modeling.py")
AUTO_MAP = {
    "AutoConfig": "config.MGTEConfig",
    "AutoModel": "encoder.MGTEModel",
    "AutoModelForMaskedLM": "modeling.MGTEForMaskedLM",
    "AutoModelForSequenceClassification": "modeling.MGTEForSequenceClassification",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]


def absolute_if_local(name_or_path: str | None) -> str | None:
    """A local model directory as an absolute path (Ray workers run in another directory);
    hub names and URLs as they are."""
    if name_or_path and "://" not in name_or_path and Path(name_or_path).exists():
        return str(Path(name_or_path).resolve())
    return name_or_path


def write_model_dir(directory: str | os.PathLike, write) -> Path:
    """Write a model directory atomically: ``write(tmp)`` fills ``<dir>.tmp``, then the checksums of its
    files (:func:`model.files.write_checksums`, last), then the rename. Every mgte model directory is
    written here. Refuses to replace a non-empty directory that is not a model directory."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / "config.json").exists():
        raise FileExistsError(f"{directory} exists and is not a model directory; refusing to replace it")
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    write(tmp)
    write_checksums(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def save_pretrained(model: MGTEModel, directory: str | os.PathLike, tokenizer=None) -> Path:
    """Write `model` (any mgte class) to `directory`, atomically: `<dir>.tmp` renamed at the end."""
    return write_model_dir(directory, lambda tmp: write_pretrained(model, tmp, tokenizer))


def write_pretrained(model: MGTEModel, tmp: Path, tokenizer=None) -> None:
    """The files of :func:`save_pretrained` into the directory being written (inside :func:`write_model_dir`)."""
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    model.config.auto_map = dict(AUTO_MAP)
    model.save_pretrained(tmp, safe_serialization=True)
    source_dir = Path(__file__).parent
    for name in SOURCE_FILES:
        shutil.copy2(source_dir / name, tmp / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))


def load_pretrained(
    name_or_path: str | os.PathLike,
    cls: type = MGTEModel,
    *,
    attn_backend: str | None = None,
    fused_layers: str | None = None,
    local_files_only: bool | None = None,
    with_tokenizer: bool = True,
    verify: bool = True,
):
    """Load an mgte directory or a released gte-multilingual checkpoint as `cls`.

    ``verify``: check the files against the directory's ``checksums.json`` first, when it has one
    (:func:`model.files.verify_checksums`). Heads missing from the checkpoint (e.g. an MLM encoder loaded as a reranker) are freshly
    initialised and logged; a missing encoder weight is an error.
    """
    path = _local_dir(name_or_path, local_files_only)
    if verify:
        verify_checksums(path)
    raw = read_config(path)
    model_type = raw.get("model_type")
    if model_type == MGTEConfig.model_type:
        config = MGTEConfig.from_pretrained(str(path))
        if attn_backend is not None:
            config.attn_backend = attn_backend
        state = _read_state_dict(path)
    elif model_type == "new":
        config = config_from_released(raw, attn_backend=attn_backend)
        state = convert_released_state_dict(_read_state_dict(path))
    else:
        raise ValueError(f"{path / 'config.json'}: model_type {model_type!r} is neither 'mgte' nor a released gte 'new' model")
    if fused_layers is not None:
        config.fused_layers = fused_layers
    model = cls(config)
    _load_state(model, state, source=str(path))
    if with_tokenizer and any((path / f).exists() for f in TOKENIZER_FILES):
        from .tokenizer import load_tokenizer

        model.tokenizer = load_tokenizer(path)
    return model


def config_from_released(raw: dict, attn_backend: str | None = None) -> MGTEConfig:
    """Translate a released gte-multilingual `config.json` (model_type "new") into MGTEConfig."""

    def need(key, expected, default=None):
        if raw.get(key, default) != expected:
            raise ValueError(f"released config: {key}={raw.get(key)!r} is not supported (expected {expected!r})")

    need("position_embedding_type", "rope", "rope")
    need("layer_norm_type", "layer_norm", "layer_norm")
    need("pack_qkv", True, True)
    need("logn_attention_scale", False, False)
    scaling = raw.get("rope_scaling")
    if scaling is not None:
        if scaling.get("mixed_b") is not None:
            raise ValueError(f"released config: rope_scaling {scaling} (mixed NTK) is not supported")
        scaling = {"type": scaling["type"], "factor": float(scaling["factor"])}
    architectures = raw.get("architectures") or []
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "layer_norm_eps", "type_vocab_size", "pad_token_id",
            "max_position_embeddings", "rope_theta", "initializer_range", "id2label", "label2id")
    kwargs = {k: raw[k] for k in keep if k in raw}
    if "id2label" not in raw and "num_labels" in raw:
        kwargs["num_labels"] = raw["num_labels"]
    return MGTEConfig(
        **kwargs,
        rope_scaling=scaling,
        classifier_pooler="NewForSequenceClassification" in architectures,
        attn_backend=attn_backend or "auto",
    )


def convert_released_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released parameter names -> ours (see the module docstring)."""
    out = {}
    for key, value in state.items():
        if key == "lm_head.decoder.weight":
            continue
        out["lm_head.bias" if key == "lm_head.decoder.bias" else key] = value
    return out


def _load_state(model, state: dict[str, torch.Tensor], source: str) -> None:
    prefix = model.base_model_prefix + "."
    if isinstance(model, MGTEModel):  # the bare encoder: keep the encoder's weights, unprefixed
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif not any(k.startswith(prefix) for k in state):  # a bare encoder checkpoint under a head model
        state = {prefix + k: v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    encoder_keys = [
        k for k in result.missing_keys
        if (isinstance(model, MGTEModel) or k.startswith(prefix)) and ".pooler." not in f".{k}"
    ]
    if encoder_keys:
        raise ValueError(f"{source}: checkpoint lacks encoder weights {encoder_keys[:5]} ({len(encoder_keys)} in all)")
    if result.missing_keys:
        logger.warning("%s: newly initialised (not in the checkpoint): %s", source, result.missing_keys)
    if result.unexpected_keys:
        logger.info("%s: not used by %s: %s", source, type(model).__name__, result.unexpected_keys)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path / "model.safetensors"))
        except SafetensorError as exc:
            raise ModelFileError(f"{path / 'model.safetensors'}: unreadable safetensors file ({exc})") from None
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def _local_dir(name_or_path: str | os.PathLike, local_files_only: bool | None) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json, not a model directory")
        return path
    from huggingface_hub import snapshot_download

    from .tokenizer import _offline

    local_only = _offline() if local_files_only is None else local_files_only
    path = Path(snapshot_download(str(name_or_path), allow_patterns=_WEIGHT_PATTERNS, local_files_only=local_only))
    if not (path / "model.safetensors").exists():  # older repositories: PyTorch pickles only
        path = Path(snapshot_download(str(name_or_path), allow_patterns=["*.bin"], local_files_only=local_only))
    return path
